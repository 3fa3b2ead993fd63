// Command fakeopenai runs the fake OpenAI API as a standalone server, for
// load scripts and manual tests.
//
//	fakeopenai -addr 127.0.0.1:8089 -any-key
//	fakeopenai -keys sk-a,sk-b -rpm 600 -tpm 100000 -chunks 20 -chunk-delay 10ms
//	fakeopenai -keys sk-a,sk-b -rpm 600 -stats
//
// It prints "listening on http://ADDR/v1" once it accepts connections. With
// -stats, GET /_fake/stats answers the counters as one JSON object:
//
//	{"requests":N,"served":N,"rate_limited":N}
//
// requests and served (2xx answers) summed over the -keys keys (requests
// under -any-key are not counted), rate_limited the 429 rate_limit_exceeded
// answers given to any key.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	anyKey := flag.Bool("any-key", false, "accept every key, without limits, recording off")
	keys := flag.String("keys", "", "comma-separated keys to accept")
	rpm := flag.Int("rpm", 0, "requests per minute of each -keys key (0 = unlimited)")
	tpm := flag.Int("tpm", 0, "tokens per minute of each -keys key (0 = unlimited)")
	burst := flag.Duration("burst", time.Second, "window whose worth of capacity a key's buckets hold")
	chunks := flag.Int("chunks", 5, "content chunks per stream")
	chunkDelay := flag.Duration("chunk-delay", 0, "delay before every content chunk of a stream")
	apiKeyHeader := flag.Bool("api-key-header", false, "Azure style: only the api-key header authenticates")
	record := flag.Bool("record", false, "keep per-request records (memory grows with every request)")
	noGzip := flag.Bool("no-compression", false, "never gzip answers (default: gzip when Accept-Encoding allows, as api.openai.com)")
	contentLength := flag.Bool("content-length", false, "send Content-Length instead of chunked answers")
	noPromptCache := flag.Bool("no-prompt-cache", false, "always report cached_tokens 0 (default: repeated prompt prefixes of 1024 tokens or more are cached, as api.openai.com)")
	stats := flag.Bool("stats", false, "answer GET /_fake/stats with the request, 2xx and 429 counters (JSON)")
	flag.Parse()

	s := fakeopenai.NewHandler(fakeopenai.Options{
		StreamChunks:        *chunks,
		ChunkDelay:          *chunkDelay,
		AllowAnyKey:         *anyKey,
		RequireAPIKeyHeader: *apiKeyHeader,
		NoCompression:       *noGzip,
		ContentLength:       *contentLength,
		NoPromptCache:       *noPromptCache,
	})
	s.SetRecording(*record && !*anyKey)
	var keyList []string
	for _, k := range strings.Split(*keys, ",") {
		if k = strings.TrimSpace(k); k != "" {
			s.AddKey(k, fakeopenai.KeyLimits{RPM: *rpm, TPM: *tpm, Burst: *burst})
			keyList = append(keyList, k)
		}
	}
	var handler http.Handler = s
	if *stats {
		handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/_fake/stats" {
				s.ServeHTTP(w, r)
				return
			}
			var requests, served int
			for _, k := range keyList {
				requests += s.Count(k)
				served += s.Served(k)
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]int{"requests": requests, "served": served, "rate_limited": s.RateLimited()})
		})
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("listening on http://%s/v1\n", ln.Addr())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}
