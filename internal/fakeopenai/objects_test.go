package fakeopenai

import (
	"bytes"
	"encoding/json"
	"mime/multipart"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

type oaList[T any] struct {
	Object  string  `json:"object"`
	Data    []T     `json:"data"`
	FirstID *string `json:"first_id"`
	LastID  *string `json:"last_id"`
	HasMore bool    `json:"has_more"`
}

type oaDeleted struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Deleted bool   `json:"deleted"`
}

type oaInputItem struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Role    string `json:"role"`
	Status  string `json:"status"`
	Content []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	} `json:"content"`
}

type oaStoredResponse struct {
	oaResponse
	Store              bool    `json:"store"`
	PreviousResponseID *string `json:"previous_response_id"`
}

// upload POSTs /files. A nil content sends no file part; purpose "-" sends
// no purpose.
func upload(t *testing.T, s *Server, key, purpose, filename string, content []byte) (*http.Response, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if purpose != "-" {
		_ = mw.WriteField("purpose", purpose)
	}
	if content != nil {
		fw, _ := mw.CreateFormFile("file", filename)
		_, _ = fw.Write(content)
	}
	_ = mw.Close()
	return postFiles(t, s, key, mw.FormDataContentType(), buf.Bytes())
}

func postFiles(t *testing.T, s *Server, key, ct string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", s.URL()+"/files", bytes.NewReader(body))
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out bytes.Buffer
	_, _ = out.ReadFrom(resp.Body)
	return resp, out.Bytes()
}

func uploadOK(t *testing.T, s *Server, key, purpose, filename, content string) fileObject {
	t.Helper()
	resp, b := upload(t, s, key, purpose, filename, []byte(content))
	if resp.StatusCode != 200 {
		t.Fatalf("upload: %d %s", resp.StatusCode, b)
	}
	return decode[fileObject](t, b)
}

func respondOK(t *testing.T, s *Server, key, body string) oaStoredResponse {
	t.Helper()
	resp, b := request(t, s, "POST", "/responses", key, body)
	if resp.StatusCode != 200 {
		t.Fatalf("responses: %d %s", resp.StatusCode, b)
	}
	return decode[oaStoredResponse](t, b)
}

func wantError(t *testing.T, resp *http.Response, b []byte, status int, msg, param, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status %d, want %d: %s", resp.StatusCode, status, b)
		return
	}
	e := decode[oaError](t, b)
	gotParam, gotCode := "<null>", "<null>"
	if e.Error.Param != nil {
		gotParam = *e.Error.Param
	}
	if e.Error.Code != nil {
		gotCode = *e.Error.Code
	}
	if e.Error.Message != msg || e.Error.Type != "invalid_request_error" || gotParam != param || gotCode != code {
		t.Errorf("error %s, want %q param %s code %s", b, msg, param, code)
	}
}

// ---- files ----

func TestFileUploadValidation(t *testing.T) {
	s := newServer(t, Options{})
	for _, tc := range []struct {
		name          string
		purpose       string
		content       []byte
		ct            string // raw Content-Type instead of multipart
		status        int
		msg, param, c string
	}{
		{"missing file", "batch", nil, "", 400, "Missing required parameter: 'file'.", "file", "missing_required_parameter"},
		{"missing purpose", "-", []byte("x"), "", 400, "Missing required parameter: 'purpose'.", "purpose", "missing_required_parameter"},
		{"bad purpose", "vector_store", []byte("x"), "", 400,
			"'vector_store' is not one of ['fine-tune', 'assistants', 'batch', 'user_data', 'responses', 'vision', 'evals'] - 'purpose'", "purpose", "<null>"},
		{"json body", "", nil, "application/json", 400,
			"Invalid Content-Type header (application/json), expected multipart/form-data. (HINT: If you're using curl, you can pass -H 'Content-Type: multipart/form-data')", "<null>", "<null>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var resp *http.Response
			var b []byte
			if tc.ct != "" {
				resp, b = postFiles(t, s, testKey, tc.ct, []byte(`{"purpose":"batch"}`))
			} else {
				resp, b = upload(t, s, testKey, tc.purpose, "a.jsonl", tc.content)
			}
			wantError(t, resp, b, tc.status, tc.msg, tc.param, tc.c)
		})
	}
	for _, p := range filePurposes {
		if f := uploadOK(t, s, testKey, p, "a.jsonl", "{}"); f.Purpose != p {
			t.Errorf("purpose %q: %+v", p, f)
		}
	}
	if n := len(s.Objects(testKey)); n != len(filePurposes) {
		t.Errorf("%d objects after the valid uploads, want %d", n, len(filePurposes))
	}
}

