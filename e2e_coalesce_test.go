package openairelay_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

// TestE2ECoalescingSurvivesTheLeaderLeaving checks that identical requests
// folded into a first one keep receiving its stream when the first client
// goes away: the upstream read is not tied to that client.
func TestE2ECoalescingSurvivesTheLeaderLeaving(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{StreamChunks: 6, ChunkDelay: 200 * time.Millisecond})
	defer fake.Close()
	k := startCachedRelay(t, fake, "leaderleaves", "")
	body := `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"the leader leaves early"}]}`

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leaderGot := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, relayBase+"/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer rk-cache-app")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		leaderGot <- err
	}()
	time.Sleep(300 * time.Millisecond) // the leader is in flight
	var wg sync.WaitGroup
	followers := make([]string, 3)
	for i := range followers {
		wg.Go(func() {
			code, h, b := rawPost(t, "rk-cache-app", "/chat/completions", body)
			if code != 200 || h.Get("X-Relay-Cache") != "COALESCED" {
				t.Errorf("follower %d: %d %s %q", i, code, h.Get("X-Relay-Cache"), b)
			}
			followers[i] = b
		})
	}
	time.Sleep(200 * time.Millisecond)
	cancel() // the leader's client goes away mid-stream
	if err := <-leaderGot; err == nil {
		t.Error("the leader's client read a whole answer after it left")
	}
	wg.Wait()
	for i, b := range followers {
		if !strings.HasSuffix(b, "data: [DONE]\n\n") || strings.Count(b, `"content":"`) < 6 {
			t.Errorf("follower %d got a cut stream after the leader left: %q", i, b)
		}
	}
	if c := fake.Count(k); c != 1 {
		t.Errorf("upstream called %d times; want 1", c)
	}
}

// TestE2ECoalescedFailureIsShared checks that when the first of identical
// requests fails after its retries, the others get its answer instead of
// each running the retry cycle again.
func TestE2ECoalescedFailureIsShared(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	k := startCachedRelay(t, fake, "sharedfailure", "")
	fake.AddFault(fakeopenai.Fault{Status: 500, Latency: 400 * time.Millisecond})
	defer fake.ClearFaults()
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"everyone fails together"}]}`
	var wg sync.WaitGroup
	codes := make([]int, 6)
	for i := range codes {
		wg.Go(func() {
			codes[i], _, _ = rawPost(t, "rk-cache-app", "/chat/completions", body)
		})
	}
	wg.Wait()
	for i, c := range codes {
		if c != 500 {
			t.Errorf("request %d: %d; want the upstream's 500", i, c)
		}
	}
	// One retry cycle: the first attempt and two retries.
	if c := fake.Count(k); c != 3 {
		t.Errorf("upstream called %d times for 6 identical failing requests; want 3 (one cycle)", c)
	}
}

// TestE2ECutUpstreamBodyAborts checks that an answer the upstream cut
// short reaches the client as an aborted response, not as a whole one.
func TestE2ECutUpstreamBodyAborts(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{StreamChunks: 8})
	defer fake.Close()
	k := "sk-e2e-cutbody-0000cccc"
	fake.AddKey(k, fakeopenai.KeyLimits{})
	t.Setenv("E2E_CUT_KEY", k)
	startRelay(t, fake, `
		client app {
			key rk-cut-app
		}
		upstream cut {UPSTREAM} {
			key {env.E2E_CUT_KEY}
		}`)
	fake.AddFault(fakeopenai.Fault{DropAfter: 2, Count: 1})
	req, _ := http.NewRequest(http.MethodPost, relayBase+"/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"cut me"}]}`))
	req.Header.Set("Authorization", "Bearer rk-cut-app")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err == nil || errors.Is(err, io.EOF) {
		t.Errorf("a stream cut upstream ended cleanly for the client (%d bytes, err %v)", len(got), err)
	}
	if strings.Contains(string(got), "[DONE]") {
		t.Errorf("the cut stream carries [DONE]: %q", got)
	}
}

// TestE2ECacheTwoSitesDoNotShare runs two relay handlers with caches and
// different keys, each with a client named alice: the second site's alice
// asking what the first's asked gets an answer of her own, not the first
// site's cached one.
func TestE2ECacheTwoSitesDoNotShare(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	envA, _ := setKeys(t, fake, "cachesitea", 1, fakeopenai.KeyLimits{})
	envB, _ := setKeys(t, fake, "cachesiteb", 1, fakeopenai.KeyLimits{})
	site := func(name, keys string) string {
		return fmt.Sprintf(`
	handle_path /%s/* {
		openai_relay {
			client alice {
				key rk-cachesites-alice-%s
			}
			upstream orgs %s {
%s			}
			cache
		}
	}`, name, name, fake.URL(), keys)
	}
	startSites(t, "", site("a", envA), site("b", envB))
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"the same question on two sites"}]}`
	ask := func(site string) (string, string) {
		req, _ := http.NewRequest(http.MethodPost, "http://localhost:"+httpPort+"/"+site+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer rk-cachesites-alice-"+site)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("site %s: %d %s", site, resp.StatusCode, b)
		}
		return idOf(t, string(b)), resp.Header.Get("X-Relay-Cache")
	}
	idA, resA := ask("a")
	idA2, resA2 := ask("a")
	idB, resB := ask("b")
	if resA != "MISS" || resA2 != "HIT" || idA2 != idA {
		t.Errorf("site a: %s then %s (ids %s, %s); want MISS then HIT of the same answer", resA, resA2, idA, idA2)
	}
	if resB != "MISS" || idB == idA {
		t.Errorf("site b's alice got %s with id %s (site a's: %s); want a MISS and an answer of her own", resB, idB, idA)
	}
}
