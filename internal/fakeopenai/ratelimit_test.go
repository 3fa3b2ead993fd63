package fakeopenai

import (
	"strings"
	"testing"
	"time"
)

// TestRateLimitMinuteHeaders pins the header semantics: the minute's
// allowance remaining = floor(limit − deficit), reset = deficit / rate.
func TestRateLimitMinuteHeaders(t *testing.T) {
	// "hi" = 1 token; with max_tokens n the cost is 1 + n.
	chat := func(maxTokens string) string {
		mt := ""
		if maxTokens != "" {
			mt = `"max_tokens":` + maxTokens + `,`
		}
		return `{"model":"gpt-4o-mini",` + mt + `"messages":[{"role":"user","content":"hi"}]}`
	}
	type step struct {
		wait time.Duration
		body string // "" = GET /models (not charged)
	}
	for _, tc := range []struct {
		name   string
		opts   Options
		lim    KeyLimits
		steps  []step
		status int
		want   map[string]string // headers of the last answer ("" = absent)
		msg    string            // in the last answer's error message
	}{
		{"RPM 60, one request", Options{}, KeyLimits{RPM: 60}, []step{{0, chat("")}}, 200,
			map[string]string{"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "59", "x-ratelimit-reset-requests": "1s", "x-ratelimit-limit-tokens": ""}, ""},
		{"RPM 300, five quick requests", Options{}, KeyLimits{RPM: 300}, []step{{0, chat("")}, {0, chat("")}, {0, chat("")}, {0, chat("")}, {0, chat("")}}, 200,
			map[string]string{"x-ratelimit-limit-requests": "300", "x-ratelimit-remaining-requests": "295", "x-ratelimit-reset-requests": "1s"}, ""},
		{"RPM 60, half refilled", Options{}, KeyLimits{RPM: 60}, []step{{0, chat("")}, {500 * time.Millisecond, ""}}, 200,
			map[string]string{"x-ratelimit-remaining-requests": "59", "x-ratelimit-reset-requests": "500ms"}, ""},
		{"RPM 60, whole again", Options{}, KeyLimits{RPM: 60}, []step{{0, chat("")}, {time.Second, ""}}, 200,
			map[string]string{"x-ratelimit-remaining-requests": "60", "x-ratelimit-reset-requests": "0s"}, ""},
		{"TPM 600, one request of 5", Options{}, KeyLimits{TPM: 600}, []step{{0, chat("4")}}, 200,
			map[string]string{"x-ratelimit-limit-tokens": "600", "x-ratelimit-remaining-tokens": "595", "x-ratelimit-reset-tokens": "500ms", "x-ratelimit-limit-requests": ""}, ""},
		{"RPM 60, 429", Options{}, KeyLimits{RPM: 60}, []step{{0, chat("")}, {0, chat("")}}, 429,
			map[string]string{"x-ratelimit-remaining-requests": "59", "x-ratelimit-reset-requests": "1s", "retry-after": "1", "retry-after-ms": "1000"},
			"on requests per min (RPM): Limit 60, Used 1, Requested 1. Please try again in 1s."},
		// Debt: after a 301-token request on a full 100-token bucket and 1s,
		// the level is -101; a 40-token request fits in 1.41s, the bucket is
		// whole in 2.01s.
		{"TPM debt, retry-after is when the request fits", Options{}, KeyLimits{TPM: 6000}, []step{{0, chat("300")}, {time.Second, chat("39")}}, 429,
			map[string]string{"x-ratelimit-remaining-tokens": "5799", "x-ratelimit-reset-tokens": "2.01s", "retry-after": "2", "retry-after-ms": "1410"},
			"on tokens per min (TPM): Limit 6000, Used 201, Requested 40. Please try again in 1.41s."},
		{"too large: headers, no retry-after", Options{}, KeyLimits{TPM: 600}, []step{{0, chat("700")}}, 429,
			map[string]string{"x-ratelimit-remaining-tokens": "600", "x-ratelimit-reset-tokens": "0s", "retry-after": "", "retry-after-ms": ""},
			"Request too large for gpt-4o-mini in organization org-fake on tokens per min (TPM): Limit 600, Requested 701."},
		{"BucketRemaining", Options{BucketRemaining: true}, KeyLimits{RPM: 600, TPM: 60000}, []step{{0, chat("")}}, 200,
			map[string]string{"x-ratelimit-remaining-requests": "9", "x-ratelimit-reset-requests": "100ms", "x-ratelimit-remaining-tokens": "999"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
			tc.opts.Now = clk.Now
			s := newServer(t, tc.opts)
			const key = "sk-minute-000000000001"
			s.AddKey(key, tc.lim)
			var status int
			var body []byte
			var hdr map[string]string
			for _, st := range tc.steps {
				clk.Add(st.wait)
				method, path := "POST", "/chat/completions"
				if st.body == "" {
					method, path = "GET", "/models"
				}
				resp, b := request(t, s, method, path, key, st.body)
				status, body = resp.StatusCode, b
				hdr = map[string]string{}
				for h := range tc.want {
					hdr[h] = resp.Header.Get(h)
				}
			}
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, body)
			}
			for h, want := range tc.want {
				if hdr[h] != want {
					t.Errorf("%s = %q, want %q", h, hdr[h], want)
				}
			}
			if tc.msg != "" {
				if e := decode[oaError](t, body); !strings.Contains(e.Error.Message, tc.msg) {
					t.Errorf("message %q lacks %q", e.Error.Message, tc.msg)
				}
			}
		})
	}
}

// Files and stored-response requests are charged a request (no tokens); the
// models endpoints are not.
func TestRateLimitObjectEndpoints(t *testing.T) {
	for _, tc := range []struct {
		name, method, path string
		charged            bool
	}{
		{"files list", "GET", "/files", true},
		{"file get", "GET", "/files/file-nope", true},
		{"response get", "GET", "/responses/resp_nope", true},
		{"response delete", "DELETE", "/responses/resp_nope", true},
		{"models", "GET", "/models", false},
		{"model", "GET", "/models/gpt-4o", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
			s := newServer(t, Options{Now: clk.Now})
			const key = "sk-objrl-00000000000001"
			s.AddKey(key, KeyLimits{RPM: 60, TPM: 600})
			resp, _ := request(t, s, tc.method, tc.path, key, "")
			want := "60"
			if tc.charged {
				want = "59"
			}
			if got := resp.Header.Get("x-ratelimit-remaining-requests"); got != want {
				t.Errorf("remaining-requests %q, want %q", got, want)
			}
			if got := resp.Header.Get("x-ratelimit-remaining-tokens"); got != "600" {
				t.Errorf("remaining-tokens %q: tokens charged", got)
			}
			resp, b := request(t, s, tc.method, tc.path, key, "")
			if tc.charged {
				e := decode[oaError](t, b)
				if resp.StatusCode != 429 || !strings.HasPrefix(e.Error.Message, "Rate limit reached in organization org-fake on requests per min (RPM): Limit 60, Used 1") {
					t.Errorf("second: %d %s", resp.StatusCode, b)
				}
			} else if resp.StatusCode != 200 {
				t.Errorf("second: %d %s", resp.StatusCode, b)
			}
		})
	}
}
