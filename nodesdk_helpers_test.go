package openairelay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// The official Node SDK's WebSocket clients, run by the tests as Node
// scripts in testdata/node (realtime.mjs, responses_ws.mjs; see lib.mjs for
// their settings). The packages are pinned in its package-lock.json and
// installed once per test binary with `npm ci`. Without node the tests skip,
// except under CI, where .ci/run installs it and a missing node fails.

var (
	nodeOnce sync.Once
	nodeBin  string
	nodeErr  error
)

const nodeDir = "testdata/node"

// nodeSDK returns the node binary with testdata/node's packages installed.
func nodeSDK(t *testing.T) string {
	t.Helper()
	nodeOnce.Do(func() {
		node, err := exec.LookPath("node")
		if err != nil {
			nodeErr = err
			return
		}
		npm, err := exec.LookPath("npm")
		if err != nil {
			nodeErr = err
			return
		}
		if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "openai", "package.json")); err != nil {
			cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
			cmd.Dir = nodeDir
			if out, err := cmd.CombinedOutput(); err != nil {
				nodeErr = &npmError{err: err, out: out}
				return
			}
		}
		nodeBin = node
	})
	if nodeErr != nil {
		if _, ok := nodeErr.(*npmError); ok || os.Getenv("CI") != "" {
			t.Fatalf("the Node SDK tests need node and npm: %v", nodeErr)
		}
		t.Skipf("no node to run the Node SDK with: %v", nodeErr)
	}
	return nodeBin
}

type npmError struct {
	err error
	out []byte
}

func (e *npmError) Error() string { return "npm ci: " + e.err.Error() + "\n" + string(e.out) }

// nodeResult is what a script prints.
type nodeResult struct {
	OK        bool          `json:"ok"`
	Error     string        `json:"error"`
	Transport string        `json:"transport"`
	Model     string        `json:"model"`
	Sessions  []nodeSession `json:"sessions"`
}

type nodeSession struct {
	Opened      bool             `json:"opened"`
	Subprotocol string           `json:"subprotocol"`
	Events      []string         `json:"events"`
	CloseCode   int              `json:"closeCode"`
	CloseReason string           `json:"closeReason"`
	Handshake   *nodeHandshake   `json:"handshake"`
	Texts       []string         `json:"texts"`
	Usage       []nodeUsage      `json:"usage"`
	ResponseIDs []string         `json:"responseIds"`
	Statuses    []string         `json:"statuses"`
	Errors      []nodeErrorEvent `json:"errors"`
	Failures    []string         `json:"failures"`
}

type nodeHandshake struct {
	Status  int            `json:"status"`
	Headers map[string]any `json:"headers"`
	Body    string         `json:"body"`
}

// nodeUsage holds both APIs' usage: Realtime's response.done and the
// Responses API's response.completed.
type nodeUsage struct {
	TotalTokens       int `json:"total_tokens"`
	InputTokens       int `json:"input_tokens"`
	OutputTokens      int `json:"output_tokens"`
	InputTokenDetails *struct {
		CachedTokens int `json:"cached_tokens"`
		TextTokens   int `json:"text_tokens"`
		AudioTokens  int `json:"audio_tokens"`
	} `json:"input_token_details"`
	InputTokensDetails *struct {
		CachedTokens     int  `json:"cached_tokens"`
		CacheWriteTokens *int `json:"cache_write_tokens"`
	} `json:"input_tokens_details"`
}

type nodeErrorEvent struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// text is the session's text deltas joined.
func (s nodeSession) text() string {
	var b bytes.Buffer
	for _, t := range s.Texts {
		b.WriteString(t)
	}
	return b.String()
}

// runNode runs testdata/node/<script> with env added to the environment and
// returns what it printed; a script that fails or prints no result fails
// the test, with its output.
func runNode(t *testing.T, ctx context.Context, script string, env map[string]string) nodeResult {
	t.Helper()
	nodeSDK(t)
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	cmd := nodeCommand(ctx, script, env)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var res nodeResult
	if jerr := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &res); jerr != nil {
		t.Fatalf("node %s: %v (exit: %v)\nstdout: %.2000s\nstderr: %.2000s", script, jerr, err, stdout.String(), stderr.String())
	}
	if err != nil || !res.OK {
		t.Fatalf("node %s failed (exit: %v): %s\nstderr: %.2000s", script, err, res.Error, stderr.String())
	}
	return res
}

// nodeCommand is the command running testdata/node/<script> with env added
// to the environment (nodeSDK has found node).
func nodeCommand(ctx context.Context, script string, env map[string]string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, nodeBin, script)
	cmd.Dir = nodeDir
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}
