// Package fakeopenai is a fake OpenAI API, faithful enough on the wire (JSON
// shapes, error bodies, headers, SSE framing) for the official SDKs to use it
// as if it were api.openai.com. The relay's end-to-end tests and load scripts
// run it as the upstream.
//
// # Answers
//
// Answers are deterministic from the input: the assistant reply is
// "echo: " + the text of the last user message (truncated to the request's
// max tokens, counted in whitespace-separated words), embeddings are a
// feature-hashed bag of words, transcriptions say "transcribed N bytes". Every
// call gets a fresh unique id (chatcmpl-…, cmpl-…, resp_…, modr-…) and created
// time, so a test can tell a cached replay from a new upstream call.
//
// # Token estimate
//
// The prompt estimate, used both for usage.prompt_tokens (usage.input_tokens)
// and for TPM admission, is
//
//	prompt = ceil(C / 4)
//
// where C is the number of Unicode code points (runes) in all the text of the
// request: chat: every messages[].content string and every content part's
// "text"; legacy completions: every prompt string; responses: instructions
// plus every input string / content string / content part "text"; embeddings
// and moderations: every input string (and text parts). A pre-tokenised input
// (array of integers) counts one token per integer instead. Nothing else in
// the body (roles, names, tools, tool call arguments, JSON syntax) counts.
// Consequently ceil(len(body in bytes)/4) is never below it for text inputs.
// A response continuing a stored one (previous_response_id) adds the
// previous response's usage.input_tokens + usage.output_tokens, as the API
// bills the whole conversation again (so body-based estimates fall short
// there).
//
// The completion allowance is the largest of max_tokens,
// max_completion_tokens and max_output_tokens present in the request (0 when
// none is present; n is ignored). The TPM admission cost of a request is
// prompt + allowance. Audio (multipart) requests, files and stored-response
// requests cost 0 tokens. GET /models and GET /models/{id} are authenticated
// but never rate limited nor charged.
//
// completion_tokens (output_tokens) is the number of whitespace-separated
// words of the reply (1 for a tool call), never above the allowance when one
// is given. total = prompt + completion.
//
// # Prompt caching
//
// As on the API (developers.openai.com/api/docs/guides/prompt-caching),
// prompts of 1024 tokens or more are cached automatically, and a later
// request of the same project and model whose prompt starts with the same
// prefix reports the cached part in usage.prompt_tokens_details.cached_tokens
// (chat completions, streams' final usage chunk included) or
// usage.input_tokens_details.cached_tokens (responses): 1024 + 128·k tokens,
// else 0. The fake's model is deterministic over its estimate: the prompt
// text is the text counted above, concatenated in order (a continued response
// is compared on its own text only); per project and model the fake remembers
// the last 256 prompts of 1024 tokens or more for 5 minutes (by
// Options.Now); cached_tokens is the longest common prefix with any of them,
// in whole tokens (runes/4 rounded down), floored to 1024 + 128·k and capped
// at prompt_tokens, 0 under 1024. A request refused before admission is not
// remembered. Options.NoPromptCache turns it off; Server.ClearPromptCache
// forgets every prompt. Legacy completions, embeddings and moderations
// report none.
//
// # Rate limits
//
// Each key with RPM (TPM) > 0 has a token bucket refilling continuously at
// limit/60 per second that holds Burst's worth, i.e. capacity =
// limit × Burst / 1m (Burst defaults to 1s); each bucket holds at least 1.
// Buckets start full. A request is admitted when the RPM bucket holds ≥ 1 and
// the TPM bucket holds ≥ min(cost, capacity); both are then debited (1 and
// cost), so a request larger than the burst is admitted only on a full bucket
// and leaves it in debt. A rejected request debits nothing. A request whose
// cost exceeds the whole minute TPM limit is rejected with OpenAI's "Request
// too large" 429 (type tokens, no retry-after). By default nothing is
// refunded after the answer (Options.RefundUnusedTokens changes that). Limits
// are per key, shared by all models of the key. Every request but GET
// /models[/{id}] is charged (files and stored-response requests cost 1
// request and 0 tokens).
//
// The headers report the minute, as OpenAI documents them ("Rate limits in
// headers", platform.openai.com/docs/guides/rate-limits: limit 60, remaining
// 59, reset 1s). With deficit = capacity − level of a bucket (debt included):
//
//	x-ratelimit-limit-*     = the per-minute limit
//	x-ratelimit-remaining-* = floor(limit − deficit), ≥ 0
//	x-ratelimit-reset-*     = deficit / rate, in OpenAI's duration format (1s, 6m0s, 20ms, 1m30.5s)
//
// so limit 60 reads remaining 59, reset 1s after one request, and limit 300
// remaining 295, reset 1s after five quick ones (Options.BucketRemaining
// reports the bucket's level instead). A 429 carries the same headers, plus
// retry-after / retry-after-ms saying when one request (or the request's
// tokens) fits, no later than the reset; its message's "Used" is
// limit − remaining.
//
// # Wire
//
// JSON (and text) answers, successes and errors alike, are gzip-compressed
// when the request's Accept-Encoding accepts gzip (q-values and "*" honoured),
// with Content-Encoding: gzip and Vary: Accept-Encoding, and every answer is
// sent chunked, without Content-Length. Event streams are never compressed.
// Options.NoCompression and Options.ContentLength turn these off. Go's
// http.Transport asks for gzip and decompresses by itself; a test that wants
// the raw bytes sets DisableCompression or its own Accept-Encoding.
//
// # Keys, projects and permissions
//
// A key belongs to a project (KeyConfig.Project; by default one of its own,
// with a stable fake id proj_…, sent as openai-project). After the account
// errors (401 invalid_api_key / account_deactivated, 429 insufficient_quota,
// 403 unsupported_country_region_territory) come the errors about a good
// key's request: a restricted key lacking a scope (401 "Missing scopes: …",
// see the Scope* constants), a model the project may not use (403
// model_not_found), a model that needs a verified organisation
// (Options.VerifiedOrgModels, 403).
//
// # Stored objects
//
// Files (POST/GET /v1/files, GET/DELETE /v1/files/{id}, GET
// /v1/files/{id}/content) and responses (every POST /v1/responses unless
// "store": false; GET/DELETE /v1/responses/{id}, GET
// /v1/responses/{id}/input_items) are owned by the creating key's project; a
// key of another project gets the API's 404 (Options.SharedObjects lifts
// that). previous_response_id continues a stored response of the project:
// the prompt estimate (usage and TPM cost) then adds the previous response's
// input_tokens + output_tokens, as the API bills the whole conversation; an
// unknown id is a 400 previous_response_not_found.
//
// # WebSockets
//
// GET /v1/realtime?model=… (the Realtime API) and GET /v1/responses (the
// Responses API's WebSocket mode) upgrade to WebSockets after the same
// authentication and refusals as any request (the key may also come in the
// subprotocol openai-insecure-api-key.<key>). A Realtime session is one
// request when it opens and its responses are charged tokens; each
// response.create of a Responses socket is charged as a POST /v1/responses.
// Each session and each response.create is a Record (Record.Event). See
// realtime.go for the events.
package fakeopenai

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// KeyLimits are the rate limits of one upstream key.
type KeyLimits struct {
	RPM, TPM int // 0 = unlimited
	// Burst is the window whose worth of capacity a bucket holds; default
	// time.Second (OpenAI enforces minute limits over shorter windows).
	Burst time.Duration
}

