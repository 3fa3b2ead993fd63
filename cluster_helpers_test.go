// The cluster harness: the relay built as a real Caddy binary (cmd/caddy)
// and run as separate processes, several at once, each on loopback ports of
// its own, so that what instances share can only be shared through Redis.

package openairelay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

// The binary is built once per test process, without -race (it is a
// separate process; the race detector in the tests watches the test
// side), into TestMain's temporary directory, which TestMain removes.
var (
	clusterBuildOnce sync.Once
	clusterBin       string
	clusterBuildErr  error
)

// clusterBinary returns the path of the Caddy built from ./cmd/caddy,
// building it on first use. It skips the test under -short.
func clusterBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("cluster: runs Caddy processes; skipped with -short")
	}
	clusterBuildOnce.Do(func() {
		dir := filepath.Join(logDir, "cluster-bin")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			clusterBuildErr = err
			return
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			clusterBuildErr = fmt.Errorf("no go tool on PATH to build ./cmd/caddy: %v", err)
			return
		}
		bin := filepath.Join(dir, "caddy")
		start := time.Now()
		// The test's working directory is the module root (the package's
		// directory); the go build cache is used as always.
		out, err := exec.Command(goTool, "build", "-o", bin, "./cmd/caddy").CombinedOutput()
		if err != nil {
			clusterBuildErr = fmt.Errorf("go build ./cmd/caddy: %v\n%s", err, out)
			return
		}
		clusterBin = bin
		fmt.Fprintf(os.Stderr, "cluster: built ./cmd/caddy in %v\n", time.Since(start).Round(time.Millisecond))
	})
	if clusterBuildErr != nil {
		t.Fatal(clusterBuildErr)
	}
	return clusterBin
}

// instance is one Caddy process running the relay.
type instance struct {
	t       *testing.T
	name    string
	base    string // the relay's base URL, http://127.0.0.1:<port>/v1
	admin   string // Caddy's admin endpoint, http://localhost:<port>
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has been reaped
	stopped bool
	mu      sync.Mutex
}

// clusterFreePort returns a loopback port nobody listens on right now.
func clusterFreePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// clusterConfig is the whole Caddyfile of one instance: the relay block
// (the inside of `openai_relay { … }`) on a plain-HTTP site on loopback.
func clusterConfig(adminPort, httpPort, httpsPort int, dataDir, relayBlock string) string {
	return fmt.Sprintf(`{
	admin localhost:%d
	http_port %d
	https_port %d
	default_bind 127.0.0.1
	auto_https off
	skip_install_trust
	persist_config off
	storage file_system %s
}
http://:%d {
	openai_relay {
%s
	}
}
`, adminPort, httpPort, httpsPort, dataDir, httpPort, relayBlock)
}

// startInstance runs the built Caddy with relayBlock as its relay (the
// inside of `openai_relay { … }`), env ("NAME=value") added to its
// environment, and waits until both its admin endpoint and its site
// answer. It is stopped when the test ends, and its log (stdout and stderr)
// is printed if the test failed.
func startInstance(t *testing.T, name, relayBlock string, env ...string) *instance {
	t.Helper()
	bin := clusterBinary(t)
	var lastErr error
	// A free port can be taken by someone else between the probe and
	// Caddy's listen; a start that failed on that is tried again.
	for try := 0; try < 3; try++ {
		in, err := launch(t, bin, name, relayBlock, env)
		if err == nil {
			return in
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	t.Fatalf("instance %s did not start: %v", name, lastErr)
	return nil
}

func launch(t *testing.T, bin, name, relayBlock string, env []string) (*instance, error) {
	t.Helper()
	dir := t.TempDir()
	adminPort, httpPort, httpsPort := clusterFreePort(t), clusterFreePort(t), clusterFreePort(t)
	for httpPort == adminPort || httpsPort == adminPort || httpsPort == httpPort {
		httpPort, httpsPort = clusterFreePort(t), clusterFreePort(t)
	}
	config := clusterConfig(adminPort, httpPort, httpsPort, filepath.Join(dir, "storage"), relayBlock)
	configPath := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(configPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "caddy.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", configPath, "--adapter", "caddyfile")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Each instance has directories of its own: the relay's restart
	// snapshot (<data dir>/caddy/openai_relay/state.json) must not be
	// shared, or instances would share state without Redis.
	cmd.Env = append(os.Environ(),
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"HOME="+dir,
	)
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	setParentDeathSignal(cmd.SysProcAttr)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("starting %s: %v", bin, err)
	}
	in := &instance{
		t:       t,
		name:    name,
		base:    fmt.Sprintf("http://127.0.0.1:%d/v1", httpPort),
		admin:   fmt.Sprintf("http://localhost:%d", adminPort),
		logPath: logPath,
		cmd:     cmd,
		exited:  make(chan struct{}),
	}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(in.exited)
	}()
	if err := in.waitReady(20 * time.Second); err != nil {
		in.kill()
		log, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("%v; its log:\n%s\nits Caddyfile:\n%s", err, tail(log, 60), config)
	}
	t.Cleanup(func() {
		in.stop()
		if t.Failed() {
			log, _ := os.ReadFile(in.logPath)
			t.Logf("log of instance %s (%s):\n%s", in.name, in.base, tail(log, 150))
		}
	})
	return in, nil
}

