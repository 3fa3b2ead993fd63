package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"net/http"
	"time"
)

// Entry is a stored answer: everything needed to replay it.
type Entry struct {
	// Status is the HTTP status code; only 2xx answers are stored.
	Status int
	// Header holds the response headers worth replaying; see ReplayHeader.
	Header http.Header
	// Body is the response body: the JSON document, or for a stream the raw SSE bytes
	// as received.
	Body []byte
	// Stream reports whether Body is a server-sent event stream.
	Stream bool
	// Stored is when the answer was complete, for the Age header and max-age.
	Stored time.Time
}

// entryOverhead approximates the bookkeeping around an entry in memory (the Entry, its
// list node and its map slot), so that many tiny entries still count against the
// byte bound.
const entryOverhead = 160

// Size returns the approximate memory the entry holds, in bytes.
func (e *Entry) Size() int64 {
	n := int64(entryOverhead + len(e.Body))
	for k, vs := range e.Header {
		n += int64(len(k)) + 16
		for _, v := range vs {
			n += int64(len(v)) + 16
		}
	}
	return n
}

// Age returns how long ago the answer was stored, in whole seconds as the Age header
// wants it, never negative.
func (e *Entry) Age(now time.Time) time.Duration {
	age := now.Sub(e.Stored).Truncate(time.Second)
	return max(age, 0)
}

// replayHeaders are the response headers kept with an entry. The rest either describe
// one exchange (Date, rate-limit state of the upstream key, request ids, processing
// time) or are set by the relay itself.
var replayHeaders = []string{
	"Content-Type",
	"Openai-Model",
	"Openai-Version",
}

// ReplayHeader returns the subset of an upstream response's headers that an entry
// keeps: Content-Type, and the model and API version OpenAI reports. Request ids are
// left out on purpose: a replayed answer is not that request, and a support ticket
// quoting its id would mislead.
func ReplayHeader(h http.Header) http.Header {
	out := make(http.Header, len(replayHeaders))
	for _, k := range replayHeaders {
		if vs := h.Values(k); len(vs) > 0 {
			out[k] = append([]string(nil), vs...)
		}
	}
	return out
}

// entryVersion starts the binary form of an entry so that the format can evolve.
const entryVersion = 1

// MarshalBinary encodes the entry for an external store such as Redis.
func (e *Entry) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, len(e.Body)+64)
	b = append(b, entryVersion)
	b = binary.AppendUvarint(b, uint64(e.Status))
	stream := byte(0)
	if e.Stream {
		stream = 1
	}
	b = append(b, stream)
	b = binary.AppendVarint(b, e.Stored.UnixNano())
	b = binary.AppendUvarint(b, uint64(len(e.Header)))
	for k, vs := range e.Header {
		b = appendBytes(b, []byte(k))
		b = binary.AppendUvarint(b, uint64(len(vs)))
		for _, v := range vs {
			b = appendBytes(b, []byte(v))
		}
	}
	return appendBytes(b, e.Body), nil
}

func appendBytes(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

var errBadEntry = errors.New("cache: malformed entry encoding")

// UnmarshalBinary decodes an entry encoded by MarshalBinary. The entry does not keep a
// reference to data.
func (e *Entry) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	if d.byte() != entryVersion {
		return errBadEntry
	}
	status := d.uvarint()
	stream := d.byte()
	stored := d.varint()
	nh := d.uvarint()
	if d.err != nil || status > 999 || stream > 1 || nh > uint64(len(d.b)) {
		return errBadEntry
	}
	h := make(http.Header, nh)
	for range nh {
		k := string(d.bytes())
		nv := d.uvarint()
		if d.err != nil || nv > uint64(len(d.b)) {
			return errBadEntry
		}
		vs := make([]string, 0, nv)
		for range nv {
			vs = append(vs, string(d.bytes()))
		}
		h[k] = vs
	}
	body := d.bytes()
	if d.err != nil || len(d.b) != 0 {
		return errBadEntry
	}
	*e = Entry{
		Status: int(status),
		Header: h,
		Body:   append([]byte(nil), body...),
		Stream: stream == 1,
		Stored: time.Unix(0, stored),
	}
	return nil
}

// decoder reads the binary entry form, remembering the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.err = errBadEntry
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if d.err != nil || n <= 0 {
		d.err = errBadEntry
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if d.err != nil || n <= 0 {
		d.err = errBadEntry
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.err = errBadEntry
		return nil
	}
	s := d.b[:n]
	d.b = d.b[n:]
	return s
}

// Stats are a store's counters, for metrics and the admin API.
type Stats struct {
	Entries   int64  // entries held
	Bytes     int64  // approximate bytes held (see Entry.Size)
	Hits      uint64 // Get calls that found a live entry
	Misses    uint64 // Get calls that did not
	Evictions uint64 // entries removed to make room
	Expired   uint64 // entries removed because their TTL passed
}

// Store holds entries by key. Implementations are safe for concurrent use. Entries
// passed to Set and returned by Get are shared and must not be modified.
type Store interface {
	// Get returns the live entry for k.
	Get(ctx context.Context, k Key) (*Entry, bool)
	// Set stores e under k for ttl (ttl <= 0: until evicted), replacing any entry. A
	// store may decline entries it cannot hold, such as ones too large.
	Set(ctx context.Context, k Key, e *Entry, ttl time.Duration)
	// Delete removes the entry for k, if any.
	Delete(ctx context.Context, k Key)
	// Purge removes every entry.
	Purge(ctx context.Context)
	// Stats returns the store's counters.
	Stats() Stats
}
