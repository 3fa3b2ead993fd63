// Package limit keeps the rate-limit state of upstream keys and of clients:
// token buckets for the per-minute limits, counters over the UTC day for the
// per-day limits, a cap on requests in flight, what the upstream's
// x-ratelimit-* response headers teach, and a priority queue for requests that
// wait for capacity.
//
// The limiter takes the current time as an argument rather than reading a
// clock, so that the relay reads the clock once per request and tests can step
// time exactly. The queue waits in real time and reads time.Now itself.
//
// # Buckets
//
// RPM and TPM are token buckets that refill continuously at limit/minute and
// hold Burst's worth of it (one second by default, because OpenAI enforces
// minute limits over shorter windows). A bucket always holds at least one
// unit. The state of a bucket is the instant at which it is full again (the
// "theoretical arrival time" of GCRA), kept in integer nanoseconds, so that
// refilling costs nothing, no rounding accumulates and a reservation can be
// given back exactly.
//
// A request whose cost exceeds what a full bucket holds (a prompt bigger than
// one second's worth of TPM) is admitted when the bucket is full and leaves it
// in debt: the bucket goes negative and nothing else passes until refill has
// paid the debt back. The long-run rate therefore never exceeds the limit,
// while a big request still gets through. golang.org/x/time/rate cannot
// express this (it refuses n > burst), nor give tokens back exactly, nor be
// pulled down to what the upstream reports, which is why the buckets are
// implemented here.
//
// # Learning
//
// Learn reads OpenAI's x-ratelimit-* headers. A limit the configuration leaves
// at zero is taken from x-ratelimit-limit-requests/-tokens. When
// x-ratelimit-remaining-* reports fewer units than the local bucket holds, the
// bucket is pulled down to that many (never up); and when the matching
// x-ratelimit-reset-* says the upstream recovers more slowly than the local
// rate (remaining now, full at the reset, linearly in between), the local
// bucket is made to refill no faster than that.
//
// # Sharing
//
// Several instances enforce one key's limits together through a shared store
// (package redislimit) that keeps the State of each limiter and applies the
// same rules to it atomically. The local Limiter is then a mirror: SetState
// loads what the store replied, and Check, Headroom and Status read from it.
// What only ever raises the state (learning from headers, a 429) is computed
// on the mirror as a Raise (LearnRaise, ExhaustedRaise) and pushed to the
// store as a floor, so the rules live in this package alone.
package limit
