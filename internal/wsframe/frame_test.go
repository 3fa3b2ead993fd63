package wsframe

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"strings"
	"testing"
)

func frames(t *testing.T, mask bool, parts ...func(w *bufio.Writer)) *bufio.Reader {
	t.Helper()
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	for _, p := range parts {
		p(w)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return bufio.NewReader(&buf)
}

func masker(key []byte) { _, _ = rand.Read(key) }

func frame(op Opcode, p []byte, mask bool) func(*bufio.Writer) {
	return func(w *bufio.Writer) {
		var m Masker
		if mask {
			m = masker
		}
		_ = WriteFrame(w, op, p, m)
	}
}

// raw writes bytes as they are: a frame built by hand.
func raw(b ...byte) func(*bufio.Writer) {
	return func(w *bufio.Writer) { _, _ = w.Write(b) }
}

func TestRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 70000) // the 64-bit length form
	mid := bytes.Repeat([]byte("y"), 300)   // the 16-bit length form
	for _, mask := range []bool{true, false} {
		rd := NewReader(frames(t, mask,
			frame(OpText, []byte(`{"type":"a"}`), mask),
			frame(OpPing, []byte("p"), mask),
			frame(OpBinary, big, mask),
			frame(OpText, mid, mask),
			frame(OpClose, CloseFrame(CloseNormal, "bye"), mask),
		), mask, 0)
		want := []Message{{OpText, []byte(`{"type":"a"}`)}, {OpPing, []byte("p")}, {OpBinary, big}, {OpText, mid}}
		for i, w := range want {
			m, err := rd.Next()
			if err != nil {
				t.Fatalf("mask %v message %d: %v", mask, i, err)
			}
			if m.Op != w.Op || !bytes.Equal(m.Data, w.Data) {
				t.Fatalf("mask %v message %d: op %v, %d bytes; want op %v, %d bytes", mask, i, m.Op, len(m.Data), w.Op, len(w.Data))
			}
		}
		m, err := rd.Next()
		if err != nil || m.Op != OpClose {
			t.Fatalf("close: %v %v", m.Op, err)
		}
		code, reason, err := ParseClose(m.Data)
		if err != nil || code != CloseNormal || reason != "bye" {
			t.Fatalf("close %d %q %v", code, reason, err)
		}
		if _, err := rd.Next(); !errors.Is(err, io.EOF) {
			t.Fatalf("after the last frame: %v, want EOF", err)
		}
		if f, b := rd.Frames(); f != 5 || b != int64(12+1+len(big)+len(mid)+5) {
			t.Errorf("counted %d frames, %d bytes", f, b)
		}
	}
}

func TestFragmentsJoinedAroundControlFrames(t *testing.T) {
	// "hel" (text, not fin), ping, "lo" (continuation, fin), unmasked.
	rd := NewReader(frames(t, false,
		raw(0x01, 3, 'h', 'e', 'l'),
		raw(0x89, 1, 'x'),
		raw(0x80, 2, 'l', 'o'),
	), false, 0)
	m, err := rd.Next()
	if err != nil || m.Op != OpPing {
		t.Fatalf("first: %v %v, want the ping", m.Op, err)
	}
	m, err = rd.Next()
	if err != nil || m.Op != OpText || string(m.Data) != "hello" {
		t.Fatalf("second: %v %q %v", m.Op, m.Data, err)
	}
}

