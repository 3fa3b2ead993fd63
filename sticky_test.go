package openairelay

import (
	"net/http"
	"testing"
)

func TestOwnerOfNamedObject(t *testing.T) {
	responseOwners.remember("file-abc123", "pool-file")
	responseOwners.remember("resp_def456", "pool-resp")
	responseOwners.remember("batch_789", "pool-batch")
	tests := []struct {
		endpoint, body, want string
	}{
		{"responses", `{"model":"m","input":"x","previous_response_id":"resp_def456"}`, "pool-resp"},
		{"batches", `{"input_file_id":"file-abc123","endpoint":"/v1/chat/completions"}`, "pool-file"},
		{"chat/completions", `{"messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"file-abc123"}}]}]}`, "pool-file"},
		{"files/file-abc123/content", ``, "pool-file"},
		{"batches/batch_789/cancel", ``, "pool-batch"},
		{"chat/completions", `{"messages":[{"role":"user","content":"file-unknown"}]}`, ""},
		{"files/file-unknown", ``, ""},
	}
	for _, tt := range tests {
		ar := &apiRequest{endpoint: tt.endpoint, body: []byte(tt.body)}
		method := http.MethodGet
		if tt.body != "" {
			method = http.MethodPost
		}
		if aerr := ar.parseBody(method, http.Header{"Content-Type": {"application/json"}}); aerr != nil {
			t.Fatalf("%s: %v", tt.endpoint, aerr)
		}
		pr := &proxyRequest{api: ar}
		got, ok := pr.ownerOfNamedObject()
		if ok != (tt.want != "") || got != tt.want {
			t.Errorf("%s %s: owner %q %v; want %q", tt.endpoint, tt.body, got, ok, tt.want)
		}
	}
	if ownedID("file-") || !ownedID("vs_1") || ownedID("chatcmpl-1") {
		t.Error("ownedID")
	}
}
