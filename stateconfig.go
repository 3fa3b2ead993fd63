package openairelay

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// StateConfig makes instances that name the same Redis and prefix one
// relay: they share key limits, key health, client limits, spend and
// budgets, and object ownership (design §8). Without it every instance
// keeps its state in memory.
type StateConfig struct {
	// Store is where the state is kept: "redis". Required.
	Store string `json:"store"`

	// Addresses are the Redis nodes as host:port (placeholders such as
	// {env.REDIS_ADDR} are resolved): one server, the Sentinel nodes (with
	// Master) or Cluster seed nodes. Default: 127.0.0.1:6379.
	Addresses []string `json:"addresses,omitempty"`

	// Master is the Sentinel master's name; set, Addresses are Sentinels.
	// Default: none (no Sentinel).
	Master string `json:"master,omitempty"`

	// Cluster says that Addresses are Redis Cluster nodes. Default: false
	// (one server; several addresses without Master mean a Cluster).
	Cluster bool `json:"cluster,omitempty"`

	// Username and Password authenticate to Redis; write the password as
	// {env.NAME} or {file./path}. Default: none.
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`

	// DB is the database number (not on Cluster). Default: 0.
	DB int `json:"db,omitempty"`

	// TLS, when set, connects over TLS, with the options of reverse_proxy's
	// transport. Default: plain TCP.
	TLS *reverseproxy.TLSConfig `json:"tls,omitempty"`

	// Prefix starts every key the relay writes, so that several relays
	// can share one Redis. Default: "openai_relay".
	Prefix string `json:"prefix,omitempty"`

	// Timeout is the longest a request waits on Redis, for one round trip;
	// it is also the read and write timeout. Default: 50ms.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// DialTimeout bounds a connection to Redis. Default: 1s.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`

	// OnError is what happens while Redis is unreachable: "local" serves
	// from memory with this instance's share of every limit (the limit
	// divided by the instances seen alive in the last minute), "reject"
	// answers 503. Default: "local".
	OnError string `json:"on_error,omitempty"`
}

const (
	defaultRedisAddress     = "127.0.0.1:6379"
	defaultRedisPrefix      = "openai_relay"
	defaultRedisTimeout     = 50 * time.Millisecond
	defaultRedisDialTimeout = time.Second
	onErrorLocal            = "local"
	onErrorReject           = "reject"
)

func checkStateStore(v string) error {
	if v != "redis" {
		return fmt.Errorf("state store %q is not available: use redis", v)
	}
	return nil
}

func checkOnError(v string) error {
	switch v {
	case "", onErrorLocal, onErrorReject:
		return nil
	}
	return fmt.Errorf("on_error must be local or reject, got %q", v)
}

// provision validates the config and sets its defaults; the secrets are
// resolved by repl.
func (s *StateConfig) provision(repl *caddy.Replacer) error {
	if err := checkStateStore(s.Store); err != nil {
		return err
	}
	if err := checkOnError(s.OnError); err != nil {
		return err
	}
	if s.OnError == "" {
		s.OnError = onErrorLocal
	}
	if len(s.Addresses) == 0 {
		s.Addresses = []string{defaultRedisAddress}
	}
	if s.Prefix == "" {
		s.Prefix = defaultRedisPrefix
	}
	if s.Timeout == 0 {
		s.Timeout = caddy.Duration(defaultRedisTimeout)
	}
	if s.DialTimeout == 0 {
		s.DialTimeout = caddy.Duration(defaultRedisDialTimeout)
	}
	if s.Timeout < 0 || s.DialTimeout < 0 || s.DB < 0 {
		return fmt.Errorf("state redis: timeout, dial_timeout and db must not be negative")
	}
	return nil
}

