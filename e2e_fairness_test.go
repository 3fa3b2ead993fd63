package openairelay_test

import (
	"bytes"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyrelay/openairelay"
	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

// TestE2EFairShares checks what keeps clients of one pool from crowding
// each other out or spending around their budgets: a budget is reserved
// before the call, answers without usage are refused to budgeted clients,
// one client holds only its share of the queue, and an upload that reached
// the upstream is not sent twice.
func TestE2EFairShares(t *testing.T) {
	skipLong(t)
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	keys, ks := setKeys(t, fake, "fair", 1, fakeopenai.KeyLimits{})
	startRelay(t, fake, `
		client thrifty {
			key rk-fair-thrifty
			budget 0.000001 daily
		}
		client busy {
			key rk-fair-busy
		}
		client calm {
			key rk-fair-calm
		}
		upstream fair {UPSTREAM} {
			max_concurrent 1
`+keys+`		}
		price gpt-4o-mini 1 1
		max_queue 4
		max_wait 10s
		retries 2`)

	t.Run("budget reserved before the call", func(t *testing.T) {
		fake.ResetRecords()
		// One request costs more than the whole budget: of ten at once,
		// one passes, not ten.
		fake.AddFault(fakeopenai.Fault{Latency: 300 * time.Millisecond, Count: 1})
		body := `{"model":"gpt-4o-mini","max_tokens":5,"messages":[{"role":"user","content":"spend it all at once, all of you"}]}`
		var wg sync.WaitGroup
		var mu sync.Mutex
		codes := map[int]int{}
		for range 10 {
			wg.Go(func() {
				code, _, _ := rawPost(t, "rk-fair-thrifty", "/chat/completions", body)
				mu.Lock()
				codes[code]++
				mu.Unlock()
			})
		}
		wg.Wait()
		if codes[200] != 1 || codes[429] != 9 {
			t.Errorf("answers %v; want one 200 and nine 429", codes)
		}
		if c := fake.Count(ks[0]); c != 1 {
			t.Errorf("upstream saw %d requests; want 1", c)
		}
	})

	t.Run("unpriced endpoints refused to a budgeted client", func(t *testing.T) {
		code, _, b := rawPost(t, "rk-fair-thrifty", "/audio/speech", `{"model":"gpt-4o-mini-tts","input":"hi","voice":"alloy"}`)
		if code != http.StatusForbidden || !strings.Contains(b, "unpriced_endpoint") {
			t.Errorf("audio/speech for a budgeted client: %d %s; want 403 unpriced_endpoint", code, b)
		}
		code, _, b = rawPost(t, "rk-fair-thrifty", "/chat/completions", `{"model":"gpt-4o","messages":[{"role":"user","content":"free?"}]}`)
		if code != http.StatusForbidden || !strings.Contains(b, "unpriced_model") {
			t.Errorf("a model without a price for a budgeted client: %d %s; want 403 unpriced_model", code, b)
		}
	})

	t.Run("one client holds only its share of the queue", func(t *testing.T) {
		fake.ResetRecords()
		// The key takes one request at a time and each takes a second:
		// busy's requests queue; with three clients and max_queue 4, busy
		// may have two waiting.
		fake.ClearFaults()
		fake.AddFault(fakeopenai.Fault{Latency: time.Second, Count: 4})
		body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"queue me"}]}`
		var wg sync.WaitGroup
		var mu sync.Mutex
		busy := map[int]int{}
		for i := range 4 {
			wg.Go(func() {
				time.Sleep(time.Duration(i) * 50 * time.Millisecond)
				code, _, _ := rawPost(t, "rk-fair-busy", "/chat/completions", body)
				mu.Lock()
				busy[code]++
				mu.Unlock()
			})
		}
		time.Sleep(400 * time.Millisecond)
		calm, _, b := rawPost(t, "rk-fair-calm", "/chat/completions", body)
		wg.Wait()
		if calm != 200 {
			t.Errorf("calm, queued behind busy: %d %s", calm, b)
		}
		if busy[429] != 1 || busy[200] != 3 {
			t.Errorf("busy's answers %v; want three served (one in flight, two waiting) and one refused", busy)
		}
	})

	t.Run("an upload is not sent twice", func(t *testing.T) {
		fake.ResetRecords()
		fake.ClearFaults()
		fake.AddFault(fakeopenai.Fault{Status: 500, Path: "/files", Count: 1})
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		mw.WriteField("purpose", "batch")
		fw, _ := mw.CreateFormFile("file", "in.jsonl")
		fw.Write([]byte(`{"custom_id":"1"}` + "\n"))
		mw.Close()
		req, _ := http.NewRequest(http.MethodPost, relayBase+"/files", &buf)
		req.Header.Set("Authorization", "Bearer rk-fair-calm")
		req.Header.Set("Content-Type", mw.FormDataContentType())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 500 {
			t.Errorf("upload after an upstream 500: %d; want the 500", resp.StatusCode)
		}
		if c := fake.Count(ks[0]); c != 1 {
			t.Errorf("the upload reached the upstream %d times; want once", c)
		}
	})
}

// TestE2EClientKeyRotationKeepsSpend checks that a client's spend (and so
// its budget) is its own, not its key's: a new key keeps what it spent.
func TestE2EClientKeyRotationKeepsSpend(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	keys, _ := setKeys(t, fake, "rotate", 1, fakeopenai.KeyLimits{})
	config := func(clientKey string) string {
		return `
		client rotating {
			key ` + clientKey + `
		}
		upstream rotate {UPSTREAM} {
` + keys + `		}
		price gpt-4o-mini 1 1`
	}
	spent := func() float64 {
		var clients []struct {
			Name       string  `json:"name"`
			SpentMonth float64 `json:"spent_usd_this_month"`
		}
		adminGet(t, "/openai_relay/clients", &clients)
		for _, c := range clients {
			if c.Name == "rotating" {
				return c.SpentMonth
			}
		}
		t.Fatalf("client rotating not in the admin API: %+v", clients)
		return 0
	}
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"what did I spend"}]}`
	startRelay(t, fake, config("rk-rotate-old"))
	if code, _, b := rawPost(t, "rk-rotate-old", "/chat/completions", body); code != 200 {
		t.Fatalf("first request: %d %s", code, b)
	}
	before := spent()
	if before <= 0 {
		t.Fatalf("spent %v after a priced request", before)
	}
	startRelay(t, fake, config("rk-rotate-new"))
	if code, _, _ := rawPost(t, "rk-rotate-old", "/chat/completions", body); code != http.StatusUnauthorized {
		t.Errorf("the old key still works: %d", code)
	}
	if got := spent(); got != before {
		t.Errorf("after the key changed the client has spent %v; want the %v it had", got, before)
	}
	if code, _, b := rawPost(t, "rk-rotate-new", "/chat/completions", body); code != 200 {
		t.Fatalf("request with the new key: %d %s", code, b)
	}
	if got := spent(); got <= before {
		t.Errorf("spend %v after another request; want more than %v", got, before)
	}
}

