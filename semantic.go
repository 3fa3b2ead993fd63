package openairelay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddyrelay/openairelay/internal/cache"
)

// SemanticConfig makes the cache answer chat requests that are similar, not
// only identical, to an earlier one: same scope, model, parameters and
// conversation up to the last user message, and a last user message whose
// embedding is close enough to the earlier one's.
type SemanticConfig struct {
	// Model is the embedding model the last user message is embedded with,
	// through the relay's own upstreams (it must be served by one of them).
	// Default: "text-embedding-3-small".
	Model string `json:"model,omitempty"`

	// Threshold is the cosine similarity, from 0 to 1, from which an
	// earlier answer is served. Default: 0.95.
	Threshold float64 `json:"threshold,omitempty"`
}

const (
	defaultSemanticModel     = "text-embedding-3-small"
	defaultSemanticThreshold = 0.95

	// The index of embeddings is bounded: per group (requests that differ
	// only in their last user message), in groups, and in bytes, a share of
	// the cache's max_size (semanticShare: the store gets the rest).
	maxSemanticPerGroup = 256
	maxSemanticGroups   = 4096
	semanticShare       = 8 // the index may use 1/8 of max_size

	// semanticEntryOverhead is what an entry costs beside its vector: the
	// key, the slice header, the norm and the FIFO slot.
	semanticEntryOverhead = 128
)

func (s *SemanticConfig) provision() error {
	if s.Model == "" {
		s.Model = defaultSemanticModel
	}
	if s.Threshold == 0 {
		s.Threshold = defaultSemanticThreshold
	}
	return checkThreshold(s.Threshold)
}

// semanticIndex keeps, per group, the embeddings of the last user messages
// whose answers are stored, with the keys they are stored under.
type semanticIndex struct {
	mu     sync.Mutex
	groups map[cache.Key][]semanticEntry
	// order lists entries oldest first (some may be gone already), for
	// shrinking to maxBytes; bytes is what the entries take.
	order           []semanticRef
	bytes, maxBytes int64
	n               int // entries held
}

type semanticEntry struct {
	key  cache.Key
	vec  []float32
	norm float64
}

func (e semanticEntry) size() int64 { return int64(len(e.vec))*4 + semanticEntryOverhead }

// semanticRef names an entry in the order entries were added.
type semanticRef struct{ group, key cache.Key }

func newSemanticIndex(maxBytes int64) *semanticIndex {
	return &semanticIndex{groups: make(map[cache.Key][]semanticEntry), maxBytes: maxBytes}
}

// remove drops the entry of key from group, if there.
func (ix *semanticIndex) remove(group, key cache.Key) {
	entries := ix.groups[group]
	for i, e := range entries {
		if e.key == key {
			ix.bytes -= e.size()
			ix.n--
			entries = slices.Delete(entries, i, i+1)
			break
		}
	}
	if len(entries) == 0 {
		delete(ix.groups, group)
	} else {
		ix.groups[group] = entries
	}
}

// forget drops an entry whose answer is no longer stored (evicted or
// expired): the index shrinks with the store.
func (ix *semanticIndex) forget(group, key cache.Key) {
	ix.mu.Lock()
	ix.remove(group, key)
	ix.mu.Unlock()
}

// shrink drops the oldest entries until the index is within its bytes.
func (ix *semanticIndex) shrink() {
	for ix.bytes > ix.maxBytes && len(ix.order) > 0 {
		ref := ix.order[0]
		ix.order = ix.order[1:]
		ix.remove(ref.group, ref.key)
	}
	if len(ix.order) == 0 {
		ix.order = nil // let the drained backing array go
	}
}

