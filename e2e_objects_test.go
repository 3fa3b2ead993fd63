package openairelay_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

// Stored objects belong to the client whose request created them: two
// clients of one relay over keys of one upstream project (so the upstream
// itself would let each see the other's objects), and two sites.

// sharedProject puts upstream keys in one project of the fake: its objects
// are visible to all of them, as to every key of one organisation.
func sharedProject(fake *fakeopenai.Server, project string, keys []string) {
	for _, k := range keys {
		fake.ConfigureKey(k, fakeopenai.KeyConfig{Project: project})
	}
}

// objectsRelay starts a relay with clients alice and bob (keys
// rk-<name>-alice, rk-<name>-bob) and the extra lines, over two keys of one
// project. It returns the relay block, to start again for a reload.
func objectsRelay(t *testing.T, fake *fakeopenai.Server, name, extra string) string {
	t.Helper()
	envs, keys := setKeys(t, fake, "obj"+name, 2, fakeopenai.KeyLimits{})
	sharedProject(fake, "proj-objects-"+name, keys)
	block := fmt.Sprintf(`
		client alice {
			key rk-%[1]s-alice
		}
		client bob {
			key rk-%[1]s-bob
		}
%[2]s
		upstream orgs {UPSTREAM} {
%[3]s		}`, name, extra, envs)
	startRelay(t, fake, block)
	return block
}

// rawCall sends a request without a body to the relay.
func rawCall(t *testing.T, base, method, clientKey, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, base+path, nil)
	req.Header.Set("Authorization", "Bearer "+clientKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func uploadFile(t *testing.T, client openai.Client, content string, opts ...option.RequestOption) string {
	t.Helper()
	f, err := client.Files.New(context.Background(), openai.FileNewParams{
		File:    openai.File(strings.NewReader(content), "data.jsonl", "application/jsonl"),
		Purpose: openai.FilePurposeUserData,
	}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return f.ID
}

// uploadDirect stores a file at the upstream without the relay, as one made
// before the relay was put in front of the organisation.
func uploadDirect(t *testing.T, fake *fakeopenai.Server, key, content string) string {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	_ = mw.WriteField("purpose", "user_data")
	fw, _ := mw.CreateFormFile("file", "old.jsonl")
	_, _ = io.WriteString(fw, content)
	_ = mw.Close()
	req, _ := http.NewRequest(http.MethodPost, fake.URL()+"/files", &body)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("direct upload: %d %s", resp.StatusCode, out)
	}
	return idOf(t, string(out))
}

// wantAPIError checks an SDK error is the API's answer with this status and
// message.
func wantAPIError(t *testing.T, what string, err error, status int, message string) {
	t.Helper()
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Errorf("%s: %v; want %d %q", what, err, status, message)
		return
	}
	if apiErr.StatusCode != status || (message != "" && apiErr.Message != message) {
		t.Errorf("%s: %d %q; want %d %q", what, apiErr.StatusCode, apiErr.Message, status, message)
	}
}

func listFileIDs(t *testing.T, client openai.Client, opts ...option.RequestOption) []string {
	t.Helper()
	pager := client.Files.ListAutoPaging(context.Background(), openai.FileListParams{Limit: openai.Int(2)}, opts...)
	var ids []string
	for pager.Next() {
		ids = append(ids, pager.Current().ID)
	}
	if err := pager.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}

// assertNothingReached checks that the upstream saw no request since its
// records were reset.
func assertNothingReached(t *testing.T, fake *fakeopenai.Server, what string) {
	t.Helper()
	for _, rec := range fake.Records() {
		t.Errorf("%s: %s %s reached the upstream", what, rec.Method, rec.Path)
	}
}

