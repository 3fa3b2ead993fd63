package openairelay

import (
	"net/http"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

func TestClassify(t *testing.T) {
	const (
		modelAccess = `{"error":{"message":"Project ` + "`proj_abc`" + ` does not have access to model ` + "`gpt-4o`" + `","type":"invalid_request_error","param":null,"code":"model_not_found"}}`
		scopes      = `{"error":{"message":"You have insufficient permissions for this operation. Missing scopes: model.request. Check that you have the correct role in your organization (Reader, Writer, Owner) and project (Member, Owner), and if you're using a restricted API key, that it has the necessary scopes.","type":"invalid_request_error","param":null,"code":null}}`
		verify      = `{"error":{"message":"Your organization must be verified to use the model ` + "`gpt-image-1`" + `. Please go to: https://platform.openai.com/settings/organization/general and click on Verify Organization.","type":"invalid_request_error","param":null,"code":null}}`
		invalid     = `{"error":{"message":"Incorrect API key provided: sk-ab***wxyz.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`
		deactivated = `{"error":{"message":"This key is associated with a deactivated account.","type":"invalid_request_error","param":null,"code":"account_deactivated"}}`
		quota       = `{"error":{"message":"You exceeded your current quota.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}`
		rateLimit   = `{"error":{"message":"Rate limit reached for gpt-4o in organization org-x on requests per min (RPM): Limit 3, Used 3, Requested 1.","type":"requests","param":null,"code":"rate_limit_exceeded"}}`
		tooLarge    = `{"error":{"message":"Request too large for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Requested 50000.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`
		region      = `{"error":{"message":"Country, region, or territory not supported","type":"request_forbidden","param":null,"code":"unsupported_country_region_territory"}}`
	)
	tests := []struct {
		name    string
		status  int
		body    string
		want    outcome
		suspect bool
	}{
		// 2xx: success, whatever the body.
		{"success", 200, "", outcomeSuccess, false},
		{"created", 201, "", outcomeSuccess, false},
		{"accepted", 202, `{"id":"batch_1"}`, outcomeSuccess, false},
		{"no content", 204, "", outcomeSuccess, false},
		{"a 200 with an error body", 200, invalid, outcomeSuccess, false},

		// 3xx and the other 4xx are about the request: the client's to see.
		{"redirect", 307, "", outcomeClientError, false},
		{"not modified", 304, "", outcomeClientError, false},
		{"bad request", 400, `{"error":{"code":"invalid_value"}}`, outcomeClientError, false},
		{"bad request naming a key error", 400, invalid, outcomeClientError, false},
		{"not found", 404, "", outcomeClientError, false},
		{"model not found as a 404", 404, `{"error":{"message":"The model does not exist","type":"invalid_request_error","code":"model_not_found"}}`, outcomeClientError, false},
		{"conflict", 409, "", outcomeClientError, false},
		{"too large a body", 413, "", outcomeClientError, false},
		{"unsupported media type", 415, "", outcomeClientError, false},
		{"unprocessable", 422, "", outcomeClientError, false},

		// 401 and 403 about the key: retire it.
		{"invalid key", 401, invalid, outcomeDeadKey, false},
		{"deactivated account", 401, deactivated, outcomeDeadKey, false},
		{"invalid key as a 403", 403, invalid, outcomeDeadKey, false},
		{"deactivated account as a 403", 403, deactivated, outcomeDeadKey, false},

		// 401 and 403 about the request: returned as they are.
		{"model access", 403, modelAccess, outcomeClientError, false},
		{"model access as a 401", 401, modelAccess, outcomeClientError, false},
		{"unsupported model", 403, `{"error":{"message":"x","type":"invalid_request_error","code":"unsupported_model"}}`, outcomeClientError, false},
		{"missing scope", 401, scopes, outcomeClientError, false},
		{"missing scope as a 403", 403, scopes, outcomeClientError, false},
		{"missing scopes, in capitals, no code", 403, `{"error":{"message":"MISSING SCOPES: api.model.read","type":"invalid_request_error","code":null}}`, outcomeClientError, false},
		{"insufficient permissions alone", 401, `{"error":{"message":"You have insufficient permissions for this operation.","code":null}}`, outcomeClientError, false},
		{"no access to a model, no code", 403, `{"error":{"message":"Project proj_x does not have access to model gpt-5","code":null}}`, outcomeClientError, false},
		{"organisation not verified", 403, verify, outcomeClientError, false},

		// 401 and 403 that name neither: the client's to see, and suspect
		// (a probe of the key decides).
		{"other 403 code", 403, region, outcomeClientError, true},
		{"401 without a body", 401, "", outcomeClientError, true},
		{"403 without a body", 403, "", outcomeClientError, true},
		{"403 not JSON", 403, "<html>Forbidden</html>", outcomeClientError, true},
		{"401 with a numeric code", 401, `{"error":{"message":"Unauthorized","code":401}}`, outcomeClientError, true},
		{"401 with an unknown message", 401, `{"error":{"message":"Something about this request","type":"invalid_request_error","code":null}}`, outcomeClientError, true},
		{"403 whose type, not code, says invalid_api_key", 403, `{"error":{"message":"x","type":"invalid_api_key","code":null}}`, outcomeClientError, true},

		// 429: no quota retires the key, a request too large is the
		// client's, anything else is a rate limit.
		{"no quota", 429, quota, outcomeDeadKey, false},
		{"no quota, by its type only", 429, `{"error":{"message":"You exceeded your current quota.","type":"insufficient_quota","code":null}}`, outcomeDeadKey, false},
		{"no quota, by its code only", 429, `{"error":{"message":"x","type":"requests","code":"insufficient_quota"}}`, outcomeDeadKey, false},
		{"rate limited", 429, rateLimit, outcomeRateLimited, false},
		{"rate limited on tokens", 429, `{"error":{"message":"Rate limit reached for gpt-4o on tokens per min (TPM): Limit 30000, Used 29000, Requested 2000.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`, outcomeRateLimited, false},
		{"rate limited, no body", 429, "", outcomeRateLimited, false},
		{"rate limited, not JSON", 429, "Too Many Requests", outcomeRateLimited, false},
		{"request too large", 429, tooLarge, outcomeClientError, false},
		{"request too large, not at the start of the message", 429, `{"error":{"message":"Rate limit reached: Request too large","code":"rate_limit_exceeded"}}`, outcomeRateLimited, false},
		{"invalid key as a 429", 429, invalid, outcomeRateLimited, false},

		// 5xx: the upstream's trouble, whatever the body.
		{"server error", 500, "", outcomeServerError, false},
		{"bad gateway", 502, "<html>Bad gateway</html>", outcomeServerError, false},
		{"overloaded", 503, "", outcomeServerError, false},
		{"gateway timeout", 504, "", outcomeServerError, false},
		{"an unusual 5xx", 599, "", outcomeServerError, false},
		{"a 5xx naming a key error", 500, invalid, outcomeServerError, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := classify(tt.status, []byte(tt.body))
			if got.outcome != tt.want || got.suspect != tt.suspect {
				t.Errorf("classify(%d) = %v (suspect %v); want %v (suspect %v)", tt.status, got.outcome, got.suspect, tt.want, tt.suspect)
			}
		})
	}
}

