// The helpers every end-to-end test shares: a Caddy started with a relay
// in front of an upstream (startRelay, startSites), the official SDK pointed
// at it, the checks that no secret leaked, and small readers of records,
// metrics and bodies.

package openairelay_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// upstreamURL is what startRelay needs of an upstream.
type upstreamURL interface{ URL() string }

// fakeAt names an upstream by its URL, for upstreams started otherwise.
type fakeAt string

func (u fakeAt) URL() string { return string(u) }

// e2e is one test's relay and upstream.
type e2e struct {
	t       *testing.T
	fake    *fakeopenai.Server
	tester  *caddytest.Tester
	logFile string
}

// startRelay runs Caddy with the relay block given (the inside of
// `openai_relay { ... }`, with {UPSTREAM} standing for the fake's URL) and
// access and error logs written to a file the test can search.
func startRelay(t *testing.T, up upstreamURL, relayBlock string) *e2e {
	t.Helper()
	logFile := filepath.Join(logDir, strings.ReplaceAll(t.Name(), "/", "_")+".log")
	block := strings.ReplaceAll(relayBlock, "{UPSTREAM}", up.URL())
	config := fmt.Sprintf(`{
	admin localhost:%[3]s
	http_port %[4]s
	https_port 9443
	skip_install_trust
	log {
		output file %[1]s
		level DEBUG
	}
}
http://localhost:%[4]s {
	log {
		output file %[1]s
	}
	openai_relay {
%[2]s
	}
}
`, logFile, block, adminPort, httpPort)
	port, _ := strconv.Atoi(adminPort)
	tester := caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{AdminPort: port})
	tester.InitServer(config, "caddyfile")
	fake, _ := up.(*fakeopenai.Server)
	return &e2e{t: t, fake: fake, tester: tester, logFile: logFile}
}

// startSites loads a Caddy whose one site holds the given blocks (each a
// `handle_path /<name>/* { openai_relay { … } }`, or a bare `openai_relay`),
// for tests of several relay handlers side by side; global holds more global
// options.
func startSites(t *testing.T, global string, blocks ...string) {
	t.Helper()
	port, _ := strconv.Atoi(adminPort)
	tester := caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{AdminPort: port})
	tester.InitServer(fmt.Sprintf(`{
	admin localhost:%s
	http_port %s
	https_port 9443
	skip_install_trust
%s
}
http://localhost:%s {%s
}
`, adminPort, httpPort, global, httpPort, strings.Join(blocks, "")), "caddyfile")
}

func sdk(clientKey string) openai.Client {
	return openai.NewClient(
		option.WithBaseURL(relayBase),
		option.WithAPIKey(clientKey),
		option.WithMaxRetries(0),
		option.WithRequestTimeout(20*time.Second),
	)
}

// assertNoSecrets checks that no upstream key appears in the logs and that
// no client credential reached the upstream.
func (e *e2e) assertNoSecrets(upstreamKeys []string, clientKeys []string) {
	e.t.Helper()
	logs, _ := os.ReadFile(e.logFile)
	for _, k := range upstreamKeys {
		if i := bytes.Index(logs, []byte(k)); i >= 0 {
			start := bytes.LastIndexByte(logs[:i], '\n') + 1
			e.t.Errorf("secret %s… appears in the log: %.300s", k[:6], logs[start:])
		}
	}
	if e.fake == nil {
		return // an upstream started otherwise: the test checks its records
	}
	for _, rec := range e.fake.Records() {
		for name, values := range rec.Header {
			for _, v := range values {
				for _, ck := range clientKeys {
					if strings.Contains(v, ck) {
						e.t.Errorf("client key reached the upstream in header %s", name)
					}
				}
			}
		}
		for _, h := range []string{"Openai-Organization", "Openai-Project"} {
			if rec.Header.Get(h) != "" {
				e.t.Errorf("%s reached the upstream", h)
			}
		}
	}
}

func chatParams(prompt string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
	}
}

// skipLong skips a test that runs for seconds of load (soak, limit and
// fairness runs) under `go test -short`; CI runs it.
func skipLong(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("long: skipped with -short")
	}
}

// validBody is a small valid chat request asking the fake to echo prompt.
func validBody(prompt string) []byte {
	b, _ := json.Marshal(map[string]any{
		"model":    "gpt-4o-mini",
		"messages": []map[string]string{{"role": "user", "content": prompt}},
	})
	return b
}

// waitRecords waits (up to 2s) for the fake to hold at least n records: it
// records a request when its handler has returned, which may be just after
// the relay passed the answer on.
func waitRecords(fake *fakeopenai.Server, n int) []fakeopenai.Record {
	deadline := time.Now().Add(2 * time.Second)
	for {
		recs := fake.Records()
		if len(recs) >= n || time.Now().After(deadline) {
			return recs
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// chunked frames body as chunks of size n.
func chunked(body []byte, n int) []byte {
	var b bytes.Buffer
	for len(body) > 0 {
		c := body[:min(n, len(body))]
		body = body[len(c):]
		fmt.Fprintf(&b, "%x\r\n%s\r\n", len(c), c)
	}
	b.WriteString("0\r\n\r\n")
	return b.Bytes()
}

// isOpenAIError reports whether b is {"error":{"message":...,"type":...}}.
func isOpenAIError(b []byte) bool {
	var env struct {
		Error *struct {
			Message *string `json:"message"`
			Type    *string `json:"type"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &env) != nil || env.Error == nil {
		return false
	}
	e := env.Error
	if e.Message == nil || *e.Message == "" || e.Type == nil {
		return false
	}
	// param and code must be there, as a string or null.
	var fields map[string]json.RawMessage
	_ = json.Unmarshal(b, &struct {
		Error *map[string]json.RawMessage `json:"error"`
	}{&fields})
	_, hasParam := fields["param"]
	_, hasCode := fields["code"]
	return hasParam && hasCode
}

// metricSum is the sum of every series of a metric on the admin endpoint's
// /metrics (0 if it has none).
func metricSum(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := http.Get(adminBase + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d", resp.StatusCode)
	}
	var sum float64
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
		found = true
	}
	if !found && name == "caddy_openai_relay_queue_length" {
		t.Fatalf("%s is not on /metrics", name)
	}
	return sum
}