// KeyState is the account state of a key.
type KeyState int

const (
	KeyOK          KeyState = iota
	KeyInvalid              // 401 invalid_api_key
	KeyNoQuota              // 429 insufficient_quota
	KeyForbidden            // 403 unsupported_country_region_territory
	KeyDeactivated          // 401 account_deactivated
)

// Fault is an injected failure. Faults are tried in the order they were
// added; the first that matches a request applies to it (only one per
// request).
type Fault struct {
	Status    int           // respond with this status (e.g. 500, 502, 503) and an OpenAI-shaped server_error body (429: rate_limit_exceeded)
	Reset     bool          // close the connection without any response (hijack + close)
	Latency   time.Duration // delay before the response header
	DropAfter int           // streams: send this many SSE events then kill the connection mid-stream; a fault with only DropAfter matches stream requests only
	Count     int           // how many upcoming matching requests it applies to; 0 = all until ClearFaults
	Key       string        // only requests with this key ("" = any)
	Path      string        // only this path suffix such as "/chat/completions" ("" = any)
	Body      string        // with Status: answer this body instead of the default one
	Header    http.Header   // with Status: extra response headers (e.g. Retry-After)
}

// Options configure a Server. The zero value is usable.
type Options struct {
	Models              []string      // served models; default gpt-4o-mini, gpt-4o, gpt-4.1, text-embedding-3-small, whisper-1, omni-moderation-latest, gpt-realtime
	StreamChunks        int           // content chunks per stream; default 5
	ChunkDelay          time.Duration // delay before every content chunk of a stream; default 0
	RequireAPIKeyHeader bool          // Azure style: only the `api-key` header authenticates
	RateLimitHeaders    *bool         // send x-ratelimit-* on every response; default true
	AllowAnyKey         bool          // every presented key is accepted (created on first use without limits)
	RefundUnusedTokens  bool          // after a 2xx answer, give back to the TPM bucket the admitted cost minus the usage total
	EmbeddingDims       int           // embedding dimension when the request has no `dimensions`; default 64
	Now                 func() time.Time

	// Strict by default; each of these turns one behaviour off.
	NoCompression   bool // never gzip answers (default: gzip JSON/text answers when Accept-Encoding accepts it)
	ContentLength   bool // send Content-Length and no chunking (default: chunked, no Content-Length)
	BucketRemaining bool // x-ratelimit-remaining-* is the bucket's level (default: what remains of the minute's allowance)
	SharedObjects   bool // stored files/responses are visible to every key (default: only to keys of the creating project)
	NoPromptCache   bool // cached_tokens is always 0 (default: prompts of 1024 tokens or more are cached, see Prompt caching)

	// VerifiedOrgModels are models that need a verified organisation: keys
	// without KeyConfig.Verified get a 403 for them. Default none.
	VerifiedOrgModels []string
}

