// Package wsframe reads and writes WebSocket frames (RFC 6455 §5) for a
// relay that sits between a client and a server: it reads whole messages
// (unmasking what a client masked), checks what the RFC requires of each
// frame, and writes messages and control frames, masked towards a server.
// It negotiates no extension, so every reserved bit must be zero.
package wsframe

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// Opcode is a frame's opcode.
type Opcode byte

// The opcodes of RFC 6455 §5.2.
const (
	OpContinuation Opcode = 0x0
	OpText         Opcode = 0x1
	OpBinary       Opcode = 0x2
	OpClose        Opcode = 0x8
	OpPing         Opcode = 0x9
	OpPong         Opcode = 0xA
)

// IsControl reports whether op is a control opcode (close, ping, pong).
func (op Opcode) IsControl() bool { return op&0x8 != 0 }

// Close codes of RFC 6455 §7.4.1 that a relay sends.
const (
	CloseNormal          = 1000
	CloseGoingAway       = 1001
	CloseProtocolError   = 1002
	CloseNoStatus        = 1005 // never sent: a close without a code
	CloseAbnormal        = 1006 // never sent: the connection dropped
	CloseInvalidPayload  = 1007
	ClosePolicyViolation = 1008
	CloseMessageTooBig   = 1009
	CloseInternalError   = 1011
	CloseServiceRestart  = 1012
	CloseTryAgainLater   = 1013
)

// ProtocolError is a peer's breach of RFC 6455: the connection is to be
// closed with Code.
type ProtocolError struct {
	Code   int
	Reason string
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("websocket: %s (close %d)", e.Reason, e.Code)
}

func protocolError(reason string) error {
	return &ProtocolError{Code: CloseProtocolError, Reason: reason}
}

