package openairelay

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
)

func TestAPIEndpoint(t *testing.T) {
	tests := []struct {
		path, want string
		ok         bool
	}{
		{"/v1/chat/completions", "chat/completions", true},
		{"/v1/files/file-abc/content", "files/file-abc/content", true},
		{"/chat/completions", "chat/completions", true},
		{"/v1", "", false},
		{"/v1/", "", false},
		{"/", "", false},
		{"/v1/../admin", "", false},
		{"/v1/./models", "", false},
		{"/v1/models/..", "", false},
		{"/v1/a\\b", "", false},
		{"/v1/models/gpt-4o", "models/gpt-4o", true},
		{"/v1beta/models", "v1beta/models", true},
	}
	for _, tt := range tests {
		got, ok := apiEndpoint(tt.path)
		if got != tt.want || ok != tt.ok {
			t.Errorf("apiEndpoint(%q) = %q, %v; want %q, %v", tt.path, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseBodyJSON(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		model      string
		stream     bool
		maxOut     int64
		wantStatus int // 0: no error
	}{
		{"chat", `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":50}`, "gpt-4o", true, 50, 0},
		{"spaces and nesting", " { \"messages\" : [ {\"model\":\"not me\"} ] , \"model\" : \"gpt-4o-mini\" } ", "gpt-4o-mini", false, 0, 0},
		{"escaped key", `{"mo\u0064el":"x","max_completion_tokens":7}`, "x", false, 7, 0},
		{"escaped value", `{"model":"g\"pt"}`, "g\"pt", false, 0, 0},
		{"responses max", `{"model":"m","input":"x","max_output_tokens":99}`, "m", false, 99, 0},
		{"stream false", `{"model":"m","stream":false}`, "m", false, 0, 0},
		{"no model", `{"input":"x"}`, "", false, 0, 0},
		{"model not a string", `{"model":5}`, "", false, 0, 400},
		{"array", `[1,2]`, "", false, 0, 400},
		{"truncated", `{"model":"gpt`, "", false, 0, 400},
		{"trailing garbage", `{"model":"m"} x`, "", false, 0, 400},
		{"invalid utf8", "{\"model\":\"\xff\"}", "", false, 0, 400},
		{"empty", ``, "", false, 0, 400},
		{"deep nesting", strings.Repeat("[", 10001) + strings.Repeat("]", 10001), "", false, 0, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ar := &apiRequest{endpoint: "chat/completions", body: []byte(tt.body)}
			h := http.Header{"Content-Type": {"application/json"}}
			aerr := ar.parseBody(http.MethodPost, h)
			if tt.wantStatus != 0 {
				if aerr == nil || aerr.Status != tt.wantStatus {
					t.Fatalf("got %v; want status %d", aerr, tt.wantStatus)
				}
				return
			}
			if aerr != nil {
				t.Fatalf("unexpected error %v", aerr)
			}
			if ar.model != tt.model || ar.stream != tt.stream || ar.maxOut != tt.maxOut {
				t.Errorf("got model %q stream %v max %d; want %q %v %d", ar.model, ar.stream, ar.maxOut, tt.model, tt.stream, tt.maxOut)
			}
		})
	}
}

func TestParseBodyContentTypes(t *testing.T) {
	// curl -d sends form-urlencoded: a JSON endpoint reads the body as JSON.
	ar := &apiRequest{endpoint: "chat/completions", body: []byte(`{"model":"m"}`)}
	if aerr := ar.parseBody(http.MethodPost, http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}); aerr != nil {
		t.Fatal(aerr)
	}
	if !ar.fixContentType || ar.model != "m" {
		t.Errorf("form-encoded JSON not recognised: %+v", ar)
	}
	ar = &apiRequest{endpoint: "chat/completions", body: []byte(`model=m`)}
	if aerr := ar.parseBody(http.MethodPost, http.Header{"Content-Type": {"text/plain"}}); aerr == nil || aerr.Status != 400 {
		t.Errorf("text body on a JSON endpoint: got %v, want 400", aerr)
	}
	// Other endpoints take any bytes.
	ar = &apiRequest{endpoint: "uploads/up_1/parts", body: []byte{0, 1, 2}}
	if aerr := ar.parseBody(http.MethodPost, http.Header{"Content-Type": {"application/octet-stream"}}); aerr != nil || ar.kind != bodyOther {
		t.Errorf("octet-stream: %v kind %d", aerr, ar.kind)
	}
	ar = &apiRequest{endpoint: "models"}
	if aerr := ar.parseBody(http.MethodGet, http.Header{}); aerr != nil || ar.kind != bodyNone {
		t.Errorf("GET: %v kind %d", aerr, ar.kind)
	}
	if aerr := (&apiRequest{endpoint: "x", body: []byte("{}")}).parseBody(http.MethodPost, http.Header{"Content-Type": {"a/b; ="}}); aerr == nil {
		t.Errorf("malformed content type accepted")
	}
}

func multipartBody(t *testing.T, fields map[string]string, file []byte) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, _ := mw.CreateFormFile("file", "a.wav")
	_, _ = fw.Write(file)
	for k, v := range fields {
		_ = mw.WriteField(k, v)
	}
	_ = mw.Close()
	return buf.Bytes(), mw.FormDataContentType()
}

