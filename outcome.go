package openairelay

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// outcome classifies an attempt (see the README's table of upstream answers).
type outcome uint8

const (
	outcomeSuccess     outcome = iota // 2xx
	outcomeClientError                // other 4xx, and 401/403/429 about the request: returned as is
	outcomeRateLimited                // 429 rate_limit_exceeded: cool the key, retry elsewhere
	outcomeDeadKey                    // 401 invalid_api_key or account_deactivated, 429 insufficient_quota: retire the key, retry elsewhere
	outcomeServerError                // 5xx: retry with backoff, another upstream first
	outcomeNetwork                    // no response: connect error, reset, timeout
)

func (o outcome) String() string {
	switch o {
	case outcomeSuccess:
		return "success"
	case outcomeClientError:
		return "client_error"
	case outcomeRateLimited:
		return "rate_limited"
	case outcomeDeadKey:
		return "dead_key"
	case outcomeServerError:
		return "server_error"
	default:
		return "network_error"
	}
}

// backsOff reports whether a retry after this outcome waits first. Moving
// to another key after a 429 or a dead key needs no pause; a struggling
// upstream does.
func (o outcome) backsOff() bool {
	return o == outcomeServerError || o == outcomeNetwork
}

// needsBody reports whether an answer's status alone cannot say what it
// means: 401, 403 and 429 are about the key or about the request depending
// on their error code, so their (small) body is read first.
func needsBody(status int) bool {
	return status == http.StatusUnauthorized || status == http.StatusForbidden || status == http.StatusTooManyRequests
}

// verdict is what an answer says, for the key and for the request.
type verdict struct {
	outcome outcome
	// suspect is set on a 401 or 403 that names neither the key nor the
	// request: it goes to the client as it is, and a probe of the key
	// decides whether the key is retired.
	suspect bool
}

// classify reads an upstream answer. body is needed only where needsBody
// says so. The rules follow OpenAI's error codes
// (platform.openai.com/docs/guides/error-codes): only errors that are about
// the key retire it; a 401 or 403 about the request (a model the project may
// not use, a restricted key's missing scope, an organisation not verified for
// a model) is the client's to see, and so is a 429 "Request too large",
// which no other key of the same limits would accept either.
func classify(status int, body []byte) verdict {
	switch {
	case status >= 200 && status < 300, status == http.StatusSwitchingProtocols:
		// 101: a WebSocket session the upstream accepted (websocket.go).
		return verdict{outcome: outcomeSuccess}
	case status >= 500:
		return verdict{outcome: outcomeServerError}
	case !needsBody(status):
		// 1xx never reach here (the transport handles them), 3xx and other
		// 4xx are the client's to see.
		return verdict{outcome: outcomeClientError}
	}
	e := parseUpstreamError(body)
	if status == http.StatusTooManyRequests {
		switch {
		case e.code == "insufficient_quota" || e.typ == "insufficient_quota":
			return verdict{outcome: outcomeDeadKey}
		case isRequestTooLarge(e.message):
			return verdict{outcome: outcomeClientError}
		}
		return verdict{outcome: outcomeRateLimited}
	}
	switch {
	case e.code == "invalid_api_key" || e.code == "account_deactivated":
		return verdict{outcome: outcomeDeadKey}
	case isAboutRequest(e):
		return verdict{outcome: outcomeClientError}
	}
	return verdict{outcome: outcomeClientError, suspect: true}
}

// isAboutRequest tells a 401 or 403 that a valid key gets for what the
// request asks: a model its project may not use ("Project `proj_…` does not
// have access to model `…`", code model_not_found), a scope a restricted
// key lacks ("You have insufficient permissions for this operation. Missing
// scopes: …"), or a model that needs a verified organisation.
func isAboutRequest(e upstreamError) bool {
	if e.code == "model_not_found" || e.code == "unsupported_model" {
		return true
	}
	m := strings.ToLower(e.message)
	for _, s := range requestErrorPhrases {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// requestErrorPhrases are the words, lower-cased, of OpenAI's 401 and 403
// messages about a request rather than a key.
var requestErrorPhrases = [...]string{
	"insufficient permissions",
	"missing scopes",
	"does not have access to model",
	"must be verified",
}

// isRequestTooLarge tells OpenAI's 429 for a request larger than the key's
// whole minute allowance ("Request too large for gpt-4o in organization …
// on tokens per min (TPM): Limit 30000, Requested 50000. …").
func isRequestTooLarge(message string) bool {
	return strings.HasPrefix(message, "Request too large")
}

// upstreamError is the part of OpenAI's error body the relay reads.
type upstreamError struct {
	code, typ, message string
}

func parseUpstreamError(body []byte) upstreamError {
	var e struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Code    any    `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return upstreamError{}
	}
	out := upstreamError{typ: e.Error.Type, message: e.Error.Message}
	if s, ok := e.Error.Code.(string); ok {
		out.code = s
	}
	return out
}

// deadReason is the reason kept for a retired key, for the admin API and
// logs. It is built from the status and the error code, never the message,
// which may quote part of the key.
func deadReason(status int, body []byte) string {
	e := parseUpstreamError(body)
	reason := strconv.Itoa(status)
	switch {
	case e.code != "":
		reason += " " + e.code
	case e.typ != "":
		reason += " " + e.typ
	}
	return reason
}