// TestE2ESlowReaderLetsGo checks that a client that stops reading a stream
// does not hold its key's concurrency slot for ever.
func TestE2ESlowReaderLetsGo(t *testing.T) {
	openairelay.SetClientWriteTimeout(500 * time.Millisecond)
	defer openairelay.SetClientWriteTimeout(2 * time.Minute)
	// A long stream of small events, more than the sockets between the
	// relay and the client buffer.
	fake := fakeopenai.New(fakeopenai.Options{StreamChunks: 200000})
	defer fake.Close()
	keys, _ := setKeys(t, fake, "slowreader", 1, fakeopenai.KeyLimits{})
	startRelay(t, fake, `
		client app {
			key rk-slowreader-app
		}
		upstream slow {UPSTREAM} {
			max_concurrent 1
`+keys+`		}
		max_wait 20s`)
	conn, err := net.Dial("tcp", "localhost:"+httpPort)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"` + strings.Repeat("word ", 200000) + `"}]}`
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer rk-slowreader-app\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	// The reader never reads. Another request for the key's only slot must
	// be served once the relay gives the silent one up, well before max_wait.
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	code, _, b := rawPost(t, "rk-slowreader-app", "/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"my turn"}]}`)
	if code != 200 {
		t.Fatalf("the request after a silent reader: %d %s", code, b)
	}
	if waited := time.Since(start); waited > 15*time.Second {
		t.Errorf("waited %v for the slot a silent reader held", waited)
	}
}

