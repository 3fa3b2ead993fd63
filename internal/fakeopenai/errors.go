package fakeopenai

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// Error bodies, as api.openai.com words them.
const (
	msgNoKey     = "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username. You can obtain an API key from https://platform.openai.com/account/api-keys."
	msgNoQuota   = "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors."
	msgForbidden = "Country, region, or territory not supported"
	msgBadJSON   = "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)"
	msgNoModel   = "you must provide a model parameter"
	msgTooBig    = "Request body too large."
)

type apiError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

type errorBody struct {
	Error apiError `json:"error"`
}

func strp(s string) *string { return &s }

func errorJSON(msg, typ string, param, code *string) []byte {
	b, _ := json.Marshal(errorBody{apiError{Message: msg, Type: typ, Param: param, Code: code}})
	return b
}

// MaskKey masks a key as OpenAI does in its 401 message: the first five and
// last four characters around "***" (short keys keep less).
func MaskKey(k string) string {
	switch {
	case len(k) >= 12:
		return k[:5] + "***" + k[len(k)-4:]
	case len(k) >= 6:
		return k[:2] + "***" + k[len(k)-2:]
	default:
		return "***"
	}
}

func invalidKeyMessage(k string) string {
	return "Incorrect API key provided: " + MaskKey(k) + ". You can find your API key at https://platform.openai.com/account/api-keys."
}

func serverErrorMessage(status int) (string, string) {
	switch status {
	case http.StatusServiceUnavailable:
		return "The engine is currently overloaded, please try again later.", "server_error"
	case http.StatusBadGateway:
		return "Bad gateway.", "server_error"
	case http.StatusGatewayTimeout:
		return "Gateway timeout.", "server_error"
	case http.StatusTooManyRequests:
		return "Rate limit reached for requests. Please try again in 1s.", "requests"
	}
	if status >= 500 {
		return "The server had an error while processing your request. Sorry about that!", "server_error"
	}
	return fmt.Sprintf("Injected error %d.", status), "invalid_request_error"
}

func rateLimitMessage(model string, d *rlDenial) string {
	unit := "requests per min (RPM)"
	if d.kind == "tokens" {
		unit = "tokens per min (TPM)"
	}
	if d.tooLarge {
		return fmt.Sprintf("Request too large for %s in organization org-fake on %s: Limit %d, Requested %d. The input or output tokens must be reduced in order to run successfully. Visit https://platform.openai.com/account/rate-limits to learn more.", model, unit, d.limit, d.requested)
	}
	return fmt.Sprintf("Rate limit reached for %s in organization org-fake on %s: Limit %d, Used %d, Requested %d. Please try again in %s. Visit https://platform.openai.com/account/rate-limits to learn more.", model, unit, d.limit, d.used, d.requested, FormatDuration(d.wait))
}