// acceptGUID is the GUID of RFC 6455 §1.3.
const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// AcceptKey is the Sec-WebSocket-Accept answering Sec-WebSocket-Key key.
func AcceptKey(key string) string {
	h := sha1.Sum([]byte(key + acceptGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// ValidKey reports whether key is a Sec-WebSocket-Key: 16 bytes in base64.
func ValidKey(key string) bool {
	b, err := base64.StdEncoding.DecodeString(key)
	return err == nil && len(b) == 16
}

// header is one frame's header.
type header struct {
	fin    bool
	op     Opcode
	masked bool
	mask   [4]byte
	length int64
}

// maxControlPayload is the largest payload of a control frame (§5.5).
const maxControlPayload = 125

// readHeader reads a frame header and checks what can be checked of it alone.
func readHeader(r *bufio.Reader) (header, error) {
	var h header
	var b [8]byte
	if _, err := io.ReadFull(r, b[:2]); err != nil {
		return h, err
	}
	h.fin = b[0]&0x80 != 0
	if b[0]&0x70 != 0 {
		return h, protocolError("reserved bits set without a negotiated extension")
	}
	h.op = Opcode(b[0] & 0x0F)
	switch h.op {
	case OpContinuation, OpText, OpBinary, OpClose, OpPing, OpPong:
	default:
		return h, protocolError(fmt.Sprintf("unknown opcode %#x", byte(h.op)))
	}
	h.masked = b[1]&0x80 != 0
	switch n := b[1] & 0x7F; n {
	case 126:
		if _, err := io.ReadFull(r, b[:2]); err != nil {
			return h, unexpected(err)
		}
		h.length = int64(binary.BigEndian.Uint16(b[:2]))
	case 127:
		if _, err := io.ReadFull(r, b[:8]); err != nil {
			return h, unexpected(err)
		}
		v := binary.BigEndian.Uint64(b[:8])
		if v>>63 != 0 {
			return h, protocolError("payload length with its most significant bit set")
		}
		h.length = int64(v)
	default:
		h.length = int64(n)
	}
	if h.op.IsControl() && (!h.fin || h.length > maxControlPayload) {
		return h, protocolError("fragmented or oversized control frame")
	}
	if h.masked {
		if _, err := io.ReadFull(r, h.mask[:]); err != nil {
			return h, unexpected(err)
		}
	}
	return h, nil
}

// unexpected turns an EOF inside a frame into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// maskBytes XORs b with key, starting at position pos of the payload, and
// returns the position after b.
func maskBytes(key [4]byte, pos int, b []byte) int {
	for i := range b {
		b[i] ^= key[(pos+i)&3]
	}
	return (pos + len(b)) & 3
}

// Message is what Reader.Next returns: a whole data message (text or
// binary, its fragments joined) or one control frame. Data is valid until
// the next call.
type Message struct {
	Op   Opcode
	Data []byte
}

// Reader reads the messages of one side of a connection.
type Reader struct {
	r *bufio.Reader
	// fromClient: frames must be masked (§5.1), else they must not be.
	fromClient bool
	max        int64 // the largest data message

	buf     []byte
	ctrl    [maxControlPayload]byte
	msgOp   Opcode // the opcode of the message being assembled (0: none)
	frames  int64  // frames read, for the relay's counters
	payload int64  // payload bytes read
}

// NewReader reads frames from r; fromClient says whether the peer is a
// client (whose frames are masked), max bounds a data message (0:
// DefaultMaxMessage). A frame's declared length is checked against it
// before anything is allocated for it.
func NewReader(r *bufio.Reader, fromClient bool, max int64) *Reader {
	if max <= 0 {
		max = DefaultMaxMessage
	}
	return &Reader{r: r, fromClient: fromClient, max: max}
}

// DefaultMaxMessage bounds a data message when the caller sets no bound.
const DefaultMaxMessage = 64 << 20

// Frames returns how many frames were read, and their payload bytes.
func (rd *Reader) Frames() (frames, bytes int64) { return rd.frames, rd.payload }

// keepBuffer is the largest message buffer kept between messages: a session
// that once carried a large message does not hold its buffer while idle.
const keepBuffer = 64 << 10

// Next reads the next message. Control frames that arrive between the
// fragments of a data message are returned as they come; the message's
// fragments are joined. A text message must be valid UTF-8 (§8.1). Errors
// are the connection's (io.EOF when it ended between messages), or a
// *ProtocolError for a frame that breaks the RFC.
func (rd *Reader) Next() (Message, error) {
	if cap(rd.buf) > keepBuffer && rd.msgOp == 0 {
		rd.buf = nil
	}
	if rd.msgOp == 0 {
		rd.buf = rd.buf[:0]
	}
	for {
		h, err := readHeader(rd.r)
		if err != nil {
			return Message{}, err
		}
		if h.masked != rd.fromClient {
			if rd.fromClient {
				return Message{}, protocolError("unmasked frame from a client")
			}
			return Message{}, protocolError("masked frame from a server")
		}
		rd.frames++
		rd.payload += h.length
		if h.op.IsControl() {
			p := rd.ctrl[:h.length]
			if _, err := io.ReadFull(rd.r, p); err != nil {
				return Message{}, unexpected(err)
			}
			if h.masked {
				maskBytes(h.mask, 0, p)
			}
			if h.op == OpClose {
				if _, _, err := ParseClose(p); err != nil {
					return Message{}, err
				}
			}
			return Message{Op: h.op, Data: p}, nil
		}
		switch {
		case h.op == OpContinuation && rd.msgOp == 0:
			return Message{}, protocolError("continuation frame without a message")
		case h.op != OpContinuation && rd.msgOp != 0:
			return Message{}, protocolError("new message inside a fragmented one")
		case h.op != OpContinuation:
			rd.msgOp = h.op
		}
		size := int64(len(rd.buf)) + h.length
		if size > rd.max {
			return Message{}, &ProtocolError{Code: CloseMessageTooBig,
				Reason: fmt.Sprintf("message larger than %d bytes", rd.max)}
		}
		start := len(rd.buf)
		rd.buf = grow(rd.buf, int(h.length))
		if _, err := io.ReadFull(rd.r, rd.buf[start:]); err != nil {
			return Message{}, unexpected(err)
		}
		if h.masked {
			maskBytes(h.mask, 0, rd.buf[start:])
		}
		if !h.fin {
			continue
		}
		op := rd.msgOp
		rd.msgOp = 0
		if op == OpText && !utf8.Valid(rd.buf) {
			return Message{}, &ProtocolError{Code: CloseInvalidPayload, Reason: "text message that is not UTF-8"}
		}
		return Message{Op: op, Data: rd.buf}, nil
	}
}

// grow extends b by n bytes.
func grow(b []byte, n int) []byte {
	if need := len(b) + n; need > cap(b) {
		nb := make([]byte, len(b), max(need, 2*cap(b), 512))
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}

// ParseClose reads a close frame's payload: its code and reason, or
// CloseNoStatus for an empty one.
func ParseClose(p []byte) (code int, reason string, err error) {
	switch {
	case len(p) == 0:
		return CloseNoStatus, "", nil
	case len(p) == 1:
		return 0, "", protocolError("close frame with a one-byte payload")
	}
	code = int(binary.BigEndian.Uint16(p))
	if !validCloseCode(code) {
		return 0, "", protocolError(fmt.Sprintf("close code %d is not one a peer may send", code))
	}
	if !utf8.Valid(p[2:]) {
		return 0, "", &ProtocolError{Code: CloseInvalidPayload, Reason: "close reason that is not UTF-8"}
	}
	return code, string(p[2:]), nil
}

// validCloseCode reports whether a peer may send code (§7.4).
func validCloseCode(code int) bool {
	switch {
	case code >= 3000 && code <= 4999:
		return true
	case code < 1000 || code > 1014:
		return false
	}
	return code != 1004 && code != CloseNoStatus && code != CloseAbnormal
}

// CloseFrame is the payload of a close frame with code and reason; the
// reason is cut to fit a control frame, at a rune boundary.
func CloseFrame(code int, reason string) []byte {
	if code == CloseNoStatus || code == 0 {
		return nil
	}
	for len(reason) > maxControlPayload-2 {
		_, size := utf8.DecodeLastRuneInString(reason)
		reason = reason[:len(reason)-size]
	}
	p := make([]byte, 2, 2+len(reason))
	binary.BigEndian.PutUint16(p, uint16(code))
	return append(p, reason...)
}

// Masker makes the masking keys of frames sent to a server. Keys must be
// unpredictable to the application (§10.3); fill is a source of random
// bytes, such as crypto/rand.Read.
type Masker func(key []byte)

// WriteFrame writes one whole frame of op with payload p, masked with a key
// from mask when mask is not nil (towards a server). p is not modified.
func WriteFrame(w *bufio.Writer, op Opcode, p []byte, mask Masker) error {
	var h [14]byte
	h[0] = 0x80 | byte(op)
	n := 2
	switch l := len(p); {
	case l < 126:
		h[1] = byte(l)
	case l <= 0xFFFF:
		h[1] = 126
		binary.BigEndian.PutUint16(h[2:], uint16(l))
		n = 4
	default:
		h[1] = 127
		binary.BigEndian.PutUint64(h[2:], uint64(l))
		n = 10
	}
	if mask == nil {
		if _, err := w.Write(h[:n]); err != nil {
			return err
		}
		_, err := w.Write(p)
		return err
	}
	h[1] |= 0x80
	var key [4]byte
	mask(key[:])
	copy(h[n:], key[:])
	if _, err := w.Write(h[:n+4]); err != nil {
		return err
	}
	// Masked through the writer's own buffer, a piece at a time, so that
	// the caller's payload stays as it is.
	pos := 0
	for len(p) > 0 {
		if w.Available() == 0 {
			if err := w.Flush(); err != nil {
				return err
			}
		}
		buf := w.AvailableBuffer()[:min(w.Available(), len(p))]
		copy(buf, p)
		pos = maskBytes(key, pos, buf)
		if _, err := w.Write(buf); err != nil {
			return err
		}
		p = p[len(buf):]
	}
	return nil
}
