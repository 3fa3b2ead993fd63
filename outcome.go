package openairelay

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// outcome classifies an attempt (design §3.6).
type outcome uint8

const (
	outcomeSuccess     outcome = iota // 2xx
	outcomeClientError                // other 4xx: the client's mistake, returned as is
	outcomeRateLimited                // 429 rate_limit_exceeded: cool the key, retry elsewhere
	outcomeDeadKey                    // 401, 403, 429 insufficient_quota: retire the key, retry elsewhere
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

func classify(status int) outcome {
	switch {
	case status >= 200 && status < 300:
		return outcomeSuccess
	case status == http.StatusTooManyRequests:
		return outcomeRateLimited
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return outcomeDeadKey
	case status >= 500:
		return outcomeServerError
	default:
		// 1xx never reach here (the transport handles them), 3xx and other
		// 4xx are the client's to see.
		return outcomeClientError
	}
}

// upstreamError is the part of OpenAI's error body the relay reads.
type upstreamError struct {
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    any    `json:"code"`
	} `json:"error"`
}

func parseUpstreamError(body []byte) (code, typ string) {
	var e upstreamError
	if json.Unmarshal(body, &e) != nil {
		return "", ""
	}
	if s, ok := e.Error.Code.(string); ok {
		code = s
	}
	return code, e.Error.Type
}

// isQuotaError tells a 429 that means "this key has no money left", which
// waiting will not cure, from a rate limit.
func isQuotaError(body []byte) bool {
	code, typ := parseUpstreamError(body)
	return code == "insufficient_quota" || typ == "insufficient_quota"
}

// deadReason is the reason kept for a retired key, for the admin API and
// logs. It is built from the status and the error code, never the message,
// which may quote part of the key.
func deadReason(status int, body []byte) string {
	code, typ := parseUpstreamError(body)
	reason := strconv.Itoa(status)
	switch {
	case code != "":
		reason += " " + code
	case typ != "":
		reason += " " + typ
	}
	return reason
}
