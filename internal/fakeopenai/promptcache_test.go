package fakeopenai

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// nRunes is exactly n runes of fill repeated.
func nRunes(n int, fill string) string {
	var b strings.Builder
	for utf8.RuneCountInString(b.String()) < n {
		b.WriteString(fill)
	}
	s := b.String()
	for utf8.RuneCountInString(s) > n {
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return s
}

// tokensOf is n tokens' worth of text by the fake's estimate (4n runes).
func tokensOf(n int, fill string) string { return nRunes(4*n, fill) }

type cacheStep struct {
	key   string        // "" = testKey
	model string        // "" = gpt-4o-mini
	api   string        // "chat" (default), "stream" (chat, include_usage), "responses"
	instr string        // responses: instructions, counted before the input
	text  string        // the user message / input
	after time.Duration // advance the clock by this before the request
	want  int           // cached tokens the answer must report
}

// cachedOf sends a step and returns the prompt and cached tokens reported.
func cachedOf(t *testing.T, s *Server, st cacheStep) (prompt, cached int) {
	t.Helper()
	key, model := st.key, st.model
	if key == "" {
		key = testKey
	}
	if model == "" {
		model = "gpt-4o-mini"
	}
	msgs := []map[string]string{{"role": "user", "content": st.text}}
	var body map[string]any
	path := "/chat/completions"
	switch st.api {
	case "", "chat":
		body = map[string]any{"model": model, "messages": msgs}
	case "stream":
		body = map[string]any{"model": model, "messages": msgs, "stream": true, "stream_options": map[string]bool{"include_usage": true}}
	case "responses":
		path = "/responses"
		body = map[string]any{"model": model, "input": st.text, "store": false}
		if st.instr != "" {
			body["instructions"] = st.instr
		}
	default:
		t.Fatalf("unknown api %q", st.api)
	}
	raw, _ := json.Marshal(body)
	resp, b := request(t, s, "POST", path, key, string(raw))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if st.api == "stream" {
		evs := parseSSE(t, b)
		if len(evs) < 2 || evs[len(evs)-1].data != "[DONE]" {
			t.Fatalf("stream %s", b)
		}
		b = []byte(evs[len(evs)-2].data) // the usage chunk
	}
	var u struct {
		Usage struct {
			PromptTokens  *int `json:"prompt_tokens"`
			InputTokens   *int `json:"input_tokens"`
			PromptDetails *struct {
				CachedTokens *int `json:"cached_tokens"`
			} `json:"prompt_tokens_details"`
			InputDetails *struct {
				CachedTokens *int `json:"cached_tokens"`
			} `json:"input_tokens_details"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(b, &u); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	p, d := u.Usage.PromptTokens, u.Usage.PromptDetails
	if st.api == "responses" {
		p = u.Usage.InputTokens
		if d = u.Usage.InputDetails; u.Usage.PromptDetails != nil {
			t.Errorf("a response with prompt_tokens_details: %.300s", b)
		}
	}
	if p == nil || d == nil || d.CachedTokens == nil {
		t.Fatalf("usage without the prompt tokens or their cached_tokens: %.500s", b)
	}
	return *p, *d.CachedTokens
}

func TestPromptCache(t *testing.T) {
	base1200 := tokensOf(1200, "the quick brown fox ")
	other1500 := tokensOf(1500, "lorem ipsum dolor sit ")
	// Runes sharing their first byte: é is C3 A9, è is C3 A8.
	accents := nRunes(4*1152-1, "é")
	const (
		teamA = "sk-team-a-00000000000001"
		teamB = "sk-team-b-00000000000001"
		loner = "sk-loner-000000000000001"
	)
	for _, tc := range []struct {
		name  string
		opts  Options
		steps []cacheStep
	}{
		{"short prompts are never cached", Options{}, []cacheStep{
			{text: tokensOf(1000, "abcd "), want: 0},
			{text: tokensOf(1000, "abcd "), want: 0},
		}},
		{"an identical prompt: 1024 + 128k of its tokens", Options{}, []cacheStep{
			{text: tokensOf(1100, "abcd "), want: 0},
			{text: tokensOf(1100, "abcd "), want: 1024},
			{text: tokensOf(1100, "abcd "), want: 1024},
		}},
		{"1300 tokens cache 1280", Options{}, []cacheStep{
			{text: tokensOf(1300, "wxyz "), want: 0},
			{text: tokensOf(1300, "wxyz "), want: 1280},
		}},
		{"on a block boundary", Options{}, []cacheStep{
			{text: tokensOf(1152, "wxyz "), want: 0},
			{text: tokensOf(1152, "wxyz "), want: 1152},
		}},
		{"a shared prefix, different ends", Options{}, []cacheStep{
			{text: base1200 + tokensOf(100, "first ending "), want: 0},
			{text: base1200 + tokensOf(300, "second ending "), want: 1152},
		}},
		{"a shared prefix under 1024 tokens", Options{}, []cacheStep{
			{text: tokensOf(1023, "abcd ") + tokensOf(200, "X"), want: 0},
			{text: tokensOf(1023, "abcd ") + tokensOf(200, "Y"), want: 0},
		}},
		{"only whole tokens of the prefix count", Options{}, []cacheStep{
			{text: nRunes(4*1024-1, "abcd ") + tokensOf(100, "X"), want: 0},
			{text: nRunes(4*1024-1, "abcd ") + tokensOf(100, "Y"), want: 0},
			{text: nRunes(4*1024+3, "efgh ") + tokensOf(100, "X"), want: 0},
			{text: nRunes(4*1024+3, "efgh ") + tokensOf(100, "Y"), want: 1024},
		}},
		{"a rune differing in its second byte is not shared", Options{}, []cacheStep{
			{text: accents + "é" + tokensOf(100, "X"), want: 0},
			{text: accents + "è" + tokensOf(100, "X"), want: 1024}, // 4607 runes: 1151 tokens
			{text: accents + "é" + tokensOf(100, "Y"), want: 1152}, // 4608 runes with the first
		}},
		{"a shorter prompt that is a prefix of a cached one", Options{}, []cacheStep{
			{text: tokensOf(2000, "abcd "), want: 0},
			{text: tokensOf(1100, "abcd "), want: 1024},
		}},
		{"the longest match of several", Options{}, []cacheStep{
			{text: base1200 + tokensOf(100, "a"), want: 0},
			{text: other1500 + tokensOf(100, "b"), want: 0},
			{text: other1500 + tokensOf(100, "c"), want: 1408},
			{text: base1200 + tokensOf(100, "d"), want: 1152},
		}},
		{"per model", Options{}, []cacheStep{
			{text: tokensOf(1100, "abcd "), want: 0},
			{model: "gpt-4o", text: tokensOf(1100, "abcd "), want: 0},
			{model: "gpt-4o", text: tokensOf(1100, "abcd "), want: 1024},
		}},
		{"per project: keys of one project share their cache", Options{}, []cacheStep{
			{key: teamA, text: tokensOf(1100, "abcd "), want: 0},
			{key: loner, text: tokensOf(1100, "abcd "), want: 0},
			{key: teamB, text: tokensOf(1100, "abcd "), want: 1024},
		}},
		{"remembered for 5 minutes", Options{}, []cacheStep{
			{text: tokensOf(1100, "abcd "), want: 0},
			{after: 4*time.Minute + 59*time.Second, text: tokensOf(1100, "abcd "), want: 1024},
			{after: 4*time.Minute + 59*time.Second, text: tokensOf(1100, "abcd "), want: 1024}, // the last use counts
			{after: 5*time.Minute + time.Second, text: tokensOf(1100, "abcd "), want: 0},
		}},
		{"responses: instructions and input", Options{}, []cacheStep{
			{api: "responses", instr: tokensOf(600, "be brief "), text: tokensOf(600, "question "), want: 0},
			{api: "responses", instr: tokensOf(600, "be brief "), text: tokensOf(600, "question "), want: 1152},
			{api: "responses", instr: tokensOf(600, "be brief "), text: tokensOf(300, "other "), want: 0},
		}},
		{"stream: the final usage chunk", Options{}, []cacheStep{
			{api: "stream", text: tokensOf(1300, "abcd "), want: 0},
			{api: "stream", text: tokensOf(1300, "abcd "), want: 1280},
			{text: tokensOf(1300, "abcd "), want: 1280},
		}},
		{"NoPromptCache", Options{NoPromptCache: true}, []cacheStep{
			{text: tokensOf(1100, "abcd "), want: 0},
			{text: tokensOf(1100, "abcd "), want: 0},
			{api: "responses", text: tokensOf(1100, "abcd "), want: 0},
			{api: "responses", text: tokensOf(1100, "abcd "), want: 0},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
			tc.opts.Now = clk.Now
			s := newServer(t, tc.opts)
			s.ConfigureKey(teamA, KeyConfig{Project: "team"})
			s.ConfigureKey(teamB, KeyConfig{Project: "team"})
			s.ConfigureKey(loner, KeyConfig{})
			for i, st := range tc.steps {
				clk.Add(st.after)
				prompt, cached := cachedOf(t, s, st)
				if want := (utf8.RuneCountInString(st.instr+st.text) + 3) / 4; prompt != want {
					t.Errorf("step %d: prompt tokens %d; want %d", i, prompt, want)
				}
				if cached != st.want {
					t.Errorf("step %d: cached_tokens %d; want %d (prompt %d)", i, cached, st.want, prompt)
				}
			}
		})
	}
}

// TestPromptCacheBounded: a project and model remember their last 256
// prompts.
func TestPromptCacheBounded(t *testing.T) {
	for _, tc := range []struct {
		others int
		want   int
	}{{255, 1024}, {256, 0}} {
		t.Run(fmt.Sprint(tc.others), func(t *testing.T) {
			s := newServer(t, Options{})
			first := tokensOf(1100, "abcd ")
			cachedOf(t, s, cacheStep{text: first})
			for i := range tc.others {
				cachedOf(t, s, cacheStep{text: fmt.Sprintf("%04d ", i) + first})
			}
			if _, cached := cachedOf(t, s, cacheStep{text: first}); cached != tc.want {
				t.Errorf("after %d other prompts: cached_tokens %d; want %d", tc.others, cached, tc.want)
			}
		})
	}
	s := newServer(t, Options{})
	s.ClearPromptCache()
	cachedOf(t, s, cacheStep{text: tokensOf(1100, "abcd ")})
	s.ClearPromptCache()
	if _, cached := cachedOf(t, s, cacheStep{text: tokensOf(1100, "abcd ")}); cached != 0 {
		t.Errorf("after ClearPromptCache: cached_tokens %d", cached)
	}
}

// TestPromptCacheRefusedNotRemembered: a request the rate limits refuse
// was never processed, so it caches nothing.
func TestPromptCacheRefusedNotRemembered(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	s := newServer(t, Options{Now: clk.Now})
	s.AddKey("sk-limited-0000000000001", KeyLimits{RPM: 60})
	st := cacheStep{key: "sk-limited-0000000000001", text: tokensOf(1100, "abcd ")}
	cachedOf(t, s, cacheStep{key: st.key, text: "x"}) // the bucket's one request
	raw, _ := json.Marshal(map[string]any{"model": "gpt-4o-mini", "messages": []map[string]string{{"role": "user", "content": st.text}}})
	if resp, b := request(t, s, "POST", "/chat/completions", st.key, string(raw)); resp.StatusCode != 429 {
		t.Fatalf("status %d: %s; want 429", resp.StatusCode, b)
	}
	clk.Add(time.Second)
	if _, cached := cachedOf(t, s, st); cached != 0 {
		t.Errorf("a refused request was remembered: cached_tokens %d", cached)
	}
}

func TestCachedTokensFor(t *testing.T) {
	for _, tc := range []struct{ n, want int }{
		{0, 0}, {1023, 0}, {1024, 1024}, {1151, 1024}, {1152, 1152}, {1279, 1152}, {1280, 1280}, {10000, 9984},
	} {
		if got := cachedTokensFor(tc.n); got != tc.want {
			t.Errorf("cachedTokensFor(%d) = %d; want %d", tc.n, got, tc.want)
		}
	}
}

func TestCommonPrefixRunes(t *testing.T) {
	long := strings.Repeat("a", 200)
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"abc", "", 0},
		{"abc", "abd", 2},
		{"abc", "abc", 3},
		{"abc", "abcdef", 3},
		{long + "x", long + "y", 200},
		{long[:130] + "x" + long, long, 130},
		{"héllo", "hèllo", 1},
		{"日本語", "日本人", 2},
		{"日本", "日本語", 2},
	} {
		if got := commonPrefixRunes(tc.a, tc.b); got != tc.want {
			t.Errorf("commonPrefixRunes(%q, %q) = %d; want %d", tc.a, tc.b, got, tc.want)
		}
		if got := commonPrefixRunes(tc.b, tc.a); got != tc.want {
			t.Errorf("commonPrefixRunes(%q, %q) = %d; want %d", tc.b, tc.a, got, tc.want)
		}
	}
}