func TestFileLifecycle(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	s := newServer(t, Options{Now: clk.Now})
	content := "{\"a\":1}\n{\"b\":2}\n"
	resp, b := upload(t, s, testKey, "batch", "input.jsonl", []byte(content))
	if resp.StatusCode != 200 {
		t.Fatalf("upload %d %s", resp.StatusCode, b)
	}
	var raw map[string]json.RawMessage
	_ = json.Unmarshal(b, &raw)
	for _, f := range []string{"id", "object", "bytes", "created_at", "expires_at", "filename", "purpose", "status", "status_details"} {
		if _, ok := raw[f]; !ok {
			t.Errorf("file object lacks %s: %s", f, b)
		}
	}
	f := decode[fileObject](t, b)
	if !strings.HasPrefix(f.ID, "file-") || f.Object != "file" || f.Bytes != len(content) || f.CreatedAt != 1_700_000_000 ||
		f.Filename != "input.jsonl" || f.Purpose != "batch" || f.Status != "processed" || f.ExpiresAt != nil {
		t.Errorf("file %+v", f)
	}
	if !s.HasObject(f.ID) || s.ObjectCreator(f.ID) != testKey {
		t.Errorf("accessors: has %v creator %q", s.HasObject(f.ID), s.ObjectCreator(f.ID))
	}

	for _, tc := range []struct {
		name, method, path string
		check              func(t *testing.T, resp *http.Response, b []byte)
	}{
		{"retrieve", "GET", "/files/" + f.ID, func(t *testing.T, resp *http.Response, b []byte) {
			if got := decode[fileObject](t, b); resp.StatusCode != 200 || got != f {
				t.Errorf("%d %+v", resp.StatusCode, got)
			}
		}},
		{"content", "GET", "/files/" + f.ID + "/content", func(t *testing.T, resp *http.Response, b []byte) {
			if resp.StatusCode != 200 || string(b) != content || resp.Header.Get("Content-Type") != "application/octet-stream" {
				t.Errorf("%d %q %v", resp.StatusCode, b, resp.Header)
			}
		}},
		{"list", "GET", "/files", func(t *testing.T, resp *http.Response, b []byte) {
			l := decode[oaList[fileObject]](t, b)
			if l.Object != "list" || len(l.Data) != 1 || l.Data[0] != f || l.HasMore || *l.FirstID != f.ID || *l.LastID != f.ID {
				t.Errorf("%s", b)
			}
		}},
		{"wrong method", "PUT", "/files/" + f.ID, func(t *testing.T, resp *http.Response, b []byte) {
			if resp.StatusCode != 405 {
				t.Errorf("%d %s", resp.StatusCode, b)
			}
		}},
		{"delete", "DELETE", "/files/" + f.ID, func(t *testing.T, resp *http.Response, b []byte) {
			if d := decode[oaDeleted](t, b); resp.StatusCode != 200 || d != (oaDeleted{f.ID, "file", true}) {
				t.Errorf("%d %s", resp.StatusCode, b)
			}
		}},
		{"retrieve deleted", "GET", "/files/" + f.ID, func(t *testing.T, resp *http.Response, b []byte) {
			wantError(t, resp, b, 404, "No such File object: "+f.ID, "id", "<null>")
		}},
		{"content deleted", "GET", "/files/" + f.ID + "/content", func(t *testing.T, resp *http.Response, b []byte) {
			wantError(t, resp, b, 404, "No such File object: "+f.ID, "id", "<null>")
		}},
		{"delete deleted", "DELETE", "/files/" + f.ID, func(t *testing.T, resp *http.Response, b []byte) {
			wantError(t, resp, b, 404, "No such File object: "+f.ID, "id", "<null>")
		}},
		{"empty list", "GET", "/files", func(t *testing.T, resp *http.Response, b []byte) {
			if !strings.Contains(string(b), `"data":[]`) || !strings.Contains(string(b), `"first_id":null`) {
				t.Errorf("%s", b)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := request(t, s, tc.method, tc.path, testKey, "")
			tc.check(t, resp, b)
		})
	}
	if s.HasObject(f.ID) {
		t.Errorf("deleted file still stored")
	}

	// File contents are sent as they are, never gzip.
	g := uploadOK(t, s, testKey, "user_data", "x.txt", strings.Repeat("abc", 100))
	resp, b = rawRequest(t, s, "GET", "/files/"+g.ID+"/content", testKey, "", "Accept-Encoding", "gzip")
	if resp.Header.Get("Content-Encoding") != "" || string(b) != strings.Repeat("abc", 100) {
		t.Errorf("content encoding %q", resp.Header.Get("Content-Encoding"))
	}
}

func TestFileList(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	s := newServer(t, Options{Now: clk.Now})
	var ids []string // oldest first
	for _, p := range []string{"batch", "assistants", "batch", "batch"} {
		ids = append(ids, uploadOK(t, s, testKey, p, "f", "x").ID)
		clk.Add(time.Second)
	}
	rev := slices.Clone(ids)
	slices.Reverse(rev)
	for _, tc := range []struct {
		query   string
		want    []string
		hasMore bool
	}{
		{"", rev, false},
		{"?order=desc", rev, false},
		{"?order=asc", ids, false},
		{"?limit=2", rev[:2], true},
		{"?limit=2&after=" + rev[1], rev[2:], false},
		{"?order=asc&limit=1&after=" + ids[0], ids[1:2], true},
		{"?purpose=batch", []string{ids[3], ids[2], ids[0]}, false},
		{"?purpose=batch&order=asc&limit=2", []string{ids[0], ids[2]}, true},
		{"?purpose=vision", nil, false},
		{"?after=file-unknown", nil, false},
	} {
		t.Run(tc.query, func(t *testing.T) {
			resp, b := request(t, s, "GET", "/files"+tc.query, testKey, "")
			if resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, b)
			}
			l := decode[oaList[fileObject]](t, b)
			var got []string
			for _, f := range l.Data {
				got = append(got, f.ID)
			}
			if !slices.Equal(got, tc.want) || l.HasMore != tc.hasMore {
				t.Errorf("got %v more %v, want %v more %v", got, l.HasMore, tc.want, tc.hasMore)
			}
			if len(got) > 0 && (*l.FirstID != got[0] || *l.LastID != got[len(got)-1]) {
				t.Errorf("first/last %v %v", *l.FirstID, *l.LastID)
			}
		})
	}
	for _, tc := range []struct {
		query, msg, param, code string
	}{
		{"?limit=0", "Invalid 'limit': integer below minimum value. Expected a value >= 1, but got 0 instead.", "limit", "integer_below_min_value"},
		{"?limit=10001", "Invalid 'limit': integer above maximum value. Expected a value <= 10000, but got 10001 instead.", "limit", "integer_above_max_value"},
		{"?limit=ten", "Invalid type for 'limit': expected an integer, but got a string instead.", "limit", "invalid_type"},
		{"?order=up", "Invalid value: 'up'. Supported values are: 'asc' and 'desc'.", "order", "invalid_value"},
	} {
		t.Run(tc.query, func(t *testing.T) {
			resp, b := request(t, s, "GET", "/files"+tc.query, testKey, "")
			wantError(t, resp, b, 400, tc.msg, tc.param, tc.code)
		})
	}
}