func TestNeedsBody(t *testing.T) {
	for status, want := range map[int]bool{
		200: false, 307: false, 400: false, 401: true, 403: true, 404: false,
		413: false, 429: true, 500: false, 503: false,
	} {
		if got := needsBody(status); got != want {
			t.Errorf("needsBody(%d) = %v; want %v", status, got, want)
		}
	}
}

func TestOutcomeBacksOff(t *testing.T) {
	tests := []struct {
		o        outcome
		name     string
		backsOff bool
	}{
		{outcomeSuccess, "success", false},
		{outcomeClientError, "client_error", false},
		{outcomeRateLimited, "rate_limited", false},
		{outcomeDeadKey, "dead_key", false},
		{outcomeServerError, "server_error", true},
		{outcomeNetwork, "network_error", true},
	}
	for _, tt := range tests {
		if got := tt.o.String(); got != tt.name {
			t.Errorf("outcome %d is called %q; want %q", tt.o, got, tt.name)
		}
		if got := tt.o.backsOff(); got != tt.backsOff {
			t.Errorf("%s.backsOff() = %v; want %v", tt.name, got, tt.backsOff)
		}
	}
}

func TestDeadReasonNamesNoMessage(t *testing.T) {
	body := []byte(`{"error":{"message":"Incorrect API key provided: sk-secret","type":"invalid_request_error","code":"invalid_api_key"}}`)
	if got := deadReason(401, body); got != "401 invalid_api_key" {
		t.Errorf("deadReason = %q", got)
	}
	if got := deadReason(429, []byte(`{"error":{"type":"insufficient_quota"}}`)); got != "429 insufficient_quota" {
		t.Errorf("deadReason = %q", got)
	}
}

func TestCoolUntil(t *testing.T) {
	rl := &Relay{Cooldown: caddy.Duration(10 * time.Second)}
	now := time.Unix(1_800_000_000, 0)
	tests := []struct {
		name string
		h    http.Header
		want time.Duration
	}{
		{"retry-after-ms", http.Header{"Retry-After-Ms": {"1500"}}, 1500 * time.Millisecond},
		{"retry-after", http.Header{"Retry-After": {"3"}}, 3 * time.Second},
		{"nothing said", http.Header{}, 10 * time.Second},
		{"years", http.Header{"Retry-After": {"900000000"}}, time.Hour},
		{"a reset far away", http.Header{"X-Ratelimit-Remaining-Requests": {"0"}, "X-Ratelimit-Reset-Requests": {"72h"}}, time.Hour},
	}
	for _, tt := range tests {
		if got := rl.coolUntil(tt.h, now).Sub(now); got != tt.want {
			t.Errorf("%s: cools %v; want %v", tt.name, got, tt.want)
		}
	}
}
