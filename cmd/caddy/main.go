// Command caddy builds a Caddy with the standard modules and the openai_relay
// module, so no xcaddy is needed to run the relay.
package main

import (
	_ "time/tzdata"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddyrelay/openairelay"
)

func main() {
	caddycmd.Main()
}
