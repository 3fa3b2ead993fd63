package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"math/big"
	"slices"
	"strconv"
	"sync"

	"github.com/caddyrelay/openairelay/internal/jsonscan"
)

// Key identifies a cached answer: the SHA-256 of a request's canonical form.
type Key [32]byte

// String returns the key in hexadecimal, for logs and the admin API.
func (k Key) String() string { return hex.EncodeToString(k[:]) }

// IdentityOptions adjusts what Identity leaves out of a request.
type IdentityOptions struct {
	// IgnoreFields names further top-level body fields that do not change the answer
	// (the site's ignore_fields), on top of the built-in ones.
	IgnoreFields []string
}

// Identity returns the cache key of a JSON API request. ok is false, with a nil error,
// when the request must never be cached: its body is valid JSON but not an object, it
// carries state kept by the upstream (a Responses request with previous_response_id,
// conversation, background:true, or a stored prompt without a pinned version), or an
// object in it repeats a key (servers disagree on which one wins). err wraps
// ErrInvalidJSON when the body is not valid JSON, including invalid UTF-8.
//
// scope is "" for a cache shared by all clients, else the client's name; model is the
// model after aliasing, which replaces the body's own "model". The key covers scope,
// method, path, model and the body in canonical form:
//
//   - object keys are sorted at every depth, insignificant whitespace is gone;
//   - numbers are compared by exact decimal value: 1, 1.0, 1e0 and 10E-1 are equal,
//     while 9007199254740993 and 9007199254740992 are not;
//   - strings are compared after unescaping: "\u0041" equals "A";
//   - arrays keep their order;
//   - at the top level, null members, the fields that do not change the answer
//     (stream, stream_options, prompt_cache_retention, and except on the
//     Responses API, whose answers echo them, user, metadata, safety_identifier,
//     prompt_cache_key and store; and o.IgnoreFields) and parameters at their documented default for the endpoint
//     are left out (chat/completions: temperature 1, top_p 1, n 1, presence_penalty
//     0, frequency_penalty 0, logprobs false, parallel_tool_calls true, service_tier
//     "auto", modalities ["text"], response_format {"type":"text"}; completions:
//     temperature 1, top_p 1, n 1, presence_penalty 0, frequency_penalty 0, echo
//     false, best_of 1, max_tokens 16; embeddings: encoding_format "float";
//     responses: temperature 1, top_p 1, truncation "disabled", parallel_tool_calls
//     true, store true, background false, service_tier "auto", tool_choice "auto",
//     tools [], include [], text {"format":{"type":"text"}}).
//
// The canonical form is a prefix-free encoding (every string length-prefixed, every
// value tagged), so two requests get one key only if they are the same request as
// the API understands it.
func Identity(scope, method, path, model string, body []byte, o *IdentityOptions) (k Key, ok bool, err error) {
	c := canonPool.Get().(*canonicalizer)
	defer c.release()
	c.reset(body, EndpointOf(path), o)

	c.out = append(c.out, identityVersion...)
	for _, s := range [...]string{scope, method, path, model} {
		c.out = binary.BigEndian.AppendUint32(c.out, uint32(len(s)))
		c.out = append(c.out, s...)
	}

	c.pos = jsonscan.Space(body, 0)
	isObject := c.pos < len(body) && body[c.pos] == '{'
	if err := c.value(true); err != nil {
		return k, false, err
	}
	if c.pos = jsonscan.Space(body, c.pos); c.pos != len(body) {
		return k, false, jsonscan.SyntaxError(c.pos, "data after the top-level value")
	}
	if !isObject || c.uncacheable || c.duplicate {
		return k, false, nil
	}
	return sha256.Sum256(c.out), true, nil
}

// identityVersion starts every canonical form, so that a change of the encoding in a
// later version cannot meet keys of this one in a shared (Redis) store.
const identityVersion = "openairelay-cache-identity-v1\x00"