// waitReady waits until the admin endpoint and the site both answer.
func (in *instance) waitReady(within time.Duration) error {
	deadline := time.Now().Add(within)
	c := &http.Client{Timeout: time.Second}
	ready := func(url string) bool {
		resp, err := c.Get(url)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode != http.StatusBadGateway
	}
	adminUp := false
	for {
		select {
		case <-in.exited:
			return fmt.Errorf("caddy exited before it was ready (%v)", in.cmd.ProcessState)
		default:
		}
		if !adminUp {
			adminUp = ready(in.admin + "/config/")
		}
		// Any answer of the relay will do: without a client key it is a 401.
		if adminUp && ready(in.base+"/models") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within %v (admin answered: %v)", within, adminUp)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the process with SIGTERM, and SIGKILL if it has not exited
// within five seconds. Stopping a stopped instance does nothing.
func (in *instance) stop() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.stopped {
		return
	}
	in.stopped = true
	_ = in.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-in.exited:
	case <-time.After(5 * time.Second):
		in.t.Logf("instance %s did not exit within 5s of SIGTERM; killing it", in.name)
		_ = in.cmd.Process.Kill()
		<-in.exited
	}
}

// kill ends the process with SIGKILL at once, as a crash would: nothing of
// its state is released or saved.
func (in *instance) kill() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.stopped {
		return
	}
	in.stopped = true
	_ = in.cmd.Process.Kill()
	<-in.exited
}

// sdk is the official client pointed at this instance.
func (in *instance) sdk(clientKey string) *openai.Client {
	c := openai.NewClient(
		option.WithBaseURL(in.base),
		option.WithAPIKey(clientKey),
		option.WithMaxRetries(0),
		option.WithRequestTimeout(40*time.Second),
	)
	return &c
}

// clusterHTTP is the client of the raw requests; no request of these
// tests should take anywhere near its timeout.
var clusterHTTP = &http.Client{Timeout: 40 * time.Second}

// post sends a JSON body to path (after /v1) as clientKey and returns the
// status, the headers and the body.
func (in *instance) post(clientKey, path, body string, header ...string) (int, http.Header, string, error) {
	req, err := http.NewRequest(http.MethodPost, in.base+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, "", err
	}
	req.Header.Set("Authorization", "Bearer "+clientKey)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := clusterHTTP.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b), err
}