// TestE2EWrongKeysThrottled checks that an address sending wrong keys is
// refused for a while, before its keys are looked at, while other
// addresses go on.
func TestE2EWrongKeysThrottled(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	keys, _ := setKeys(t, fake, "guard", 1, fakeopenai.KeyLimits{})
	// Caddy takes the client address from X-Forwarded-For of a trusted
	// proxy (the test, on loopback), so that the guesser is not loopback.
	startSites(t, "\tservers {\n\t\ttrusted_proxies static private_ranges\n\t}", `
	openai_relay {
		client app {
			key rk-guard-app-0123
		}
		upstream guard `+fake.URL()+` {
`+keys+`		}
	}`)
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"let me in"}]}`
	post := func(from, key string) int {
		req, _ := http.NewRequest(http.MethodPost, relayBase+"/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Forwarded-For", from)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := range 20 {
		if code := post("192.0.2.77", fmt.Sprintf("rk-guess-%04d", i)); code != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d; want 401", i, code)
		}
	}
	if code := post("192.0.2.77", "rk-guard-app-0123"); code != http.StatusTooManyRequests {
		t.Errorf("after 20 wrong keys, the right one from the same address: %d; want 429", code)
	}
	if code := post("192.0.2.78", "rk-guard-app-0123"); code != http.StatusOK {
		t.Errorf("another address: %d; want 200", code)
	}
}

// TestE2EBatchModelsChecked checks that a client limited to some models
// cannot get around them with a batch: the models of a batch file it
// uploads through the relay are read, and a batch of a model it may not
// use is refused before the upstream sees it.
func TestE2EBatchModelsChecked(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	keys, _ := setKeys(t, fake, "batchmodels", 1, fakeopenai.KeyLimits{})
	startRelay(t, fake, `
		client limited {
			key rk-batchmodels-limited
			models gpt-4o-mini
		}
		upstream batchmodels {UPSTREAM} {
`+keys+`		}`)
	upload := func(model string) string {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		mw.WriteField("purpose", "batch")
		fw, _ := mw.CreateFormFile("file", "in.jsonl")
		fmt.Fprintf(fw, `{"custom_id":"1","method":"POST","url":"/v1/chat/completions","body":{"model":%q,"messages":[{"role":"user","content":"hi"}]}}`+"\n", model)
		mw.Close()
		req, _ := http.NewRequest(http.MethodPost, relayBase+"/files", &buf)
		req.Header.Set("Authorization", "Bearer rk-batchmodels-limited")
		req.Header.Set("Content-Type", mw.FormDataContentType())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("upload: %d %s", resp.StatusCode, b)
		}
		return idOf(t, string(b))
	}
	batch := func(file string) (int, string) {
		code, _, b := rawPost(t, "rk-batchmodels-limited", "/batches",
			`{"input_file_id":"`+file+`","endpoint":"/v1/chat/completions","completion_window":"24h"}`)
		return code, b
	}
	upstreamBatches := func() int {
		n := 0
		for _, r := range fake.Records() {
			if r.Path == "/v1/batches" {
				n++
			}
		}
		return n
	}
	forbidden := upload("gpt-4o")
	if code, b := batch(forbidden); code != http.StatusForbidden || !strings.Contains(b, "gpt-4o") {
		t.Errorf("a batch of gpt-4o for a client limited to gpt-4o-mini: %d %s; want 403", code, b)
	}
	if n := upstreamBatches(); n != 0 {
		t.Errorf("the refused batch reached the upstream (%d requests)", n)
	}
	allowed := upload("gpt-4o-mini")
	if code, b := batch(allowed); code == http.StatusForbidden {
		t.Errorf("a batch of gpt-4o-mini was refused: %d %s", code, b)
	}
	if n := upstreamBatches(); n != 1 {
		t.Errorf("the allowed batch reached the upstream %d times; want once", n)
	}
}
