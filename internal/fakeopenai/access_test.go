package fakeopenai

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestKeyRequestErrors(t *testing.T) {
	const (
		deact      = "sk-deact-000000000000001"
		onlyGPT4o  = "sk-models-00000000000001"
		restricted = "sk-restrict-000000000001"
		chatOnly   = "sk-chatonly-000000000001"
		readOnly   = "sk-readonly-000000000001"
		verified   = "sk-verified-000000000001"
	)
	s := newServer(t, Options{VerifiedOrgModels: []string{"gpt-4.1"}})
	s.SetKeyState(deact, KeyDeactivated)
	s.ConfigureKey(onlyGPT4o, KeyConfig{Models: []string{"gpt-4o"}})
	s.ConfigureKey(restricted, KeyConfig{Scopes: []string{}})
	s.ConfigureKey(chatOnly, KeyConfig{Scopes: []string{ScopeModelRequest}})
	s.ConfigureKey(readOnly, KeyConfig{Scopes: []string{ScopeModelRead, ScopeFilesRead, ScopeResponsesRead}})
	s.ConfigureKey(verified, KeyConfig{Verified: true})

	chat := func(model string) string {
		return `{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]}`
	}
	scopes := func(list string) string {
		return "You have insufficient permissions for this operation. Missing scopes: " + list + ". Check that you have the correct role in your organization (Reader, Writer, Owner) and project (Member, Owner), and if you're using a restricted API key, that it has the necessary scopes."
	}
	null := "<null>"
	for _, tc := range []struct {
		name, key, method, path, body string
		status                        int
		typ, code, msg                string // msg: the whole message ("" = do not check)
	}{
		{"deactivated", deact, "POST", "/chat/completions", chat("gpt-4o"), 401, "invalid_request_error", "account_deactivated",
			"This key is associated with a deactivated account. If you feel this is an error, contact us through our help center at help.openai.com."},
		{"deactivated on models", deact, "GET", "/models", "", 401, "invalid_request_error", "account_deactivated", ""},
		{"project model access", onlyGPT4o, "POST", "/chat/completions", chat("gpt-4o-mini"), 403, "invalid_request_error", "model_not_found",
			"Project `" + s.Project(onlyGPT4o) + "` does not have access to model `gpt-4o-mini`"},
		{"project model access, responses", onlyGPT4o, "POST", "/responses", `{"model":"gpt-4.1","input":"hi"}`, 403, "invalid_request_error", "model_not_found",
			"Project `" + s.Project(onlyGPT4o) + "` does not have access to model `gpt-4.1`"},
		{"project model allowed", onlyGPT4o, "POST", "/chat/completions", chat("gpt-4o"), 200, "", "", ""},
		{"unknown model first", onlyGPT4o, "POST", "/chat/completions", chat("gpt-9"), 404, "invalid_request_error", "model_not_found",
			"The model `gpt-9` does not exist or you do not have access to it."},
		{"no scopes: chat", restricted, "POST", "/chat/completions", chat("gpt-4o"), 401, "invalid_request_error", null, scopes("model.request")},
		{"no scopes: responses", restricted, "POST", "/responses", `{"model":"gpt-4o","input":"hi"}`, 401, "invalid_request_error", null, scopes("model.request, api.responses.write")},
		{"no scopes: models", restricted, "GET", "/models", "", 401, "invalid_request_error", null, scopes("api.model.read")},
		{"no scopes: model", restricted, "GET", "/models/gpt-4o", "", 401, "invalid_request_error", null, scopes("api.model.read")},
		{"no scopes: files list", restricted, "GET", "/files", "", 401, "invalid_request_error", null, scopes("api.files.read")},
		{"no scopes: file delete", restricted, "DELETE", "/files/file-x", "", 401, "invalid_request_error", null, scopes("api.files.write")},
		{"no scopes: response get", restricted, "GET", "/responses/resp_x", "", 401, "invalid_request_error", null, scopes("api.responses.read")},
		{"no scopes: embeddings", restricted, "POST", "/embeddings", `{"model":"text-embedding-3-small","input":"x"}`, 401, "invalid_request_error", null, scopes("model.request")},
		{"no scopes: invalid URL is still 404", restricted, "GET", "/nope", "", 404, "invalid_request_error", null, "Invalid URL (GET /v1/nope)"},
		{"chat scope: chat", chatOnly, "POST", "/chat/completions", chat("gpt-4o"), 200, "", "", ""},
		{"chat scope: responses", chatOnly, "POST", "/responses", `{"model":"gpt-4o","input":"hi"}`, 401, "invalid_request_error", null, scopes("api.responses.write")},
		{"chat scope: models", chatOnly, "GET", "/models", "", 401, "invalid_request_error", null, scopes("api.model.read")},
		{"read scopes: models", readOnly, "GET", "/models", "", 200, "", "", ""},
		{"read scopes: files list", readOnly, "GET", "/files", "", 200, "", "", ""},
		{"read scopes: response get", readOnly, "GET", "/responses/resp_x", "", 404, "invalid_request_error", null, "Response with id 'resp_x' not found."},
		{"read scopes: file delete", readOnly, "DELETE", "/files/file-x", "", 401, "invalid_request_error", null, scopes("api.files.write")},
		{"read scopes: chat", readOnly, "POST", "/chat/completions", chat("gpt-4o"), 401, "invalid_request_error", null, scopes("model.request")},
		{"unverified org", testKey, "POST", "/chat/completions", chat("gpt-4.1"), 403, "invalid_request_error", null,
			"Your organization must be verified to use the model `gpt-4.1`. Please go to: https://platform.openai.com/settings/organization/general and click on Verify Organization. If you just verified, it can take up to 15 minutes for access to propagate."},
		{"unverified org, other model", testKey, "POST", "/chat/completions", chat("gpt-4o"), 200, "", "", ""},
		{"verified org", verified, "POST", "/chat/completions", chat("gpt-4.1"), 200, "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := request(t, s, tc.method, tc.path, tc.key, tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
			}
			if tc.status == 200 {
				return
			}
			var raw map[string]map[string]json.RawMessage
			if err := json.Unmarshal(b, &raw); err != nil {
				t.Fatal(err)
			}
			if string(raw["error"]["param"]) != "null" {
				t.Errorf("param %s", raw["error"]["param"])
			}
			e := decode[oaError](t, b)
			code := null
			if e.Error.Code != nil {
				code = *e.Error.Code
			}
			if e.Error.Type != tc.typ || code != tc.code || (tc.msg != "" && e.Error.Message != tc.msg) {
				t.Errorf("error %s", b)
			}
		})
	}
}

