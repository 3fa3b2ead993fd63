package openairelay

import (
	"bytes"
	"mime/multipart"
	"slices"
	"testing"
)

func batchUpload(purpose, content string) ([]byte, string) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("purpose", purpose)
	fw, _ := mw.CreateFormFile("file", "in.jsonl")
	fw.Write([]byte(content))
	mw.Close()
	return buf.Bytes(), mw.Boundary()
}

func TestBatchFileModels(t *testing.T) {
	line := func(model string) string {
		return `{"custom_id":"r","method":"POST","url":"/v1/chat/completions","body":{"model":"` + model + `","messages":[]}}` + "\n"
	}
	tests := []struct {
		name, purpose, content string
		want                   []string
		ok                     bool
	}{
		{"two models", "batch", line("gpt-4o-mini") + line("gpt-4o") + line("gpt-4o-mini"), []string{"gpt-4o-mini", "gpt-4o"}, true},
		{"blank lines and CRLF", "batch", "\r\n" + line("gpt-4o-mini") + "\r\n\n", []string{"gpt-4o-mini"}, true},
		{"empty file", "batch", "", []string{}, true},
		{"not a batch file", "assistants", line("gpt-4o"), nil, false},
		{"a line without a model", "batch", line("gpt-4o-mini") + `{"custom_id":"r","body":{}}` + "\n", nil, false},
		{"a line that is not JSON", "batch", "not json\n", nil, false},
	}
	for _, tt := range tests {
		body, boundary := batchUpload(tt.purpose, tt.content)
		got, ok := batchFileModels(body, boundary)
		if ok != tt.ok || !slices.Equal(got, tt.want) {
			t.Errorf("%s: %q, %v; want %q, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}