func TestMultipartModelAndAlias(t *testing.T) {
	audio := bytes.Repeat([]byte{0, 1, 2, 'm', 'o', 'd', 'e', 'l'}, 1000)
	body, ct := multipartBody(t, map[string]string{"model": "whisper-1", "language": "en"}, audio)
	ar := &apiRequest{endpoint: "audio/transcriptions", body: body}
	if aerr := ar.parseBody(http.MethodPost, http.Header{"Content-Type": {ct}}); aerr != nil {
		t.Fatal(aerr)
	}
	if ar.model != "whisper-1" || ar.kind != bodyMultipart {
		t.Fatalf("model %q kind %d", ar.model, ar.kind)
	}
	same, _ := ar.bodyFor("whisper-1", false)
	if !bytes.Equal(same, body) {
		t.Error("body changed without an alias")
	}
	out, err := ar.bodyFor("my-whisper", false)
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(bytes.NewReader(out), ar.boundary)
	got := map[string]string{}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		v, _ := io.ReadAll(p)
		if p.FileName() != "" {
			if !bytes.Equal(v, audio) {
				t.Error("file contents changed")
			}
			continue
		}
		got[p.FormName()] = string(v)
	}
	if got["model"] != "my-whisper" || got["language"] != "en" {
		t.Errorf("fields after alias: %v", got)
	}
}

