package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// cmdStreams holds many streams open at once and measures what they cost the
// proxy process in memory:
//
//	loadgen streams -n 10000 -url URL -body-file F -H 'K: V' -pid PID [-save URL=FILE]...
//
// It opens one stream (the warm-up) to its first event and closes it, reads
// the VmRSS of -pid (idle), then opens -n streams (at most -concurrency being
// set up at a time, so that the listen backlog does not overflow), each on
// its own connection, and waits until every one has received its first
// complete SSE event or failed, or -open-timeout passed. After -settle it
// samples VmRSS every 250 ms for -hold and keeps the highest sample (open),
// fetches every -save URL into its file (profiles of the proxy, taken after
// the samples so that they do not disturb them), then closes all the streams.
// It prints one line:
//
//	RESULT n=N opened=N first=N held=N errors=N non2xx=N ended_early=N open_s=S ttfe_p50_us=N ttfe_p99_us=N rss_idle_kb=N rss_open_kb=N kib_per_stream=K
//
// opened: answers with a 2xx status; first: streams that received a first
// event; held: streams still open at the end of the hold (the RSS samples
// cover at least these); ended_early: streams that ended, or failed, after
// their first event but before the end of the hold; ttfe: time from sending
// the request to the first event. kib_per_stream is (rss_open - rss_idle) /
// held in KiB. The streams must outlast the open phase and the hold (a slow
// upstream: fakeopenai -chunk-delay); every wait is bounded.
func cmdStreams(args []string) error {
	fs := flag.NewFlagSet("streams", flag.ExitOnError)
	var rf requestFlags
	rf.register(fs)
	n := fs.Int("n", 10000, "streams to hold open at once")
	concurrency := fs.Int("concurrency", 256, "streams being set up (sent, waiting for their first event) at a time")
	openTimeout := fs.Duration("open-timeout", 60*time.Second, "give up waiting for first events after this long")
	settle := fs.Duration("settle", 2*time.Second, "wait this long after the last first event before sampling RSS")
	hold := fs.Duration("hold", 3*time.Second, "sample RSS over this long (every 250 ms), keep the highest")
	pid := fs.Int("pid", 0, "process whose VmRSS is sampled (0: none)")
	sources := fs.Int("sources", 1, "spread the connections over this many local addresses 127.0.0.1, .2, … (loopback ephemeral ports are per source address)")
	warmup := fs.Int("warmup", 1, "streams opened to their first event and closed before the idle RSS is read")
	var saves headerFlags
	fs.Var(&saves, "save", "URL=FILE: fetch URL into FILE while the streams are open (repeatable)")
	_ = fs.Parse(args)
	t, err := rf.template()
	if err != nil {
		return err
	}
	if *n <= 0 || *concurrency <= 0 || *sources <= 0 || *sources > 254 {
		return errors.New("-n and -concurrency must be positive, -sources in 1..254")
	}

	// One hard deadline bounds the whole run, whatever the target does.
	deadline := *openTimeout + *settle + *hold + 60*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()

	var next atomic.Uint32
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if *sources == 1 {
				return dialer.DialContext(ctx, network, addr)
			}
			d := *dialer
			ip := net.IPv4(127, 0, 0, byte(1+int(next.Add(1))%*sources))
			d.LocalAddr = &net.TCPAddr{IP: ip}
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost: 1,
		DisableCompression:  true,
		// Every stream has its own connection; the read buffer only has to
		// hold SSE events, and the loader's memory is not what is measured.
		ReadBufferSize:  4096,
		WriteBufferSize: 4096,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr} // bounded by ctx, not by a per-request timeout

	for range *warmup {
		wctx, wcancel := context.WithTimeout(ctx, rf.timeout)
		_, err := openStream(wctx, client, t)
		wcancel()
		if err != nil {
			return fmt.Errorf("warm-up stream: %w", err)
		}
	}
	tr.CloseIdleConnections()
	time.Sleep(500 * time.Millisecond)
	rssIdle := int64(-1)
	if *pid > 0 {
		if rssIdle, err = vmRSS(*pid); err != nil {
			return err
		}
	}

	var (
		opened, first, errs, non2xx, endedEarly, open atomic.Int64
		ttfe                                          histogram
		firstErr                                      atomic.Value
		measuring                                     atomic.Bool // the hold is not over: a stream that ends now ended early
	)
	measuring.Store(true)
	note := func(e string) { firstErr.CompareAndSwap(nil, e) }
	done := make(chan struct{}, *n) // one per stream that got its first event or failed
	sem := make(chan struct{}, *concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for range *n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			released := false
			release := func() {
				if !released {
					released = true
					<-sem
					done <- struct{}{}
				}
			}
			defer release()
			sent := time.Now()
			s, err := openStream(ctx, client, t)
			if s != nil && s.status/100 == 2 {
				opened.Add(1)
			}
			if err != nil {
				if s != nil && s.status/100 != 2 {
					non2xx.Add(1)
				} else {
					errs.Add(1)
				}
				note(err.Error())
				return
			}
			first.Add(1)
			open.Add(1)
			ttfe.record(time.Since(sent))
			release()
			// Hold the stream: read (and drop) what comes until it ends or
			// the run is over.
			err = drain(s.body)
			s.resp.Body.Close()
			open.Add(-1)
			if measuring.Load() {
				endedEarly.Add(1)
				if err != nil {
					note("after the first event: " + err.Error())
				} else {
					note("a stream ended before the end of the hold (make the upstream's streams longer)")
				}
			}
		}()
	}

	// Wait for every stream's first event (or failure), bounded.
	got := 0
	timeout := time.NewTimer(*openTimeout)