// Record is one request as the fake saw it.
type Record struct {
	Time         time.Time
	Key          string // the key that authenticated ("" if none); any key added with AddKey counts, whatever its state
	Method, Path string // Path as received, e.g. /v1/chat/completions
	Query        string
	Model        string
	Stream       bool
	Header       http.Header // as received (clone)
	Body         []byte
	Status       int // status it answered (0 for a Reset fault; 101 for an accepted WebSocket upgrade)
	// Event is, for a record of one client event of a WebSocket session
	// ("response.create"), its type; Body is then the event. "" for HTTP
	// requests and WebSocket upgrades.
	Event string
}

// DefaultModels are served when Options.Models is empty.
var DefaultModels = []string{"gpt-4o-mini", "gpt-4o", "gpt-4.1", "text-embedding-3-small", "whisper-1", "omni-moderation-latest", "gpt-realtime"}

// Server is the fake. It implements http.Handler.
type Server struct {
	opts      Options
	models    map[string]struct{}
	modelList []string
	verifyOrg map[string]struct{}
	now       func() time.Time
	rlHeaders bool
	ts        *httptest.Server

	keysMu sync.RWMutex
	keys   map[string]*keyEntry

	faultsMu  sync.Mutex
	faults    []*Fault
	hasFaults atomic.Bool

	recMu     sync.Mutex
	records   []Record
	recording atomic.Bool

	rateLimited atomic.Int64

	wsMu    sync.Mutex
	wsConns map[*websocket.Conn]struct{} // open WebSocket sessions, cut by Close

	prompts promptCache

	objMu     sync.Mutex
	objSeq    int64
	files     map[string]*storedFile
	responses map[string]*storedResponse
}

type keyEntry struct {
	secret string
	state  atomic.Int32
	count  atomic.Int64
	served atomic.Int64
	access atomic.Pointer[keyAccess]

	mu       sync.Mutex
	limits   KeyLimits
	rpm, tpm bucket
}

// New starts a Server on 127.0.0.1:0.
func New(opts Options) *Server {
	s := NewHandler(opts)
	s.ts = httptest.NewServer(s)
	return s
}

// NewHandler returns a Server without a listener.
func NewHandler(opts Options) *Server {
	if len(opts.Models) == 0 {
		opts.Models = DefaultModels
	}
	if opts.StreamChunks <= 0 {
		opts.StreamChunks = 5
	}
	if opts.EmbeddingDims <= 0 {
		opts.EmbeddingDims = 64
	}
	s := &Server{
		opts:      opts,
		models:    make(map[string]struct{}, len(opts.Models)),
		modelList: slices.Clone(opts.Models),
		now:       opts.Now,
		rlHeaders: opts.RateLimitHeaders == nil || *opts.RateLimitHeaders,
		keys:      map[string]*keyEntry{},
		verifyOrg: map[string]struct{}{},
		files:     map[string]*storedFile{},
		responses: map[string]*storedResponse{},
	}
	for _, m := range opts.VerifiedOrgModels {
		s.verifyOrg[m] = struct{}{}
	}
	if s.now == nil {
		s.now = time.Now
	}
	for _, m := range opts.Models {
		s.models[m] = struct{}{}
	}
	s.recording.Store(true)
	return s
}

// URL is the base URL ending in /v1 ("" for a Server made by NewHandler).
func (s *Server) URL() string {
	if s.ts == nil {
		return ""
	}
	return s.ts.URL + "/v1"
}

// Close stops the listener (if any), cutting open connections.
func (s *Server) Close() {
	s.closeWebSockets()
	if s.ts != nil {
		s.ts.CloseClientConnections()
		s.ts.Close()
	}
}