// Canonical encoding, prefix-free so that concatenations are unambiguous:
//
//	null    'n'        true  't'        false  'f'
//	number  "N0;" for zero, else 'N', the sign ('+' or '-'), the significant digits
//	        (no leading or trailing zero), 'e', the decimal exponent, ';' — the value
//	        is digits × 10^exponent
//	string  'S', the length as a big-endian uint32, the unescaped bytes
//	array   '[' values ']'
//	object  '{' (key-string value)* '}' with members sorted by key bytes
const (
	tagNull   = 'n'
	tagTrue   = 't'
	tagFalse  = 'f'
	tagNumber = 'N'
	tagString = 'S'
	strHeader = 5 // tag and length
)

// canonicalizer turns JSON into the canonical encoding in one pass over the bytes.
// Objects are written as they come and, if their keys were out of order, rewritten in
// place once closed; only then can a member's position be known.
type canonicalizer struct {
	in    []byte
	pos   int
	out   []byte
	mems  []member // members of the objects being built, innermost last
	tmp   []byte   // scratch for reordering members
	depth int

	ep          Endpoint
	opts        *IdentityOptions
	uncacheable bool
	duplicate   bool
}

// member is the span of one object member in canonicalizer.out: the key's encoding
// starts at start, the value's at val, and it ends at end.
type member struct {
	start, val, end int
	drop            bool // top-level member left out of the identity
}

var canonPool = sync.Pool{New: func() any { return new(canonicalizer) }}

func (c *canonicalizer) reset(in []byte, ep Endpoint, o *IdentityOptions) {
	c.in, c.pos, c.out, c.mems, c.depth = in, 0, c.out[:0], c.mems[:0], 0
	c.ep, c.opts, c.uncacheable, c.duplicate = ep, o, false, false
}

func (c *canonicalizer) release() {
	// Keep buffers for reuse, unless one request made them huge.
	const keep = 4 << 20
	if cap(c.out) > keep || cap(c.tmp) > keep {
		return
	}
	c.in, c.opts = nil, nil
	canonPool.Put(c)
}

// value canonicalizes the value at c.pos; top is true for the request body itself.
func (c *canonicalizer) value(top bool) error {
	c.pos = jsonscan.Space(c.in, c.pos)
	if c.pos >= len(c.in) {
		return jsonscan.SyntaxError(c.pos, "unexpected end of input")
	}
	switch ch := c.in[c.pos]; {
	case ch == '{':
		return c.object(top)
	case ch == '[':
		return c.array()
	case ch == '"':
		return c.str()
	case ch == 't':
		return c.literal("true", tagTrue)
	case ch == 'f':
		return c.literal("false", tagFalse)
	case ch == 'n':
		return c.literal("null", tagNull)
	case ch == '-' || ch >= '0' && ch <= '9':
		return c.number()
	}
	return jsonscan.SyntaxError(c.pos, "unexpected character")
}

func (c *canonicalizer) literal(lit string, tag byte) error {
	if !bytes.HasPrefix(c.in[c.pos:], []byte(lit)) {
		return jsonscan.SyntaxError(c.pos, "invalid literal")
	}
	c.pos += len(lit)
	c.out = append(c.out, tag)
	return nil
}

func (c *canonicalizer) str() error {
	h := len(c.out)
	c.out = append(c.out, tagString, 0, 0, 0, 0)
	var err error
	c.out, c.pos, err = appendUnquoted(c.out, c.in, c.pos)
	if err != nil {
		return err
	}
	n := len(c.out) - h - strHeader
	if n > math.MaxUint32 {
		return jsonscan.SyntaxError(c.pos, "string too long")
	}
	binary.BigEndian.PutUint32(c.out[h+1:], uint32(n))
	return nil
}