func TestE2EObjectsIsolatedBetweenClients(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	objectsRelay(t, fake, "iso", "")
	alice, bob := sdk("rk-iso-alice"), sdk("rk-iso-bob")
	ctx := context.Background()

	fileID := uploadFile(t, alice, `{"secret":"alice's data"}`)
	resp, err := alice.Responses.New(ctx, responses.ResponseNewParams{
		Model: "gpt-4o-mini",
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("alice's question")},
	})
	if err != nil {
		t.Fatal(err)
	}

	// Bob names alice's objects every way: nothing reaches the upstream.
	fake.ResetRecords()
	noFile := "No such File object: " + fileID
	_, err = bob.Files.Get(ctx, fileID)
	wantAPIError(t, "bob reads alice's file", err, 404, noFile)
	_, err = bob.Files.Content(ctx, fileID)
	wantAPIError(t, "bob downloads alice's file", err, 404, noFile)
	_, err = bob.Files.Delete(ctx, fileID)
	wantAPIError(t, "bob deletes alice's file", err, 404, noFile)
	_, err = bob.Responses.Get(ctx, resp.ID, responses.ResponseGetParams{})
	wantAPIError(t, "bob reads alice's response", err, 404, "Response with id '"+resp.ID+"' not found.")
	_, err = bob.Responses.New(ctx, responses.ResponseNewParams{
		Model:              "gpt-4o-mini",
		Input:              responses.ResponseNewParamsInputUnion{OfString: openai.String("what did alice ask?")},
		PreviousResponseID: openai.String(resp.ID),
	})
	wantAPIError(t, "bob continues alice's response", err, 400, "Previous response with id '"+resp.ID+"' not found.")
	var apiErr *openai.Error
	if errors.As(err, &apiErr) && apiErr.Code != "previous_response_not_found" {
		t.Errorf("code %q", apiErr.Code)
	}
	code, body := rawCall(t, relayBase, http.MethodGet, "rk-iso-bob", "/responses/"+resp.ID+"/input_items")
	if code != 404 {
		t.Errorf("bob reads alice's input items: %d %s", code, body)
	}
	code, _, body = rawPost(t, "rk-iso-bob", "/batches", `{"input_file_id":"`+fileID+`","endpoint":"/v1/chat/completions","completion_window":"24h"}`)
	if code != 404 || !strings.Contains(body, noFile) || !strings.Contains(body, `"param":"input_file_id"`) {
		t.Errorf("bob batches alice's file: %d %s", code, body)
	}
	assertNothingReached(t, fake, "bob's attempts")

	// Lists: each sees their own.
	bobFile := uploadFile(t, bob, `{"bob":1}`)
	if ids := listFileIDs(t, bob); !slices.Equal(ids, []string{bobFile}) {
		t.Errorf("bob lists %v; want only %s", ids, bobFile)
	}
	if ids := listFileIDs(t, alice); !slices.Equal(ids, []string{fileID}) {
		t.Errorf("alice lists %v; want only %s", ids, fileID)
	}

	// Alice uses her own.
	if f, err := alice.Files.Get(ctx, fileID); err != nil || f.ID != fileID {
		t.Errorf("alice reads her file: %v", err)
	}
	content, err := alice.Files.Content(ctx, fileID)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(content.Body)
	content.Body.Close()
	if string(data) != `{"secret":"alice's data"}` {
		t.Errorf("alice's content %q", data)
	}
	if _, err := alice.Responses.Get(ctx, resp.ID, responses.ResponseGetParams{}); err != nil {
		t.Errorf("alice reads her response: %v", err)
	}
	if _, err := alice.Responses.New(ctx, responses.ResponseNewParams{
		Model:              "gpt-4o-mini",
		Input:              responses.ResponseNewParamsInputUnion{OfString: openai.String("and then?")},
		PreviousResponseID: openai.String(resp.ID),
	}); err != nil {
		t.Errorf("alice continues her response: %v", err)
	}

	// A delete removes the record: the id is then one the relay does not
	// know, refused without asking the upstream.
	if res, err := alice.Files.Delete(ctx, fileID); err != nil || !res.Deleted {
		t.Fatalf("alice deletes her file: %v", err)
	}
	fake.ResetRecords()
	_, err = alice.Files.Get(ctx, fileID)
	wantAPIError(t, "alice reads her deleted file", err, 404, noFile)
	assertNothingReached(t, fake, "a deleted file")
	// Bob's file was not touched by any of it.
	if _, err := bob.Files.Get(ctx, bobFile); err != nil {
		t.Errorf("bob reads his file: %v", err)
	}
}

