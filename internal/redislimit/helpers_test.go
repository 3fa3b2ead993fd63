package redislimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/caddyrelay/openairelay/internal/limit"
	"github.com/caddyrelay/openairelay/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// backend is a way to reach Redis: one server or a cluster.
type backend struct {
	name   string
	client func(t testing.TB) redis.UniversalClient
}

// backends starts one server and a 3-node cluster, and returns a way to make
// clients for each. Starting the cluster is skipped in -short mode.
func backends(t *testing.T) []backend {
	t.Helper()
	srv := redistest.Start(t)
	bs := []backend{{name: "single", client: func(t testing.TB) redis.UniversalClient {
		return closing(t, redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true}))
	}}}
	if testing.Short() {
		return bs
	}
	addrs := redistest.StartCluster(t, 3)
	return append(bs, backend{name: "cluster", client: func(t testing.TB) redis.UniversalClient {
		return closing(t, redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, ContextTimeoutEnabled: true}))
	}})
}

func closing(t testing.TB, c redis.UniversalClient) redis.UniversalClient {
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// prefix returns a prefix no other test uses.
func prefix(t testing.TB) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "test-" + hex.EncodeToString(b[:])
}

// ctx returns a context that ends with the test or after d.
func ctx(t testing.TB, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return c
}

// at is a State's time as a Time.
func at(s limit.State) time.Time { return time.Unix(0, s.At) }
