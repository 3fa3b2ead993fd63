package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// headerFlags collects repeated -H 'Name: value' flags.
type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, ", ") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

// requestFlags are the flags that describe the request every subcommand sends.
type requestFlags struct {
	url      string
	method   string
	body     string
	bodyFile string
	headers  headerFlags
	timeout  time.Duration
}

func (rf *requestFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&rf.url, "url", "", "target URL (required)")
	fs.StringVar(&rf.method, "method", "", "method; default POST with a body, GET without")
	fs.StringVar(&rf.body, "body", "", "request body")
	fs.StringVar(&rf.bodyFile, "body-file", "", "read the request body from this file")
	fs.Var(&rf.headers, "H", "request header 'Name: value' (repeatable)")
	fs.DurationVar(&rf.timeout, "timeout", 10*time.Second, "per-request timeout")
}

// template is a request ready to be cloned for every send.
type template struct {
	method string
	url    string
	body   []byte
	header http.Header
}

func (rf *requestFlags) template() (*template, error) {
	if rf.url == "" {
		return nil, errors.New("-url is required")
	}
	t := &template{url: rf.url, method: rf.method, body: []byte(rf.body), header: http.Header{}}
	if rf.bodyFile != "" {
		b, err := os.ReadFile(rf.bodyFile)
		if err != nil {
			return nil, err
		}
		t.body = b
	}
	if t.method == "" {
		t.method = http.MethodGet
		if len(t.body) > 0 {
			t.method = http.MethodPost
		}
	}
	for _, h := range rf.headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			return nil, fmt.Errorf("header %q: want 'Name: value'", h)
		}
		t.header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	if len(t.body) > 0 && t.header.Get("Content-Type") == "" {
		t.header.Set("Content-Type", "application/json")
	}
	return t, nil
}

func (t *template) new(ctx context.Context) (*http.Request, error) {
	var body io.Reader
	if len(t.body) > 0 {
		body = bytes.NewReader(t.body)
	}
	req, err := http.NewRequestWithContext(ctx, t.method, t.url, body)
	if err != nil {
		return nil, err
	}
	for k, v := range t.header {
		req.Header[k] = v
	}
	return req, nil
}

func newTransport(maxConns int) *http.Transport {
	return &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        maxConns,
		MaxIdleConnsPerHost: maxConns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
}

// runStats is what one run of the pacer counted.
type runStats struct {
	lat, sched                histogram
	ok, errs, non2xx, dropped atomic.Int64
	firstErr                  atomic.Value // string
}

func cmdRate(args []string) error {
	fs := flag.NewFlagSet("rate", flag.ExitOnError)
	var rf requestFlags
	rf.register(fs)
	rate := fs.Float64("rate", 100, "requests per second")
	duration := fs.Duration("duration", 10*time.Second, "how long to send (measured)")
	warmup := fs.Duration("warmup", 0, "send at the same rate this long first, not measured")
	conns := fs.Int("conns", 64, "connections (and sending goroutines); requests due while all are busy wait, and their wait counts in their latency")
	backlog := fs.Int("backlog", 100000, "requests due but not yet sent beyond this are dropped (counted)")
	_ = fs.Parse(args)
	t, err := rf.template()
	if err != nil {
		return err
	}
	if *rate <= 0 || *duration <= 0 || *conns <= 0 {
		return errors.New("-rate, -duration and -conns must be positive")
	}
	tr := newTransport(*conns)
	tr.MaxConnsPerHost = *conns
	client := &http.Client{Transport: tr, Timeout: rf.timeout}
	if *warmup > 0 {
		pace(client, t, *rate, *warmup, *conns, *backlog)
	}
	st := pace(client, t, *rate, *duration, *conns, *backlog)
	us := func(d time.Duration) int64 { return d.Microseconds() }
	secs := duration.Seconds()
	fmt.Printf("RESULT requests=%d ok=%d errors=%d non2xx=%d dropped=%d seconds=%.3f rps=%.1f p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d sched_p99_us=%d\n",
		st.lat.total.Load()+uint64(st.errs.Load()), st.ok.Load(), st.errs.Load(), st.non2xx.Load(), st.dropped.Load(),
		secs, float64(st.ok.Load())/secs,
		us(st.lat.quantile(0.50)), us(st.lat.quantile(0.90)), us(st.lat.quantile(0.99)), us(st.lat.quantile(0.999)),
		us(time.Duration(st.lat.max.Load())), us(st.sched.quantile(0.99)))
	if e, ok := st.firstErr.Load().(string); ok {
		fmt.Fprintln(os.Stderr, "loadgen: first error:", e)
	}
	return nil
}

