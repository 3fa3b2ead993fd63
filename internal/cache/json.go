package cache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// ErrInvalidJSON is wrapped by every error about malformed JSON, whether in a request
// body given to Identity or in an answer given to a converter.
var ErrInvalidJSON = errors.New("cache: invalid JSON")

// maxDepth bounds the nesting of arrays and objects, as encoding/json does, so that a
// hostile body cannot exhaust the stack.
const maxDepth = 10000

func syntaxError(off int, what string) error {
	return fmt.Errorf("%w: %s at offset %d", ErrInvalidJSON, what, off)
}

// strPlain marks the bytes that can be copied as they are inside a JSON string: printable
// ASCII other than the quote and the backslash. Everything else needs a closer look.
var strPlain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// plainRun returns the end of the run of strPlain bytes at in[i]. Prose is mostly plain
// bytes, so it tests eight at a time first (SWAR): a word holds only plain bytes when
// none is >= 0x80, < 0x20, '"' or '\\'.
func plainRun(in []byte, i int) int {
	const (
		ones = 0x0101010101010101
		high = 0x8080808080808080
	)
	for ; i+8 <= len(in); i += 8 {
		x := binary.LittleEndian.Uint64(in[i:])
		q := x ^ ('"' * ones)
		bs := x ^ ('\\' * ones)
		special := x | (x - 0x20*ones) | (q-ones)&^q | (bs-ones)&^bs
		if special&high != 0 {
			break
		}
	}
	for i < len(in) && strPlain[in[i]] {
		i++
	}
	return i
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(in []byte, i int) int {
	for i < len(in) && isSpace(in[i]) {
		i++
	}
	return i
}

// appendUnquoted decodes the JSON string starting with the quote at in[i], appends its
// value to dst and returns the index after the closing quote.
//
// It is strict where the canonical form needs it to be: raw bytes must be valid UTF-8
// (a server would reject or replace them, and two different invalid spellings must not
// be taken for one), control characters must be escaped, and an escaped lone surrogate
// is kept as its WTF-8 bytes, which valid UTF-8 input can never produce, so that
// "\ud800" stays distinct from everything else.
func appendUnquoted(dst, in []byte, i int) ([]byte, int, error) {
	i++ // opening quote
	for {
		start := i
		i = plainRun(in, i)
		dst = append(dst, in[start:i]...)
		if i >= len(in) {
			return dst, i, syntaxError(i, "unterminated string")
		}
		switch c := in[i]; {
		case c == '"':
			return dst, i + 1, nil
		case c == '\\':
			var err error
			dst, i, err = appendEscape(dst, in, i)
			if err != nil {
				return dst, i, err
			}
		case c < 0x20:
			return dst, i, syntaxError(i, "control character in string")
		default:
			// A run of bytes >= 0x80 is made of whole multi-byte sequences, since
			// ASCII never occurs inside one: validate the run at once.
			start = i
			for i < len(in) && in[i] >= 0x80 {
				i++
			}
			if !utf8.Valid(in[start:i]) {
				return dst, start, syntaxError(start, "invalid UTF-8 in string")
			}
			dst = append(dst, in[start:i]...)
		}
	}
}

// appendEscape decodes the escape sequence at in[i] (a backslash).
func appendEscape(dst, in []byte, i int) ([]byte, int, error) {
	if i+1 >= len(in) {
		return dst, i, syntaxError(i, "unterminated escape")
	}
	switch in[i+1] {
	case '"', '\\', '/':
		return append(dst, in[i+1]), i + 2, nil
	case 'b':
		return append(dst, '\b'), i + 2, nil
	case 'f':
		return append(dst, '\f'), i + 2, nil
	case 'n':
		return append(dst, '\n'), i + 2, nil
	case 'r':
		return append(dst, '\r'), i + 2, nil
	case 't':
		return append(dst, '\t'), i + 2, nil
	case 'u':
		r, ok := hex4(in, i+2)
		if !ok {
			return dst, i, syntaxError(i, "invalid \\u escape")
		}
		i += 6
		if r >= 0xD800 && r < 0xDC00 && i+1 < len(in) && in[i] == '\\' && in[i+1] == 'u' {
			if lo, ok := hex4(in, i+2); ok && lo >= 0xDC00 && lo < 0xE000 {
				return utf8.AppendRune(dst, 0x10000+(r-0xD800)<<10+(lo-0xDC00)), i + 6, nil
			}
		}
		if r >= 0xD800 && r < 0xE000 {
			// Lone surrogate: WTF-8, see appendUnquoted.
			return append(dst, 0xE0|byte(r>>12), 0x80|byte(r>>6)&0x3F, 0x80|byte(r)&0x3F), i, nil
		}
		return utf8.AppendRune(dst, r), i, nil
	}
	return dst, i, syntaxError(i, "invalid escape")
}

func hex4(in []byte, i int) (rune, bool) {
	if i+4 > len(in) {
		return 0, false
	}
	var r rune
	for _, c := range in[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// appendQuoted appends s as a JSON string. Unlike encoding/json it does not escape <, >
// and &, matching what OpenAI sends; WTF-8 lone surrogates produced by appendUnquoted
// are escaped back to \uXXXX so that the output stays valid UTF-8.
func appendQuoted(dst []byte, s []byte) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		start := i
		for i < len(s) && strPlain[s[i]] {
			i++
		}
		dst = append(dst, s[start:i]...)
		if i >= len(s) {
			break
		}
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
			i++
		case c == '\n':
			dst = append(dst, '\\', 'n')
			i++
		case c == '\r':
			dst = append(dst, '\\', 'r')
			i++
		case c == '\t':
			dst = append(dst, '\\', 't')
			i++
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			i++
		default:
			r, size := utf8.DecodeRune(s[i:])
			if r != utf8.RuneError || size > 1 {
				dst = append(dst, s[i:i+size]...)
				i += size
				continue
			}
			if c == 0xED && i+2 < len(s) && s[i+1] >= 0xA0 && s[i+1] <= 0xBF && s[i+2]&0xC0 == 0x80 {
				r := rune(c&0x0F)<<12 | rune(s[i+1]&0x3F)<<6 | rune(s[i+2]&0x3F)
				dst = append(dst, '\\', 'u', hexDigits[r>>12], hexDigits[r>>8&0xF], hexDigits[r>>4&0xF], hexDigits[r&0xF])
				i += 3
				continue
			}
			dst = append(dst, "\ufffd"...)
			i++
		}
	}
	return append(dst, '"')
}

