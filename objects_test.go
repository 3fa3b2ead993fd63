package openairelay

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// The tests share the package-level objectOwners with the end-to-end tests
// of the same binary, so each uses ids of its own.

func TestObjectIDsNamed(t *testing.T) {
	tests := []struct {
		name, method, endpoint, ct, body string
		want                             []string // "field=id" ("" field: the path)
	}{
		{"file path", "GET", "files/file-abc123", "", "", []string{"=file-abc123"}},
		{"file content", "GET", "files/file-abc123/content", "", "", []string{"=file-abc123"}},
		{"trailing and double slashes", "DELETE", "files//file-abc123/", "", "", []string{"=file-abc123"}},
		{"nested: the parent only", "GET", "vector_stores/vs_1/files/file-2", "", "", []string{"=vs_1"}},
		{"thread messages", "GET", "threads/thread_1/messages/msg_2", "", "", []string{"=thread_1"}},
		{"fine-tuning job", "POST", "fine_tuning/jobs/ftjob-9/cancel", "", "", []string{"=ftjob-9"}},
		{"container", "GET", "containers/cntr_1/files/cfile_2/content", "", "", []string{"=cntr_1"}},
		{"eval", "GET", "evals/eval_1/runs/evalrun_2", "", "", []string{"=eval_1"}},
		{"stored chat completion", "GET", "chat/completions/chatcmpl-77", "", "", []string{"=chatcmpl-77"}},
		{"stored chat completion messages", "GET", "chat/completions/chatcmpl-77/messages", "", "", []string{"=chatcmpl-77"}},
		{"chatcmpl elsewhere is no object", "GET", "files/chatcmpl-77", "", "", nil},
		{"list", "GET", "files", "", "", nil},
		{"not an id: bad characters", "GET", "files/file-a.b", "", "", nil},
		{"not an id: prefix only", "GET", "files/file-", "", "", nil},
		{"model path", "GET", "models/gpt-4o", "", "", nil},
		{"previous response", "POST", "responses", "application/json",
			`{"model":"m","input":"x","previous_response_id":"resp_1"}`, []string{"previous_response_id=resp_1"}},
		{"conversation string", "POST", "responses", "application/json",
			`{"model":"m","input":"x","conversation":"conv_1"}`, []string{"conversation=conv_1"}},
		{"conversation object", "POST", "responses", "application/json",
			`{"model":"m","input":"x","conversation":{"id":"conv_2"}}`, []string{"conversation=conv_2"}},
		{"input file", "POST", "responses", "application/json",
			`{"model":"m","input":[{"role":"user","content":[{"type":"input_file","file_id":"file-in"}]}]}`, []string{"file_id=file-in"}},
		{"batch", "POST", "batches", "application/json",
			`{"input_file_id":"file-b","endpoint":"/v1/chat/completions","completion_window":"24h"}`, []string{"input_file_id=file-b"}},
		{"chat file part", "POST", "chat/completions", "application/json",
			`{"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"file-c"}}]}]}`, []string{"file_id=file-c"}},
		{"tools", "POST", "responses", "application/json",
			`{"model":"m","input":"x","tools":[{"type":"file_search","vector_store_ids":["vs_a","vs_b"]},{"type":"code_interpreter","container":"cntr_c"}]}`,
			[]string{"vector_store_ids=vs_a", "vector_store_ids=vs_b", "container=cntr_c"}},
		{"assistant run and attachments", "POST", "threads/thread_t/runs", "application/json",
			`{"assistant_id":"asst_a","additional_messages":[{"role":"user","content":"x","attachments":[{"file_id":"file-d"}]}]}`,
			[]string{"=thread_t", "assistant_id=asst_a", "file_id=file-d"}},
		{"fine-tuning", "POST", "fine_tuning/jobs", "application/json",
			`{"model":"m","training_file":"file-t","validation_file":"file-v"}`, []string{"training_file=file-t", "validation_file=file-v"}},
		{"nested id naming a file", "POST", "evals/eval_e/runs", "application/json",
			`{"data_source":{"type":"jsonl","source":{"type":"file_id","id":"file-s"}}}`, []string{"=eval_e", "id=file-s"}},
		{"case and escapes", "POST", "batches", "application/json",
			`{"Input_File_ID":"file-x","file\u005fids":["file\u002dy"]}`, []string{"input_file_id=file-x", "file_ids=file-y"}},
		{"metadata is the client's", "POST", "responses", "application/json",
			`{"model":"m","input":"x","metadata":{"file_id":"file-meta"}}`, nil},
		{"text is not an id", "POST", "chat/completions", "application/json",
			`{"model":"m","messages":[{"role":"user","content":"file-unknown"}]}`, nil},
		{"input item ids are not objects", "POST", "responses", "application/json",
			`{"model":"m","input":[{"type":"message","id":"msg_1","role":"assistant","content":"x"},{"type":"item_reference","id":"rs_2"}]}`, nil},
		{"JSON as text/plain", "POST", "vector_stores/vs_v/files", "text/plain", `{"file_id":"file-p"}`, []string{"=vs_v", "file_id=file-p"}},
		{"multipart field", "POST", "containers/cntr_m/files", "multipart/form-data; boundary=XX",
			"--XX\r\nContent-Disposition: form-data; name=\"file_id\"\r\n\r\nfile-mp\r\n--XX--\r\n", []string{"=cntr_m", "file_id=file-mp"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ar := &apiRequest{endpoint: tt.endpoint, body: []byte(tt.body)}
			h := http.Header{}
			if tt.ct != "" {
				h.Set("Content-Type", tt.ct)
			}
			if aerr := ar.parseBody(tt.method, h); aerr != nil {
				t.Fatal(aerr)
			}
			var got []string
			ar.namedObjects(func(ref objectRef) bool {
				got = append(got, ref.field+"="+ref.id)
				return true
			})
			if !slices.Equal(got, tt.want) {
				t.Errorf("named %q; want %q", got, tt.want)
			}
		})
	}
}