// adminPost POSTs to the admin endpoint (such as
// /openai_relay/keys/<id>/retire) and returns the status and body.
func (in *instance) adminPost(path string) (int, string) {
	in.t.Helper()
	resp, err := clusterHTTP.Post(in.admin+path, "application/json", nil)
	if err != nil {
		in.t.Fatalf("instance %s: POST %s: %v", in.name, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// clusterKeyView is what the tests read of GET /openai_relay/keys.
type clusterKeyView struct {
	ID       string `json:"id"`
	Upstream string `json:"upstream"`
	State    string `json:"state"`
	Limits   struct {
		RequestsToday int64 `json:"requests_today"`
		TokensToday   int64 `json:"tokens_today"`
	} `json:"limits"`
}

// keyState is the state (available, cooling, retired) that this instance's
// admin API shows for the key named id, "" if it shows none.
func (in *instance) keyState(id string) string {
	in.t.Helper()
	return in.key(id).State
}

// key is what this instance's admin API shows of the key named id (the
// zero view if it shows none).
func (in *instance) key(id string) clusterKeyView {
	in.t.Helper()
	resp, err := clusterHTTP.Get(in.admin + "/openai_relay/keys")
	if err != nil {
		in.t.Fatalf("instance %s: GET /openai_relay/keys: %v", in.name, err)
	}
	defer resp.Body.Close()
	var keys []clusterKeyView
	if err := json.NewDecoder(resp.Body).Decode(&keys); err != nil {
		in.t.Fatalf("instance %s: GET /openai_relay/keys: %v", in.name, err)
	}
	for _, k := range keys {
		if k.ID == id {
			return k
		}
	}
	return clusterKeyView{}
}

// tail is the last n lines of b.
func tail(b []byte, n int) []byte {
	lines := bytes.SplitAfter(b, []byte("\n"))
	if len(lines) > n {
		lines = append([][]byte{[]byte(fmt.Sprintf("[… %d lines before]\n", len(lines)-n))}, lines[len(lines)-n:]...)
	}
	return bytes.Join(lines, nil)
}

// clusterKeys adds n keys to the fake with limits lim and returns the
// relay's `key {env.…} { name …; opts }` lines, the secrets, and the
// environment that carries them to the instances. Key i is named
// <prefix>-<i>.
func clusterKeys(fake *fakeopenai.Server, prefix string, n int, lim fakeopenai.KeyLimits, opts string) (lines string, keys, env []string) {
	var b strings.Builder
	for i := range n {
		k := fmt.Sprintf("sk-%s-%02d-abcdefghijklmnop", prefix, i)
		name := fmt.Sprintf("CLUSTER_%s_%d", strings.ToUpper(strings.ReplaceAll(prefix, "-", "_")), i)
		fake.AddKey(k, lim)
		fmt.Fprintf(&b, "\t\t\tkey {env.%s} {\n\t\t\t\tname %s-%d\n", name, prefix, i)
		if opts != "" {
			fmt.Fprintf(&b, "\t\t\t\t%s\n", opts)
		}
		b.WriteString("\t\t\t}\n")
		keys = append(keys, k)
		env = append(env, name+"="+k)
	}
	return b.String(), keys, env
}

// stateBlock is the `state redis { … }` block for the given addresses,
// prefix and further options (each a line such as "on_error reject").
func stateBlock(addrs []string, prefix string, opts ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\t\tstate redis {\n\t\t\taddress %s\n\t\t\tprefix %s\n", strings.Join(addrs, " "), prefix)
	for _, o := range opts {
		fmt.Fprintf(&b, "\t\t\t%s\n", o)
	}
	b.WriteString("\t\t}\n")
	return b.String()
}

// clusterPrefix is a Redis key prefix no other test (or run) uses.
func clusterPrefix(t *testing.T) string {
	return fmt.Sprintf("ct_%s_%d", strings.TrimPrefix(t.Name(), "TestCluster"), time.Now().UnixNano())
}

// clusterChat is a small chat completion body.
func clusterChat(prompt string) string {
	return string(validBody(prompt))
}

// admittedTimes is, by key, the start times of the chat requests the fake
// admitted (answered 2xx), sorted.
func admittedTimes(recs []fakeopenai.Record) map[string][]time.Time {
	by := map[string][]time.Time{}
	for _, r := range recs {
		if r.Path == "/v1/chat/completions" && r.Status/100 == 2 {
			by[r.Key] = append(by[r.Key], r.Time)
		}
	}
	for _, ts := range by {
		slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	}
	return by
}

// fakeBucket is the fake's RPM bucket for a key (ratelimit.go): it holds
// max(rpm × burst / 1m, 1) requests and refills rpm/60 a second, so in any
// window of d it admits at most capacity + rate × d requests.
func fakeBucket(rpm int, burst time.Duration) (capacity, rate float64) {
	if burst <= 0 {
		burst = time.Second
	}
	return math.Max(float64(rpm)*burst.Seconds()/60, 1), float64(rpm) / 60
}

// checkWindows fails t if, for any key, some run of consecutive admitted
// requests holds more than the fake's bucket allows over the time it spans
// (the window the fake itself enforces, at every start and end). The fake's
// record time is taken as the request arrives, a little before it is
// admitted, so 20ms of the rate are allowed for that.
func checkWindows(t *testing.T, times map[string][]time.Time, rpm int) {
	t.Helper()
	capacity, rate := fakeBucket(rpm, 0)
	for key, ts := range times {
		worst, worstAt := 0.0, ""
		for i := range ts {
			for j := i; j < len(ts); j++ {
				d := ts[j].Sub(ts[i]).Seconds()
				allowed := capacity + rate*(d+0.020)
				if over := float64(j-i+1) - allowed; over > worst {
					worst, worstAt = over, fmt.Sprintf("%d requests in %.3fs (allowed %.2f)", j-i+1, d, allowed)
				}
			}
		}
		if worst > 1e-9 {
			t.Errorf("key %s…: %s: more than its RPM %d allows in that window", key[:12], worstAt, rpm)
		}
	}
}

// poolUse compares what the upstream admitted from the first admitted
// request to the last with what the keys' buckets allowed over that time:
// each key capacity + rate × elapsed. It returns both.
func poolUse(times map[string][]time.Time, keys []string, rpm int) (admitted int, allowed float64, elapsed time.Duration) {
	var first, last time.Time
	for _, ts := range times {
		admitted += len(ts)
		if len(ts) == 0 {
			continue
		}
		if first.IsZero() || ts[0].Before(first) {
			first = ts[0]
		}
		if ts[len(ts)-1].After(last) {
			last = ts[len(ts)-1]
		}
	}
	elapsed = last.Sub(first)
	capacity, rate := fakeBucket(rpm, 0)
	allowed = float64(len(keys)) * (capacity + rate*elapsed.Seconds())
	return admitted, allowed, elapsed
}

// isRefusal reports whether err is an API error with the given status and
// code (code "" matches any).
func isRefusal(err error, status int, code string) bool {
	var apiErr *openai.Error
	return errors.As(err, &apiErr) && apiErr.StatusCode == status && (code == "" || apiErr.Code == code)
}

// withDeadline runs f with a context that ends after d.
func withDeadline(d time.Duration, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return f(ctx)
}

// itoa is strconv.Itoa, for building Caddyfiles.
func itoa(n int) string { return strconv.Itoa(n) }