func TestBodyForAlias(t *testing.T) {
	ar := &apiRequest{endpoint: "chat/completions", body: []byte(`{"messages":[],"model" : "gpt-4o","n":1}`)}
	if aerr := ar.parseBody(http.MethodPost, http.Header{"Content-Type": {"application/json"}}); aerr != nil {
		t.Fatal(aerr)
	}
	out, err := ar.bodyFor("dep\"loy", false)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"messages":[],"model" : "dep\"loy","n":1}`; string(out) != want {
		t.Errorf("got %s want %s", out, want)
	}
}

func FuzzParseBody(f *testing.F) {
	f.Add([]byte(`{"model":"gpt-4o","stream":true,"max_tokens":3}`))
	f.Add([]byte(`{"mo\u0064el":"x"}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"a":{"b":["}",{"c":"\""}]},"model":"z"}`))
	f.Add([]byte(`{"Model":"x"}`))                                                        // once let a client past its allow-list
	f.Add([]byte(`{"model":"x","stream":true,"stream_options":null}`))                    // once crashed the handler
	f.Add([]byte(`{"model":"x","stream":true,"stream_options":[1],"messages":[]}`))       // not an object either
	f.Add([]byte(`{"model":"x","stream":true,"stream_options":{"include_usage":false}}`)) // asked, and not
	f.Fuzz(func(t *testing.T, body []byte) {
		ar := &apiRequest{endpoint: "chat/completions", body: body}
		aerr := ar.parseBody(http.MethodPost, http.Header{"Content-Type": {"application/json"}})
		if aerr != nil {
			if aerr.Status != 400 {
				t.Fatalf("status %d for a bad body", aerr.Status)
			}
			return
		}
		// The model found by the scanner is what encoding/json finds.
		var ref struct {
			Model any `json:"model"`
		}
		if err := jsonUnmarshal(body, &ref); err != nil {
			t.Fatalf("accepted a body encoding/json refuses: %v", err)
		}
		if s, _ := ref.Model.(string); s != ar.model {
			t.Fatalf("model %q; encoding/json says %q", ar.model, s)
		}
		// Asking the upstream for a stream's usage leaves a JSON object
		// whose stream_options.include_usage is true, whatever the client
		// sent there.
		withUsage, err := ar.bodyFor(ar.model, true)
		if err != nil {
			t.Fatal(err)
		}
		var opts struct {
			StreamOptions struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
		}
		if err := jsonUnmarshal(withUsage, &opts); err != nil || !opts.StreamOptions.IncludeUsage {
			t.Fatalf("usage splice broke the body: %s (%v)", withUsage, err)
		}
		if ar.model != "" {
			out, err := ar.bodyFor(ar.model+"-alias", false)
			if err != nil {
				t.Fatal(err)
			}
			var after struct{ Model string }
			if err := jsonUnmarshal(out, &after); err != nil || after.Model != ar.model+"-alias" {
				t.Fatalf("alias splice broke the body: %s (%v)", out, err)
			}
		}
	})
}

func jsonUnmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// FuzzEachMember checks that the member scanner ends on any input, never
// panics, and on valid JSON reports exactly the members encoding/json sees.
func FuzzEachMember(f *testing.F) {
	f.Add([]byte(`{"a":1,"b":[{"c":"}"}],"d":"\""}`))
	f.Add([]byte(`{"a" "b"}`))
	f.Add([]byte(`{"\"`))
	f.Add([]byte(`{,,]`))
	f.Add([]byte("{\"\"0\"\\")) // a string ending in a backslash once ran past the end
	f.Fuzz(func(t *testing.T, data []byte) {
		got := map[string]string{}
		ok := eachMember(data, func(key []byte, start, end int) {
			if start < 0 || end > len(data) || start > end {
				t.Fatalf("span %d..%d out of %d bytes", start, end, len(data))
			}
			got[string(key)] = string(data[start:end])
		})
		if !json.Valid(data) {
			return
		}
		var want map[string]json.RawMessage
		if json.Unmarshal(data, &want) != nil {
			if ok {
				t.Fatalf("valid non-object %q reported as an object", data)
			}
			return
		}
		for k, v := range want {
			if got[k] != string(v) && !(len(got[k]) > 0 && json.Valid([]byte(got[k]))) {
				t.Fatalf("member %q: got %q want %q", k, got[k], v)
			}
		}
	})
}

func TestModelSmugglingRefused(t *testing.T) {
	for _, body := range []string{
		`{"model":"gpt-4o-mini","Model":"gpt-4o"}`,
		`{"MODEL":"gpt-4o"}`,
		`{"model":"gpt-4o-mini","messages":[],"model":"gpt-4o"}`,
	} {
		ar := &apiRequest{endpoint: "chat/completions", body: []byte(body)}
		if aerr := ar.parseBody(http.MethodPost, http.Header{"Content-Type": {"application/json"}}); aerr == nil || aerr.Status != 400 {
			t.Errorf("%s: got %v; want 400", body, aerr)
		}
	}
}
