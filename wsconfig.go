package openairelay

import (
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// WebSocketConfig bounds the WebSocket sessions the relay carries: the
// Realtime API (GET /v1/realtime) and the Responses API's WebSocket mode
// (GET /v1/responses). Sessions are relayed whether or not it is set; it
// only changes the bounds.
type WebSocketConfig struct {
	// MaxDuration is the longest a session stays open; then the relay
	// closes it (1000, with the reason). The API itself ends Realtime
	// sessions and WebSocket connections after 60 minutes. Default: 1h.
	MaxDuration caddy.Duration `json:"max_duration,omitempty"`

	// IdleTimeout closes a session in which no message went either way for
	// this long (1000, with the reason). Default: 10m.
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	// MaxSessionsPerClient bounds the sessions one client has open at once;
	// past it an upgrade gets 429. Default: 0 (no bound).
	MaxSessionsPerClient int `json:"max_sessions_per_client,omitempty"`

	// MaxSessionsPerKey bounds the sessions open at once on one upstream
	// key; a key that has them is not chosen for another session (which
	// waits, like a request, for max_wait). Default: 0 (no bound; the key's
	// max_concurrent, which each session holds one of, still applies).
	MaxSessionsPerKey int `json:"max_sessions_per_key,omitempty"`

	// MaxMessageSize bounds one message either way, in bytes; a larger
	// one closes the session with 1009. Default: 16 MiB (the Realtime API
	// takes audio appends of up to 15 MiB).
	MaxMessageSize int64 `json:"max_message_size,omitempty"`
}

const (
	defaultWSMaxDuration    = time.Hour
	defaultWSIdleTimeout    = 10 * time.Minute
	defaultWSMaxMessageSize = 16 << 20
)

// provision applies the defaults and checks the bounds.
func (c *WebSocketConfig) provision() error {
	if c.MaxDuration < 0 || c.IdleTimeout < 0 || c.MaxSessionsPerClient < 0 || c.MaxSessionsPerKey < 0 || c.MaxMessageSize < 0 {
		return fmt.Errorf("websocket: durations, session bounds and max_message_size must not be negative")
	}
	if c.MaxDuration == 0 {
		c.MaxDuration = caddy.Duration(defaultWSMaxDuration)
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = caddy.Duration(defaultWSIdleTimeout)
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = defaultWSMaxMessageSize
	}
	return nil
}

// parseWebSocket reads the websocket block:
//
//	websocket {
//		max_duration            <duration>  # default 1h
//		idle_timeout            <duration>  # default 10m
//		max_sessions_per_client <n>         # default none
//		max_sessions_per_key    <n>         # default none
//		max_message_size        <size>      # default 16MiB
//	}
func parseWebSocket(d *caddyfile.Dispenser) (*WebSocketConfig, error) {
	c := new(WebSocketConfig)
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] {
			return nil, d.Errf("websocket: %s already specified", opt)
		}
		seen[opt] = true
		var err error
		switch opt {
		case "max_duration":
			c.MaxDuration, err = parseDurationArg(d)
		case "idle_timeout":
			c.IdleTimeout, err = parseDurationArg(d)
		case "max_sessions_per_client":
			c.MaxSessionsPerClient, err = parseIntArg(d, 1)
		case "max_sessions_per_key":
			c.MaxSessionsPerKey, err = parseIntArg(d, 1)
		case "max_message_size":
			c.MaxMessageSize, err = parseSizeArg(d)
		default:
			return nil, d.Errf("websocket: unrecognized option %q", opt)
		}
		if err != nil {
			return nil, err
		}
	}
	return c, nil
}
