package cache

import "strings"

// Endpoint is an OpenAI API endpoint whose answers the cache understands. The identity
// uses it to pick the documented defaults, and the converters to pick the stream format.
type Endpoint uint8

// The endpoints the cache knows. EndpointUnknown is any other path: its requests can
// still be identified, but no default is dropped and no stream conversion is possible.
const (
	EndpointUnknown Endpoint = iota
	EndpointChatCompletions
	EndpointCompletions
	EndpointEmbeddings
	EndpointResponses
	EndpointModerations
)

// EndpointOf returns the endpoint a request path addresses. It matches on the path's
// suffix so that the relay may be mounted under any prefix ("/v1/chat/completions",
// "/openai/v1/chat/completions"); a trailing slash is ignored.
func EndpointOf(path string) Endpoint {
	path = strings.TrimSuffix(path, "/")
	// Order matters: "/chat/completions" also ends in "/completions".
	switch {
	case hasPathSuffix(path, "chat/completions"):
		return EndpointChatCompletions
	case hasPathSuffix(path, "completions"):
		return EndpointCompletions
	case hasPathSuffix(path, "embeddings"):
		return EndpointEmbeddings
	case hasPathSuffix(path, "responses"):
		return EndpointResponses
	case hasPathSuffix(path, "moderations"):
		return EndpointModerations
	}
	return EndpointUnknown
}

// hasPathSuffix reports whether path ends in the path segments suffix, so that
// "/v1/chat/completions" ends in "completions" but "/v1/xcompletions" does not.
func hasPathSuffix(path, suffix string) bool {
	if !strings.HasSuffix(path, suffix) {
		return false
	}
	rest := path[:len(path)-len(suffix)]
	return rest == "" || strings.HasSuffix(rest, "/")
}

// String returns the endpoint's path relative to the API root, or "unknown".
func (e Endpoint) String() string {
	switch e {
	case EndpointChatCompletions:
		return "chat/completions"
	case EndpointCompletions:
		return "completions"
	case EndpointEmbeddings:
		return "embeddings"
	case EndpointResponses:
		return "responses"
	case EndpointModerations:
		return "moderations"
	}
	return "unknown"
}

// Streams reports whether the endpoint can answer with a server-sent event stream and
// so whether ToSSE and FromSSE can convert its answers. Embeddings and moderations are
// never streamed.
func (e Endpoint) Streams() bool {
	return e == EndpointChatCompletions || e == EndpointCompletions || e == EndpointResponses
}