wait:
	for got < *n {
		select {
		case <-done:
			got++
		case <-timeout.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	timeout.Stop()
	openSecs := time.Since(start).Seconds()
	if got < *n {
		note(fmt.Sprintf("%d streams had no first event after %s", *n-got, *openTimeout))
	}

	time.Sleep(*settle)
	rssOpen := int64(-1)
	held := open.Load()
	if *pid > 0 {
		for end := time.Now().Add(*hold); ; {
			v, err := vmRSS(*pid)
			if err != nil {
				return err
			}
			rssOpen = max(rssOpen, v)
			held = min(held, open.Load())
			if !time.Now().Before(end) {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
	} else {
		time.Sleep(*hold)
		held = min(held, open.Load())
	}
	for _, s := range saves {
		i := strings.LastIndex(s, "=") // the URL may hold '=', the file does not
		if i < 0 {
			return fmt.Errorf("-save %q: want URL=FILE", s)
		}
		if err := fetchTo(ctx, s[:i], s[i+1:]); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen: save:", err)
		}
	}
	measuring.Store(false)
	cancel()
	waited := make(chan struct{})
	go func() { wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(15 * time.Second):
		fmt.Fprintln(os.Stderr, "loadgen: some streams did not close within 15 s")
	}

	perStream := -1.0
	if rssIdle >= 0 && rssOpen >= 0 && held > 0 {
		perStream = float64(rssOpen-rssIdle) / float64(held)
	}
	us := func(d time.Duration) int64 { return d.Microseconds() }
	fmt.Printf("RESULT n=%d opened=%d first=%d held=%d errors=%d non2xx=%d ended_early=%d open_s=%.2f ttfe_p50_us=%d ttfe_p99_us=%d rss_idle_kb=%d rss_open_kb=%d kib_per_stream=%.1f\n",
		*n, opened.Load(), first.Load(), held, errs.Load(), non2xx.Load(), endedEarly.Load(), openSecs,
		us(ttfe.quantile(0.50)), us(ttfe.quantile(0.99)), rssIdle, rssOpen, perStream)
	if e, ok := firstErr.Load().(string); ok {
		fmt.Fprintln(os.Stderr, "loadgen: first error:", e)
	}
	return nil
}

// stream is an answer whose first event has been read.
type stream struct {
	status int
	resp   *http.Response
	body   *bufio.Reader
}

// openStream sends the request and reads up to the end of the first SSE
// event (a blank line after a data line). s is set (with status) whenever an
// answer came; err is set unless the first event came.
func openStream(ctx context.Context, client *http.Client, t *template) (*stream, error) {
	req, err := t.new(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	s := &stream{status: resp.StatusCode, resp: resp, body: bufio.NewReaderSize(resp.Body, 1024)}
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		resp.Body.Close()
		return s, fmt.Errorf("status %s: %s", resp.Status, b)
	}
	sawData := false
	for range 1000 { // lines; an event is a few
		line, err := s.body.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			resp.Body.Close()
			if errors.Is(err, io.EOF) {
				err = errors.New("the stream ended before its first event")
			}
			return s, err
		}
		line = bytes.TrimRight(line, "\r\n")
		switch {
		case bytes.HasPrefix(line, []byte("data:")):
			sawData = true
		case len(line) == 0 && sawData:
			return s, nil
		}
	}
	resp.Body.Close()
	return s, errors.New("no complete event in the first 1,000 lines")
}

// drain reads and drops what comes until the end (nil) or an error, with the
// stream's own small buffer (io.Copy to io.Discard would take 8 KiB more
// per stream).
func drain(r *bufio.Reader) error {
	for {
		_, err := r.ReadSlice('\n')
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			return nil
		default:
			return err
		}
	}
}

// vmRSS is the resident set size of a process, in KiB.
func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return -1, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return -1, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// fetchTo writes the body of a GET of url to file.
func fetchTo(ctx context.Context, url, file string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