func TestProtocolErrors(t *testing.T) {
	cases := []struct {
		name       string
		fromClient bool
		max        int64
		in         func(*bufio.Writer)
		code       int
	}{
		{"unmasked from a client", true, 0, raw(0x81, 1, 'a'), CloseProtocolError},
		{"masked from a server", false, 0, raw(0x81, 0x81, 1, 2, 3, 4, 'a'), CloseProtocolError},
		{"reserved bit", false, 0, raw(0xC1, 1, 'a'), CloseProtocolError},
		{"unknown opcode", false, 0, raw(0x83, 0), CloseProtocolError},
		{"fragmented ping", false, 0, raw(0x09, 0), CloseProtocolError},
		{"long ping", false, 0, raw(0x89, 126, 0, 200), CloseProtocolError},
		{"continuation first", false, 0, raw(0x80, 1, 'a'), CloseProtocolError},
		{"new message inside one", false, 0, func(w *bufio.Writer) { raw(0x01, 1, 'a')(w); raw(0x81, 1, 'b')(w) }, CloseProtocolError},
		{"too big", false, 4, raw(0x81, 5, 'a', 'b', 'c', 'd', 'e'), CloseMessageTooBig},
		{"too big in fragments", false, 4, func(w *bufio.Writer) { raw(0x01, 3, 'a', 'b', 'c')(w); raw(0x80, 2, 'd', 'e')(w) }, CloseMessageTooBig},
		{"text not UTF-8", false, 0, raw(0x81, 2, 0xff, 0xfe), CloseInvalidPayload},
		{"close of one byte", false, 0, raw(0x88, 1, 3), CloseProtocolError},
		{"close code 1005", false, 0, raw(0x88, 2, 0x03, 0xED), CloseProtocolError},
		{"64-bit length with the top bit", false, 0, raw(0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0), CloseProtocolError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rd := NewReader(frames(t, false, tc.in), tc.fromClient, tc.max)
			_, err := rd.Next()
			var pe *ProtocolError
			if !errors.As(err, &pe) || pe.Code != tc.code {
				t.Fatalf("got %v, want a protocol error with code %d", err, tc.code)
			}
		})
	}
}

func TestTruncatedFrame(t *testing.T) {
	rd := NewReader(frames(t, false, raw(0x81, 5, 'a', 'b')), false, 0)
	if _, err := rd.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want unexpected EOF", err)
	}
}

func TestCloseFrameCutsLongReason(t *testing.T) {
	p := CloseFrame(CloseNormal, strings.Repeat("é", 100))
	if len(p) > maxControlPayload {
		t.Fatalf("close payload of %d bytes", len(p))
	}
	if _, reason, err := ParseClose(p); err != nil || !strings.HasPrefix(strings.Repeat("é", 100), reason) {
		t.Fatalf("reason %q: %v", reason, err)
	}
	if CloseFrame(CloseNoStatus, "x") != nil {
		t.Error("a close without a status has a payload")
	}
}

func TestAcceptKey(t *testing.T) {
	// RFC 6455 §1.3's example.
	if got := AcceptKey("dGhlIHNhbXBsZSBub25jZQ=="); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("accept %q", got)
	}
	if !ValidKey("dGhlIHNhbXBsZSBub25jZQ==") || ValidKey("short") || ValidKey("") {
		t.Error("ValidKey")
	}
}

func TestWriteFrameLeavesPayload(t *testing.T) {
	p := []byte("do not change me")
	orig := append([]byte(nil), p...)
	var buf bytes.Buffer
	w := bufio.NewWriterSize(&buf, 16) // smaller than the frame: masked in pieces
	if err := WriteFrame(w, OpText, p, masker); err != nil || w.Flush() != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p, orig) {
		t.Fatal("WriteFrame changed the payload")
	}
	m, err := NewReader(bufio.NewReader(&buf), true, 0).Next()
	if err != nil || !bytes.Equal(m.Data, orig) {
		t.Fatalf("read back %q: %v", m.Data, err)
	}
}

// FuzzReader feeds arbitrary bytes as frames: the reader returns messages
// or errors, never panics, and never returns more than the limit.
func FuzzReader(f *testing.F) {
	var seed bytes.Buffer
	w := bufio.NewWriter(&seed)
	_ = WriteFrame(w, OpText, []byte(`{"type":"response.create"}`), masker)
	_ = WriteFrame(w, OpClose, CloseFrame(CloseNormal, "x"), masker)
	_ = w.Flush()
	f.Add(seed.Bytes(), true)
	f.Add([]byte{0x01, 3, 'h', 'e', 'l', 0x89, 0, 0x80, 2, 'l', 'o'}, false)
	f.Add([]byte{0x82, 127, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4, 5}, false)
	f.Fuzz(func(t *testing.T, in []byte, fromClient bool) {
		rd := NewReader(bufio.NewReader(bytes.NewReader(in)), fromClient, 1<<16)
		for range 64 {
			m, err := rd.Next()
			if err != nil {
				return
			}
			if !m.Op.IsControl() && len(m.Data) > 1<<16 {
				t.Fatalf("message of %d bytes past the limit", len(m.Data))
			}
			if m.Op.IsControl() && len(m.Data) > maxControlPayload {
				t.Fatalf("control frame of %d bytes", len(m.Data))
			}
		}
	})
}
