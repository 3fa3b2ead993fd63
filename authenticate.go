package openairelay

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
)

// authenticate finds the client of a request, or answers 401 (429 to an
// address that keeps presenting wrong keys, see authguard.go) and reports
// false.
func (rl *Relay) authenticate(w http.ResponseWriter, r *http.Request, repl *caddy.Replacer) (*Client, bool) {
	addr := clientAddress(r)
	if until, blocked := clientAuthGuard.blocked(addr); blocked {
		errAuthThrottled(until).write(w)
		return nil, false
	}
	client, aerr := rl.clientOf(r)
	if rl.ClientAuth != "none" {
		clientAuthGuard.record(addr, aerr == nil)
	}
	if aerr != nil {
		aerr.write(w)
		return nil, false
	}
	repl.Set(phClient, client.Name)
	client.state.requests.Add(1)
	return client, true
}

// clientOf is the client whose key the request presents.
func (rl *Relay) clientOf(r *http.Request) (*Client, *apiError) {
	if rl.ClientAuth == "none" {
		return anonymousClient, nil
	}
	secret := clientSecret(r.Header)
	if secret == "" {
		return nil, errUnauthorized(true)
	}
	c := rl.clients.lookup(secret)
	if c == nil {
		return nil, errUnauthorized(false)
	}
	return c, nil
}