func (c *canonicalizer) array() error {
	if c.depth++; c.depth > jsonscan.MaxDepth {
		return jsonscan.SyntaxError(c.pos, "nesting too deep")
	}
	c.out = append(c.out, '[')
	c.pos = jsonscan.Space(c.in, c.pos+1)
	if c.pos < len(c.in) && c.in[c.pos] == ']' {
		c.pos++
		c.out = append(c.out, ']')
		c.depth--
		return nil
	}
	for {
		if err := c.value(false); err != nil {
			return err
		}
		c.pos = jsonscan.Space(c.in, c.pos)
		if c.pos < len(c.in) && c.in[c.pos] == ',' {
			c.pos++
			continue
		}
		if c.pos < len(c.in) && c.in[c.pos] == ']' {
			c.pos++
			c.out = append(c.out, ']')
			c.depth--
			return nil
		}
		return jsonscan.SyntaxError(c.pos, "expected ',' or ']'")
	}
}

func (c *canonicalizer) object(top bool) error {
	if c.depth++; c.depth > jsonscan.MaxDepth {
		return jsonscan.SyntaxError(c.pos, "nesting too deep")
	}
	open := len(c.out)
	c.out = append(c.out, '{')
	base := len(c.mems)
	c.pos = jsonscan.Space(c.in, c.pos+1)
	if c.pos < len(c.in) && c.in[c.pos] == '}' {
		c.pos++
		c.out = append(c.out, '}')
		c.depth--
		return nil
	}
	for {
		c.pos = jsonscan.Space(c.in, c.pos)
		if c.pos >= len(c.in) || c.in[c.pos] != '"' {
			return jsonscan.SyntaxError(c.pos, "expected object key")
		}
		m := member{start: len(c.out)}
		if err := c.str(); err != nil {
			return err
		}
		m.val = len(c.out)
		c.pos = jsonscan.Space(c.in, c.pos)
		if c.pos >= len(c.in) || c.in[c.pos] != ':' {
			return jsonscan.SyntaxError(c.pos, "expected ':'")
		}
		c.pos++
		c.pos = jsonscan.Space(c.in, c.pos)
		rawStart := c.pos
		if err := c.value(false); err != nil {
			return err
		}
		m.end = len(c.out)
		if top {
			c.classify(&m, c.in[rawStart:c.pos])
		}
		c.mems = append(c.mems, m)
		c.pos = jsonscan.Space(c.in, c.pos)
		if c.pos < len(c.in) && c.in[c.pos] == ',' {
			c.pos++
			continue
		}
		if c.pos < len(c.in) && c.in[c.pos] == '}' {
			c.pos++
			break
		}
		return jsonscan.SyntaxError(c.pos, "expected ',' or '}'")
	}
	c.finishObject(open, base)
	c.out = append(c.out, '}')
	c.depth--
	return nil
}

// key returns the unescaped key bytes of a member.
func (c *canonicalizer) key(m member) []byte { return c.out[m.start+strHeader : m.val] }

// finishObject sorts the members written since base, notes duplicate keys, and drops
// the members marked so. Objects whose keys already come in order and that drop
// nothing, the common case for small objects, are left untouched.
func (c *canonicalizer) finishObject(open, base int) {
	ms := c.mems[base:]
	defer func() { c.mems = c.mems[:base] }()
	sorted, drops := true, false
	for i := range ms {
		drops = drops || ms[i].drop
		if i > 0 && sorted {
			switch bytes.Compare(c.key(ms[i-1]), c.key(ms[i])) {
			case 0:
				c.duplicate = true
			case 1:
				sorted = false
			}
		}
	}
	if sorted && !drops {
		return
	}
	if !sorted {
		out := c.out
		slices.SortFunc(ms, func(a, b member) int {
			return bytes.Compare(out[a.start+strHeader:a.val], out[b.start+strHeader:b.val])
		})
		for i := 1; i < len(ms); i++ {
			if bytes.Equal(c.key(ms[i-1]), c.key(ms[i])) {
				c.duplicate = true
			}
		}
	}
	c.tmp = c.tmp[:0]
	for _, m := range ms {
		if !m.drop {
			c.tmp = append(c.tmp, c.out[m.start:m.end]...)
		}
	}
	c.out = append(c.out[:open+1], c.tmp...)
}