// skipValue returns the span of the JSON value that starts at in[i] after optional
// whitespace. It checks the structure but not every detail of numbers and literals;
// the converters use it on answers that come from an upstream.
func skipValue(in []byte, i int) (start, end int, err error) {
	return skipValueDepth(in, i, 0)
}

func skipValueDepth(in []byte, i, depth int) (start, end int, err error) {
	i = skipSpace(in, i)
	if i >= len(in) {
		return i, i, syntaxError(i, "unexpected end of input")
	}
	start = i
	switch c := in[i]; c {
	case '"':
		end, err = skipString(in, i)
		return start, end, err
	case '{', '[':
		if depth >= maxDepth {
			return start, i, syntaxError(i, "nesting too deep")
		}
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		i = skipSpace(in, i+1)
		if i < len(in) && in[i] == closer {
			return start, i + 1, nil
		}
		for {
			if c == '{' {
				i = skipSpace(in, i)
				if i >= len(in) || in[i] != '"' {
					return start, i, syntaxError(i, "expected object key")
				}
				if i, err = skipString(in, i); err != nil {
					return start, i, err
				}
				i = skipSpace(in, i)
				if i >= len(in) || in[i] != ':' {
					return start, i, syntaxError(i, "expected ':'")
				}
				i++
			}
			if _, i, err = skipValueDepth(in, i, depth+1); err != nil {
				return start, i, err
			}
			i = skipSpace(in, i)
			if i < len(in) && in[i] == ',' {
				i++
				continue
			}
			if i < len(in) && in[i] == closer {
				return start, i + 1, nil
			}
			return start, i, syntaxError(i, "expected ',' or closing bracket")
		}
	case 't':
		return skipLiteral(in, i, "true")
	case 'f':
		return skipLiteral(in, i, "false")
	case 'n':
		return skipLiteral(in, i, "null")
	}
	for i < len(in) && (in[i] >= '0' && in[i] <= '9' || in[i] == '-' || in[i] == '+' || in[i] == '.' || in[i] == 'e' || in[i] == 'E') {
		i++
	}
	if i == start {
		return start, i, syntaxError(i, "unexpected character")
	}
	return start, i, nil
}

