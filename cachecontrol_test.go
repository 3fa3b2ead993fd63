package openairelay

import (
	"net/http"
	"testing"
	"time"

	"github.com/caddyrelay/openairelay/internal/cache"
	"github.com/caddyrelay/openairelay/internal/limit"
)

func TestParseCacheControl(t *testing.T) {
	tests := []struct {
		header []string
		want   cacheControl
	}{
		{nil, cacheControl{maxAge: -1}},
		{[]string{"no-store"}, cacheControl{noStore: true, maxAge: -1}},
		{[]string{"No-Cache"}, cacheControl{noCache: true, maxAge: -1}},
		{[]string{"max-age=60"}, cacheControl{maxAge: time.Minute}},
		{[]string{`max-age="30"`}, cacheControl{maxAge: 30 * time.Second}},
		{[]string{"max-age=0"}, cacheControl{maxAge: 0}},
		{[]string{"max-age=-5"}, cacheControl{maxAge: -1}},
		{[]string{"max-age=soon"}, cacheControl{maxAge: -1}},
		{[]string{"no-cache, max-age=10"}, cacheControl{noCache: true, maxAge: 10 * time.Second}},
		{[]string{"no-transform", " no-store , private"}, cacheControl{noStore: true, maxAge: -1}},
	}
	for _, tt := range tests {
		h := http.Header{}
		for _, v := range tt.header {
			h.Add("Cache-Control", v)
		}
		if got := parseCacheControl(h); got != tt.want {
			t.Errorf("%q: %+v; want %+v", tt.header, got, tt.want)
		}
	}
}

// TestClientRateLimitHeaders checks the headers a client with limits gets:
// per minute, as OpenAI reports them (remaining is the limit less what is
// consumed and not refilled; reset is the time until the bucket is whole).
func TestClientRateLimitHeaders(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name                string
		limits              limit.Limits
		requests, tokens    int64 // taken at now, each request with tokens
		wantReqs, wantToks  string
		wantResetR, resetTk string
	}{
		{"unused", limit.Limits{RPM: 60, TPM: 6000}, 0, 0, "60", "6000", "0s", "0s"},
		{"one request", limit.Limits{RPM: 60, TPM: 6000}, 1, 100, "59", "5900", "1s", "1s"},
		{"three requests", limit.Limits{RPM: 60, TPM: 60000}, 3, 1000, "57", "57000", "3s", "3s"},
		{"requests only", limit.Limits{RPM: 600}, 1, 10, "599", "", "100ms", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.limits.Burst = time.Minute // room for every request at once
			l := limit.NewLimiter(tt.limits)
			for range tt.requests {
				r, _, ok := l.Reserve(now, tt.tokens)
				if !ok {
					t.Fatal("no room")
				}
				r.Settle(now, tt.tokens)
			}
			h := http.Header{}
			setClientRateLimitHeaders(h, l, now)
			check := func(name, want string) {
				if got := h.Get(name); got != want {
					t.Errorf("%s = %q; want %q", name, got, want)
				}
			}
			check("X-Ratelimit-Remaining-Requests", tt.wantReqs)
			check("X-Ratelimit-Remaining-Tokens", tt.wantToks)
			check("X-Ratelimit-Reset-Requests", tt.wantResetR)
			check("X-Ratelimit-Reset-Tokens", tt.resetTk)
			if tt.limits.TPM == 0 && h.Get("X-Ratelimit-Limit-Tokens") != "" {
				t.Error("a token limit reported for a client without one")
			}
		})
	}
}

func TestFormatReset(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", -time.Second: "0s", time.Microsecond: "1ms", 20 * time.Millisecond: "20ms",
		time.Second: "1s", 1500 * time.Millisecond: "1.5s", 6 * time.Minute: "6m0s",
	} {
		if got := formatReset(d); got != want {
			t.Errorf("formatReset(%v) = %q; want %q", d, got, want)
		}
	}
}

// TestLastEventEnds checks when a recorded stream is whole: its last event
// is the API's end, not text that merely contains the mark.
func TestLastEventEnds(t *testing.T) {
	tests := []struct {
		name     string
		endpoint cache.Endpoint
		body     string
		want     bool
	}{
		{"chat done", cache.EndpointChatCompletions, "data: {\"a\":1}\n\ndata: [DONE]\n\n", true},
		{"chat done, no space", cache.EndpointChatCompletions, "data: {}\n\ndata:[DONE]\n\n", true},
		{"chat done, event not closed", cache.EndpointChatCompletions, "data: {}\n\ndata: [DONE]\n", false},
		{"chat, the mark as content", cache.EndpointChatCompletions, "data: {\"content\":\"data: [DONE]\"}\n\n", false},
		{"chat, the mark in an earlier event", cache.EndpointChatCompletions, "data: [DONE]\n\ndata: {}\n\n", false},
		{"only the end", cache.EndpointChatCompletions, "data: [DONE]\n\n", true},
		{"responses completed", cache.EndpointResponses, "event: response.created\ndata: {}\n\nevent: response.completed\ndata: {\"type\":\"response.completed\"}\n\n", true},
		{"responses, completed as text", cache.EndpointResponses, "event: response.output_text.delta\ndata: {\"delta\":\"event: response.completed\\n\"}\n\n", false},
		{"responses, completed not closed", cache.EndpointResponses, "event: response.completed\ndata: {}\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := lastEventEnds(tt.endpoint, []byte(tt.body)); got != tt.want {
				t.Errorf("lastEventEnds = %v, want %v", got, tt.want)
			}
		})
	}
}