// testRelay is a provisioned enough relay with clients alice, bob and
// shared (objects shared), and one key.
func testRelay(t *testing.T, poolID string, relayObjects string) (*Relay, map[string]*Client) {
	t.Helper()
	key := &poolKey{id: "k", poolID: poolID, state: &keyState{}}
	rl := &Relay{state: inMemory, Objects: relayObjects, keys: []*poolKey{key},
		tiers: []*tier{{keys: [][]*poolKey{{key}}, upstreams: []*Upstream{{}}}}}
	clients := map[string]*Client{"alice": {Name: "alice"}, "bob": {Name: "bob"}, "shared": {Name: "shared", Objects: objectsShared}}
	for _, n := range []string{"alice", "bob", "shared"} {
		rl.Clients = append(rl.Clients, clients[n])
	}
	if err := rl.provisionObjects(); err != nil {
		t.Fatal(err)
	}
	return rl, clients
}

func testProxyRequest(t *testing.T, rl *Relay, c *Client, method, endpoint, body string) *proxyRequest {
	t.Helper()
	ar := &apiRequest{endpoint: endpoint, body: []byte(body)}
	if aerr := ar.parseBody(method, http.Header{"Content-Type": {"application/json"}}); aerr != nil {
		t.Fatal(aerr)
	}
	return &proxyRequest{rl: rl, client: c, api: ar, req: httptest.NewRequest(method, "/v1/"+endpoint, nil),
		route: routeSet{tiers: rl.tiers, eligible: [][]bool{{true}}}}
}