// ---- isolation ----

func TestObjectIsolation(t *testing.T) {
	const (
		owner    = "sk-owner-00000000000001"
		teammate = "sk-team-000000000000001"
		stranger = "sk-stranger-0000000001"
	)
	for _, shared := range []bool{false, true} {
		s := newServer(t, Options{SharedObjects: shared})
		s.ConfigureKey(owner, KeyConfig{Project: "alpha"})
		s.ConfigureKey(teammate, KeyConfig{Project: "alpha"})
		s.ConfigureKey(stranger, KeyConfig{Project: "beta"})
		f := uploadOK(t, s, owner, "user_data", "f.txt", "data")
		r := respondOK(t, s, owner, `{"model":"gpt-4o","input":"hi"}`)
		prev := `{"model":"gpt-4o","input":"more","previous_response_id":"` + r.ID + `"}`
		for _, tc := range []struct {
			name, method, path, body string
			notFound                 string // the stranger's error message
			status                   int    // the stranger's status when not shared
		}{
			{"file get", "GET", "/files/" + f.ID, "", "No such File object: " + f.ID, 404},
			{"file content", "GET", "/files/" + f.ID + "/content", "", "No such File object: " + f.ID, 404},
			{"response get", "GET", "/responses/" + r.ID, "", "Response with id '" + r.ID + "' not found.", 404},
			{"input items", "GET", "/responses/" + r.ID + "/input_items", "", "Response with id '" + r.ID + "' not found.", 404},
			{"previous_response_id", "POST", "/responses", prev, "Previous response with id '" + r.ID + "' not found.", 400},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if resp, b := request(t, s, tc.method, tc.path, teammate, tc.body); resp.StatusCode != 200 {
					t.Errorf("teammate: %d %s", resp.StatusCode, b)
				}
				resp, b := request(t, s, tc.method, tc.path, stranger, tc.body)
				if shared {
					if resp.StatusCode != 200 {
						t.Errorf("shared: %d %s", resp.StatusCode, b)
					}
					return
				}
				if e := decode[oaError](t, b); resp.StatusCode != tc.status || e.Error.Message != tc.notFound {
					t.Errorf("stranger: %d %s", resp.StatusCode, b)
				}
			})
		}
		// The stranger's list does not show the file; deletes are refused.
		if l := decode[oaList[fileObject]](t, mustBody(t, s, "GET", "/files", stranger)); len(l.Data) != 0 != shared {
			t.Errorf("shared %v: stranger lists %d files", shared, len(l.Data))
		}
		if !shared {
			if resp, _ := request(t, s, "DELETE", "/files/"+f.ID, stranger, ""); resp.StatusCode != 404 || !s.HasObject(f.ID) {
				t.Errorf("stranger deleted the file: %d", resp.StatusCode)
			}
			if resp, _ := request(t, s, "DELETE", "/responses/"+r.ID, stranger, ""); resp.StatusCode != 404 || !s.HasObject(r.ID) {
				t.Errorf("stranger deleted the response: %d", resp.StatusCode)
			}
		}
		// Accessors: the project's objects, oldest first, whoever asks.
		want := []string{f.ID, r.ID}
		if got := s.Objects(owner); !slices.Equal(got[:2], want) || !slices.Equal(s.Objects(teammate), s.Objects(owner)) {
			t.Errorf("objects %v / %v", got, s.Objects(teammate))
		}
		if !shared && len(s.Objects(stranger)) != 0 {
			t.Errorf("stranger objects %v", s.Objects(stranger))
		}
		if s.ObjectCreator(r.ID) != owner || s.ObjectCreator("resp_nope") != "" {
			t.Errorf("creator %q", s.ObjectCreator(r.ID))
		}
		s.ClearObjects()
		if s.HasObject(f.ID) || len(s.Objects(owner)) != 0 {
			t.Errorf("not cleared")
		}
	}
}

