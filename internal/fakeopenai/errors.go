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
	what := "Rate limit reached for " + model + " in"
	if model == "" { // files and stored responses: no model to name
		what = "Rate limit reached in"
	}
	return fmt.Sprintf("%s organization org-fake on %s: Limit %d, Used %d, Requested %d. Please try again in %s. Visit https://platform.openai.com/account/rate-limits to learn more.", what, unit, d.limit, d.used, d.requested, FormatDuration(d.wait))
}

// Errors about the key's account and permissions, and about stored objects.
const (
	// KeyDeactivated. Seen on api.openai.com (401, code account_deactivated),
	// e.g. as quoted in https://www.weiyoun.com/2023/10/08/openai-shuo-wo-wei-fan-gui-ding-jin-yong-le-api/
	msgDeactivated = "This key is associated with a deactivated account. If you feel this is an error, contact us through our help center at help.openai.com."

	// Restricted keys: 401 invalid_request_error, param null, code null, as
	// reported on community.openai.com/t/1374480 and /t/1345041 (one report,
	// /t/1384493, shows code "missing_scope"; most show null).
	msgMissingScopesPrefix = "You have insufficient permissions for this operation. Missing scopes: "
	msgMissingScopesSuffix = ". Check that you have the correct role in your organization (Reader, Writer, Owner) and project (Member, Owner), and if you're using a restricted API key, that it has the necessary scopes."
)

// projectModelMessage is the 403 model_not_found of a project whose model
// permissions exclude the model, e.g.
// {"message":"Project `proj_QRf115YMnQwMUdTI9cu2sWQ8` does not have access to model `gpt-4o-mini`","type":"invalid_request_error","param":null,"code":"model_not_found"}
// (github.com/cursor/cursor issue 2953, Aider-AI/aider issue 1903).
func projectModelMessage(project, model string) string {
	return "Project `" + project + "` does not have access to model `" + model + "`"
}

// verifyOrgMessage is the 403 of a model that needs a verified organisation
// (invalid_request_error, code null), as quoted in
// https://help.apiyi.com/en/gpt-image-2-organization-verification-stuck-fix-en.html
// and community.openai.com/t/1361163; OpenAI's help article 10910291
// ("API Organization Verification") lists the gated models.
func verifyOrgMessage(model string) string {
	return "Your organization must be verified to use the model `" + model + "`. Please go to: https://platform.openai.com/settings/organization/general and click on Verify Organization. If you just verified, it can take up to 15 minutes for access to propagate."
}

// fileNotFoundMessage: 404 invalid_request_error, param "id", code null
// ("HTTP 404 (invalid_request_error: )\r\nParameter: id\r\n\r\nNo such File
// object: file-abc123" in openai-dotnet's API-reference docs test RetrieveFile).
func fileNotFoundMessage(id string) string { return "No such File object: " + id }

// responseNotFoundMessage: GET/DELETE /v1/responses/{id} of an unknown id,
// 404 invalid_request_error (the wording vLLM's OpenAI-compatible server
// copies: "Response with id '…' not found.").
func responseNotFoundMessage(id string) string { return "Response with id '" + id + "' not found." }

// previousResponseMessage: 400 invalid_request_error, param
// previous_response_id, code previous_response_not_found (OpenAI's websocket
// mode guide; pydantic-ai's and others' recorded bodies).
func previousResponseMessage(id string) string {
	return "Previous response with id '" + id + "' not found."
}

// filePurposes are the purposes POST /v1/files accepts, in the order
// api.openai.com lists them in its 400: "'vector_store' is not one of
// ['fine-tune', 'assistants', 'batch', 'user_data', 'responses', 'vision',
// 'evals'] - 'purpose'" (param purpose, code null). openai-python's
// FilePurpose has the same set but "responses".
var filePurposes = []string{"fine-tune", "assistants", "batch", "user_data", "responses", "vision", "evals"}

func badPurposeMessage(p string) string {
	return "'" + p + "' is not one of ['fine-tune', 'assistants', 'batch', 'user_data', 'responses', 'vision', 'evals'] - 'purpose'"
}