func TestObjectOwnershipDecisions(t *testing.T) {
	rl, c := testRelay(t, "https://up.example/v1#decisions", "")
	now := time.Now()
	objectOwners.remember("file-decAlice", "https://up.example/v1#decisions", c["alice"].ownerID, now)
	objectOwners.remember("resp_decAlice", "https://up.example/v1#decisions", c["alice"].ownerID, now)
	objectOwners.remember("file-decOtherSite", "https://other.example/v1#x", ownerID("otherpool", "alice"), now)
	tests := []struct {
		client, method, endpoint, body string
		status                         int // 0: allowed
		code, param, message           string
	}{
		{"alice", "GET", "files/file-decAlice", "", 0, "", "", ""},
		{"alice", "GET", "files/file-decAlice/content", "", 0, "", "", ""},
		{"alice", "POST", "responses", `{"model":"m","input":"x","previous_response_id":"resp_decAlice"}`, 0, "", "", ""},
		{"bob", "GET", "files/file-decAlice", "", 404, "", "id", "No such File object: file-decAlice"},
		{"bob", "DELETE", "files/file-decAlice", "", 404, "", "id", "No such File object: file-decAlice"},
		{"bob", "GET", "responses/resp_decAlice", "", 404, "", "", "Response with id 'resp_decAlice' not found."},
		{"bob", "POST", "responses", `{"model":"m","input":"x","previous_response_id":"resp_decAlice"}`,
			400, "previous_response_not_found", "previous_response_id", "Previous response with id 'resp_decAlice' not found."},
		{"bob", "POST", "batches", `{"input_file_id":"file-decAlice","endpoint":"/v1/chat/completions"}`,
			404, "", "input_file_id", "No such File object: file-decAlice"},
		// Another site's alice is another client.
		{"alice", "GET", "files/file-decOtherSite", "", 404, "", "id", "No such File object: file-decOtherSite"},
		// Never seen created: refused unless shared.
		{"alice", "GET", "batches/batch_decUnknown", "", 404, "", "id", "No such Batch object: batch_decUnknown"},
		{"alice", "GET", "vector_stores/vs_decUnknown/files", "", 404, "", "id", "No such Vector store object: vs_decUnknown"},
		{"shared", "GET", "batches/batch_decUnknown", "", 0, "", "", ""},
		// Shared never opens another client's objects.
		{"shared", "GET", "files/file-decAlice", "", 404, "", "id", "No such File object: file-decAlice"},
		{"shared", "POST", "responses", `{"model":"m","input":"x","conversation":{"id":"conv_decUnknown"}}`, 0, "", "", ""},
		{"alice", "POST", "responses", `{"model":"m","input":"x","conversation":{"id":"conv_decUnknown"}}`,
			404, "", "conversation", "No such Conversation object: conv_decUnknown"},
		// The first refused object answers.
		{"alice", "POST", "responses", `{"model":"m","input":[{"role":"user","content":[{"type":"input_file","file_id":"file-decAlice"},{"type":"input_file","file_id":"file-decNone"}]}]}`,
			404, "", "file_id", "No such File object: file-decNone"},
		{"alice", "POST", "chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, 0, "", "", ""},
	}
	for _, tt := range tests {
		pr := testProxyRequest(t, rl, c[tt.client], tt.method, tt.endpoint, tt.body)
		aerr := pr.checkObjects()
		what := tt.client + " " + tt.method + " " + tt.endpoint + " " + tt.body
		if tt.status == 0 {
			if aerr != nil {
				t.Errorf("%s: refused: %v", what, aerr)
			}
			continue
		}
		if aerr == nil {
			t.Errorf("%s: allowed; want %d", what, tt.status)
			continue
		}
		if aerr.Status != tt.status || aerr.Code != tt.code || aerr.Param != tt.param || aerr.Message != tt.message || aerr.Type != "invalid_request_error" {
			t.Errorf("%s: %d %q %q %q; want %d %q %q %q", what, aerr.Status, aerr.Code, aerr.Param, aerr.Message, tt.status, tt.code, tt.param, tt.message)
		}
	}

	// The relay's setting, and a client's own winning over it.
	rlShared, cs := testRelay(t, "https://up.example/v1#decisions-shared", objectsShared)
	cs["bob"].Objects = objectsOwned
	if err := rlShared.provisionObjects(); err != nil {
		t.Fatal(err)
	}
	if aerr := testProxyRequest(t, rlShared, cs["alice"], "GET", "files/file-decNever", "").checkObjects(); aerr != nil {
		t.Errorf("objects shared on the relay: %v", aerr)
	}
	if aerr := testProxyRequest(t, rlShared, cs["bob"], "GET", "files/file-decNever", "").checkObjects(); aerr == nil {
		t.Error("a client with objects owned under a shared relay named an unknown object")
	}
	// The anonymous client of client_auth none.
	rlAnon := &Relay{state: inMemory, ClientAuth: "none", Objects: objectsShared}
	if err := rlAnon.provisionObjects(); err != nil {
		t.Fatal(err)
	}
	if aerr := testProxyRequest(t, rlAnon, anonymousClient, "GET", "files/file-decNever", "").checkObjects(); aerr != nil {
		t.Errorf("anonymous, shared: %v", aerr)
	}
}

func TestObjectPinsToCreatingKey(t *testing.T) {
	rl, c := testRelay(t, "https://up.example/v1#pin", "")
	objectOwners.remember("resp_pinAlice", "https://up.example/v1#pin", c["alice"].ownerID, time.Now())
	pr := testProxyRequest(t, rl, c["alice"], "POST", "responses", `{"model":"m","input":"x","previous_response_id":"resp_pinAlice"}`)
	if aerr := pr.checkObjects(); aerr != nil {
		t.Fatal(aerr)
	}
	if k := pr.pinnedKey(); k == nil || k.poolID != "https://up.example/v1#pin" {
		t.Errorf("pinned to %v; want the creating key", k)
	}
	pr = testProxyRequest(t, rl, c["alice"], "POST", "responses", `{"model":"m","input":"x"}`)
	if aerr := pr.checkObjects(); aerr != nil || pr.pinnedKey() != nil {
		t.Errorf("a request naming nothing is pinned (%v)", aerr)
	}
	// A request that skipped checkObjects (the relay's own) finds its pin.
	pr = testProxyRequest(t, rl, c["alice"], "GET", "responses/resp_pinAlice", "")
	if k := pr.pinnedKey(); k == nil {
		t.Error("not pinned without checkObjects")
	}
}

func TestObjectStableOwnerIDs(t *testing.T) {
	mk := func(poolIDs ...string) *Relay {
		rl := &Relay{Clients: []*Client{{Name: "alice"}}}
		for _, p := range poolIDs {
			rl.keys = append(rl.keys, &poolKey{poolID: p})
		}
		rl.hashKeyPool()
		if err := rl.provisionObjects(); err != nil {
			t.Fatal(err)
		}
		return rl
	}
	a := mk("u#1", "u#2").Clients[0].ownerID
	if b := mk("u#2", "u#1").Clients[0].ownerID; a != b {
		t.Errorf("the order of the keys changed the id: %s %s", a, b)
	}
	if b := mk("u#1", "u#2", "u#2").Clients[0].ownerID; a != b {
		t.Errorf("a key used twice changed the id: %s %s", a, b)
	}
	if b := mk("u#1", "u#3").Clients[0].ownerID; a == b {
		t.Error("two key pools gave one id")
	}
	if !strings.Contains(a, "alice") {
		t.Errorf("id %s", a)
	}
	bad := &Relay{Objects: "everyone"}
	if err := bad.provisionObjects(); err == nil {
		t.Error("objects everyone accepted")
	}
	bad = &Relay{Clients: []*Client{{Name: "x", Objects: "mine"}}}
	if err := bad.provisionObjects(); err == nil || !strings.Contains(err.Error(), "client x") {
		t.Errorf("client objects mine: %v", err)
	}
}

func TestObjectTableBoundedAndForgets(t *testing.T) {
	tab := newObjectTable(3)
	now := time.Now()
	for i := range 5 {
		tab.remember(fmt.Sprintf("file-%d", i), "k", "o", now)
	}
	tab.remember("resp_1", "k", "o", now) // another ring: pushes no file out
	for i, want := range []bool{false, false, true, true, true} {
		if _, ok := tab.get(fmt.Sprintf("file-%d", i)); ok != want {
			t.Errorf("file-%d kept %v; want %v", i, ok, want)
		}
	}
	if _, ok := tab.get("resp_1"); !ok || tab.len() != 4 {
		t.Errorf("resp_1 not kept, or %d records", tab.len())
	}
	// The first record stays: a later answer naming the id changes nothing.
	tab.remember("file-4", "k2", "o2", now)
	if rec, _ := tab.get("file-4"); rec.owner != "o" || rec.key != "k" {
		t.Errorf("record replaced: %+v", rec)
	}
	tab.forget("file-3")
	if _, ok := tab.get("file-3"); ok {
		t.Error("forgotten record kept")
	}
	// Re-created after a delete, then pushed out by newer ones: the slot
	// left empty must not take the new record with it early.
	tab.remember("file-3", "k", "o3", now)
	tab.remember("file-5", "k", "o", now)
	if _, ok := tab.get("file-3"); !ok {
		t.Error("re-created record lost")
	}
	tab.remember("not-an-id", "k", "o", now)
	tab.remember("chatcmpl-9", "k", "o", now)
	if _, ok := tab.get("not-an-id"); ok {
		t.Error("recorded something that is no object id")
	}
	if _, ok := tab.get("chatcmpl-9"); !ok {
		t.Error("stored chat completion not recorded")
	}

	// A snapshot and its restore give the same records, oldest first.
	snap := tab.snapshot()
	again := newObjectTable(3)
	again.restore(snap)
	if !slices.Equal(again.snapshot().Items, snap.Items) {
		t.Errorf("restored %v; want %v", again.snapshot().Items, snap.Items)
	}
	again.restore(&objectsSnapshot{Keys: []string{"k"}, Owners: []string{"o"}, Items: []string{"file-x 0 5 1", "file-y 1 0 1", "bad", "file-z 0 0 1"}})
	if _, ok := again.get("file-z"); !ok {
		t.Error("good item not restored")
	}
	if _, ok := again.get("file-x"); ok {
		t.Error("item with a bad index restored")
	}
}

func TestObjectsSnapshotRoundTrip(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	created := time.Unix(1_700_000_000, 0)
	objectOwners.remember("file-snapOwned", "https://up.example/v1#snap", "client:alice@snap", created)
	objectOwners.remember("resp_snapOwned", "https://up.example/v1#snap", "client:bob@snap", created)
	if err := saveSnapshot(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(snapshotPath())
	if !strings.Contains(string(data), "file-snapOwned") {
		t.Fatalf("snapshot: %.500s", data)
	}
	// A restart.
	objectOwners.forget("file-snapOwned")
	objectOwners.forget("resp_snapOwned")
	persisted.mu.Lock()
	persisted.loaded = false
	persisted.restore = snapshot{}
	persisted.mu.Unlock()
	loadSnapshot(nil)
	for id, owner := range map[string]string{"file-snapOwned": "client:alice@snap", "resp_snapOwned": "client:bob@snap"} {
		rec, ok := objectOwners.get(id)
		if !ok || rec.owner != owner || rec.key != "https://up.example/v1#snap" || rec.created != created.Unix() {
			t.Errorf("%s restored as %+v %v", id, rec, ok)
		}
	}
}

func TestObjectRememberedFromAnswers(t *testing.T) {
	rl, c := testRelay(t, "https://up.example/v1#remember", "")
	alice := c["alice"]
	key := rl.keys[0]
	answer := func(method, endpoint, body, ans string) {
		t.Helper()
		testProxyRequest(t, rl, alice, method, endpoint, body).rememberResponse(key, []byte(ans), nil)
	}
	owned := func(id string) bool {
		rec, ok := objectOwners.get(id)
		return ok && rec.owner == alice.ownerID && rec.key == key.poolID
	}
	answer("POST", "files", `{}`, `{"id":"file-remUp","object":"file"}`)
	answer("POST", "responses", `{"model":"m","input":"x"}`, `{"id":"resp_remA","object":"response"}`)
	answer("POST", "responses", `{"model":"m","input":"x","store":false}`, `{"id":"resp_remNotStored"}`)
	answer("POST", "chat/completions", `{"model":"m","messages":[],"store":true}`, `{"id":"chatcmpl-remStored"}`)
	answer("POST", "chat/completions", `{"model":"m","messages":[]}`, `{"id":"chatcmpl-remNot"}`)
	answer("POST", "threads/runs", `{"assistant_id":"asst_x"}`, `{"id":"run_1","thread_id":"thread_remT"}`)
	answer("POST", "uploads/upload_x/complete", `{"part_ids":[]}`, `{"id":"upload_x","file":{"id":"file-remUpl"}}`)
	answer("POST", "batches", `{"input_file_id":"file-remUp"}`, `{"id":"batch_remB","output_file_id":null}`)
	answer("GET", "batches/batch_remB", "", `{"id":"batch_remB","output_file_id":"file-remOut","error_file_id":"file-remErr"}`)
	answer("POST", "vector_stores/vs_x/files", `{"file_id":"file-remUp"}`, `{"id":"file-remAttach"}`)
	// What the upstream made for the client's objects is the client's; what
	// the answer echoes of the request is not made for it.
	answer("POST", "responses", `{"model":"m","input":"x","tools":[{"type":"code_interpreter","container":{"type":"auto"}},{"type":"file_search","vector_store_ids":["vs_remEchoed"]}]}`,
		`{"id":"resp_remCI","output":[{"type":"code_interpreter_call","id":"ci_1","container_id":"cntr_remAuto"}],"tools":[{"type":"file_search","vector_store_ids":["vs_remEchoed"]}],"metadata":{"container_id":"cntr_remMeta"}}`)
	answer("POST", "assistants", `{"model":"m","tool_resources":{"file_search":{"vector_stores":[{"file_ids":["file-remUp"]}]}}}`,
		`{"id":"asst_remA","tool_resources":{"file_search":{"vector_store_ids":["vs_remMade"]}}}`)
	tap := newStreamTap("responses", false)
	tap.feed([]byte("event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_remStream\"}}\n\n"))
	testProxyRequest(t, rl, alice, "POST", "responses", `{"model":"m","input":"x","stream":true}`).rememberResponse(key, nil, tap)
	for _, id := range []string{"file-remUp", "resp_remA", "chatcmpl-remStored", "thread_remT", "file-remUpl", "batch_remB", "file-remOut", "file-remErr", "resp_remStream",
		"resp_remCI", "cntr_remAuto", "asst_remA", "vs_remMade"} {
		if !owned(id) {
			t.Errorf("%s not recorded as alice's", id)
		}
	}
	for _, id := range []string{"resp_remNotStored", "chatcmpl-remNot", "file-remAttach", "run_1", "vs_remEchoed", "cntr_remMeta"} {
		if _, ok := objectOwners.get(id); ok {
			t.Errorf("%s recorded", id)
		}
	}
	// Deleting a file from a vector store leaves the file; deleting it
	// forgets it.
	answer("DELETE", "vector_stores/vs_x/files/file-remUp", "", `{"id":"file-remUp","deleted":true}`)
	if !owned("file-remUp") {
		t.Error("detaching a file forgot it")
	}
	answer("DELETE", "files/file-remUp", "", `{"id":"file-remUp","object":"file","deleted":true}`)
	if _, ok := objectOwners.get("file-remUp"); ok {
		t.Error("a deleted file is still recorded")
	}
}

// fakeList is an upstream list of items, owner by owner, served in pages as
// the API does.
type fakeList struct {
	ids   []string
	pages int // pages served
}

func (l *fakeList) page(after string, limit int) []byte {
	from := 0
	if after != "" {
		from = slices.Index(l.ids, after) + 1
	}
	to := min(from+limit, len(l.ids))
	data := make([]map[string]any, 0, to-from)
	for _, id := range l.ids[from:to] {
		data = append(data, map[string]any{"id": id, "object": "file"})
	}
	body, _ := json.Marshal(map[string]any{"object": "list", "data": data, "has_more": to < len(l.ids), "extra": "kept"})
	return body
}

func TestObjectListPagination(t *testing.T) {
	// 30 items, every third one the client's: a0 b1 c2 a3 b4 ...
	var ids []string
	for i := range 30 {
		ids = append(ids, fmt.Sprintf("%c%02d", "abc"[i%3], i))
	}
	mine := func(id string, _ []byte) bool { return id[0] == 'a' }
	type out struct {
		Object  string            `json:"object"`
		Data    []json.RawMessage `json:"data"`
		FirstID *string           `json:"first_id"`
		LastID  *string           `json:"last_id"`
		HasMore bool              `json:"has_more"`
		Extra   string            `json:"extra"`
	}
	tests := []struct {
		name           string
		after          string
		firstLimit     int // the client's limit, as the first page was fetched
		want           int
		pageLimit      int
		fail           bool
		wantIDs        string
		wantMore       bool
		wantPagesAfter int
	}{
		{"all in one page", "", 100, 100, 100, false, "a00 a03 a06 a09 a12 a15 a18 a21 a24 a27", false, 0},
		{"limit 2 on one page", "", 10, 2, 100, false, "a00 a03", true, 0},
		{"limit 2 after a cursor", "a03", 10, 2, 100, false, "a06 a09", true, 0},
		{"small pages followed", "", 2, 4, 2, false, "a00 a03 a06 a09", true, 4},
		{"the end before the limit", "a21", 2, 3, 2, false, "a24 a27", false, 3},
		{"nothing after the last", "a27", 2, 2, 2, false, "", false, 0},
		{"bounded pages", "", 1, 100, 1, false, "a00 a03 a06 a09", true, maxListPages - 1},
		{"a page fails", "", 2, 5, 2, true, "a00", true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &fakeList{ids: ids}
			first := l.page(tt.after, tt.firstLimit)
			next := func(after string) ([]byte, bool) {
				if tt.fail {
					return nil, false
				}
				l.pages++
				return l.page(after, tt.pageLimit), true
			}
			body, err := ownPage(first, tt.want, mine, next)
			if err != nil {
				t.Fatal(err)
			}
			var o out
			if err := json.Unmarshal(body, &o); err != nil {
				t.Fatalf("%v: %s", err, body)
			}
			var got []string
			for _, it := range o.Data {
				got = append(got, stringMember(it, "id"))
			}
			if strings.Join(got, " ") != tt.wantIDs || o.HasMore != tt.wantMore || o.Object != "list" || o.Extra != "kept" {
				t.Errorf("got %v has_more %v (%s); want %s has_more %v", got, o.HasMore, body, tt.wantIDs, tt.wantMore)
			}
			if len(got) > 0 && (o.FirstID == nil || *o.FirstID != got[0] || o.LastID == nil || *o.LastID != got[len(got)-1]) {
				t.Errorf("first_id/last_id: %s", body)
			}
			if len(got) == 0 && (o.FirstID != nil || o.LastID != nil || !strings.Contains(string(body), `"data":[]`)) {
				t.Errorf("empty page: %s", body)
			}
			if l.pages != tt.wantPagesAfter {
				t.Errorf("%d further pages read; want %d", l.pages, tt.wantPagesAfter)
			}
		})
	}
	// The members' order is the upstream's; those it lacks are added.
	body, err := ownPage([]byte(`{"object":"list","data":[{"id":"a1"},{"id":"b2"}],"has_more":false}`), 20, mine, nil)
	if err != nil || string(body) != `{"object":"list","data":[{"id":"a1"}],"has_more":false,"first_id":"a1","last_id":"a1"}` {
		t.Errorf("%s %v", body, err)
	}
	if _, err := ownPage([]byte(`{"error":{}}`), 20, mine, nil); err == nil {
		t.Error("a page that is no list was accepted")
	}
}

func TestObjectsCaddyfileOption(t *testing.T) {
	for _, tt := range []struct{ input, want string }{
		{"openai_relay {\n\tobjects maybe\n}", `objects must be owned or shared, got "maybe"`},
		{"openai_relay {\n\tobjects shared\n\tobjects owned\n}", "objects already specified"},
		{"openai_relay {\n\tobjects\n}", "objects takes one argument"},
		{"openai_relay {\n\tclient a {\n\t\tkey k\n\t\tobjects shared owned\n\t}\n}", "objects takes one argument"},
	} {
		err := new(Relay).UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v; want %q", tt.input, err, tt.want)
		}
	}
	rl := new(Relay)
	if err := rl.UnmarshalCaddyfile(caddyfile.NewTestDispenser("openai_relay {\n\tobjects shared\n\tclient a {\n\t\tkey k\n\t\tobjects owned\n\t}\n}")); err != nil {
		t.Fatal(err)
	}
	if rl.Objects != objectsShared || rl.Clients[0].Objects != objectsOwned {
		t.Errorf("parsed %q and %q", rl.Objects, rl.Clients[0].Objects)
	}
}
