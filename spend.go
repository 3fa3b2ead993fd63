package openairelay

import (
	"fmt"
	"math"
	"net/http"
	"path"
	"strings"
	"time"
)

// Price is what a model costs, for spend metrics and client budgets.
type Price struct {
	// Model is a glob pattern matched against the model the client asked
	// for; the first price that matches is used. Required.
	Model string `json:"model"`

	// Input is the price of a million prompt tokens, in USD.
	Input float64 `json:"input"`

	// Output is the price of a million completion tokens, in USD.
	Output float64 `json:"output"`

	// CachedInput is the price of a million prompt tokens that the upstream
	// served from its prompt cache (usage.prompt_tokens_details.cached_tokens,
	// or input_tokens_details in the Responses API), in USD. Default: the
	// Input price.
	CachedInput *float64 `json:"cached_input,omitempty"`
}

// Budget caps what a client may spend, by the relay's prices, in a UTC day
// or calendar month. A client over its budget gets 429 insufficient_quota
// until the period ends.
type Budget struct {
	// USD is the most the client may spend in a period. Required.
	USD float64 `json:"usd"`

	// Period is "daily" or "monthly" (UTC). Default: "monthly".
	Period string `json:"period,omitempty"`
}

func (b *Budget) validate() error {
	if err := checkBudget(b.USD, b.Period); err != nil {
		return err
	}
	if b.Period == "" {
		b.Period = "monthly"
	}
	return nil
}

// periodOf names the budget period t falls in: "2026-11-27" or "2026-11".
func periodOf(period string, t time.Time) string {
	if period == "daily" {
		return t.UTC().Format(time.DateOnly)
	}
	return t.UTC().Format("2006-01")
}

// periodEnd is when the period t falls in ends.
func periodEnd(period string, t time.Time) time.Time {
	t = t.UTC()
	if period == "daily" {
		return time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, time.UTC)
	}
	return time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
}

func (rl *Relay) validatePrices() error {
	for _, p := range rl.Prices {
		if err := p.validate(); err != nil {
			return err
		}
	}
	return nil
}

// validate checks one price: a valid glob, and amounts that are not negative.
func (p Price) validate() error {
	if _, err := path.Match(p.Model, ""); err != nil || p.Model == "" {
		return fmt.Errorf("price: model pattern %q is not a valid glob", p.Model)
	}
	amounts := []float64{p.Input, p.Output}
	if p.CachedInput != nil {
		amounts = append(amounts, *p.CachedInput)
	}
	for _, v := range amounts {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("price %s: %v must be a non-negative amount of USD", p.Model, v)
		}
	}
	return nil
}

// price is what usage of model costs in dollars by the configured prices,
// and false if no price matches the model.
func (rl *Relay) price(model string, u usage) (float64, bool) {
	for _, p := range rl.Prices {
		if ok, _ := path.Match(p.Model, model); ok {
			cachedPrice := p.Input
			if p.CachedInput != nil {
				cachedPrice = *p.CachedInput
			}
			uncached := u.prompt - u.cached
			return (float64(uncached)*p.Input + float64(u.cached)*cachedPrice + float64(u.completion)*p.Output) / 1e6, true
		}
	}
	return 0, false
}

// spend records what a client spent, in the metric and against its budget.
func (pr *proxyRequest) spend(u usage) {
	usd, ok := pr.rl.price(pr.api.model, u)
	if !ok || usd == 0 {
		return
	}
	spendTotal.WithLabelValues(pr.client.Name).Add(usd)
	pr.rl.state.addSpend(pr.client.state, time.Now(), usd)
}

// unpriced are the endpoints whose answers carry no token usage, and so
// cost what the price table cannot say: a client with a budget may not call
// them (its budget could not hold). Images and transcriptions by token-billed
// models (gpt-image-*, gpt-4o-*transcribe) report usage and are priced.
func unpriced(endpoint, model string) bool {
	switch endpoint {
	case "audio/speech", "batches", "fine_tuning/jobs", "images/variations":
		return true
	case "images/generations", "images/edits":
		return !strings.HasPrefix(model, "gpt-image")
	case "audio/transcriptions", "audio/translations":
		return !strings.Contains(model, "transcribe")
	}
	return false
}

// reserveBudget takes the request's estimated cost from the client's budget
// before the call (overBudget's answer when the budget is spent), so that
// concurrent requests cannot all pass on the same remainder; the
// reservation is given back by releaseBudget once the answer's usage is
// spent.
func (pr *proxyRequest) reserveBudget() *apiError {
	b := pr.client.Budget
	if b == nil {
		return nil
	}
	if pr.req.Method == http.MethodPost && unpriced(pr.api.endpoint, pr.api.model) {
		return &apiError{Status: http.StatusForbidden, Type: "invalid_request_error", Code: "unpriced_endpoint",
			Message: "This client has a budget, and answers of " + truncateForMessage(pr.api.endpoint) + " carry no usage the relay could price."}
	}
	est, priced := pr.rl.price(pr.api.model, usage{prompt: pr.promptEst, completion: pr.api.maxOut})
	if pr.req.Method == http.MethodPost && pr.api.model != "" && !priced {
		// A model without a price would cost the budget nothing.
		return errUnpricedModel(pr.api.model)
	}
	now := time.Now()
	if pr.rl.state.unavailable() {
		return errStateUnavailable()
	}
	if h, ok := pr.rl.state.reserveSpend(pr.client.state, now, b.Period, b.USD, est); ok {
		pr.budgetHeld, pr.budgetHold = est, h
		return nil
	}
	return pr.overBudget(now)
}

// releaseBudget gives back the budget reservation, once.
func (pr *proxyRequest) releaseBudget() {
	if pr.client.Budget != nil {
		pr.rl.state.releaseSpend(pr.client.state, pr.budgetHold, pr.budgetHeld)
		pr.budgetHeld, pr.budgetHold = 0, ""
	}
}

// overBudget is the 429 for a client that has spent its budget.
// The first refusal of a period is announced (budget_spent).
func (pr *proxyRequest) overBudget(now time.Time) *apiError {
	b := pr.client.Budget
	renews := periodEnd(b.Period, now)
	if pr.rl.events.wanted(eventBudgetSpent) && pr.client.state.firstRefusal(b.Period+" "+periodOf(b.Period, now)) {
		pr.rl.events.budgetSpent(pr.client, renews)
	}
	return &apiError{
		Status: 429, Type: "insufficient_quota", Code: "insufficient_quota",
		Message:    fmt.Sprintf("This client has spent its %s budget of $%.2f. It renews at %s.", b.Period, b.USD, renews.Format(time.RFC3339)),
		RetryAfter: time.Until(renews),
	}
}

// errUnpricedModel refuses a client with a budget a model the relay has no
// price for: its answers would cost the budget nothing.
func errUnpricedModel(model string) *apiError {
	return &apiError{Status: http.StatusForbidden, Type: "invalid_request_error", Code: "unpriced_model", Param: "model",
		Message: "This client has a budget, and the relay has no price for the model " + truncateForMessage(model) + "."}
}