// classify decides what to do with a top-level member: keep it, leave it out of the
// identity, or refuse to cache the request. raw is the member's value as sent.
func (c *canonicalizer) classify(m *member, raw []byte) {
	key := c.key(*m)
	val := c.out[m.val:m.end]
	isNull := len(val) == 1 && val[0] == tagNull
	switch string(key) {
	case "model":
		// The caller passes the model after aliasing.
		m.drop = true
		return
	case "user", "safety_identifier", "metadata", "prompt_cache_key":
		// Who asks, for abuse tracking and upstream prompt caching: none of it
		// changes the answer, except on the Responses API, whose answer echoes
		// them (a cached answer would show one end user another's user,
		// metadata or safety identifier).
		if c.ep != EndpointResponses {
			m.drop = true
			return
		}
	case "stream", "stream_options", "prompt_cache_retention":
		// How the answer is delivered: stream is left out because stored
		// answers are converted between the two forms.
		m.drop = true
		return
	case "store":
		// On the Responses API store decides whether the answer's id can be used as
		// previous_response_id later, so serving a store:false answer to a store:true
		// request would hand out an id the upstream does not know. Elsewhere it
		// only keeps a copy for evals and distillation.
		if c.ep != EndpointResponses {
			m.drop = true
			return
		}
	case "previous_response_id", "conversation":
		if !isNull {
			c.uncacheable = true
		}
	case "background":
		if len(val) == 1 && val[0] == tagTrue {
			c.uncacheable = true
		}
	case "prompt":
		// A Responses prompt template without a version follows the template's
		// current version, which can change behind the same request.
		if c.ep == EndpointResponses && !isNull && !objectHasKey(raw, "version") {
			c.uncacheable = true
		}
	}
	if isNull {
		m.drop = true
		return
	}
	if c.opts != nil {
		for _, f := range c.opts.IgnoreFields {
			if string(key) == f {
				m.drop = true
				return
			}
		}
	}
	if d, ok := canonDefaults[c.ep][string(key)]; ok && bytes.Equal(d, val) {
		m.drop = true
	}
}

// objectHasKey reports whether raw, a valid JSON value, is an object with a non-null
// member key.
func objectHasKey(raw []byte, key string) bool {
	fs, err := objectFields(raw)
	if err != nil {
		return false
	}
	v := get(fs, key)
	return v != nil && !isNull(v)
}

