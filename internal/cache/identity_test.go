package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/caddyrelay/openairelay/internal/jsonscan"
)

const chatPath = "/v1/chat/completions"

func mustKey(t testing.TB, path, body string) Key {
	t.Helper()
	k, ok, err := Identity("", "POST", path, "gpt-4o", []byte(body), nil)
	if err != nil || !ok {
		t.Fatalf("Identity(%s) = ok %v, err %v", body, ok, err)
	}
	return k
}

func TestIdentityEqual(t *testing.T) {
	for _, tc := range []struct {
		name, path, a, b string
	}{
		{"key order", chatPath,
			`{"model":"x","messages":[{"role":"user","content":"hi"}],"temperature":0.5}`,
			`{"temperature":0.5,"messages":[{"content":"hi","role":"user"}],"model":"x"}`},
		{"whitespace", chatPath,
			`{"messages":[{"role":"user","content":"hi"}]}`,
			" \n{ \"messages\" :\t[ { \"role\":\"user\" , \"content\" : \"hi\" } ] }\r\n"},
		{"number spelling", chatPath,
			`{"messages":[],"temperature":0.5,"max_tokens":100,"seed":-3}`,
			`{"messages":[],"temperature":5e-1,"max_tokens":1.00E2,"seed":-30e-1}`},
		{"number spelling nested", chatPath,
			`{"messages":[],"x":[1,1,1,1,0,0]}`,
			`{"messages":[],"x":[1.0,1e0,10E-1,0.1e1,-0,0.000e99]}`},
		{"string escapes", chatPath,
			`{"messages":[{"role":"user","content":"A/é😀\n"}]}`,
			`{"messages":[{"role":"user","content":"\u0041\/\u00e9\ud83d\ude00\u000a"}]}`},
		{"escaped key", chatPath,
			`{"messages":[{"role":"user","content":"x"}]}`,
			`{"messages":[{"r\u006fle":"user","content":"x"}]}`},
		{"body model ignored", chatPath,
			`{"model":"gpt-4o","messages":[]}`,
			`{"model":"my-alias","messages":[]}`},
		{"ignored fields", chatPath,
			`{"messages":[]}`,
			`{"messages":[],"user":"u1","metadata":{"a":"b"},"stream":true,"stream_options":{"include_usage":true},"store":true,"safety_identifier":"s","prompt_cache_key":"p"}`},
		{"top-level null", chatPath,
			`{"messages":[]}`,
			`{"messages":[],"stop":null,"seed":null,"tools":null}`},
		{"chat defaults", chatPath,
			`{"messages":[]}`,
			`{"messages":[],"temperature":1,"top_p":1.0,"n":1,"presence_penalty":0,"frequency_penalty":-0.0,"logprobs":false,"parallel_tool_calls":true,"service_tier":"auto","modalities":["text"],"response_format":{"type":"text"}}`},
		{"completions defaults", "/v1/completions",
			`{"prompt":"x"}`,
			`{"prompt":"x","temperature":1,"top_p":1,"n":1,"echo":false,"best_of":1,"max_tokens":16,"presence_penalty":0,"frequency_penalty":0}`},
		{"embeddings defaults", "/v1/embeddings",
			`{"input":"x"}`,
			`{"input":"x","encoding_format":"float"}`},
		{"responses defaults", "/v1/responses",
			`{"input":"x"}`,
			`{"input":"x","temperature":1,"top_p":1,"truncation":"disabled","parallel_tool_calls":true,"store":true,"background":false,"service_tier":"auto","tool_choice":"auto","tools":[],"include":[],"text":{"format":{"type":"text"}},"previous_response_id":null}`},
		{"big integers", chatPath,
			`{"messages":[],"seed":9007199254740993}`,
			`{"messages":[],"seed":9007199254740993.000}`},
		{"huge exponents", chatPath,
			`{"messages":[],"x":1e1000000000000000000000}`,
			`{"messages":[],"x":10e999999999999999999999}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if a, b := mustKey(t, tc.path, tc.a), mustKey(t, tc.path, tc.b); a != b {
				t.Errorf("keys differ:\n%s\n%s", tc.a, tc.b)
			}
		})
	}
}

// TestIdentityDistinct lists requests that must never share a key.
func TestIdentityDistinct(t *testing.T) {
	for _, tc := range []struct {
		name, path, a, b string
	}{
		{"message", chatPath,
			`{"messages":[{"role":"user","content":"hi"}]}`,
			`{"messages":[{"role":"user","content":"hi!"}]}`},
		// The Responses API echoes these in its answer: a cached answer
		// must not show one end user another's.
		{"responses user", "/v1/responses", `{"input":"hi","user":"alice"}`, `{"input":"hi","user":"bob"}`},
		{"responses metadata", "/v1/responses", `{"input":"hi","metadata":{"t":"1"}}`, `{"input":"hi","metadata":{"t":"2"}}`},
		{"responses safety_identifier", "/v1/responses", `{"input":"hi","safety_identifier":"a"}`, `{"input":"hi"}`},
		{"role", chatPath,
			`{"messages":[{"role":"user","content":"hi"}]}`,
			`{"messages":[{"role":"system","content":"hi"}]}`},
		{"message order", chatPath,
			`{"messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}`,
			`{"messages":[{"role":"user","content":"b"},{"role":"user","content":"a"}]}`},
		{"tool", chatPath,
			`{"messages":[],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]}`,
			`{"messages":[],"tools":[{"type":"function","function":{"name":"get_time","parameters":{"type":"object"}}}]}`},
		{"image URL", chatPath,
			`{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://a/1.png"}}]}]}`,
			`{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://a/2.png"}}]}]}`},
		{"parameter", chatPath,
			`{"messages":[],"temperature":0.7}`,
			`{"messages":[],"temperature":0.8}`},
		{"parameter vs default", chatPath,
			`{"messages":[]}`,
			`{"messages":[],"temperature":0}`},
		{"string vs number", chatPath,
			`{"messages":[],"x":"1"}`,
			`{"messages":[],"x":1}`},
		{"string vs bool", chatPath,
			`{"messages":[],"x":"true"}`,
			`{"messages":[],"x":true}`},
		{"null vs absent nested", chatPath,
			`{"messages":[{"role":"user","content":"x","name":null}]}`,
			`{"messages":[{"role":"user","content":"x"}]}`},
		{"array order", chatPath,
			`{"messages":[],"stop":["a","b"]}`,
			`{"messages":[],"stop":["b","a"]}`},
		{"nesting", chatPath,
			`{"messages":[],"x":[[1],[2]]}`,
			`{"messages":[],"x":[[1,2]]}`},
		{"empty array vs object", chatPath,
			`{"messages":[],"x":[]}`,
			`{"messages":[],"x":{}}`},
		{"key/value boundary", chatPath,
			`{"messages":[],"x":{"ab":"c"}}`,
			`{"messages":[],"x":{"a":"bc"}}`},
		{"string boundary", chatPath,
			`{"messages":[],"x":["ab","c"]}`,
			`{"messages":[],"x":["a","bc"]}`},
		{"2^53+1", chatPath,
			`{"messages":[],"seed":9007199254740993}`,
			`{"messages":[],"seed":9007199254740992}`},
		{"tiny difference", chatPath,
			`{"messages":[],"temperature":0.30000000000000001}`,
			`{"messages":[],"temperature":0.3}`},
		{"exponent sign", chatPath,
			`{"messages":[],"x":1e5}`,
			`{"messages":[],"x":1e-5}`},
		{"negative", chatPath,
			`{"messages":[],"x":5}`,
			`{"messages":[],"x":-5}`},
		{"lone surrogate", chatPath,
			`{"messages":[],"x":"\ud800"}`,
			`{"messages":[],"x":"\ufffd"}`},
		{"service_tier kept", chatPath,
			`{"messages":[]}`,
			`{"messages":[],"service_tier":"flex"}`},
		{"responses store kept", "/v1/responses",
			`{"input":"x"}`,
			`{"input":"x","store":false}`},
		{"default on another endpoint", chatPath,
			`{"messages":[]}`,
			`{"messages":[],"truncation":"disabled"}`},
		{"ignore only at top", chatPath,
			`{"messages":[{"role":"user","content":"x"}]}`,
			`{"messages":[{"role":"user","content":"x","user":"u"}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if a, b := mustKey(t, tc.path, tc.a), mustKey(t, tc.path, tc.b); a == b {
				t.Errorf("keys collide:\n%s\n%s", tc.a, tc.b)
			}
		})
	}
}

func TestIdentityScope(t *testing.T) {
	body := []byte(`{"messages":[]}`)
	seen := map[Key]string{}
	for _, args := range [][4]string{
		{"", "POST", chatPath, "gpt-4o"},
		{"alice", "POST", chatPath, "gpt-4o"},
		{"bob", "POST", chatPath, "gpt-4o"},
		{"", "POST", chatPath, "gpt-4o-mini"},
		{"", "POST", "/v1/completions", "gpt-4o"},
		{"", "PUT", chatPath, "gpt-4o"},
		{"a", "POST", chatPath, "bgpt-4o"}, // separators: "a"+"b" vs ""+"ab"
		{"ab", "POST", chatPath, "gpt-4o"},
	} {
		k, ok, err := Identity(args[0], args[1], args[2], args[3], body, nil)
		if err != nil || !ok {
			t.Fatal(args, ok, err)
		}
		if prev, dup := seen[k]; dup {
			t.Errorf("%v collides with %s", args, prev)
		}
		seen[k] = fmt.Sprint(args)
	}
}

func TestIdentityIgnoreFields(t *testing.T) {
	o := &IdentityOptions{IgnoreFields: []string{"x_trace"}}
	a, _, _ := Identity("", "POST", chatPath, "m", []byte(`{"messages":[]}`), o)
	b, _, _ := Identity("", "POST", chatPath, "m", []byte(`{"messages":[],"x_trace":"abc"}`), o)
	c, _, _ := Identity("", "POST", chatPath, "m", []byte(`{"messages":[],"x_trace":"abc"}`), nil)
	if a != b {
		t.Error("ignored field changed the key")
	}
	if a == c {
		t.Error("field ignored without being configured")
	}
}

func TestIdentityNotCacheable(t *testing.T) {
	for _, tc := range []struct{ path, body string }{
		{"/v1/responses", `{"input":"x","previous_response_id":"resp_1"}`},
		{"/v1/responses", `{"input":"x","conversation":"conv_1"}`},
		{"/v1/responses", `{"input":"x","conversation":{"id":"conv_1"}}`},
		{"/v1/responses", `{"input":"x","background":true}`},
		{"/v1/responses", `{"prompt":{"id":"pmpt_1"}}`},
		{chatPath, `{"messages":[],"temperature":1,"temperature":0.5}`},
		{chatPath, `{"messages":[{"role":"user","role":"system","content":"x"}]}`},
		{chatPath, `{"user":"a","user":"b","messages":[]}`},
		{chatPath, `[1,2]`},
		{chatPath, `"x"`},
		{chatPath, `null`},
	} {
		k, ok, err := Identity("", "POST", tc.path, "m", []byte(tc.body), nil)
		if err != nil || ok || k != (Key{}) {
			t.Errorf("%s: ok %v, err %v; want not cacheable", tc.body, ok, err)
		}
	}
	// The same fields in their harmless form are fine.
	for _, body := range []string{
		`{"input":"x","previous_response_id":null}`,
		`{"input":"x","background":false}`,
		`{"prompt":{"id":"pmpt_1","version":"2"}}`,
	} {
		mustKey(t, "/v1/responses", body)
	}
}

func TestIdentityInvalid(t *testing.T) {
	for _, body := range []string{
		``, ` `, `{`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{"a":1}x`, `{"a":1}{}`,
		`{"a":01}`, `{"a":1.}`, `{"a":.5}`, `{"a":1e}`, `{"a":+1}`, `{"a":-}`,
		`{"a":tru}`, `{"a":nul}`, `{"a":"\x"}`, `{"a":"\u12"}`, "{\"a\":\"\x01\"}",
		"{\"a\":\"\xff\"}", "{\"a\":\"\xed\xa0\x80\"}", `{"a":"x`, `{a:1}`, `{"a":[1 2]}`,
		`{"a":[1,]}`, `[`, `{"a":NaN}`,
		strings.Repeat("[", jsonscan.MaxDepth+1) + strings.Repeat("]", jsonscan.MaxDepth+1),
	} {
		_, ok, err := Identity("", "POST", chatPath, "m", []byte(body), nil)
		if !errors.Is(err, ErrInvalidJSON) || ok {
			t.Errorf("%q: ok %v, err %v; want ErrInvalidJSON", body, ok, err)
		}
	}
}

func TestEndpointOf(t *testing.T) {
	for path, want := range map[string]Endpoint{
		"/v1/chat/completions":         EndpointChatCompletions,
		"/openai/v1/chat/completions/": EndpointChatCompletions,
		"/v1/completions":              EndpointCompletions,
		"/v1/embeddings":               EndpointEmbeddings,
		"/v1/responses":                EndpointResponses,
		"/v1/moderations":              EndpointModerations,
		"/v1/responses/resp_1/cancel":  EndpointUnknown,
		"/v1/xcompletions":             EndpointUnknown,
		"/v1/models":                   EndpointUnknown,
	} {
		if got := EndpointOf(path); got != want {
			t.Errorf("EndpointOf(%q) = %v, want %v", path, got, want)
		}
	}
}

// ---- Fuzzing ---------------------------------------------------------------------

// FuzzIdentity checks two things on every input. Read as JSON, an object must keep its
// key when re-encoded by encoding/json (keys sorted, numbers and strings re-spelled).
// Read as a seed, it drives a random JSON object, which must keep its key under any
// spelling (keys shuffled, whitespace, numbers and strings respelled) and change it
// when any one value changes.
func FuzzIdentity(f *testing.F) {
	for _, s := range []string{
		`{"messages":[{"role":"user","content":"hi"}],"temperature":0.5}`,
		`{"a":[1,2.5e3,-0.001,{"b":null,"c":true}],"d":"\u00e9\n"}`,
		`{"x":1e400,"y":123456789012345678901234567890}`,
		`{}`, `[]`, `{"a":"\ud800"}`, `{"a":1,"a":2}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkReencoded(t, data)
		seed := uint64(len(data))
		for _, c := range data {
			seed = seed*1099511628211 + uint64(c)
		}
		checkRandomObject(t, rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)))
	})
}

func checkReencoded(t *testing.T, data []byte) {
	k, ok, err := Identity("", "POST", "/x", "m", data, nil)
	valid := json.Valid(data)
	if err == nil && !valid {
		t.Fatalf("accepted invalid JSON %q", data)
	}
	if err != nil || !ok {
		return
	}
	// Lone surrogates become U+FFFD in encoding/json; that is its choice, not ours.
	if strings.Contains(strings.ToLower(string(data)), `\ud`) {
		return
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("encoding/json rejects what Identity accepted: %v", err)
	}
	re, err := json.Marshal(v)
	if err != nil {
		return
	}
	k2, ok2, err := Identity("", "POST", "/x", "m", re, nil)
	if err != nil || !ok2 || k2 != k {
		t.Fatalf("re-encoding changed the key: %s -> %s (ok %v, err %v)", data, re, ok2, err)
	}
}

// jv is a generated JSON value.
type jv struct {
	kind byte // 'n' null, 'b' bool, 'i' integer, 'd' decimal, 's' string, 'a' array, 'o' object
	b    bool
	// number: digits × 10^exp, sign neg
	neg    bool
	digits string
	exp    int
	s      string
	elems  []*jv
	keys   []string
}

var fuzzAlphabet = []rune("ab\"\\/\n\t\x01 é😀\u2028{}[],:0")

func randString(r *rand.Rand) string {
	n := r.IntN(6)
	var b strings.Builder
	for range n {
		b.WriteRune(fuzzAlphabet[r.IntN(len(fuzzAlphabet))])
	}
	return b.String()
}

func randValue(r *rand.Rand, depth int) *jv {
	k := r.IntN(7)
	if depth > 3 && k >= 5 {
		k = r.IntN(5)
	}
	switch k {
	case 0:
		return &jv{kind: 'n'}
	case 1:
		return &jv{kind: 'b', b: r.IntN(2) == 0}
	case 2, 3:
		digits := fmt.Sprint(1 + r.IntN(999))
		if r.IntN(4) == 0 {
			digits = fmt.Sprint(r.Uint64()|1) + fmt.Sprint(1+r.IntN(9))
		}
		digits = strings.TrimRight(digits, "0")
		if digits == "" {
			digits = "1"
		}
		return &jv{kind: 'd', neg: r.IntN(2) == 0, digits: digits, exp: r.IntN(41) - 20}
	case 4:
		return &jv{kind: 's', s: randString(r)}
	case 5:
		v := &jv{kind: 'a'}
		for range r.IntN(4) {
			v.elems = append(v.elems, randValue(r, depth+1))
		}
		return v
	}
	return randObject(r, depth+1)
}

func randObject(r *rand.Rand, depth int) *jv {
	v := &jv{kind: 'o'}
	seen := map[string]bool{}
	for range r.IntN(5) {
		k := randString(r)
		if seen[k] {
			continue
		}
		seen[k] = true
		v.keys = append(v.keys, k)
		v.elems = append(v.elems, randValue(r, depth))
	}
	return v
}

// write spells v in one of many equivalent ways, chosen by r.
func (v *jv) write(b *strings.Builder, r *rand.Rand) {
	ws := func() {
		if r.IntN(3) == 0 {
			b.WriteString([]string{" ", "\n", "\t ", "\r\n  "}[r.IntN(4)])
		}
	}
	ws()
	switch v.kind {
	case 'n':
		b.WriteString("null")
	case 'b':
		b.WriteString(map[bool]string{true: "true", false: "false"}[v.b])
	case 'd':
		writeNumber(b, r, v.neg, v.digits, v.exp)
	case 's':
		writeString(b, r, v.s)
	case 'a':
		b.WriteByte('[')
		for i, e := range v.elems {
			if i > 0 {
				b.WriteByte(',')
			}
			e.write(b, r)
		}
		ws()
		b.WriteByte(']')
	case 'o':
		b.WriteByte('{')
		for n, i := range r.Perm(len(v.keys)) {
			if n > 0 {
				b.WriteByte(',')
			}
			ws()
			writeString(b, r, v.keys[i])
			ws()
			b.WriteByte(':')
			v.elems[i].write(b, r)
		}
		ws()
		b.WriteByte('}')
	}
	ws()
}

// writeNumber spells digits × 10^exp with a random split between integer and fraction,
// padding zeros and exponent notation.
func writeNumber(b *strings.Builder, r *rand.Rand, neg bool, digits string, exp int) {
	if neg {
		b.WriteByte('-')
	}
	// Shift the point: value = 0.digits × 10^(exp+len(digits)) = d.igits × 10^...
	digits += strings.Repeat("0", r.IntN(3))
	exp -= len(digits) - len(strings.TrimRight(digits, "0"))
	point := r.IntN(len(digits) + 1) // digits before the point
	e := exp + len(digits) - point
	intPart, frac := digits[:point], digits[point:]
	if intPart == "" {
		intPart = "0"
	} else {
		intPart = strings.TrimLeft(intPart, "0")
		if intPart == "" {
			intPart = "0"
		}
	}
	b.WriteString(intPart)
	if frac != "" {
		b.WriteString("." + frac)
	}
	if e != 0 || r.IntN(3) == 0 {
		b.WriteString([]string{"e", "E"}[r.IntN(2)])
		switch {
		case e < 0:
			b.WriteByte('-')
		case r.IntN(2) == 0:
			b.WriteByte('+')
		}
		b.WriteString(strings.Repeat("0", r.IntN(2)))
		fmt.Fprint(b, max(e, -e))
	}
}

func writeString(b *strings.Builder, r *rand.Rand, s string) {
	b.WriteByte('"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteRune(c)
		case c < 0x20:
			fmt.Fprintf(b, `\u%04x`, c)
		case r.IntN(4) == 0:
			if c >= 0x10000 {
				c -= 0x10000
				fmt.Fprintf(b, `\u%04X\u%04x`, 0xD800+(c>>10), 0xDC00+(c&0x3FF))
			} else {
				fmt.Fprintf(b, `\u%04x`, c)
			}
		case c == '/' && r.IntN(2) == 0:
			b.WriteString(`\/`)
		default:
			b.WriteRune(c)
		}
	}
	b.WriteByte('"')
}

func (v *jv) spell(r *rand.Rand) []byte {
	var b strings.Builder
	v.write(&b, r)
	return []byte(b.String())
}

// leaves returns every scalar in v, to be mutated one at a time.
func (v *jv) leaves() []*jv {
	switch v.kind {
	case 'a', 'o':
		var out []*jv
		for _, e := range v.elems {
			out = append(out, e.leaves()...)
		}
		return out
	}
	return []*jv{v}
}

// mutate changes v's value, keeping or changing its kind.
func (v *jv) mutate(r *rand.Rand) {
	switch v.kind {
	case 'n':
		*v = jv{kind: 'b', b: r.IntN(2) == 0}
	case 'b':
		v.b = !v.b
	case 'd':
		switch r.IntN(3) {
		case 0:
			v.neg = !v.neg
		case 1:
			v.exp++
		default:
			v.digits += "1"
		}
	case 's':
		switch r.IntN(3) {
		case 0:
			*v = jv{kind: 'd', digits: "1"}
		default:
			v.s += "x"
		}
	}
}

func checkRandomObject(t *testing.T, r *rand.Rand) {
	// Wrap the object so that no generated key can be one the identity leaves out.
	root := &jv{kind: 'o', keys: []string{"messages"}, elems: []*jv{randObject(r, 0)}}
	a, b := root.spell(r), root.spell(r)
	ka, oka, erra := Identity("", "POST", chatPath, "m", a, nil)
	kb, okb, errb := Identity("", "POST", chatPath, "m", b, nil)
	if erra != nil || errb != nil || !oka || !okb {
		t.Fatalf("rejected:\n%s (%v %v)\n%s (%v %v)", a, oka, erra, b, okb, errb)
	}
	if ka != kb {
		t.Fatalf("equal objects, different keys:\n%s\n%s", a, b)
	}
	leaves := root.leaves()
	if len(leaves) == 0 {
		return
	}
	leaves[r.IntN(len(leaves))].mutate(r)
	c := root.spell(r)
	kc, okc, errc := Identity("", "POST", chatPath, "m", c, nil)
	if errc != nil || !okc {
		t.Fatalf("rejected mutated %s: %v", c, errc)
	}
	if kc == ka {
		t.Fatalf("different objects, same key:\n%s\n%s", a, c)
	}
}

// TestIdentityRandom runs the generator part of the fuzz target on many seeds, so that
// plain `go test` covers it too.
func TestIdentityRandom(t *testing.T) {
	for seed := range uint64(3000) {
		checkRandomObject(t, rand.New(rand.NewPCG(seed, 7)))
	}
}

// ---- Benchmarks ------------------------------------------------------------------

// chatBody returns a realistic chat request of about size bytes: a system prompt,
// tools, and alternating turns of prose.
func chatBody(size int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("the quick brown fox jumps over a lazy dog while résumé naïve café " +
		"tokens latency cache upstream relay stream chunk model answer question because")
	sentence := func(n int) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(words[r.IntN(len(words))])
		}
		b.WriteString(".\n")
		return b.String()
	}
	req := map[string]any{
		"model":       "gpt-4o",
		"temperature": 0.2,
		"max_tokens":  1024,
		"tools": []any{map[string]any{"type": "function", "function": map[string]any{
			"name": "lookup", "description": "Look a term up.",
			"parameters": map[string]any{"type": "object", "properties": map[string]any{
				"term": map[string]any{"type": "string"}}, "required": []string{"term"}},
		}}},
	}
	msgs := []any{map[string]any{"role": "system", "content": sentence(60)}}
	for n := 0; ; n++ {
		role := []string{"user", "assistant"}[n%2]
		msgs = append(msgs, map[string]any{"role": role, "content": sentence(40) + sentence(80)})
		req["messages"] = msgs
		if b, _ := json.Marshal(req); len(b) >= size {
			return b
		}
	}
}

func benchmarkIdentity(b *testing.B, body []byte) {
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, ok, err := Identity("client", "POST", chatPath, "gpt-4o", body, nil); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

func BenchmarkIdentity100KB(b *testing.B) { benchmarkIdentity(b, chatBody(100<<10)) }

func BenchmarkIdentitySmall(b *testing.B) {
	benchmarkIdentity(b, []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"What is the capital of France?"}],"temperature":0,"max_tokens":50}`))
}

// BenchmarkUnmarshal100KB is the baseline Identity is meant to beat: decoding the same
// body into map[string]any with encoding/json, before any sorting or hashing.
func BenchmarkUnmarshal100KB(b *testing.B) {
	body := chatBody(100 << 10)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var v map[string]any
		if err := json.Unmarshal(body, &v); err != nil {
			b.Fatal(err)
		}
	}
}
