package openairelay

import (
	"bytes"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/caddyrelay/openairelay/internal/jsonscan"

	"github.com/tiktoken-go/tokenizer"
)

// Token estimates. The relay reserves a request's cost before the call, as
// OpenAI's own admission does, and corrects it from the real usage after.

const (
	estimateChars     = "chars"
	estimateTokenizer = "tokenizer"
)

// charsPerToken is OpenAI's rule of thumb, and what its rate limiter uses
// to estimate prompts: about four characters a token.
const charsPerToken = 4

// dataURLTokens is what an inline file (a `data:` URL: an image, audio) is
// counted as, instead of its base64 length. 765 tokens is a high-detail
// 1024×1024 image on GPT-4o-class models.
const dataURLTokens = 765

func (rl *Relay) provisionEstimator() error {
	if err := checkTokenEstimate(rl.TokenEstimate); err != nil {
		return err
	}
	if rl.TokenEstimate == "" {
		rl.TokenEstimate = estimateChars
	}
	return nil
}

// estimatePrompt estimates a request's prompt tokens. Only JSON bodies carry
// prompts the relay can read; other bodies (audio, files) count no tokens,
// only a request.
func (rl *Relay) estimatePrompt(ar *apiRequest) int64 {
	if ar.kind != bodyJSON {
		return 0
	}
	if rl.TokenEstimate == estimateTokenizer {
		if n, ok := countTokens(ar.model, ar.body); ok {
			return n
		}
	}
	return countChars(ar.body)
}

// maxTokenCount bounds a client-chosen max_tokens (no model writes 2^40
// tokens), so that sums of estimates cannot overflow.
const maxTokenCount = 1 << 40

// completionAllowance is what a request may produce: its own max tokens,
// else the configured default.
func (rl *Relay) completionAllowance(ar *apiRequest) int64 {
	switch ar.endpoint {
	case "embeddings", "moderations":
		return 0 // answered with no completion: the prompt is all they cost
	}
	if ar.maxOut > 0 {
		return ar.maxOut
	}
	return rl.DefaultMaxTokens
}

// eachStringValue calls fn with the contents of every string value of a JSON
// document (object keys left out), still escaped. It reads the bytes once and
// allocates nothing.
func eachStringValue(body []byte, fn func(content []byte)) {
	for i := 0; i < len(body); i++ {
		if body[i] != '"' {
			continue
		}
		end, _ := jsonscan.String(body, i)
		content := body[i+1 : max(end-1, i+1)]
		i = end - 1
		// A string followed by a colon is an object key.
		if j := jsonscan.Space(body, end); j < len(body) && body[j] == ':' {
			continue
		}
		fn(content)
	}
}

// countChars estimates prompt tokens from the characters of a JSON body's
// string values, at charsPerToken characters a token, rounded up: the
// structure, keys and numbers are left out, and inline files are counted as
// dataURLTokens each.
func countChars(body []byte) int64 {
	var chars, files int64
	eachStringValue(body, func(s []byte) {
		if bytes.HasPrefix(s, []byte("data:")) {
			files++
			return
		}
		chars += int64(utf8.RuneCount(s))
	})
	return (chars+charsPerToken-1)/charsPerToken + files*dataURLTokens
}

// messageOverhead is the tokens each string value adds around its text
// in the chat format (role markers, separators): OpenAI's cookbook counts 3
// to 4 per message; counting it per string value errs on the high side.
const messageOverhead = 3

// countTokens counts a JSON body's prompt tokens with the model's encoding.
// It returns false when the encoding cannot be loaded.
func countTokens(model string, body []byte) (int64, bool) {
	codec, ok := codecFor(model)
	if !ok {
		return 0, false
	}
	var total int64
	var text strings.Builder
	eachStringValue(body, func(s []byte) {
		if bytes.HasPrefix(s, []byte("data:")) {
			total += dataURLTokens
			return
		}
		text.Reset()
		text.Write(s) // escapes count roughly as the characters they stand for
		n, err := codec.Count(text.String())
		if err != nil {
			n = (utf8.RuneCount(s) + charsPerToken - 1) / charsPerToken
		}
		total += int64(n) + messageOverhead
	})
	return total, true
}

// codecs caches one codec per encoding: loading one builds its vocabulary,
// which takes tens of milliseconds, and a codec is then safe to share.
var codecs sync.Map // tokenizer.Encoding -> tokenizer.Codec

// codecFor returns the codec of a model's encoding: the model's own where
// the tokenizer knows it, else o200k_base, the encoding of current models.
func codecFor(model string) (tokenizer.Codec, bool) {
	enc := tokenizer.O200kBase
	if c, err := tokenizer.ForModel(tokenizer.Model(model)); err == nil {
		enc = tokenizer.Encoding(c.GetName())
	}
	if c, ok := codecs.Load(enc); ok {
		return c.(tokenizer.Codec), true
	}
	c, err := tokenizer.Get(enc)
	if err != nil {
		return nil, false
	}
	actual, _ := codecs.LoadOrStore(enc, c)
	return actual.(tokenizer.Codec), true
}
