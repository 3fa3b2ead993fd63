package openairelay

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
)

// An upstream key must never reach a client. OpenAI does not echo keys, but
// a compatible API might (in an error, a debugging echo, a header), so every
// answer is scrubbed of the key that was used, and of the upstream's own
// address in a redirect.

// minScrubbed is the shortest secret scrubbed from answers. Real keys are
// far longer; a short placeholder key of a local upstream ("none", "ollama")
// is no secret, and masking it would corrupt answers that contain the word.
const minScrubbed = 12

// scrub masks every occurrence of secret in body with as many asterisks, so
// that lengths (a Content-Length already sent) stay right.
func scrub(body []byte, secret string) []byte {
	if len(secret) < minScrubbed || !bytes.Contains(body, []byte(secret)) {
		return body
	}
	return bytes.ReplaceAll(body, []byte(secret), bytes.Repeat([]byte("*"), len(secret)))
}

// scrubber masks a secret in a body that arrives in pieces: a secret split
// across two reads is caught by holding back the end of a piece while it
// could be the start of the secret. Nothing else is held back, so a stream's
// events (which end in a blank line) leave at once.
type scrubber struct {
	secret []byte
	held   []byte // the end of the last piece, a prefix of secret
	buf    []byte
}

func newScrubber(secret string) *scrubber {
	if len(secret) < minScrubbed {
		return nil
	}
	return &scrubber{secret: []byte(secret)}
}

// feed returns what of piece (after what was held) may go on now, masked;
// everything when last. The result is valid until the next call.
func (s *scrubber) feed(piece []byte, last bool) []byte {
	data := piece
	if len(s.held) > 0 {
		s.buf = append(append(s.buf[:0], s.held...), piece...)
		data = s.buf
		s.held = s.held[:0]
	}
	if bytes.Contains(data, s.secret) {
		data = scrub(data, string(s.secret))
	}
	if last {
		return data
	}
	if k := s.partialSuffix(data); k > 0 {
		s.held = append(s.held, data[len(data)-k:]...)
		data = data[:len(data)-k]
	}
	return data
}

// partialSuffix is the length of the longest end of data that is a proper
// prefix of the secret.
func (s *scrubber) partialSuffix(data []byte) int {
	first := s.secret[0]
	for k := min(len(s.secret)-1, len(data)); k > 0; k-- {
		if data[len(data)-k] == first && bytes.HasPrefix(s.secret, data[len(data)-k:]) {
			return k
		}
	}
	return 0
}

// scrubHeader masks the secret in header values, and makes a redirect to the
// upstream's own address relative to the relay, so that neither the key nor
// the upstream's URL reaches the client.
func scrubHeader(h http.Header, secret string, base *url.URL) {
	for k, vs := range h {
		for i, v := range vs {
			if len(secret) >= minScrubbed && strings.Contains(v, secret) {
				vs[i] = strings.ReplaceAll(v, secret, strings.Repeat("*", len(secret)))
			}
		}
		h[k] = vs
	}
	loc := h.Get("Location")
	if loc == "" || base == nil {
		return
	}
	u, err := url.Parse(loc)
	if err != nil || !strings.EqualFold(u.Host, base.Host) {
		return
	}
	rel := strings.TrimPrefix(u.Path, strings.TrimSuffix(base.Path, "/"))
	u.Scheme, u.Host, u.User, u.Path, u.RawPath = "", "", nil, "/v1"+rel, ""
	h.Set("Location", u.String())
}
