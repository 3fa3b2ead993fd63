package openairelay

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddyrelay/openairelay/internal/cache"
)

// CacheConfig configures the response cache: answers to requests that are
// the same as the API understands them (same endpoint, model and canonical
// body, fields that do not change the answer left out) are served from the
// cache, and identical requests in flight at the same time are folded into
// one upstream call.
//
// A hit, or a request folded into another, costs no upstream key capacity
// and none of the client's tokens; it counts one request against the
// client's request limits.
type CacheConfig struct {
	// Store is where entries are kept: "memory" (an LRU bounded by MaxSize
	// in each Caddy instance) or "redis" (in the Redis of the relay's
	// `state redis`, bounded by MaxSize in all, shared by every instance
	// with the same configuration; identical requests in flight on another
	// instance are waited for). Default: "memory".
	Store string `json:"store,omitempty"`

	// TTL is how long an entry is served. Default: 1h.
	TTL caddy.Duration `json:"ttl,omitempty"`

	// MaxSize bounds the store, in bytes. Default: 256 MiB.
	MaxSize int64 `json:"max_size,omitempty"`

	// MaxEntry is the largest answer stored, in bytes. Default: 4 MiB.
	MaxEntry int64 `json:"max_entry,omitempty"`

	// Scope is who shares entries: "client" (each client its own) or
	// "global" (every client). Default: "client".
	Scope string `json:"scope,omitempty"`

	// IgnoreFields are top-level request fields left out of a request's
	// identity, besides those the identity always drops (see
	// cache.Identity): null members, stream, stream_options,
	// prompt_cache_retention, parameters at their documented default, and
	// except on the Responses API (whose answers echo them) user, metadata,
	// safety_identifier, prompt_cache_key and store. Default: none.
	IgnoreFields []string `json:"ignore_fields,omitempty"`

	// Paths are the API endpoints cached, as paths after /v1. Default:
	// chat/completions, completions, embeddings, responses, moderations.
	Paths []string `json:"paths,omitempty"`

	// Semantic, when set, also answers chat requests whose last user
	// message is similar to an earlier one's. Default: off (identical
	// requests only).
	Semantic *SemanticConfig `json:"semantic,omitempty"`

	group    *cache.Group
	semantic *semanticIndex
	store    cache.Store
	storeID  string
	identity cache.IdentityOptions
}

const (
	defaultCacheTTL      = time.Hour
	defaultCacheMaxSize  = 256 << 20
	defaultCacheMaxEntry = 4 << 20
)

var defaultCachePaths = []string{"chat/completions", "completions", "embeddings", "responses", "moderations"}

type sharedStore struct {
	store    cache.Store
	group    *cache.Group
	semantic *semanticIndex
}

// Destruct implements caddy.Destructor: the memory is freed with the store;
// a Redis store keeps its entries for the other instances (and the next
// start) and stops its subscription.
func (s *sharedStore) Destruct() error {
	if r, ok := s.store.(*cache.Redis); ok {
		return r.Close()
	}
	s.store.Purge(context.Background())
	return nil
}

// remoteFlights are the flights of a store shared by several instances: an
// identical request in flight on another instance is waited for.
type remoteFlights interface {
	Claim(ctx context.Context, k cache.Key, ttl time.Duration) (bool, error)
	Release(ctx context.Context, k cache.Key)
	Wait(ctx context.Context, k cache.Key) (*cache.Entry, bool)
}

var _ remoteFlights = (*cache.Redis)(nil)

// remoteFlightTTL bounds how long other instances wait for a leader that
// died: its claim expires.
const remoteFlightTTL = time.Minute

func (c *CacheConfig) provision(rl *Relay) error {
	if err := checkCacheStore(c.Store); err != nil {
		return err
	}
	if c.Store == "" {
		c.Store = "memory"
	}
	var rs *redisState
	if c.Store == "redis" {
		var ok bool
		if rs, ok = rl.state.(*redisState); !ok {
			return fmt.Errorf("cache redis keeps its entries in the relay's shared state: add `state redis { address <host:port> }`")
		}
	}
	if c.TTL == 0 {
		c.TTL = caddy.Duration(defaultCacheTTL)
	}
	if c.MaxSize == 0 {
		c.MaxSize = defaultCacheMaxSize
	}
	if c.MaxEntry == 0 {
		c.MaxEntry = defaultCacheMaxEntry
	}
	if c.TTL < 0 || c.MaxSize < 0 || c.MaxEntry < 0 {
		return fmt.Errorf("cache: ttl, max_size and max_entry must be positive")
	}
	if err := checkCacheScope(c.Scope); err != nil {
		return err
	}
	if c.Scope == "" {
		c.Scope = "client"
	}
	if len(c.Paths) == 0 {
		c.Paths = slices.Clone(defaultCachePaths) // normalised below: never the shared default itself
	}
	for i, p := range c.Paths {
		c.Paths[i] = strings.Trim(strings.TrimPrefix(p, "/v1/"), "/")
	}
	c.identity.IgnoreFields = c.IgnoreFields

	// The store, its flights and its semantic index belong to one relay:
	// they are named after its key pool (the hash of its keys' pool ids,
	// which two sites with different keys never share), its upstreams (URLs
	// and model aliases) and the sizes, so that a reload keeps them and
	// another site never sees them.
	c.storeID = "cache:" + rl.poolHash + ":" + rl.upstreamsFingerprint() + "#" + strconv.FormatInt(c.MaxSize, 10) + "#" + strconv.FormatInt(c.MaxEntry, 10)
	if c.Semantic != nil {
		c.storeID += "#semantic" // the index takes a share of max_size
	}
	if rs != nil {
		c.storeID += "#redis:" + rl.stateID
	}
	v, _, err := cacheStores.LoadOrNew(c.storeID, func() (caddy.Destructor, error) {
		storeBytes, indexBytes := c.MaxSize, int64(0)
		if c.Semantic != nil {
			indexBytes = c.MaxSize / semanticShare
			storeBytes -= indexBytes
		}
		var store cache.Store = cache.NewMemory(storeBytes, c.MaxEntry)
		if rs != nil {
			// Named after the store's identity, which every instance with
			// the same configuration computes alike.
			sum := sha256.Sum256([]byte(c.storeID))
			store = cache.NewRedis(rs.client, rs.prefix+":cache:"+hex.EncodeToString(sum[:8]), storeBytes, c.MaxEntry, rs.timeout)
		}
		return &sharedStore{store: store, group: new(cache.Group), semantic: newSemanticIndex(indexBytes)}, nil
	})
	if err != nil {
		return err
	}
	shared := v.(*sharedStore)
	c.store, c.group, c.semantic = shared.store, shared.group, shared.semantic
	if c.Semantic != nil {
		if err := c.Semantic.provision(); err != nil {
			return err
		}
		if rl.eligible(internalClient, c.Semantic.Model).empty() {
			return fmt.Errorf("cache semantic: no upstream serves the embedding model %q", c.Semantic.Model)
		}
	}
	return nil
}

func (c *CacheConfig) cleanup() {
	if c.store != nil {
		_, _ = cacheStores.Delete(c.storeID)
	}
}

// upstreamsFingerprint names what the relay's answers depend on.
func (rl *Relay) upstreamsFingerprint() string {
	h := sha256.New()
	for _, u := range rl.Upstreams {
		aliases, _ := json.Marshal(u.ModelAliases)
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00", u.Name, u.base, aliases)
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}
