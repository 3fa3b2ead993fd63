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
		{"success", 200, "", outcomeSuccess, false},
		{"created", 201, "", outcomeSuccess, false},
		{"bad request", 400, `{"error":{"code":"invalid_value"}}`, outcomeClientError, false},
		{"not found", 404, "", outcomeClientError, false},
		{"redirect", 307, "", outcomeClientError, false},
		{"server error", 500, "", outcomeServerError, false},
		{"overloaded", 503, "", outcomeServerError, false},
		{"invalid key", 401, invalid, outcomeDeadKey, false},
		{"deactivated account", 401, deactivated, outcomeDeadKey, false},
		{"no quota", 429, quota, outcomeDeadKey, false},
		{"rate limited", 429, rateLimit, outcomeRateLimited, false},
		{"rate limited, no body", 429, "", outcomeRateLimited, false},
		{"request too large", 429, tooLarge, outcomeClientError, false},
		{"model access", 403, modelAccess, outcomeClientError, false},
		{"missing scope", 401, scopes, outcomeClientError, false},
		{"organisation not verified", 403, verify, outcomeClientError, false},
		{"other 403 code", 403, region, outcomeClientError, true},
		{"401 without a body", 401, "", outcomeClientError, true},
		{"403 not JSON", 403, "<html>Forbidden</html>", outcomeClientError, true},
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