func TestProjects(t *testing.T) {
	s := newServer(t, Options{})
	s.ConfigureKey("sk-a-000000000000000001", KeyConfig{Project: "team"})
	s.ConfigureKey("sk-b-000000000000000001", KeyConfig{Project: "team"})
	s.ConfigureKey("sk-c-000000000000000001", KeyConfig{Project: "proj_given"})
	s.AddKey("sk-d-000000000000000001", KeyLimits{})
	other := newServer(t, Options{})
	other.AddKey("sk-d-000000000000000001", KeyLimits{})

	a, b, c, d := s.Project("sk-a-000000000000000001"), s.Project("sk-b-000000000000000001"), s.Project("sk-c-000000000000000001"), s.Project("sk-d-000000000000000001")
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"grouped keys share a project", a == b},
		{"a project id looks like proj_ + 24", strings.HasPrefix(a, "proj_") && len(a) == 29},
		{"own projects differ", d != a && d != s.Project(testKey) && strings.HasPrefix(d, "proj_")},
		{"ids are stable", d == other.Project("sk-d-000000000000000001")},
		{"a proj_ value is the id", c == "proj_given"},
		{"unknown key has none", s.Project("sk-nobody") == ""},
	} {
		if !tc.ok {
			t.Errorf("%s (a %s b %s c %s d %s)", tc.name, a, b, c, d)
		}
	}
	resp, _ := request(t, s, "GET", "/models", "sk-a-000000000000000001", "")
	if got := resp.Header.Get("openai-project"); got != a {
		t.Errorf("openai-project %q, want %q", got, a)
	}
	// Not authenticated: no project.
	resp, _ = request(t, s, "GET", "/models", "sk-nobody-0000000000001", "")
	if got := resp.Header.Get("openai-project"); got != "" {
		t.Errorf("openai-project %q on a 401", got)
	}
}
