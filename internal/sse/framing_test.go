package sse

import (
	"bytes"
	"slices"
	"testing"
)

func TestEventLen(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{"data: a\n\ndata: b\n\n", 9},
		{"data: a\r\n\r\ndata: b", 11},
		{"data: a\r\rdata: b", 9},
		{"data: a\n\r\nx", 10},
		{"data: a\r\n\nx", 10},
		{"data: a\r", -1},
		{"data: a\r\n\r", -1}, // the blank line's CR may be half of a CRLF
		{"data: a\n", -1},
		{"data: a", -1},
		{"event: x\ndata: a\n\n", 18},
	}
	for _, tt := range tests {
		if got := EventLen([]byte(tt.in)); got != tt.want {
			t.Errorf("EventLen(%q) = %d; want %d", tt.in, got, tt.want)
		}
	}
}

// FuzzEventLen checks that the raw framing and the parser agree: a stream
// cut into events by EventLen and parsed piece by piece gives the events
// the parser finds in the whole.
func FuzzEventLen(f *testing.F) {
	f.Add([]byte("data: a\n\ndata: b\r\n\r\n: c\n\nevent: x\rdata: y\r\r"))
	f.Add([]byte("data: {\"usage\":null}\n\ndata: [DONE]\n\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		if bytes.HasPrefix(in, []byte("\xEF\xBB\xBF")) {
			return // a BOM starts only the whole stream
		}
		var whole, pieces []string
		for e := range Events(in) {
			whole = append(whole, e.Name+"\x00"+string(e.Data))
		}
		rest := in
		for {
			n := EventLen(rest)
			if n < 0 {
				break
			}
			for e := range Events(rest[:n]) {
				pieces = append(pieces, e.Name+"\x00"+string(e.Data))
			}
			rest = rest[n:]
		}
		for e := range Events(rest) {
			pieces = append(pieces, e.Name+"\x00"+string(e.Data))
		}
		if !slices.Equal(whole, pieces) {
			t.Fatalf("%q: whole %q, by EventLen %q", in, whole, pieces)
		}
	})
}
