package openairelay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

// browser starts a headless Chromium (Debian's chromium, which .ci/run
// installs) and returns a context for it and the console errors and
// uncaught exceptions the page produced so far.
func browser(t *testing.T) (context.Context, func() []string) {
	t.Helper()
	skipLong(t)
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed (.ci/run installs it)")
		}
		t.Skip("chromium is not installed")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1400, 1000), chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	var mu sync.Mutex
	var errs []string
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			switch m.Type {
			case chromedp.ConsoleError, chromedp.ConsoleWarning, chromedp.ConsoleException:
				mu.Lock()
				errs = append(errs, string(m.Type)+": "+m.Text+" ("+m.URL+")")
				mu.Unlock()
			}
		}
	}()
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), errs...)
	}
}

const statusPageKey = "sk-e2e-statuspage-key-0000"

// statusPageURL is where startStatusSite mounts the status page.
var statusPageURL = "http://localhost:" + httpPort + "/relay-status/"

// startStatusSite runs a site with the relay (relayBlock, with {UPSTREAM}
// replaced) and the status page under /relay-status/.
func startStatusSite(t *testing.T, fake *fakeopenai.Server, relayBlock string) {
	t.Helper()
	startSites(t, "", `
	handle_path /relay-status/* {
		openai_relay_status
	}
	openai_relay {
`+strings.ReplaceAll(relayBlock, "{UPSTREAM}", fake.URL())+`
	}`)
}

