package openairelay

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// apiError is an error the relay answers itself. It is written in OpenAI's error
// shape so that SDKs raise the matching exception type (AuthenticationError for
// 401, RateLimitError for 429, ...). Its message never contains an upstream key.
type apiError struct {
	Status  int
	Message string
	Type    string
	Code    string
	Param   string
	// RetryAfter, when positive, is sent as Retry-After (seconds, rounded up)
	// and retry-after-ms.
	RetryAfter time.Duration
}

func (e *apiError) Error() string { return e.Message }

// errorBody is OpenAI's error envelope. Param and Code are null when empty, as
// the real API sends them.
type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func (e *apiError) body() []byte {
	var b errorBody
	b.Error.Message = e.Message
	b.Error.Type = e.Type
	if e.Param != "" {
		b.Error.Param = &e.Param
	}
	if e.Code != "" {
		b.Error.Code = &e.Code
	}
	out, _ := json.Marshal(b)
	return append(out, '\n')
}

// write sends the error to the client. The handler then returns nil: the
// response is complete, and Caddy's access log records its status from the
// response writer. Returning a caddyhttp.HandlerError instead would let
// handle_errors routes answer in HTML, which SDKs cannot parse.
func (e *apiError) write(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Del("Content-Length")
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.FormatInt(int64((e.RetryAfter+time.Second-1)/time.Second), 10))
		h.Set("Retry-After-Ms", strconv.FormatInt(e.RetryAfter.Milliseconds(), 10))
	}
	w.WriteHeader(e.Status)
	_, _ = w.Write(e.body())
}

// Constructors for the errors the relay makes. Types and codes follow what
// OpenAI sends for the same situation.

func errUnauthorized(missing bool) *apiError {
	if missing {
		return &apiError{Status: http.StatusUnauthorized, Type: "invalid_request_error",
			Message: "You didn't provide an API key. Provide your relay client key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY) or in an api-key header."}
	}
	return &apiError{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_api_key",
		Message: "Incorrect API key provided. Use a client key configured on this relay."}
}

func errBadRequest(msg, param string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Message: msg, Param: param}
}

func errBodyTooLarge(limit int64) *apiError {
	return &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "request_too_large",
		Message: fmt.Sprintf("Request body too large: the limit is %d bytes.", limit)}
}

func errModelNotAllowed(model string) *apiError {
	return &apiError{Status: http.StatusForbidden, Type: "invalid_request_error", Code: "model_not_allowed", Param: "model",
		Message: fmt.Sprintf("This client key is not allowed to use the model `%s`.", truncateForMessage(model))}
}

func errModelNotFound(model string) *apiError {
	return &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "model_not_found", Param: "model",
		Message: fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", truncateForMessage(model))}
}

func errNoCapacity(retryAfter time.Duration, reason string) *apiError {
	return &apiError{Status: http.StatusTooManyRequests, Type: "requests", Code: "rate_limit_exceeded", RetryAfter: retryAfter,
		Message: "Rate limit reached on the relay: " + reason + " Please try again later."}
}

// errRequestTooLarge is OpenAI's own answer to a request larger than a key's
// whole minute allowance (a 429 without Retry-After: waiting will not help).
func errRequestTooLarge(model string, limit, requested int64) *apiError {
	return &apiError{Status: http.StatusTooManyRequests, Type: "tokens", Code: "rate_limit_exceeded",
		Message: fmt.Sprintf("Request too large for %s on tokens per min (TPM): Limit %d, Requested %d. The input or output tokens must be reduced in order to run successfully. Visit https://platform.openai.com/account/rate-limits to learn more.",
			truncateForMessage(model), limit, requested)}
}

func errNoKeys() *apiError {
	return &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "no_upstream_key",
		Message: "No upstream key is able to serve this request right now (all are retired or cooling down)."}
}

// errStateUnavailable answers while the shared state cannot be reached and
// the relay is configured to refuse rather than serve without it.
func errStateUnavailable() *apiError {
	return &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "state_unavailable",
		Message: "The relay cannot reach its shared state (Redis), and is configured to refuse requests until it can (on_error reject). Please try again later."}
}

func errUpstream(status int, msg string) *apiError {
	return &apiError{Status: status, Type: "server_error", Code: "upstream_error", Message: msg}
}

// truncateForMessage bounds user input echoed in an error message.
func truncateForMessage(s string) string {
	const max = 256
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
