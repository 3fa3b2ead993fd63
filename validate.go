package openairelay

import (
	"errors"
	"fmt"
	"math"
)

// The validators of single values, each called by Provision (which owns
// validation and defaults, so that hand-written JSON and `caddy adapt`
// output behave the same) and by the Caddyfile parser, which adds the
// position. The empty value is the default and always valid.

func checkClientAuth(v string) error {
	if v != "" && v != "none" {
		return fmt.Errorf("client_auth: the only value is 'none' (clients authenticate with their keys unless it is said), got %q", v)
	}
	return nil
}

func checkBalance(v string) error {
	switch v {
	case "", balanceLeastLoaded, balanceWeightedRR, balanceRandom:
		return nil
	}
	return fmt.Errorf("balance must be %s, %s or %s, got %q", balanceLeastLoaded, balanceWeightedRR, balanceRandom, v)
}

func checkTokenEstimate(v string) error {
	switch v {
	case "", estimateChars, estimateTokenizer:
		return nil
	}
	return fmt.Errorf("token_estimate must be %s or %s, got %q", estimateChars, estimateTokenizer, v)
}

func checkPriority(v string) error {
	if _, ok := parsePriority(v); !ok {
		return fmt.Errorf("priority must be high, normal or low, got %q", v)
	}
	return nil
}

func checkAuth(v string) error {
	switch v {
	case "", authBearer, authAPIKey:
		return nil
	}
	return fmt.Errorf("auth must be '%s' or '%s', got %q", authBearer, authAPIKey, v)
}

func checkCacheStore(v string) error {
	if v != "" && v != "memory" && v != "redis" {
		return fmt.Errorf("cache store %q is not available: use memory or redis", v)
	}
	return nil
}

func checkCacheScope(v string) error {
	switch v {
	case "", "client", "global":
		return nil
	}
	return fmt.Errorf("cache scope must be client or global, got %q", v)
}

// checkBudget validates a client's budget: a positive amount of USD, and a
// period of daily or monthly (empty: monthly).
func checkBudget(usd float64, period string) error {
	if usd <= 0 || math.IsInf(usd, 0) || math.IsNaN(usd) {
		return fmt.Errorf("budget must be a positive amount of USD, got %v", usd)
	}
	switch period {
	case "", "daily", "monthly":
		return nil
	}
	return fmt.Errorf("budget period must be daily or monthly, got %q", period)
}

var errThreshold = errors.New("semantic threshold must be a number above 0 and at most 1")

// checkThreshold validates the semantic cache's similarity threshold; 0 is
// the default.
func checkThreshold(f float64) error {
	if f < 0 || f > 1 || math.IsNaN(f) {
		return fmt.Errorf("%w, got %v", errThreshold, f)
	}
	return nil
}