// TestE2EStatusPage loads the status page against a running relay: no
// console error, every key and client shown, numbers that move under load,
// a key retired from the page retired in the admin API too, and no secret
// anywhere on the page or in what it fetched.
func TestE2EStatusPage(t *testing.T) {
	ctx, consoleErrors := browser(t)
	fake := fakeopenai.New(fakeopenai.Options{})
	defer fake.Close()
	fake.AddKey(statusPageKey+"a", fakeopenai.KeyLimits{RPM: 600, TPM: 100000})
	fake.AddKey(statusPageKey+"b", fakeopenai.KeyLimits{RPM: 600, TPM: 100000})
	t.Setenv("E2E_STATUS_KEY_A", statusPageKey+"a")
	t.Setenv("E2E_STATUS_KEY_B", statusPageKey+"b")
	startStatusSite(t, fake, `
		client web {
			key rk-status-web-000000
			budget 5 daily
		}
		client batch {
			key rk-status-batch-0000
			priority low
			rpm 100
		}
		price gpt-4o-mini 0.15 0.60
		upstream main {UPSTREAM} {
			key {env.E2E_STATUS_KEY_A} {
				name alpha
				rpm 600
				tpm 100000
			}
			key {env.E2E_STATUS_KEY_B} {
				name beta
				rpm 600
				tpm 100000
			}
		}`)
	page := statusPageURL

	if err := chromedp.Do(ctx,
		chromedp.Navigate(page),
		chromedp.WaitVisible(chromedp.CSS(`#keys tbody tr[data-key="alpha"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#clients tbody tr`)),
	); err != nil {
		t.Fatalf("loading the page: %v; console: %v", err, consoleErrors())
	}
	html := pageHTML(t, ctx)
	for _, want := range []string{"alpha", "beta", "web", "batch", "main"} {
		if !strings.Contains(html, want) {
			t.Errorf("the page does not show %q", want)
		}
	}

	// Numbers move while load runs: the key's requests this minute.
	before := rowText(t, ctx, "alpha") + rowText(t, ctx, "beta")
	for i := range 6 {
		code, _, b := rawPost(t, "rk-status-web-000000", "/chat/completions", fmt.Sprintf(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"move %d"}]}`, i))
		if code != 200 {
			t.Fatalf("request: %d %s", code, b)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for rowText(t, ctx, "alpha")+rowText(t, ctx, "beta") == before {
		if time.Now().After(deadline) {
			t.Fatalf("the keys' rows did not change under load: %s", before)
		}
		time.Sleep(200 * time.Millisecond)
	}
	chartPoints, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.getElementById("chart-outcomes").toDataURL().length`))
	if err != nil || chartPoints < 1000 {
		t.Errorf("the outcomes chart looks empty (%d bytes, %v)", chartPoints, err)
	}

	// Retire alpha from the page, through the confirmation.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#keys tr[data-key="alpha"] button[data-act="retire"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#confirm-ok`)),
		chromedp.Click(chromedp.CSS(`#confirm-ok`)),
		chromedp.WaitVisible(chromedp.CSS(`#keys tr[data-key="alpha"] .state.retired`)),
	); err != nil {
		t.Fatalf("retiring from the page: %v", err)
	}
	if st := adminKeyState(t, "alpha"); st != "retired" {
		t.Fatalf("retired on the page, %q in GET /openai_relay/keys", st)
	}
	// Cancelling the dialog does nothing.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#keys tr[data-key="beta"] button[data-act="retire"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#confirm-cancel`)),
		chromedp.Click(chromedp.CSS(`#confirm-cancel`)),
		chromedp.Sleep(1500*time.Millisecond),
	); err != nil {
		t.Fatal(err)
	}
	if st := adminKeyState(t, "beta"); st != "available" {
		t.Fatalf("a cancelled retirement left beta %q", st)
	}
	// And restore.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#keys tr[data-key="alpha"] button[data-act="restore"]`)),
		chromedp.Click(chromedp.CSS(`#confirm-ok`)),
		chromedp.WaitVisible(chromedp.CSS(`#keys tr[data-key="alpha"] .state.available`)),
	); err != nil {
		t.Fatalf("restoring from the page: %v", err)
	}

	html = pageHTML(t, ctx)
	var raw json.RawMessage
	adminGet(t, "/openai_relay/status", &raw)
	status := string(raw)
	for _, secret := range []string{statusPageKey, "rk-status-web", "rk-status-batch"} {
		if strings.Contains(html, secret) || strings.Contains(status, secret) {
			t.Errorf("a secret (%s…) is on the page or in its data", secret)
		}
	}
	// An action without the page's header (a cross-site form) is refused.
	resp, err := http.Post(statusPageURL+"keys/beta/retire", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || adminKeyState(t, "beta") != "available" {
		t.Errorf("an action without X-Requested-By: %d, beta %s", resp.StatusCode, adminKeyState(t, "beta"))
	}
	// The admin endpoint serves the same page to clients that are not a
	// browser's navigation (Caddy refuses those, see StatusPage).
	resp, err = http.Get("http://localhost:" + adminPort + "/openai_relay/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("GET /openai_relay/ on the admin endpoint: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if errs := consoleErrors(); len(errs) > 0 {
		t.Errorf("console errors: %v", errs)
	}
	if os.Getenv("UPDATE_SCREENSHOTS") != "" {
		// A few seconds of history, so that the charts show something.
		for i := range 8 {
			rawPost(t, "rk-status-web-000000", "/chat/completions", fmt.Sprintf(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"shot %d"}]}`, i))
			time.Sleep(500 * time.Millisecond)
		}
		screenshot(t, ctx, "docs/status-page.png")
	}
}

// TestE2EStatusPageThousandKeys checks that 1,000 keys render, filter and
// sort quickly in the page (timed inside the page, around the rendering).
func TestE2EStatusPageThousandKeys(t *testing.T) {
	ctx, consoleErrors := browser(t)
	fake := fakeopenai.New(fakeopenai.Options{AllowAnyKey: true})
	defer fake.Close()
	var keys strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&keys, "\t\t\tkey sk-e2e-thousand-%04d-xxxxxxxx {\n\t\t\t\tname k%04d\n\t\t\t\trpm %d\n\t\t\t}\n", i, i, 100+i)
	}
	startStatusSite(t, fake, `
		client_auth none
		upstream many {UPSTREAM} {
`+keys.String()+`		}`)
	if err := chromedp.Do(ctx,
		chromedp.Navigate(statusPageURL),
		chromedp.WaitVisible(chromedp.CSS(`#keys tbody tr[data-key="k0999"]`)),
	); err != nil {
		t.Fatal(err)
	}
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#keys tbody tr").length`))
	if err != nil {
		t.Fatal(err)
	}
	if rows != 1000 {
		t.Fatalf("%d rows; want 1000", rows)
	}
	// Sorting by RPM-ordered column and filtering, timed in the page.
	ms, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`(() => {
		const t0 = performance.now();
		document.querySelector('#keys th[data-sort="id"]').click(); // descending
		const f = document.getElementById("key-filter");
		f.value = "k09"; f.dispatchEvent(new Event("input"));
		f.value = ""; f.dispatchEvent(new Event("input"));
		return performance.now() - t0;
	})()`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sort and two filters of 1000 keys: %.0f ms in the page", ms)
	if ms > 1000 {
		t.Errorf("sorting and filtering 1000 keys took %.0f ms; want under a second", ms)
	}
	first, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("#keys tbody tr").dataset.key`))
	if err != nil || first != "k0999" {
		t.Errorf("first row after sorting descending: %q %v", first, err)
	}
	if errs := consoleErrors(); len(errs) > 0 {
		t.Errorf("console errors: %v", errs)
	}
}

// rowText is the text of a key's row on the page.
func rowText(t *testing.T, ctx context.Context, key string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#keys tr[data-key="`+key+`"]`)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// adminKeyState is a key's state in GET /openai_relay/keys.
func adminKeyState(t *testing.T, id string) string {
	t.Helper()
	var keys []struct{ ID, State string }
	adminGet(t, "/openai_relay/keys", &keys)
	for _, k := range keys {
		if k.ID == id {
			return k.State
		}
	}
	return ""
}

// pageHTML is the page's document as it stands.
func pageHTML(t *testing.T, ctx context.Context) string {
	t.Helper()
	html, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
	if err != nil {
		t.Fatal(err)
	}
	return html
}

// screenshot saves the page as a PNG.
func screenshot(t *testing.T, ctx context.Context, file string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, png, 0o644); err != nil {
		t.Fatal(err)
	}
}
