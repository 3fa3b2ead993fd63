package openairelay_test

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/coder/websocket"

	"github.com/caddyrelay/openairelay/internal/fakeopenai"
)

// BenchmarkWebSocketSessions measures the memory of open Realtime sessions:
// wsSessionsPerRun sessions are opened (each past its session.created) and
// held while the heap and the goroutines are counted, three ways in one
// run against one in-process fake: direct to the fake, through Caddy's
// reverse_proxy, and through the relay. Client and fake are in the process
// in all three, so the differences are what the proxy in between costs:
// bytes/session and goroutines/session are reported per way.
//
//	go test -run '^$' -bench WebSocketSessions -benchtime 1x .
func BenchmarkWebSocketSessions(b *testing.B) {
	fake := fakeopenai.New(fakeopenai.Options{AllowAnyKey: true})
	defer fake.Close()
	relay, rp := caddyFronts(b, fake.URL())
	for _, way := range []struct{ name, base string }{
		{"direct", fake.URL()}, {"reverse_proxy", rp}, {"relay", relay},
	} {
		b.Run(way.name, func(b *testing.B) {
			base := way.base
			for b.Loop() {
				perSession, goroutines := openSessions(b, base, wsSessionsPerRun)
				b.ReportMetric(perSession, "bytes/session")
				b.ReportMetric(goroutines, "goroutines/session")
			}
		})
	}
}

const wsSessionsPerRun = 300

// openSessions opens n sessions at base, and returns the heap and the
// goroutines they added, per session.
func openSessions(b *testing.B, base string, n int) (bytesPer, goroutinesPer float64) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := "ws" + strings.TrimPrefix(base, "http") + "/realtime?model=gpt-realtime"
	before, g0 := heapNow()
	conns := make([]*websocket.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.CloseNow()
		}
	}()
	for range n {
		c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: bearer(benchClientKey)})
		if err != nil {
			b.Fatalf("dial: %v", err)
		}
		conns = append(conns, c)
		if _, _, err := c.Read(ctx); err != nil { // session.created
			b.Fatalf("read: %v", err)
		}
	}
	after, g1 := heapNow()
	return float64(after-before) / float64(n), float64(g1-g0) / float64(n)
}

func heapNow() (uint64, int) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse, runtime.NumGoroutine()
}

// caddyFronts loads a Caddy (in this process, admin off) with one site:
// /rp/* is reverse_proxy to upstream's host, everything else the relay
// (one client, one key on upstream). It returns the two base URLs.
func caddyFronts(b *testing.B, upstream string) (relay, rp string) {
	port := freePort(b)
	host := strings.TrimSuffix(strings.TrimPrefix(upstream, "http://"), "/v1")
	caddyfile := fmt.Sprintf(`{
	admin off
	http_port %[1]d
	auto_https off
	skip_install_trust
}
http://127.0.0.1:%[1]d {
	handle_path /rp/* {
		reverse_proxy %[2]s
	}
	handle {
		openai_relay {
			client bench {
				key %[3]s
			}
			upstream up %[4]s {
				key sk-bench-websocket-sessions-0001
			}
		}
	}
}`, port, host, benchClientKey, upstream)
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = caddy.Stop() })
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	return base + "/v1", base + "/rp/v1"
}

func freePort(b *testing.B) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