// AddKey adds (or replaces the limits of) a key; its buckets start full.
func (s *Server) AddKey(secret string, lim KeyLimits) {
	s.ensureKey(secret).setLimits(lim, s.now())
}

// ConfigureKey adds a key or replaces its whole configuration (limits, with
// full buckets, state, project, model access, scopes, verification).
func (s *Server) ConfigureKey(secret string, cfg KeyConfig) {
	k := s.ensureKey(secret)
	k.setLimits(cfg.Limits, s.now())
	k.state.Store(int32(cfg.State))
	k.access.Store(newAccess(secret, cfg))
}

// SetKeyState sets the account state of a key (adding it without limits if
// it is unknown).
func (s *Server) SetKeyState(secret string, st KeyState) {
	s.ensureKey(secret).state.Store(int32(st))
}

// Project is the project id (proj_…) of a known key, "" for an unknown one.
func (s *Server) Project(key string) string {
	if k := s.lookup(key); k != nil {
		return k.access.Load().project
	}
	return ""
}

func newKeyEntry(secret string) *keyEntry {
	k := &keyEntry{secret: secret}
	k.access.Store(newAccess(secret, KeyConfig{}))
	return k
}

// ensureKey returns the entry of secret, creating it (unlimited, KeyOK, own
// project) if needed.
func (s *Server) ensureKey(secret string) *keyEntry {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	k := s.keys[secret]
	if k == nil {
		k = newKeyEntry(secret)
		s.keys[secret] = k
	}
	return k
}

// AddFault appends a fault.
func (s *Server) AddFault(f Fault) {
	s.faultsMu.Lock()
	s.faults = append(s.faults, &f)
	s.hasFaults.Store(true)
	s.faultsMu.Unlock()
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.faultsMu.Lock()
	s.faults = nil
	s.hasFaults.Store(false)
	s.faultsMu.Unlock()
}

// Records returns a copy of the records.
func (s *Server) Records() []Record {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	return slices.Clone(s.records)
}

// Count is the number of requests that presented key (a key known to the
// server), whatever the answer.
func (s *Server) Count(key string) int {
	if k := s.lookup(key); k != nil {
		return int(k.count.Load())
	}
	return 0
}

// Served is the number of 2xx answers given to requests with key.
func (s *Server) Served(key string) int {
	if k := s.lookup(key); k != nil {
		return int(k.served.Load())
	}
	return 0
}

// RateLimited is the number of 429 rate_limit_exceeded answers (not
// insufficient_quota, not injected faults).
func (s *Server) RateLimited() int { return int(s.rateLimited.Load()) }

// ResetRecords forgets records and zeroes the counters.
func (s *Server) ResetRecords() {
	s.recMu.Lock()
	s.records = nil
	s.recMu.Unlock()
	s.rateLimited.Store(0)
	s.keysMu.RLock()
	for _, k := range s.keys {
		k.count.Store(0)
		k.served.Store(0)
	}
	s.keysMu.RUnlock()
}

// SetRecording turns the per-request records on (default) or off; counters
// are kept either way.
func (s *Server) SetRecording(on bool) { s.recording.Store(on) }

func (s *Server) lookup(secret string) *keyEntry {
	s.keysMu.RLock()
	k := s.keys[secret]
	s.keysMu.RUnlock()
	return k
}

// key returns the entry of a presented secret, creating it under AllowAnyKey.
func (s *Server) key(secret string) *keyEntry {
	if secret == "" {
		return nil
	}
	k := s.lookup(secret)
	if k != nil || !s.opts.AllowAnyKey {
		return k
	}
	return s.ensureKey(secret)
}

// takeFault returns the first fault matching the request, consuming one use.
func (s *Server) takeFault(key, path string, stream bool) *Fault {
	if !s.hasFaults.Load() {
		return nil
	}
	s.faultsMu.Lock()
	defer s.faultsMu.Unlock()
	for i, f := range s.faults {
		if f.Key != "" && f.Key != key {
			continue
		}
		if f.Path != "" && !hasSuffix(path, f.Path) {
			continue
		}
		if f.DropAfter > 0 && f.Status == 0 && !f.Reset && !stream {
			continue
		}
		out := *f
		if f.Count > 0 {
			f.Count--
			if f.Count == 0 {
				s.faults = slices.Delete(s.faults, i, i+1)
				if len(s.faults) == 0 {
					s.hasFaults.Store(false)
				}
			}
		}
		return &out
	}
	return nil
}

func hasSuffix(s, suf string) bool {
	return len(s) >= len(suf) && s[len(s)-len(suf):] == suf
}