// pace releases requests at rate for d to conns sending goroutines, then
// waits for the last answers (each bounded by the client's timeout). A
// request's latency runs from its release, so time spent waiting for a free
// connection (the target being slow) counts, as in wrk2; how late the pacer
// itself released requests against the schedule is kept apart (sched).
func pace(client *http.Client, t *template, rate float64, d time.Duration, conns, backlog int) *runStats {
	st := &runStats{}
	queue := make(chan time.Time, backlog)
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for released := range queue {
				send(client, t, st, released)
			}
		}()
	}
	interval := float64(time.Second) / rate
	n := int(d.Seconds() * rate)
	start := time.Now()
	for i := range n {
		due := start.Add(time.Duration(float64(i) * interval))
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		now := time.Now()
		st.sched.record(now.Sub(due))
		select {
		case queue <- now:
		default:
			st.dropped.Add(1)
		}
	}
	close(queue)
	wg.Wait()
	return st
}

func send(client *http.Client, t *template, st *runStats, released time.Time) {
	req, err := t.new(context.Background())
	if err != nil {
		st.errs.Add(1)
		st.firstErr.CompareAndSwap(nil, err.Error())
		return
	}
	resp, err := client.Do(req)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if err != nil {
		st.errs.Add(1)
		st.firstErr.CompareAndSwap(nil, err.Error())
		return
	}
	st.lat.record(time.Since(released))
	if resp.StatusCode/100 != 2 {
		st.non2xx.Add(1)
		st.firstErr.CompareAndSwap(nil, "status "+resp.Status)
		return
	}
	st.ok.Add(1)
}

func cmdCheck(args []string) error {
	fs := flag.NewFlagSet("check", flag.ExitOnError)
	var rf requestFlags
	rf.register(fs)
	contains := fs.String("contains", "", "the body must contain this text")
	expectHeader := fs.String("expect-header", "", "the response must carry this 'Name: value'")
	count := fs.Int("n", 1, "send this many requests; the last one is checked")
	_ = fs.Parse(args)
	t, err := rf.template()
	if err != nil {
		return err
	}
	client := &http.Client{Transport: newTransport(1), Timeout: rf.timeout}
	var resp *http.Response
	var body []byte
	for range max(*count, 1) {
		req, err := t.new(context.Background())
		if err != nil {
			return err
		}
		resp, err = client.Do(req)
		if err != nil {
			return err
		}
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
	}
	snippet := string(body)
	if len(snippet) > 300 {
		snippet = snippet[:300] + "…"
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", t.method, t.url, resp.Status, snippet)
	}
	if *contains != "" && !strings.Contains(string(body), *contains) {
		return fmt.Errorf("%s %s: body lacks %q: %s", t.method, t.url, *contains, snippet)
	}
	if *expectHeader != "" {
		k, v, _ := strings.Cut(*expectHeader, ":")
		if got := resp.Header.Get(strings.TrimSpace(k)); got != strings.TrimSpace(v) {
			return fmt.Errorf("%s %s: header %s is %q, want %q", t.method, t.url, strings.TrimSpace(k), got, strings.TrimSpace(v))
		}
	}
	fmt.Printf("ok %s %d bytes\n", resp.Status, len(body))
	return nil
}

func cmdWait(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ExitOnError)
	url := fs.String("url", "", "URL to poll")
	timeout := fs.Duration("timeout", 15*time.Second, "give up after this long")
	_ = fs.Parse(args)
	if *url == "" {
		return errors.New("-url is required")
	}
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(*timeout)
	for {
		resp, err := client.Get(*url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer within %s: %v", *url, *timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
