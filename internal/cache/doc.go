// Package cache is the pure core of the relay's response cache: the identity of a
// request (a canonical hash of what the API understands), a byte-bounded LRU store,
// conversion between streamed (SSE) and non-streamed answers, an incremental SSE
// parser, and the coalescing of identical requests in flight.
//
// Nothing here depends on Caddy; the HTTP handler wires these pieces together. A
// typical request goes:
//
//	k, ok, err := cache.Identity(scope, r.Method, path, model, body, opts)
//	if e, hit := store.Get(ctx, k); hit { /* replay e, converting if needed */ }
//	f, leader := group.Join(k)
//	if !leader { /* f.Follow(ctx), then copy fl.Next until io.EOF */ }
//	/* leader: f.Start, f.Write..., store.Set(ctx, k, entry, ttl), f.Finish */
//
// An entry stored in the other form (stream vs non-stream) is served through ToSSE or
// FromSSE; when those fail with ErrNotConvertible the handler treats it as a miss.
//
// A cache hit costs no upstream call, so it uses no key capacity; the handler counts it
// as a request for the client's own limits but charges no tokens.
package cache
