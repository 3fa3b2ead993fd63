package openairelay

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// FuzzCaddyfile feeds arbitrary text to the openai_relay directive's parser.
// Whatever the text, UnmarshalCaddyfile must return (an error or a config)
// without panicking, and a config it accepts must survive the JSON round
// trip Caddy puts it through (the adapter's output is what Caddy loads).
//
//	go test -run '^$' -fuzz FuzzCaddyfile -fuzztime 30s .
//
// The seeds are the openai_relay blocks of examples/ and of the golden files
// in testdata/caddyfile (the part before the line of dashes).
func FuzzCaddyfile(f *testing.F) {
	for _, seed := range caddyfileSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, input string) {
		// NewTestDispenser stops the process (log.Fatal) on text the lexer
		// refuses, such as an unterminated heredoc; Caddy reports those
		// before any directive is parsed, so they are no input for this
		// parser.
		tokens, err := caddyfile.Tokenize([]byte(input), "Testfile")
		if err != nil {
			return
		}
		d := caddyfile.NewTestDispenser(input)
		if strings.Contains(input, "{$") {
			// NewTestDispenser expands {$ENV} first, which may make text
			// the lexer refuses: parse the tokens as they are instead.
			d = caddyfile.NewDispenser(tokens)
		}
		rl := new(Relay)
		if err := rl.UnmarshalCaddyfile(d); err != nil {
			if err.Error() == "" {
				t.Fatal("an error without a message")
			}
			return
		}
		first, err := json.Marshal(rl)
		if err != nil {
			t.Fatalf("an accepted config does not encode as JSON: %v", err)
		}
		var again Relay
		if err := json.Unmarshal(first, &again); err != nil {
			t.Fatalf("an accepted config does not decode from its JSON: %v\n%s", err, first)
		}
		second, err := json.Marshal(&again)
		if err != nil {
			t.Fatalf("re-encoding: %v", err)
		}
		if !bytes.Equal(first, second) {
			t.Fatalf("the config changed in a JSON round trip:\n%s\n%s", first, second)
		}
	})
}

// directiveLine is the first line of an openai_relay block, with or without
// a matcher (which Caddy's adapter takes away before the directive's parser
// runs).
var directiveLine = regexp.MustCompile(`^\s*openai_relay\b[^{]*\{\s*$`)

// caddyfileSeeds returns the openai_relay blocks of the examples and of the
// golden files, each as the directive's parser sees it, the whole files as
// they are, and a few texts at the edges of the syntax.
func caddyfileSeeds(tb testing.TB) []string {
	var files []string
	for _, glob := range []string{"examples/*Caddyfile", "testdata/caddyfile/*.caddyfiletest"} {
		m, err := filepath.Glob(glob)
		if err != nil {
			tb.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) == 0 {
		tb.Fatal("no Caddyfile to seed the fuzzer with")
	}
	var seeds []string
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			tb.Fatal(err)
		}
		text, _, _ := strings.Cut(string(data), "\n----------\n")
		seeds = append(seeds, text)
		seeds = append(seeds, relayBlocks(text)...)
	}
	seeds = append(seeds,
		"openai_relay",
		"openai_relay {",
		"openai_relay {\n}",
		"openai_relay extra {\n}",
		"openai_relay {\n\tclient\n}",
		"openai_relay {\n\tclient a {\n\t\tkey\n\t}\n}",
		"openai_relay {\n\tclient a {\n\t\tkey k\n\t\trpm -1\n\t}\n}",
		"openai_relay {\n\tupstream u {\n\t\tkey k {\n\t\t\tweight 99999999999999999999\n\t\t}\n\t}\n}",
		"openai_relay {\n\tupstream u http://[::1 {\n\t\tkey k\n\t}\n}",
		"openai_relay {\n\tupstream u {\n\t\tkey k\n\t\ttransport http {\n\t\t\tdial_timeout\n\t\t}\n\t}\n}",
		"openai_relay {\n\tupstream u {\n\t\tkey k\n\t\ttransport nosuch {\n\t\t}\n\t}\n}",
		"openai_relay {\n\tupstream u {\n\t\tkey k\n\t\theader_up ~X (unclosed\n\t}\n}",
		"openai_relay {\n\tupstream u {\n\t\tkey k\n\t\tmodel_alias a\n\t}\n}",
		"openai_relay {\n\tmax_body_size 99999999999999999999EiB\n\tretries 1\n\tretries 2\n}",
		"openai_relay {\n\tcooldown -1s\n\tmax_wait 0\n}",
		"openai_relay {\n\tclient_auth none\n\tupstream u {\n\t\tkeys_file /nonexistent\n\t}\n}",
		"openai_relay {\n\tupstream u {\n\t\tkey <<EOF\n\t\tsecret\n\t\tEOF\n\t}\n}",
		"openai_relay {\n\tupstream \"u u\" `x` {\n\t\tkey \"{env.X}\"\n\t}\n}",
		"openai_relay {\n\t}\n}\n}",
		"openai_relay {\n\tupstream u {\n\t\tkey k {\n\t\t\tlimit_group g\n\t\t\tburst 1ns\n\t\t}\n\t}\n}",
	)
	return seeds
}

// relayBlocks cuts the openai_relay blocks out of a Caddyfile, with the
// matcher taken off the directive's line.
func relayBlocks(text string) []string {
	var blocks []string
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		if !directiveLine.MatchString(lines[i]) {
			continue
		}
		block := []string{"openai_relay {"}
		depth := 1
		for j := i + 1; j < len(lines) && depth > 0; j++ {
			depth += strings.Count(lines[j], "{") - strings.Count(lines[j], "}")
			block = append(block, lines[j])
			i = j
		}
		blocks = append(blocks, strings.Join(block, "\n"))
	}
	return blocks
}

// TestCaddyfileFuzzSeeds checks that the seeds are what they claim: a block
// from every example and golden file, most of which parse.
func TestCaddyfileFuzzSeeds(t *testing.T) {
	seeds := caddyfileSeeds(t)
	parsed := 0
	for _, s := range seeds {
		if !strings.HasPrefix(s, "openai_relay {\n\t") {
			continue
		}
		if _, err := caddyfile.Tokenize([]byte(s), "Testfile"); err != nil {
			continue
		}
		if err := new(Relay).UnmarshalCaddyfile(caddyfile.NewTestDispenser(s)); err == nil {
			parsed++
		}
	}
	files, _ := filepath.Glob("examples/*Caddyfile")
	if parsed < len(files) {
		t.Errorf("only %d seeds parse; want at least one per example (%d)", parsed, len(files))
	}
}
