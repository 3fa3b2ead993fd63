package jsonscan

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestValue(t *testing.T) {
	tests := []struct {
		in      string
		end     int // -1: an error
		skipEnd int // what Skip returns from the first non-space byte
	}{
		{`"a\"b" x`, 6, 6},
		{` {"a":[1,{"b":"}"}],"c":null} tail`, 29, 29},
		{`[]`, 2, 2},
		{`{ }`, 3, 3},
		{`-1.5e+3,`, 7, 7},
		{`true]`, 4, 4},
		{`nul`, -1, 3},
		{`{"a" 1}`, -1, 7},
		{`{"a":1,}`, -1, 8},
		{`[1 2]`, -1, 5},
		{`"unterminated`, -1, 13},
		{`"ends in escape\`, -1, 16},
		{`{"a":[`, -1, 6},
		{``, -1, 0},
		{`@`, -1, 1},
		{strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), -1, 2*MaxDepth + 2},
	}
	for _, tt := range tests {
		_, end, err := Value([]byte(tt.in), 0)
		if tt.end < 0 {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Value(%.40q): end %d, err %v; want ErrInvalid", tt.in, end, err)
			}
		} else if err != nil || end != tt.end {
			t.Errorf("Value(%.40q) = %d, %v; want %d", tt.in, end, err, tt.end)
		}
		in := []byte(tt.in)
		if got := Skip(in, Space(in, 0)); got != tt.skipEnd {
			t.Errorf("Skip(%.40q) = %d; want %d", tt.in, got, tt.skipEnd)
		}
	}
}

func TestMembers(t *testing.T) {
	tests := []struct {
		in   string
		want []string // name=value
		ok   bool
	}{
		{`{"a":1, "b" : {"c":[2]} ,"d":"x,y"}`, []string{`"a"=1`, `"b"={"c":[2]}`, `"d"="x,y"`}, true},
		{` {} `, nil, true},
		{`[1]`, nil, false},
		{`{"a":1,"b`, []string{`"a"=1`}, false},
		{`{"a":`, nil, false},
		{`{1:2}`, nil, false},
	}
	for _, tt := range tests {
		var got []string
		in := []byte(tt.in)
		ok := Members(in, func(ks, ke, s, e int) { got = append(got, string(in[ks:ke])+"="+string(in[s:e])) })
		if ok != tt.ok || strings.Join(got, " ") != strings.Join(tt.want, " ") {
			t.Errorf("Members(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// FuzzScan checks the scanner against encoding/json: a valid document is
// accepted by Value as one value ending where the document does, Skip
// agrees with it, and Members sees the members encoding/json decodes.
func FuzzScan(f *testing.F) {
	for _, s := range []string{`{"model":"gpt-4o","messages":[{"role":"user","content":"hi \"x\""}]}`, `[1,2,{"a":null}]`, `"s"`, `12e3`, `{"a":{"b":[true,false]}}`, `{"a\u0062":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		start, end, err := Value(in, 0)
		if !json.Valid(in) {
			return
		}
		if err != nil || Space(in, end) != len(in) {
			t.Fatalf("valid %q: Value = %d..%d, %v", in, start, end, err)
		}
		if got := Skip(in, start); got != end {
			t.Fatalf("valid %q: Skip = %d, Value = %d", in, got, end)
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(in, &obj) != nil || obj == nil {
			return
		}
		n := 0
		if !Members(in, func(ks, ke, s, e int) {
			var name string
			if json.Unmarshal(in[ks:ke], &name) != nil {
				t.Fatalf("%q: member name %q is not a string", in, in[ks:ke])
			}
			if _, ok := obj[name]; !ok {
				t.Fatalf("%q: member %q not in the decoded object", in, name)
			}
			if !json.Valid(in[s:e]) || len(bytes.TrimSpace(in[s:e])) != e-s {
				t.Fatalf("%q: member %q has value %q", in, name, in[s:e])
			}
			n++
		}) {
			t.Fatalf("valid object %q: Members failed", in)
		}
		if n < len(obj) {
			t.Fatalf("%q: Members saw %d members, encoding/json %d", in, n, len(obj))
		}
	})
}

func TestString(t *testing.T) {
	tests := []struct {
		in  string
		end int // -1: unterminated
	}{
		{`"abc"x`, 5},
		{`"a\"b"`, 6},
		{`"a\\"b"`, 5},
		{`"a\\\"b"`, 8},
		{`"\\"`, 4},
		{`"\"`, -1},
		{`"abc\`, -1},
		{`"`, -1},
		{`""`, 2},
	}
	for _, tt := range tests {
		end, err := String([]byte(tt.in), 0)
		if tt.end < 0 {
			if err == nil || end != len(tt.in) {
				t.Errorf("String(%q) = %d, %v; want unterminated", tt.in, end, err)
			}
		} else if err != nil || end != tt.end {
			t.Errorf("String(%q) = %d, %v; want %d", tt.in, end, err, tt.end)
		}
	}
}
