// Package sse is the one framing of server-sent event streams in the relay:
// the live stream tap, the stored streams of the cache and their
// conversions all read events with its Parser (or Events, for a complete
// stream), pass them on whole with EventLen, and write them with
// AppendEvent. The rules are WHATWG's event-stream format.
package sse