func TestE2EObjectsUnknownRefusedUnlessShared(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	block := objectsRelay(t, fake, "unknown", `
		client carol {
			key rk-unknown-carol
			objects shared
		}`)
	upKey := os.Getenv("E2E_OBJUNKNOWN_0")
	old := uploadDirect(t, fake, upKey, "made before the relay")
	alice, carol := sdk("rk-unknown-alice"), sdk("rk-unknown-carol")
	ctx := context.Background()
	aliceFile := uploadFile(t, alice, "alice")

	fake.ResetRecords()
	_, err := alice.Files.Get(ctx, old)
	wantAPIError(t, "alice names a file the relay never saw created", err, 404, "No such File object: "+old)
	code, body := rawCall(t, relayBase, http.MethodGet, "rk-unknown-alice", "/batches/batch_neverseen")
	if code != 404 || !strings.Contains(body, "No such Batch object: batch_neverseen") {
		t.Errorf("an unknown batch: %d %s", code, body)
	}
	assertNothingReached(t, fake, "unknown ids")

	// Carol, with objects shared, may name it, and lists it; alice's file
	// stays alice's.
	if f, err := carol.Files.Get(ctx, old); err != nil || f.ID != old {
		t.Errorf("carol (shared) reads the old file: %v", err)
	}
	_, err = carol.Files.Get(ctx, aliceFile)
	wantAPIError(t, "carol (shared) reads alice's file", err, 404, "No such File object: "+aliceFile)
	if ids := listFileIDs(t, carol); !slices.Equal(ids, []string{old}) {
		t.Errorf("carol lists %v; want %s only", ids, old)
	}
	if ids := listFileIDs(t, alice); !slices.Equal(ids, []string{aliceFile}) {
		t.Errorf("alice lists %v; want %s only", ids, aliceFile)
	}

	// objects shared for the whole relay; a client may still say owned.
	startRelay(t, fake, block+`
		client dave {
			key rk-unknown-dave
			objects owned
		}
		objects shared`)
	if _, err := alice.Files.Get(ctx, old); err != nil {
		t.Errorf("alice under a shared relay: %v", err)
	}
	dave := sdk("rk-unknown-dave")
	_, err = dave.Files.Get(ctx, old)
	wantAPIError(t, "dave (owned) under a shared relay", err, 404, "No such File object: "+old)
	bob := sdk("rk-unknown-bob")
	_, err = bob.Files.Get(ctx, aliceFile)
	wantAPIError(t, "bob under a shared relay reads alice's file", err, 404, "No such File object: "+aliceFile)
}

func TestE2EObjectListsPaginated(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	objectsRelay(t, fake, "pages", "")
	alice, bob := sdk("rk-pages-alice"), sdk("rk-pages-bob")
	var mine []string
	for i := range 5 {
		mine = append(mine, uploadFile(t, alice, fmt.Sprint("alice ", i)))
		for j := range 3 {
			uploadFile(t, bob, fmt.Sprint("bob ", i, j))
		}
	}
	slices.Reverse(mine) // the API lists the newest first
	if got := listFileIDs(t, alice); !slices.Equal(got, mine) {
		t.Errorf("alice's pages: %v; want %v", got, mine)
	}
	fake.ResetRecords()
	code, body := rawCall(t, relayBase, http.MethodGet, "rk-pages-alice", "/files?limit=2&order=desc")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	for _, want := range []string{`"object":"list"`, `"first_id":"` + mine[0] + `"`, `"last_id":"` + mine[1] + `"`, `"has_more":true`} {
		if !strings.Contains(body, want) {
			t.Errorf("page %s lacks %s", body, want)
		}
	}
	// The first upstream page (limit 2) held one of alice's; the relay read
	// on until it had two and saw a third.
	recs := fake.Records()
	if len(recs) < 2 || len(recs) > 10 {
		t.Errorf("%d upstream pages for one list", len(recs))
	}
	for _, rec := range recs[1:] {
		if !strings.Contains(rec.Query, "after=") {
			t.Errorf("a further page without a cursor: %s", rec.Query)
		}
	}
	code, body = rawCall(t, relayBase, http.MethodGet, "rk-pages-alice", "/files?limit=3&after="+mine[3])
	if code != 200 || !strings.Contains(body, `"first_id":"`+mine[4]+`"`) || !strings.Contains(body, `"has_more":false`) {
		t.Errorf("the last page: %d %s", code, body)
	}
}

