// Package jsonscan is the relay's one JSON scanner: it finds where values,
// strings and whitespace end in raw JSON bytes without decoding them, so
// that the request path, the usage reader and the cache look at a document
// once and allocate nothing.
//
// Value checks the structure as it goes and reports malformed input with
// its offset, bounded in depth as encoding/json is; Skip trusts its input
// (a body already validated, an answer the upstream produced) and only
// counts brackets, which is what the hot paths need.
package jsonscan

import (
	"bytes"
	"errors"
	"fmt"
)

// ErrInvalid is wrapped by every error about malformed JSON.
var ErrInvalid = errors.New("invalid JSON")

// MaxDepth bounds the nesting of arrays and objects that Value accepts, as
// encoding/json does, so that a hostile body cannot exhaust the stack.
const MaxDepth = 10000

// SyntaxError is the error for what at offset off.
func SyntaxError(off int, what string) error {
	return fmt.Errorf("%w: %s at offset %d", ErrInvalid, what, off)
}

// IsSpace reports whether c is JSON whitespace.
func IsSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// Space returns the index of the first byte at or after i that is not
// whitespace (len(in) if none).
func Space(in []byte, i int) int {
	for i < len(in) && IsSpace(in[i]) {
		i++
	}
	return i
}

// String returns the index after the string whose opening quote is at
// in[i], or len(in) and an error when it is not terminated. Escapes are
// skipped, not checked. It looks for quotes alone (IndexByte, which is
// vectorised) and takes a quote as escaped when an odd run of backslashes
// precedes it: twice as fast on prose as stopping at every backslash.
func String(in []byte, i int) (int, error) {
	open := i
	for i++; ; i++ {
		j := bytes.IndexByte(in[i:], '"')
		if j < 0 {
			return len(in), SyntaxError(len(in), "unterminated string")
		}
		i += j
		k := i - 1
		for k > open && in[k] == '\\' {
			k--
		}
		if (i-1-k)%2 == 0 {
			return i + 1, nil
		}
	}
}

// Value returns the span of the JSON value that starts at in[i] after
// optional whitespace. It checks the structure (brackets, keys, colons,
// commas, literals) but not every detail of numbers.
func Value(in []byte, i int) (start, end int, err error) {
	return value(in, i, 0)
}

func value(in []byte, i, depth int) (start, end int, err error) {
	i = Space(in, i)
	if i >= len(in) {
		return i, i, SyntaxError(i, "unexpected end of input")
	}
	start = i
	switch c := in[i]; c {
	case '"':
		end, err = String(in, i)
		return start, end, err
	case '{', '[':
		if depth >= MaxDepth {
			return start, i, SyntaxError(i, "nesting too deep")
		}
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		i = Space(in, i+1)
		if i < len(in) && in[i] == closer {
			return start, i + 1, nil
		}
		for {
			if c == '{' {
				i = Space(in, i)
				if i >= len(in) || in[i] != '"' {
					return start, i, SyntaxError(i, "expected object key")
				}
				if i, err = String(in, i); err != nil {
					return start, i, err
				}
				i = Space(in, i)
				if i >= len(in) || in[i] != ':' {
					return start, i, SyntaxError(i, "expected ':'")
				}
				i++
			}
			if _, i, err = value(in, i, depth+1); err != nil {
				return start, i, err
			}
			i = Space(in, i)
			if i < len(in) && in[i] == ',' {
				i++
				continue
			}
			if i < len(in) && in[i] == closer {
				return start, i + 1, nil
			}
			return start, i, SyntaxError(i, "expected ',' or closing bracket")
		}
	case 't':
		return literal(in, i, "true")
	case 'f':
		return literal(in, i, "false")
	case 'n':
		return literal(in, i, "null")
	}
	for i < len(in) && (in[i] >= '0' && in[i] <= '9' || in[i] == '-' || in[i] == '+' || in[i] == '.' || in[i] == 'e' || in[i] == 'E') {
		i++
	}
	if i == start {
		return start, i, SyntaxError(i, "unexpected character")
	}
	return start, i, nil
}

func literal(in []byte, i int, lit string) (int, int, error) {
	if !bytes.HasPrefix(in[i:], []byte(lit)) {
		return i, i, SyntaxError(i, "invalid literal")
	}
	return i, i + len(lit), nil
}

// Skip returns the index after the value that starts at in[i], trusting
// the input: a string ends at its closing quote, an object or array at the
// bracket that balances its first, anything else at the next delimiter.
// Given malformed JSON it still ends (at len(in) at the latest), with an
// index that means nothing: validate first where that matters.
func Skip(in []byte, i int) int {
	if i >= len(in) {
		return i
	}
	switch in[i] {
	case '"':
		end, _ := String(in, i)
		return end
	case '{', '[':
		depth := 0
		for i < len(in) {
			switch in[i] {
			case '"':
				i, _ = String(in, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default:
		for i < len(in) {
			switch in[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return i
	}
}

// Members calls fn with the span of the name (quotes included) and of the
// value of every member of the object at the start of in, in order, using
// Skip for the values. It returns false if in does not start with an
// object, or when a member is malformed (fn has then seen those before it).
func Members(in []byte, fn func(keyStart, keyEnd, start, end int)) bool {
	i := Space(in, 0)
	if i >= len(in) || in[i] != '{' {
		return false
	}
	i++
	for {
		i = Space(in, i)
		if i >= len(in) || in[i] == '}' {
			return true
		}
		if in[i] == ',' {
			i++
			continue
		}
		if in[i] != '"' {
			return false
		}
		keyStart := i
		keyEnd, err := String(in, i)
		if err != nil {
			return false
		}
		i = Space(in, keyEnd)
		i = Space(in, i+1) // the colon
		if i >= len(in) {
			return false
		}
		end := Skip(in, i)
		if end <= i {
			return false
		}
		fn(keyStart, keyEnd, i, end)
		i = end
	}
}
