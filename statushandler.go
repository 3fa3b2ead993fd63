package openairelay

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(StatusPage{})
	httpcaddyfile.RegisterHandlerDirective("openai_relay_status", parseStatusCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("openai_relay_status", httpcaddyfile.Before, "reverse_proxy")
}

// StatusPage serves the status page (and the admin API it reads) from a
// site, for browsers: Caddy's admin endpoint refuses a browser's
// navigation (a request with Sec-Fetch-Mode and no Origin or Referer), so
// GET /openai_relay/ there serves scripts and tools, and this handler
// serves people. Mount it under a path of its own and protect it as any
// operator page (basic_auth, remote_ip):
//
//	handle_path /relay-status/* {
//		basic_auth { admin <hash> }
//		openai_relay_status
//	}
//
// Actions (retire, restore, empty the cache) need the header
// X-Requested-By: openai_relay, which the page sends and a cross-site form
// cannot.
type StatusPage struct {
	// ReadOnly refuses the actions: the page only shows. Default: false.
	ReadOnly bool `json:"read_only,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (StatusPage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.openai_relay_status",
		New: func() caddy.Module { return new(StatusPage) },
	}
}

// actionHeader is what an action must carry: a custom header, which a
// browser sends cross-site only after a CORS preflight this handler never
// grants.
const actionHeader = "X-Requested-By"

// ServeHTTP dispatches on the end of the path, so that the handler works
// whether or not its mount prefix was stripped.
func (sp StatusPage) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	p := r.URL.Path
	var a adminAPI
	route := func(h func(http.ResponseWriter, *http.Request) error, adminPath string) error {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if sp.ReadOnly {
				return writeStatusError(w, http.StatusForbidden, "this status page is read-only")
			}
			if r.Header.Get(actionHeader) != "openai_relay" {
				return writeStatusError(w, http.StatusForbidden, "an action needs the header "+actionHeader+": openai_relay")
			}
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = adminPath
		if err := h(w, r2); err != nil {
			if ae, ok := err.(caddy.APIError); ok {
				return writeStatusError(w, ae.HTTPStatus, ae.Err.Error())
			}
			return err
		}
		return nil
	}
	switch base := path.Base(p); {
	case strings.HasSuffix(p, "/") || p == "":
		return route(a.handlePage, "/openai_relay/")
	case base == "app.js" || base == "style.css" || base == "index.html":
		return route(a.handlePage, "/openai_relay/"+base)
	case base == "status":
		return route(a.handleStatus, "/openai_relay/status")
	case base == "cache":
		return route(a.handleCache, "/openai_relay/cache")
	case base == "keys":
		return route(a.handleKeys, "/openai_relay/keys")
	case base == "clients":
		return route(a.handleClients, "/openai_relay/clients")
	case base == "state":
		return route(a.handleState, "/openai_relay/state")
	case (base == "retire" || base == "restore") && strings.Contains(p, "/keys/"):
		return route(a.handleKeyAction, "/openai_relay"+p[strings.LastIndex(p, "/keys/"):])
	}
	return writeStatusError(w, http.StatusNotFound, "no such page")
}

func writeStatusError(w http.ResponseWriter, status int, msg string) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	openai_relay_status [read_only]
//
// or with a block:
//
//	openai_relay_status {
//		read_only
//	}
func (sp *StatusPage) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive
	for d.NextArg() {
		if d.Val() != "read_only" {
			return d.Errf("unrecognized openai_relay_status argument '%s'", d.Val())
		}
		sp.ReadOnly = true
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if d.Val() != "read_only" || d.NextArg() {
			return d.Errf("unrecognized openai_relay_status option '%s'", d.Val())
		}
		sp.ReadOnly = true
	}
	return nil
}

func parseStatusCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	sp := new(StatusPage)
	if err := sp.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, fmt.Errorf("openai_relay_status: %w", err)
	}
	return sp, nil
}

// Interface guards
var (
	_ caddyhttp.MiddlewareHandler = (*StatusPage)(nil)
	_ caddyfile.Unmarshaler       = (*StatusPage)(nil)
)