func norm(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

// add records that the answer stored under key was asked with vec.
func (ix *semanticIndex) add(group, key cache.Key, vec []float32) {
	n := norm(vec)
	if n == 0 {
		return
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if _, ok := ix.groups[group]; !ok && len(ix.groups) >= maxSemanticGroups {
		for g, entries := range ix.groups { // a random group makes room
			for _, e := range entries {
				ix.bytes -= e.size()
			}
			ix.n -= len(entries)
			delete(ix.groups, g)
			break
		}
	}
	ix.remove(group, key)
	entries := ix.groups[group]
	if len(entries) >= maxSemanticPerGroup {
		ix.bytes -= entries[0].size()
		ix.n--
		entries = entries[1:]
	}
	e := semanticEntry{key, vec, n}
	ix.groups[group] = append(entries, e)
	ix.bytes += e.size()
	ix.n++
	ix.order = append(ix.order, semanticRef{group, key})
	ix.shrink()
	if len(ix.order) > 2*ix.n+64 {
		ix.compact()
	}
}

// compact drops from order the refs of entries that are gone or were added
// again later, so that order stays proportional to the index.
func (ix *semanticIndex) compact() {
	seen := make(map[semanticRef]bool, len(ix.order))
	kept := make([]semanticRef, 0, len(ix.order)/2)
	for i := len(ix.order) - 1; i >= 0; i-- {
		ref := ix.order[i]
		if seen[ref] || !slices.ContainsFunc(ix.groups[ref.group], func(e semanticEntry) bool { return e.key == ref.key }) {
			continue
		}
		seen[ref] = true
		kept = append(kept, ref)
	}
	slices.Reverse(kept)
	ix.order = kept
}

// nearest returns the keys of the group's entries at least threshold
// similar to vec, most similar first.
func (ix *semanticIndex) nearest(group cache.Key, vec []float32, threshold float64) []cache.Key {
	n := norm(vec)
	if n == 0 {
		return nil
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	type scored struct {
		key cache.Key
		sim float64
	}
	var found []scored
	for _, e := range ix.groups[group] {
		if len(e.vec) != len(vec) {
			continue
		}
		var dot float64
		for i, x := range vec {
			dot += float64(x) * float64(e.vec[i])
		}
		if sim := dot / (n * e.norm); sim >= threshold {
			found = append(found, scored{e.key, sim})
		}
	}
	keys := make([]cache.Key, 0, len(found))
	for len(found) > 0 {
		best := 0
		for i := range found {
			if found[i].sim > found[best].sim {
				best = i
			}
		}
		keys = append(keys, found[best].key)
		found = append(found[:best], found[best+1:]...)
	}
	return keys
}

// semanticParts splits a chat request into the text of its last user
// message and the identity of everything else. ok is false for requests
// semantic mode does not handle (another endpoint, a last user message with
// images or audio, no user message).
func semanticParts(ar *apiRequest) (text string, rest []byte, ok bool) {
	if ar.endpoint != "chat/completions" || ar.kind != bodyJSON {
		return "", nil, false
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(ar.body, &top) != nil {
		return "", nil, false
	}
	var msgs []json.RawMessage
	if json.Unmarshal(top["messages"], &msgs) != nil {
		return "", nil, false
	}
	for i := len(msgs) - 1; i >= 0; i-- {
		var m struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		}
		if json.Unmarshal(msgs[i], &m) != nil || m.Role != "user" {
			continue
		}
		text, ok = messageText(m.Content)
		if !ok {
			return "", nil, false
		}
		msgs[i] = json.RawMessage(`{"role":"user","content":null}`)
		top["messages"], _ = json.Marshal(msgs)
		rest, err := json.Marshal(top)
		return text, rest, err == nil
	}
	return "", nil, false
}

// messageText is the text of a message's content: a string, or text parts
// only.
func messageText(content json.RawMessage) (string, bool) {
	var s string
	if json.Unmarshal(content, &s) == nil {
		return s, s != ""
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(content, &parts) != nil || len(parts) == 0 {
		return "", false
	}
	var b strings.Builder
	for i, p := range parts {
		if p.Type != "text" {
			return "", false
		}
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(p.Text)
	}
	return b.String(), b.Len() > 0
}

// serveSemantic answers a request that missed the exact cache from a
// stored answer to a similar one. Whatever it finds, it leaves in cl what
// the answer to this request is to be indexed under.
func (pr *proxyRequest) serveSemantic(w http.ResponseWriter, cl *cacheLookup) bool {
	sem := cl.c.Semantic
	text, rest, ok := semanticParts(pr.api)
	if !ok {
		return false
	}
	scope := ""
	if cl.c.Scope == "client" {
		scope = pr.rl.ownerOf(pr.client)
	}
	group, ok, err := cache.Identity(scope, http.MethodPost, pr.api.endpoint+"#semantic", pr.api.model, rest, &cl.c.identity)
	if err != nil || !ok {
		return false
	}
	vec, err := pr.rl.embed(pr.req, pr.client, sem.Model, text)
	if err != nil {
		pr.rl.logger.Debug("semantic cache: embedding failed; exact matching only", zap.Error(err))
		return false
	}
	cl.semGroup, cl.vector = group, vec
	if cl.control.noCache {
		return false // indexed once stored, but not looked up
	}
	for _, key := range cl.c.semantic.nearest(group, vec, sem.Threshold) {
		e, ok := cl.c.store.Get(pr.req.Context(), key)
		if !ok {
			cl.c.semantic.forget(group, key)
			continue
		}
		if pr.serveEntry(w, cl, e) {
			return true
		}
	}
	return false
}

// internalClient routes the relay's own requests at provision time (is the
// semantic cache's embedding model served at all?): no limits of its own.
var internalClient = &Client{Name: "openai_relay", priority: priorityNormal,
	state: &clientState{name: "openai_relay", priority: "normal"}}

// embed embeds text with model for client, as an ordinary request of that
// client would go: through the upstreams it may use, within its limits and
// budget (the embedding is spent by it), with key choice and retries. The
// client's model allow-list does not apply: the relay chose the model.
func (rl *Relay) embed(orig *http.Request, client *Client, model, text string) (vec []float32, err error) {
	defer func() {
		// An embedding answer cut short aborts only the embedding: the
		// request it was for goes on with exact matching.
		if r := recover(); r != nil {
			if r != http.ErrAbortHandler {
				panic(r)
			}
			vec, err = nil, errors.New("the embeddings answer was cut short")
		}
	}()
	body, err := json.Marshal(map[string]string{"model": model, "input": text})
	if err != nil {
		return nil, err
	}
	ar := &apiRequest{endpoint: "embeddings", body: body}
	if aerr := ar.parseBody(http.MethodPost, http.Header{"Content-Type": {"application/json"}}); aerr != nil {
		return nil, aerr
	}
	req, err := http.NewRequestWithContext(orig.Context(), http.MethodPost, "/v1/embeddings", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	pr := rl.newProxyRequest(client, req, ar, caddy.NewReplacer(), client.priority)
	if pr == nil {
		return nil, fmt.Errorf("no upstream this client may use serves the embedding model %q", model)
	}
	rec := &bufferWriter{header: make(http.Header)}
	pr.relay(rec)
	if rec.status != http.StatusOK {
		return nil, fmt.Errorf("embeddings answered %d: %.200s", rec.status, rec.body.Bytes())
	}
	var out struct {
		Data []struct {
			Embedding []float32 `json:"embedding"`
		} `json:"data"`
	}
	if err := json.Unmarshal(rec.body.Bytes(), &out); err != nil || len(out.Data) == 0 || len(out.Data[0].Embedding) == 0 {
		return nil, fmt.Errorf("embeddings answer without a vector")
	}
	return out.Data[0].Embedding, nil
}

// bufferWriter is a ResponseWriter that keeps the answer.
type bufferWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferWriter) Header() http.Header { return b.header }
func (b *bufferWriter) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
	}
}
func (b *bufferWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}
