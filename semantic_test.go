package openairelay

import (
	"testing"

	"github.com/caddyrelay/openairelay/internal/cache"
)

// TestSemanticIndexBoundedInBytes checks that the index stays within its
// share of max_size, dropping the oldest entries, and that it forgets an
// entry whose answer left the store.
func TestSemanticIndexBoundedInBytes(t *testing.T) {
	vec := make([]float32, 256)
	for i := range vec {
		vec[i] = float32(i + 1)
	}
	one := semanticEntry{vec: vec}.size()
	ix := newSemanticIndex(10 * one)
	group := cache.Key{1}
	for i := range 25 {
		ix.add(group, cache.Key{byte(i), 9}, vec)
		if ix.bytes > ix.maxBytes {
			t.Fatalf("after %d adds the index holds %d bytes; bound %d", i+1, ix.bytes, ix.maxBytes)
		}
	}
	got := ix.nearest(group, vec, 0.99)
	if len(got) != 10 {
		t.Fatalf("%d entries kept; want the 10 newest", len(got))
	}
	for _, k := range got {
		if k[0] < 15 {
			t.Errorf("an old entry %d survived", k[0])
		}
	}
	ix.forget(group, cache.Key{24, 9})
	if n := len(ix.nearest(group, vec, 0.99)); n != 9 || ix.bytes != 9*one {
		t.Errorf("after forget: %d entries, %d bytes; want 9, %d", n, ix.bytes, 9*one)
	}
	// Replacing an entry does not count it twice.
	ix.add(group, cache.Key{20, 9}, vec)
	if ix.bytes != 9*one {
		t.Errorf("after replacing: %d bytes; want %d", ix.bytes, 9*one)
	}
}

// TestSemanticIndexOrderStaysBounded checks that entries forgotten as the
// store evicts them do not leave the index's order growing.
func TestSemanticIndexOrderStaysBounded(t *testing.T) {
	ix := newSemanticIndex(1 << 30)
	vec := []float32{1, 2, 3}
	group := cache.Key{2}
	for i := range 10000 {
		k := cache.Key{byte(i), byte(i >> 8)}
		ix.add(group, k, vec)
		ix.forget(group, k)
	}
	if len(ix.order) > 200 {
		t.Errorf("order holds %d refs for an empty index", len(ix.order))
	}
}

func TestStreamEndedWell(t *testing.T) {
	tests := []struct {
		name string
		ep   cache.Endpoint
		body string
		want bool
	}{
		{"chat, whole", cache.EndpointChatCompletions, "data: {\"id\":\"x\",\"choices\":[]}\n\ndata: [DONE]\n\n", true},
		{"chat, no [DONE]", cache.EndpointChatCompletions, "data: {\"id\":\"x\",\"choices\":[]}\n\n", false},
		{"chat, error event", cache.EndpointChatCompletions, "data: {\"id\":\"x\"}\n\ndata: {\"error\":{\"message\":\"overloaded\"}}\n\ndata: [DONE]\n\n", false},
		{"chat, the word error in content", cache.EndpointChatCompletions, "data: {\"choices\":[{\"delta\":{\"content\":\"an \\\"error\\\" here\"}}]}\n\ndata: [DONE]\n\n", true},
		{"responses, completed", cache.EndpointResponses, "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{}}\n\n", true},
		{"responses, failed", cache.EndpointResponses, "event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{}}\n\n", false},
		{"responses, error", cache.EndpointResponses, "event: error\ndata: {\"type\":\"error\",\"message\":\"x\"}\n\n", false},
	}
	for _, tt := range tests {
		if got := streamEndedWell(tt.ep, []byte(tt.body)); got != tt.want {
			t.Errorf("%s: %v; want %v", tt.name, got, tt.want)
		}
	}
}