func mustBody(t *testing.T, s *Server, method, path, key string) []byte {
	t.Helper()
	resp, b := request(t, s, method, path, key, "")
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return b
}

// ---- stored responses ----

func TestStoredResponses(t *testing.T) {
	s := newServer(t, Options{StreamChunks: 2})
	for _, tc := range []struct {
		name   string
		body   string
		stored bool
	}{
		{"default", `{"model":"gpt-4o","input":"hello"}`, true},
		{"store true", `{"model":"gpt-4o","input":"hello","store":true}`, true},
		{"store false", `{"model":"gpt-4o","input":"hello","store":false}`, false},
		{"stream", `{"model":"gpt-4o","input":"hello","stream":true}`, true},
		{"stream store false", `{"model":"gpt-4o","input":"hello","stream":true,"store":false}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := request(t, s, "POST", "/responses", testKey, tc.body)
			if resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, b)
			}
			var r oaStoredResponse
			if strings.Contains(tc.body, `"stream":true`) {
				evs := parseSSE(t, b)
				r = decode[struct {
					Response oaStoredResponse `json:"response"`
				}](t, []byte(evs[len(evs)-1].data)).Response
			} else {
				r = decode[oaStoredResponse](t, b)
			}
			if r.Store != tc.stored || s.HasObject(r.ID) != tc.stored {
				t.Fatalf("store field %v, stored %v, want %v", r.Store, s.HasObject(r.ID), tc.stored)
			}
			resp, b = request(t, s, "GET", "/responses/"+r.ID, testKey, "")
			if !tc.stored {
				wantError(t, resp, b, 404, "Response with id '"+r.ID+"' not found.", "<null>", "<null>")
				return
			}
			got := decode[oaStoredResponse](t, b)
			if resp.StatusCode != 200 || got.ID != r.ID || got.Status != "completed" || got.Output[0].Content[0].Text != "echo: hello" ||
				*got.Usage != *r.Usage || got.PreviousResponseID != nil {
				t.Errorf("retrieved %s", b)
			}
			resp, b = request(t, s, "DELETE", "/responses/"+r.ID, testKey, "")
			if d := decode[oaDeleted](t, b); resp.StatusCode != 200 || d != (oaDeleted{r.ID, "response", true}) {
				t.Errorf("delete %d %s", resp.StatusCode, b)
			}
			resp, b = request(t, s, "GET", "/responses/"+r.ID, testKey, "")
			wantError(t, resp, b, 404, "Response with id '"+r.ID+"' not found.", "<null>", "<null>")
		})
	}
}

func TestResponseInputItems(t *testing.T) {
	s := newServer(t, Options{})
	r := respondOK(t, s, testKey, `{"model":"gpt-4o","input":[{"role":"user","content":"first"},{"type":"message","role":"assistant","content":[{"type":"output_text","text":"second"}]},{"role":"user","content":[{"type":"input_text","text":"third"}]}]}`)
	str := respondOK(t, s, testKey, `{"model":"gpt-4o","input":"only"}`)
	texts := func(items []oaInputItem) (out []string) {
		for _, it := range items {
			if it.Type != "message" || !strings.HasPrefix(it.ID, "msg_") || it.Status != "completed" || len(it.Content) != 1 {
				t.Errorf("item %+v", it)
				continue
			}
			out = append(out, it.Content[0].Text)
		}
		return out
	}
	all := decode[oaList[oaInputItem]](t, mustBody(t, s, "GET", "/responses/"+r.ID+"/input_items?order=asc", testKey))
	for _, tc := range []struct {
		id, query string
		want      []string
		hasMore   bool
	}{
		{r.ID, "", []string{"third", "second", "first"}, false},
		{r.ID, "?order=asc", []string{"first", "second", "third"}, false},
		{r.ID, "?order=asc&limit=2", []string{"first", "second"}, true},
		{r.ID, "?order=asc&after=" + all.Data[0].ID, []string{"second", "third"}, false},
		{str.ID, "", []string{"only"}, false},
	} {
		t.Run(tc.query, func(t *testing.T) {
			l := decode[oaList[oaInputItem]](t, mustBody(t, s, "GET", "/responses/"+tc.id+"/input_items"+tc.query, testKey))
			if got := texts(l.Data); !slices.Equal(got, tc.want) || l.HasMore != tc.hasMore || l.Object != "list" {
				t.Errorf("got %v more %v", got, l.HasMore)
			}
		})
	}
	if d := decode[oaList[oaInputItem]](t, mustBody(t, s, "GET", "/responses/"+str.ID+"/input_items", testKey)).Data[0]; d.Role != "user" || d.Content[0].Type != "input_text" {
		t.Errorf("string input item %+v", d)
	}
	resp, b := request(t, s, "GET", "/responses/"+r.ID+"/input_items?limit=101", testKey, "")
	wantError(t, resp, b, 400, "Invalid 'limit': integer above maximum value. Expected a value <= 100, but got 101 instead.", "limit", "integer_above_max_value")
}

func TestPreviousResponse(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	s := newServer(t, Options{Now: clk.Now})
	const key = "sk-prev-000000000000001"
	s.AddKey(key, KeyLimits{TPM: 60000})
	// "one two three four" = 18 runes -> 5 tokens; reply "echo: one two three four" = 5 words.
	first := respondOK(t, s, key, `{"model":"gpt-4o","input":"one two three four"}`)
	if *first.Usage != (oaRespUsage{5, 5, 10}) {
		t.Fatalf("first usage %+v", *first.Usage)
	}
	for _, tc := range []struct {
		name       string
		body       string
		status     int
		usage      oaRespUsage
		remaining  string // x-ratelimit-remaining-tokens after it
		msg, param string
	}{
		// 1 own token + the previous response's 5 in + 5 out.
		{"continues", `{"model":"gpt-4o","input":"hi","previous_response_id":"` + first.ID + `"}`, 200, oaRespUsage{11, 2, 13}, "59984", "", ""},
		{"empty id is none", `{"model":"gpt-4o","input":"hi","previous_response_id":""}`, 200, oaRespUsage{1, 2, 3}, "", "", ""},
		{"unknown", `{"model":"gpt-4o","input":"hi","previous_response_id":"resp_unknown"}`, 400, oaRespUsage{}, "",
			"Previous response with id 'resp_unknown' not found.", "previous_response_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := request(t, s, "POST", "/responses", key, tc.body)
			if tc.status != 200 {
				wantError(t, resp, b, tc.status, tc.msg, tc.param, "previous_response_not_found")
				return
			}
			r := decode[oaStoredResponse](t, b)
			if resp.StatusCode != 200 || *r.Usage != tc.usage {
				t.Fatalf("%d usage %+v: %s", resp.StatusCode, r.Usage, b)
			}
			if strings.Contains(tc.body, first.ID) != (r.PreviousResponseID != nil && *r.PreviousResponseID == first.ID) {
				t.Errorf("previous_response_id %v", r.PreviousResponseID)
			}
			if tc.remaining != "" && resp.Header.Get("x-ratelimit-remaining-tokens") != tc.remaining {
				t.Errorf("remaining tokens %q, want %q", resp.Header.Get("x-ratelimit-remaining-tokens"), tc.remaining)
			}
		})
	}
	// A chain of three: each input counts everything before it.
	second := respondOK(t, s, key, `{"model":"gpt-4o","input":"hi","previous_response_id":"`+first.ID+`"}`)
	third := respondOK(t, s, key, `{"model":"gpt-4o","input":"hi","previous_response_id":"`+second.ID+`"}`)
	if third.Usage.InputTokens != 1+second.Usage.InputTokens+second.Usage.OutputTokens {
		t.Errorf("chain usage %+v after %+v", *third.Usage, *second.Usage)
	}
	// A deleted or unstored response cannot be continued.
	unstored := respondOK(t, s, key, `{"model":"gpt-4o","input":"hi","store":false}`)
	resp, b := request(t, s, "POST", "/responses", key, `{"model":"gpt-4o","input":"hi","previous_response_id":"`+unstored.ID+`"}`)
	wantError(t, resp, b, 400, "Previous response with id '"+unstored.ID+"' not found.", "previous_response_id", "previous_response_not_found")
}
