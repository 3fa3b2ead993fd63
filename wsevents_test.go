package openairelay

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
)

func TestReadEventHead(t *testing.T) {
	cases := []struct {
		msg     string
		typ, id string
		ok      bool
	}{
		{`{"type":"response.create","event_id":"evt_1"}`, "response.create", "evt_1", true},
		{` {"event_id":"e","response":{"type":"inner"},"type":"session.update"}`, "session.update", "e", true},
		{`{"type":"resp\u006Fnse.done"}`, "response.done", "", true},
		{`{"type":1}`, "", "", false},
		{`{"event_id":"x"}`, "", "x", false},
		{`[1,2]`, "", "", false},
		{`{"type":"a"`, "a", "", true}, // read, not validated: see clientMessage
		{``, "", "", false},
	}
	for _, tc := range cases {
		h, ok := readEventHead([]byte(tc.msg))
		if ok != tc.ok || (ok && (h.typ != tc.typ || h.eventID != tc.id)) {
			t.Errorf("%s: %+v %v, want %q %q %v", tc.msg, h, ok, tc.typ, tc.id, tc.ok)
		}
	}
}

func TestSessionEventFields(t *testing.T) {
	if m, ok := sessionModel([]byte(`{"type":"session.update","session":{"type":"realtime","model":"gpt-4o"}}`)); !ok || m != "gpt-4o" {
		t.Errorf("sessionModel %q %v", m, ok)
	}
	if _, ok := sessionModel([]byte(`{"type":"session.update","session":{"instructions":"x"}}`)); ok {
		t.Error("a session.update without a model names one")
	}
	for msg, want := range map[string]int64{
		`{"type":"response.create","response":{"max_output_tokens":200}}`:         200,
		`{"type":"response.create","response":{"max_response_output_tokens":50}}`: 50,
		`{"type":"response.create","response":{"max_output_tokens":"inf"}}`:       0,
		`{"type":"response.create"}`:                                              0,
	} {
		if got := realtimeAllowance([]byte(msg)); got != want {
			t.Errorf("%s: allowance %d, want %d", msg, got, want)
		}
	}
	if id := errorEventOf([]byte(`{"type":"error","error":{"type":"invalid_request_error","event_id":"evt_9"}}`)); id != "evt_9" {
		t.Errorf("errorEventOf %q", id)
	}
	var names []string
	eachArrayObject([]byte(` [ {"name":"requests"} , 3, {"name":"tokens"}]`), func(obj []byte) {
		names = append(names, stringMember(obj, "name"))
	})
	if !slices.Equal(names, []string{"requests", "tokens"}) {
		t.Errorf("eachArrayObject %v", names)
	}
}

// TestWSErrorEventShapes checks the relay's error events against the API's:
// the Realtime error event (openai-go realtime.RealtimeErrorEvent) and the
// Responses WebSocket mode's ({type, status, error}).
func TestWSErrorEventShapes(t *testing.T) {
	aerr := &apiError{Status: http.StatusTooManyRequests, Type: "requests", Code: "rate_limit_exceeded", Message: "slow down"}
	var rt struct {
		Type    string `json:"type"`
		EventID string `json:"event_id"`
		Error   struct {
			Type, Message string
			Code, Param   *string
			EventID       *string `json:"event_id"`
		} `json:"error"`
	}
	if err := json.Unmarshal(wsErrorEvent(true, aerr, "evt_1"), &rt); err != nil {
		t.Fatal(err)
	}
	if rt.Type != "error" || rt.EventID == "" || rt.Error.Type != "requests" || *rt.Error.Code != "rate_limit_exceeded" ||
		rt.Error.Param != nil || *rt.Error.EventID != "evt_1" || rt.Error.Message != "slow down" {
		t.Errorf("realtime error event %+v", rt)
	}
	var rs struct {
		Type   string `json:"type"`
		Status int    `json:"status"`
		Error  struct{ Type, Code, Message string }
	}
	ev := wsErrorFromAnswer(false, 404, []byte(`{"error":{"message":"no such model","type":"invalid_request_error","param":null,"code":"model_not_found"}}`), "")
	if err := json.Unmarshal(ev, &rs); err != nil {
		t.Fatal(err)
	}
	if rs.Type != "error" || rs.Status != 404 || rs.Error.Code != "model_not_found" || rs.Error.Message != "no such model" {
		t.Errorf("responses error event %s", ev)
	}
}
