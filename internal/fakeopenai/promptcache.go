package fakeopenai

import (
	"sync"
	"time"
	"unicode/utf8"
)

// Prompt caching as the API reports it. OpenAI's guide
// (developers.openai.com/api/docs/guides/prompt-caching): "Caching is
// enabled automatically for prompts that are 1024 tokens or longer"; "cache
// hits are only possible for exact prefix matches within a prompt"; caches
// are typically cleared after 5–10 minutes of inactivity and are not shared
// between organisations. The Prompt Caching 201 cookbook
// (developers.openai.com/cookbook/examples/prompt_caching_201): a prompt
// "can get a match until the first mismatched token in 128 token blocks".
// The usage fields, as the SDKs type them: openai-go completion.go
// CompletionUsagePromptTokensDetails.CachedTokens ("Cached tokens present in
// the prompt", usage.prompt_tokens_details.cached_tokens) and
// responses/response.go ResponseUsageInputTokensDetails.CachedTokens ("The
// number of tokens that were retrieved from the cache",
// usage.input_tokens_details.cached_tokens).
//
// The fake models it over its own token estimate: per project and model it
// remembers the prompt texts of recent requests (those of 1024 tokens or
// more: a shorter one cannot hold a cacheable prefix), and a request's
// cached tokens are its longest common prefix with any of them, in whole
// tokens (runes/4, rounded down), floored to 1024 + 128·k, capped at the
// prompt tokens, 0 below 1024.
const (
	promptCacheMin   = 1024            // the smallest cached prefix, in tokens
	promptCacheBlock = 128             // cached prefixes grow by this many tokens
	promptCacheTTL   = 5 * time.Minute // a remembered prompt is forgotten after this
	promptCacheSize  = 256             // prompts remembered per project and model
)

type promptCacheKey struct{ project, model string }

type cachedPrompt struct {
	text string
	at   time.Time
}

// promptCache remembers recent prompts for the cached_tokens of usage.
type promptCache struct {
	mu        sync.Mutex
	entries   map[promptCacheKey][]cachedPrompt // oldest first
	lastSweep time.Time
}

// cachedTokensFor is what the API reports as cached for a matched prefix of
// n tokens: 0 under 1024, else 1024 + 128·k rounded down.
func cachedTokensFor(n int) int {
	if n < promptCacheMin {
		return 0
	}
	return promptCacheMin + (n-promptCacheMin)/promptCacheBlock*promptCacheBlock
}

// commonPrefixRunes is the number of runes a and b start with in common.
func commonPrefixRunes(a, b string) int {
	n := min(len(a), len(b))
	i := 0
	for i+64 <= n && a[i:i+64] == b[i:i+64] {
		i += 64
	}
	for i < n && a[i] == b[i] {
		i++
	}
	// A rune that differs in a later byte is not shared.
	for i > 0 && ((i < len(a) && !utf8.RuneStart(a[i])) || (i < len(b) && !utf8.RuneStart(b[i]))) {
		i--
	}
	return utf8.RuneCountInString(a[:i])
}

// lookup returns the cached tokens of a prompt of promptTokens tokens whose
// text is text, sent at now to model by a key of project, and remembers it.
func (pc *promptCache) lookup(project, model, text string, promptTokens int, now time.Time) int {
	if promptTokens < promptCacheMin {
		return 0
	}
	k := promptCacheKey{project, model}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.entries == nil {
		pc.entries = make(map[promptCacheKey][]cachedPrompt)
	}
	if now.Sub(pc.lastSweep) > promptCacheTTL {
		pc.sweep(now)
	}
	old := pc.entries[k]
	kept := old[:0]
	best := 0
	for _, e := range old {
		if now.Sub(e.at) > promptCacheTTL || e.text == text {
			if e.text == text && now.Sub(e.at) <= promptCacheTTL {
				best = utf8.RuneCountInString(text)
			}
			continue // expired, or remembered again below as the newest
		}
		if best < len(e.text) { // a prefix holds at most len(e.text) runes
			best = max(best, commonPrefixRunes(text, e.text))
		}
		kept = append(kept, e)
	}
	clear(old[len(kept):])
	kept = append(kept, cachedPrompt{text: text, at: now})
	if len(kept) > promptCacheSize {
		n := copy(kept, kept[len(kept)-promptCacheSize:])
		clear(kept[n:])
		kept = kept[:n]
	}
	pc.entries[k] = kept
	return min(cachedTokensFor(best/4), promptTokens)
}

// sweep forgets expired prompts of every project and model, so that the
// memory held follows the last few minutes' traffic.
func (pc *promptCache) sweep(now time.Time) {
	pc.lastSweep = now
	for k, list := range pc.entries {
		kept := list[:0]
		for _, e := range list {
			if now.Sub(e.at) <= promptCacheTTL {
				kept = append(kept, e)
			}
		}
		clear(list[len(kept):])
		if len(kept) == 0 {
			delete(pc.entries, k)
		} else {
			pc.entries[k] = kept
		}
	}
}

// ClearPromptCache forgets every remembered prompt, as if the upstream's
// caches had all been evicted.
func (s *Server) ClearPromptCache() {
	s.prompts.mu.Lock()
	clear(s.prompts.entries)
	s.prompts.mu.Unlock()
}
