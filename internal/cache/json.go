package cache

import (
	"encoding/binary"
	"unicode/utf8"

	"github.com/caddyrelay/openairelay/internal/jsonscan"
)

// ErrInvalidJSON is wrapped by every error about malformed JSON, whether in a request
// body given to Identity or in an answer given to a converter. It is the scanner's.
var ErrInvalidJSON = jsonscan.ErrInvalid

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
			return dst, i, jsonscan.SyntaxError(i, "unterminated string")
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
			return dst, i, jsonscan.SyntaxError(i, "control character in string")
		default:
			// A run of bytes >= 0x80 is made of whole multi-byte sequences, since
			// ASCII never occurs inside one: validate the run at once.
			start = i
			for i < len(in) && in[i] >= 0x80 {
				i++
			}
			if !utf8.Valid(in[start:i]) {
				return dst, start, jsonscan.SyntaxError(start, "invalid UTF-8 in string")
			}
			dst = append(dst, in[start:i]...)
		}
	}
}

// appendEscape decodes the escape sequence at in[i] (a backslash).
func appendEscape(dst, in []byte, i int) ([]byte, int, error) {
	if i+1 >= len(in) {
		return dst, i, jsonscan.SyntaxError(i, "unterminated escape")
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
			return dst, i, jsonscan.SyntaxError(i, "invalid \\u escape")
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
	return dst, i, jsonscan.SyntaxError(i, "invalid escape")
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

// field is one member of a JSON object: its decoded key and its raw value.
type field struct {
	key string
	val []byte
}

// objectFields splits a raw JSON object into its members, in order.
func objectFields(raw []byte) ([]field, error) {
	i := jsonscan.Space(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return nil, jsonscan.SyntaxError(i, "expected object")
	}
	i = jsonscan.Space(raw, i+1)
	var fs []field
	if i < len(raw) && raw[i] == '}' {
		return fs, nil
	}
	var kb []byte
	for {
		i = jsonscan.Space(raw, i)
		if i >= len(raw) || raw[i] != '"' {
			return nil, jsonscan.SyntaxError(i, "expected object key")
		}
		var err error
		kb, i, err = appendUnquoted(kb[:0], raw, i)
		if err != nil {
			return nil, err
		}
		i = jsonscan.Space(raw, i)
		if i >= len(raw) || raw[i] != ':' {
			return nil, jsonscan.SyntaxError(i, "expected ':'")
		}
		s, e, err := jsonscan.Value(raw, i+1)
		if err != nil {
			return nil, err
		}
		fs = append(fs, field{key: internKey(kb), val: raw[s:e]})
		i = jsonscan.Space(raw, e)
		if i < len(raw) && raw[i] == ',' {
			i++
			continue
		}
		if i < len(raw) && raw[i] == '}' {
			return fs, nil
		}
		return nil, jsonscan.SyntaxError(i, "expected ',' or '}'")
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
	i := jsonscan.Space(raw, 0)
	if i >= len(raw) || raw[i] != '[' {
		return nil, jsonscan.SyntaxError(i, "expected array")
	}
	i = jsonscan.Space(raw, i+1)
	var es [][]byte
	if i < len(raw) && raw[i] == ']' {
		return es, nil
	}
	for {
		s, e, err := jsonscan.Value(raw, i)
		if err != nil {
			return nil, err
		}
		es = append(es, raw[s:e])
		i = jsonscan.Space(raw, e)
		if i < len(raw) && raw[i] == ',' {
			i++
			continue
		}
		if i < len(raw) && raw[i] == ']' {
			return es, nil
		}
		return nil, jsonscan.SyntaxError(i, "expected ',' or ']'")
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