func skipLiteral(in []byte, i int, lit string) (int, int, error) {
	if !bytes.HasPrefix(in[i:], []byte(lit)) {
		return i, i, syntaxError(i, "invalid literal")
	}
	return i, i + len(lit), nil
}

func skipString(in []byte, i int) (int, error) {
	i++
	for {
		j := bytes.IndexAny(in[i:], "\"\\")
		if j < 0 {
			return len(in), syntaxError(len(in), "unterminated string")
		}
		i += j
		if in[i] == '"' {
			return i + 1, nil
		}
		i += 2 // the escape's first character cannot be a closing quote
		if i > len(in) {
			return len(in), syntaxError(len(in), "unterminated string")
		}
	}
}

// field is one member of a JSON object: its decoded key and its raw value.
type field struct {
	key string
	val []byte
}

// objectFields splits a raw JSON object into its members, in order.
func objectFields(raw []byte) ([]field, error) {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return nil, syntaxError(i, "expected object")
	}
	i = skipSpace(raw, i+1)
	var fs []field
	if i < len(raw) && raw[i] == '}' {
		return fs, nil
	}
	var kb []byte
	for {
		i = skipSpace(raw, i)
		if i >= len(raw) || raw[i] != '"' {
			return nil, syntaxError(i, "expected object key")
		}
		var err error
		kb, i, err = appendUnquoted(kb[:0], raw, i)
		if err != nil {
			return nil, err
		}
		i = skipSpace(raw, i)
		if i >= len(raw) || raw[i] != ':' {
			return nil, syntaxError(i, "expected ':'")
		}
		s, e, err := skipValue(raw, i+1)
		if err != nil {
			return nil, err
		}
		fs = append(fs, field{key: internKey(kb), val: raw[s:e]})
		i = skipSpace(raw, e)
		if i < len(raw) && raw[i] == ',' {
			i++
			continue
		}
		if i < len(raw) && raw[i] == '}' {
			return fs, nil
		}
		return nil, syntaxError(i, "expected ',' or '}'")
	}
}

// internKey returns common OpenAI member names without allocating.
func internKey(b []byte) string {
	if s, ok := knownKeys[string(b)]; ok {
		return s
	}
	return string(b)
}

var knownKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		"id", "object", "created", "created_at", "model", "choices", "index", "message",
		"delta", "role", "content", "refusal", "tool_calls", "type", "function", "name",
		"arguments", "finish_reason", "logprobs", "usage", "system_fingerprint",
		"service_tier", "text", "annotations", "audio", "status", "output", "item", "part",
		"item_id", "output_index", "content_index", "sequence_number", "response",
		"summary", "call_id", "obfuscation", "function_call", "error",
	} {
		m[k] = k
	}
	return m
}()

// arrayElems splits a raw JSON array into its raw elements.
func arrayElems(raw []byte) ([][]byte, error) {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '[' {
		return nil, syntaxError(i, "expected array")
	}
	i = skipSpace(raw, i+1)
	var es [][]byte
	if i < len(raw) && raw[i] == ']' {
		return es, nil
	}
	for {
		s, e, err := skipValue(raw, i)
		if err != nil {
			return nil, err
		}
		es = append(es, raw[s:e])
		i = skipSpace(raw, e)
		if i < len(raw) && raw[i] == ',' {
			i++
			continue
		}
		if i < len(raw) && raw[i] == ']' {
			return es, nil
		}
		return nil, syntaxError(i, "expected ',' or ']'")
	}
}

// decodeString returns the value of a raw JSON string, and false if raw is not one.
func decodeString(raw []byte) ([]byte, bool) {
	return appendString(nil, raw)
}

// appendString appends the value of a raw JSON string to dst.
func appendString(dst, raw []byte) ([]byte, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return dst, false
	}
	out, end, err := appendUnquoted(dst, raw, 0)
	if err != nil || end != len(raw) {
		return dst, false
	}
	return out, true
}

func isNull(raw []byte) bool { return len(raw) == 0 || string(raw) == "null" }

// get returns the raw value of the member key, or nil.
func get(fs []field, key string) []byte {
	for _, f := range fs {
		if f.key == key {
			return f.val
		}
	}
	return nil
}