// options are the universal client's options, with the secrets resolved.
func (s *StateConfig) options(ctx caddy.Context, repl *caddy.Replacer) (*redis.UniversalOptions, error) {
	addrs := make([]string, len(s.Addresses))
	for i, a := range s.Addresses {
		addrs[i] = repl.ReplaceKnown(a, "")
	}
	opts := &redis.UniversalOptions{
		Addrs:                 addrs,
		MasterName:            s.Master,
		IsClusterMode:         s.Cluster,
		Username:              repl.ReplaceKnown(s.Username, ""),
		Password:              repl.ReplaceKnown(s.Password, ""),
		DB:                    s.DB,
		DialTimeout:           time.Duration(s.DialTimeout),
		ReadTimeout:           time.Duration(s.Timeout),
		WriteTimeout:          time.Duration(s.Timeout),
		ContextTimeoutEnabled: true,
		// A request never waits on Redis for longer than the timeout: no
		// retry of a command that timed out.
		MaxRetries:      -1,
		PoolTimeout:     time.Duration(s.Timeout),
		DisableIdentity: true,
		// Maintenance notifications are a Redis Enterprise feature; asking
		// other servers for them only adds a failed command per connection.
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
	if s.TLS != nil {
		tc, err := s.TLS.MakeTLSClientConfig(ctx)
		if err != nil {
			return nil, fmt.Errorf("state redis: tls: %v", err)
		}
		opts.TLSConfig = tc
	}
	return opts, nil
}

// clientID names a Redis client in the usage pool: the same settings (and
// secrets, hashed) share one client across configs and reloads.
func (s *StateConfig) clientID(opts *redis.UniversalOptions) string {
	b, _ := json.Marshal(s)
	h := sha256.New()
	h.Write(b)
	h.Write([]byte("\x00" + strings.Join(opts.Addrs, ",") + "\x00" + opts.Username + "\x00" + opts.Password))
	return "redis:" + hex.EncodeToString(h.Sum(nil)[:16])
}

// provisionState connects the relay to its shared state, when it has one.
func (rl *Relay) provisionState(ctx caddy.Context, repl *caddy.Replacer) error {
	if rl.State == nil {
		return nil
	}
	s := rl.State
	if err := s.provision(repl); err != nil {
		return err
	}
	opts, err := s.options(ctx, repl)
	if err != nil {
		return err
	}
	id := s.clientID(opts)
	v, _, err := redisStates.LoadOrNew(id, func() (caddy.Destructor, error) {
		return newRedisState(opts, s.Prefix, time.Duration(s.Timeout), s.OnError == onErrorReject,
			rl.logger.Named("state")), nil
	})
	if err != nil {
		return err
	}
	rl.stateID = id
	rl.state = v.(*redisState)
	return nil
}

// parseState parses the state block:
//
//	state redis {
//		address  <host:port...>
//		master   <name>
//		cluster
//		username <name>
//		password <secret>
//		db       <n>
//		tls
//		tls_server_name <name>
//		tls_insecure_skip_verify
//		tls_client_auth <cert_file> <key_file>
//		tls_trusted_ca_certs <pem_files...>
//		prefix   <string>
//		timeout  <duration>
//		dial_timeout <duration>
//		on_error local|reject
//	}
func parseState(d *caddyfile.Dispenser) (*StateConfig, error) {
	s := new(StateConfig)
	if !d.Args(&s.Store) {
		return nil, d.Err("state takes the store: state redis { address <host:port> }")
	}
	if err := checkStateStore(s.Store); err != nil {
		return nil, d.Err(err.Error())
	}
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	tlsConf := func() *reverseproxy.TLSConfig {
		if s.TLS == nil {
			s.TLS = new(reverseproxy.TLSConfig)
		}
		return s.TLS
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "address", "addresses":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.ArgErr()
			}
			s.Addresses = append(s.Addresses, args...)
		case "master":
			if !d.Args(&s.Master) || d.NextArg() {
				return nil, d.ArgErr()
			}
		case "cluster":
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			s.Cluster = true
		case "username":
			if !d.Args(&s.Username) || d.NextArg() {
				return nil, d.ArgErr()
			}
		case "password":
			if !d.Args(&s.Password) || d.NextArg() {
				return nil, d.ArgErr()
			}
		case "db":
			var v string
			if !d.Args(&v) || d.NextArg() {
				return nil, d.ArgErr()
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return nil, d.Errf("db: %q is not a database number", v)
			}
			s.DB = n
		case "tls":
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			tlsConf()
		case "tls_server_name":
			if !d.Args(&tlsConf().ServerName) || d.NextArg() {
				return nil, d.ArgErr()
			}
		case "tls_insecure_skip_verify":
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			tlsConf().InsecureSkipVerify = true
		case "tls_client_auth":
			t := tlsConf()
			if !d.Args(&t.ClientCertificateFile, &t.ClientCertificateKeyFile) || d.NextArg() {
				return nil, d.ArgErr()
			}
		case "tls_trusted_ca_certs":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.ArgErr()
			}
			// The file CA pool module, as reverse_proxy's tls_trust_pool file.
			pool, err := json.Marshal(struct {
				Provider string   `json:"provider"`
				PEMFiles []string `json:"pem_files"`
			}{"file", args})
			if err != nil {
				return nil, d.Err(err.Error())
			}
			tlsConf().CARaw = pool
		case "prefix":
			if !d.Args(&s.Prefix) || d.NextArg() {
				return nil, d.ArgErr()
			}
		case "timeout":
			v, err := parseDurationArg(d)
			if err != nil {
				return nil, err
			}
			s.Timeout = v
		case "dial_timeout":
			v, err := parseDurationArg(d)
			if err != nil {
				return nil, err
			}
			s.DialTimeout = v
		case "on_error":
			if !d.Args(&s.OnError) || d.NextArg() {
				return nil, d.ArgErr()
			}
			if err := checkOnError(s.OnError); err != nil {
				return nil, d.Err(err.Error())
			}
		default:
			return nil, d.Errf("unrecognized state option '%s'", d.Val())
		}
	}
	return s, nil
}
