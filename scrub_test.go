package openairelay

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestScrubberMasksSecretsAcrossPieces(t *testing.T) {
	const secret = "sk-live-0123456789abcdef"
	mask := strings.Repeat("*", len(secret))
	tests := []struct {
		name   string
		pieces []string
		want   string
	}{
		{"no secret", []string{"data: {}\n\n", "data: [DONE]\n\n"}, "data: {}\n\ndata: [DONE]\n\n"},
		{"whole secret", []string{`{"echo":"` + secret + `"}`}, `{"echo":"` + mask + `"}`},
		{"split in two", []string{`{"echo":"sk-live-0123`, `456789abcdef"}`}, `{"echo":"` + mask + `"}`},
		{"split in three", []string{"x sk-", "live-0123456789", "abcdef y"}, "x " + mask + " y"},
		{"a prefix that is not the secret", []string{"sk-li", "ve and well"}, "sk-live and well"},
		{"a prefix at the very end", []string{"ends with sk-live-01"}, "ends with sk-live-01"},
		{"twice", []string{secret + secret}, mask + mask},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newScrubber(secret)
			var out bytes.Buffer
			for i, p := range tt.pieces {
				out.Write(s.feed([]byte(p), i == len(tt.pieces)-1))
			}
			if out.String() != tt.want {
				t.Errorf("got %q; want %q", out.String(), tt.want)
			}
		})
	}
	// An event that ends in a blank line is never held back: streams
	// leave at once.
	s := newScrubber(secret)
	if got := s.feed([]byte("data: {\"a\":1}\n\n"), false); string(got) != "data: {\"a\":1}\n\n" {
		t.Errorf("event held back: %q", got)
	}
}

func TestScrubHeader(t *testing.T) {
	base, _ := url.Parse("https://upstream.internal:8443/openai/v1")
	h := http.Header{
		"X-Echo":   {"Bearer sk-abc123456789"},
		"Location": {"https://upstream.internal:8443/openai/v1/files/file-1/content?x=1"},
	}
	scrubHeader(h, "sk-abc123456789", base)
	if got := h.Get("X-Echo"); strings.Contains(got, "sk-abc") {
		t.Errorf("X-Echo = %q", got)
	}
	if got := h.Get("Location"); got != "/v1/files/file-1/content?x=1" {
		t.Errorf("Location = %q; want the relay's own path", got)
	}
	elsewhere := http.Header{"Location": {"https://cdn.example.com/f?sig=1"}}
	scrubHeader(elsewhere, "sk-abc123456789", base)
	if got := elsewhere.Get("Location"); got != "https://cdn.example.com/f?sig=1" {
		t.Errorf("a redirect elsewhere was changed: %q", got)
	}
}