func TestE2EObjectOwnershipSurvivesReload(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	block := objectsRelay(t, fake, "reload", "")
	alice := sdk("rk-reload-alice")
	fileID := uploadFile(t, alice, "kept across reloads")
	startRelay(t, fake, block+"\n\t\tretries 1") // another config, the same keys and names
	if _, err := alice.Files.Get(context.Background(), fileID); err != nil {
		t.Errorf("alice after a reload: %v", err)
	}
	fake.ResetRecords()
	bob := sdk("rk-reload-bob")
	_, err := bob.Files.Get(context.Background(), fileID)
	wantAPIError(t, "bob after a reload", err, 404, "No such File object: "+fileID)
	assertNothingReached(t, fake, "bob after a reload")

	// The record is in the snapshot, for a restart (the writer saves every
	// 200ms in tests).
	waitFor(t, func() bool {
		data, _ := os.ReadFile(snapshotFile())
		return strings.Contains(string(data), fileID)
	}, "the snapshot to hold "+fileID)
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for range 50 {
		if cond() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("timed out waiting for %s", what)
}

// TestE2EObjectsTwoSitesDoNotShare runs two relay handlers with different
// key pools (of one upstream project), each with a client named alice.
func TestE2EObjectsTwoSitesDoNotShare(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	envA, keysA := setKeys(t, fake, "objsitea", 1, fakeopenai.KeyLimits{})
	envB, keysB := setKeys(t, fake, "objsiteb", 1, fakeopenai.KeyLimits{})
	sharedProject(fake, "proj-objects-sites", append(keysA, keysB...))
	site := func(name, keys string) string {
		return fmt.Sprintf(`
	handle_path /%s/* {
		openai_relay {
			client alice {
				key rk-sites-alice-%s
			}
			upstream orgs %s {
%s			}
		}
	}`, name, name, fake.URL(), keys)
	}
	startSites(t, "", site("a", envA), site("b", envB))
	siteA := option.WithBaseURL("http://localhost:" + httpPort + "/a/v1")
	siteB := option.WithBaseURL("http://localhost:" + httpPort + "/b/v1")
	aliceA, aliceB := sdk("rk-sites-alice-a"), sdk("rk-sites-alice-b")
	ctx := context.Background()

	fileA := uploadFile(t, aliceA, "site a", siteA)
	fileB := uploadFile(t, aliceB, "site b", siteB)
	fake.ResetRecords()
	_, err := aliceB.Files.Get(ctx, fileA, siteB)
	wantAPIError(t, "site b's alice reads site a's alice's file", err, 404, "No such File object: "+fileA)
	_, err = aliceA.Files.Content(ctx, fileB, siteA)
	wantAPIError(t, "site a's alice downloads site b's alice's file", err, 404, "No such File object: "+fileB)
	assertNothingReached(t, fake, "across sites")
	if ids := listFileIDs(t, aliceB, siteB); !slices.Equal(ids, []string{fileB}) {
		t.Errorf("site b's alice lists %v; want %s only", ids, fileB)
	}
	if ids := listFileIDs(t, aliceA, siteA); !slices.Equal(ids, []string{fileA}) {
		t.Errorf("site a's alice lists %v; want %s only", ids, fileA)
	}
	if _, err := aliceA.Files.Get(ctx, fileA, siteA); err != nil {
		t.Errorf("site a's alice reads her file: %v", err)
	}
}