// number writes the canonical form of the number at c.pos: its significant digits
// without leading or trailing zeros, and the power of ten they are multiplied by. The
// value is kept exactly; nothing goes through float64.
func (c *canonicalizer) number() error {
	in, i := c.in, c.pos
	sign := byte('+')
	if in[i] == '-' {
		sign = '-'
		i++
	}
	intStart := i
	switch {
	case i < len(in) && in[i] == '0':
		i++
	case i < len(in) && in[i] >= '1' && in[i] <= '9':
		for i < len(in) && in[i] >= '0' && in[i] <= '9' {
			i++
		}
	default:
		return jsonscan.SyntaxError(i, "invalid number")
	}
	intEnd := i
	fracStart, fracEnd := i, i
	if i < len(in) && in[i] == '.' {
		i++
		fracStart = i
		for i < len(in) && in[i] >= '0' && in[i] <= '9' {
			i++
		}
		if i == fracStart {
			return jsonscan.SyntaxError(i, "invalid number")
		}
		fracEnd = i
	}
	expNeg := false
	expStart, expEnd := i, i
	if i < len(in) && (in[i] == 'e' || in[i] == 'E') {
		i++
		if i < len(in) && (in[i] == '+' || in[i] == '-') {
			expNeg = in[i] == '-'
			i++
		}
		expStart = i
		for i < len(in) && in[i] >= '0' && in[i] <= '9' {
			i++
		}
		if i == expStart {
			return jsonscan.SyntaxError(i, "invalid number")
		}
		expEnd = i
	}
	c.pos = i

	// The digits are int ++ frac; find the first and last non-zero among them.
	intDigits, fracDigits := in[intStart:intEnd], in[fracStart:fracEnd]
	nInt := len(intDigits)
	digit := func(j int) byte {
		if j < nInt {
			return intDigits[j]
		}
		return fracDigits[j-nInt]
	}
	n := nInt + len(fracDigits)
	first := 0
	for first < n && digit(first) == '0' {
		first++
	}
	if first == n {
		c.out = append(c.out, tagNumber, '0', ';') // -0 is 0
		return nil
	}
	last := n - 1
	for digit(last) == '0' {
		last--
	}
	c.out = append(c.out, tagNumber, sign)
	if first < nInt {
		c.out = append(c.out, intDigits[first:min(last+1, nInt)]...)
	}
	if last >= nInt {
		c.out = append(c.out, fracDigits[max(first-nInt, 0):last+1-nInt]...)
	}
	c.out = append(c.out, 'e')

	// value = digits[first:last+1] × 10^(exp + trailing zeros - fraction length)
	adj := int64(n-1-last) - int64(len(fracDigits))
	expDigits := in[expStart:expEnd]
	for len(expDigits) > 1 && expDigits[0] == '0' {
		expDigits = expDigits[1:]
	}
	if len(expDigits) <= 18 {
		var e int64
		for _, d := range expDigits {
			e = e*10 + int64(d-'0')
		}
		if expNeg {
			e = -e
		}
		c.out = strconv.AppendInt(c.out, e+adj, 10)
	} else {
		// Absurd exponents are valid JSON; keep them exact rather than fail.
		e, _ := new(big.Int).SetString(string(expDigits), 10)
		if expNeg {
			e.Neg(e)
		}
		c.out = e.Add(e, big.NewInt(adj)).Append(c.out, 10)
	}
	c.out = append(c.out, ';')
	return nil
}

// defaults lists, per endpoint, the top-level parameters whose documented default
// Identity treats as absent, as JSON. Only defaults that hold whatever the model and
// the other parameters are belong here: tool_choice on chat completions (none without
// tools, auto with them) or reasoning_effort (per model) do not.
var defaults = map[Endpoint]map[string]string{
	EndpointChatCompletions: {
		"temperature":         "1",
		"top_p":               "1",
		"n":                   "1",
		"presence_penalty":    "0",
		"frequency_penalty":   "0",
		"logprobs":            "false",
		"parallel_tool_calls": "true",
		"service_tier":        `"auto"`,
		"modalities":          `["text"]`,
		"response_format":     `{"type":"text"}`,
	},
	EndpointCompletions: {
		"temperature":       "1",
		"top_p":             "1",
		"n":                 "1",
		"presence_penalty":  "0",
		"frequency_penalty": "0",
		"echo":              "false",
		"best_of":           "1",
		"max_tokens":        "16",
	},
	EndpointEmbeddings: {
		"encoding_format": `"float"`,
	},
	EndpointResponses: {
		"temperature":         "1",
		"top_p":               "1",
		"truncation":          `"disabled"`,
		"parallel_tool_calls": "true",
		"store":               "true",
		"background":          "false",
		"service_tier":        `"auto"`,
		"tool_choice":         `"auto"`,
		"tools":               "[]",
		"include":             "[]",
		"text":                `{"format":{"type":"text"}}`,
	},
}

// canonDefaults holds defaults in canonical form, indexed by endpoint.
var canonDefaults [EndpointModerations + 1]map[string][]byte

// init builds canonDefaults; a function literal would make an initialization cycle,
// since the canonicalizer reads the table.
func init() {
	t := &canonDefaults
	for ep, ds := range defaults {
		t[ep] = make(map[string][]byte, len(ds))
		for name, js := range ds {
			c := new(canonicalizer)
			c.reset([]byte(js), EndpointUnknown, nil)
			if err := c.value(false); err != nil {
				panic("cache: bad default " + name + ": " + err.Error())
			}
			t[ep][name] = c.out
		}
	}
}
