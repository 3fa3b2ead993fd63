package openairelay

import "testing"

func TestClientAllowsEndpoint(t *testing.T) {
	tests := []struct {
		patterns []string
		endpoint string
		want     bool
	}{
		{nil, "chat/completions", true},
		{nil, "files/file-abc/content", true},
		{nil, "realtime/client_secrets", false},
		{nil, "realtime/sessions", false},
		{[]string{"chat/completions"}, "chat/completions", true},
		{[]string{"chat/completions"}, "embeddings", false},
		{[]string{"files"}, "files/file-abc/content", true},
		{[]string{"files/*"}, "files", false},
		{[]string{"files/*"}, "files/file-abc", true},
		{[]string{"/files/"}, "files/file-abc", true},
		{[]string{"*"}, "embeddings", true},
		{[]string{"*"}, "realtime/client_secrets", true}, // below "realtime", which * names
		{[]string{"realtime/*"}, "realtime/client_secrets", true},
		{[]string{"chat/*"}, "chat/completions/chatcmpl-1/messages", true},
	}
	for _, tt := range tests {
		c := &Client{Endpoints: tt.patterns}
		if got := c.allowsEndpoint(tt.endpoint); got != tt.want {
			t.Errorf("endpoints %q, %s: %v; want %v", tt.patterns, tt.endpoint, got, tt.want)
		}
	}
}
