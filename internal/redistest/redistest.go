// Package redistest runs throw-away redis-server processes for tests: a
// single server on a free loopback port, or a small cluster. Servers keep
// nothing on disk and are stopped when the test ends.
//
// Tests that need Redis are skipped when redis-server is not on PATH, except
// in CI (the CI environment variable set), where its absence is a failure:
// CI installs it, and a silently skipped suite would prove nothing.
package redistest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// startTimeout bounds how long a server may take to answer PING, and a
// cluster to report cluster_state:ok.
const startTimeout = 15 * time.Second

// Server is one redis-server process.
type Server struct {
	t     testing.TB
	port  int
	dir   string
	extra []string

	mu   sync.Mutex
	proc *process // nil when stopped
}

// process is one run of the server.
type process struct {
	cmd    *exec.Cmd
	out    *bytes.Buffer
	exited chan struct{}
}

// binary returns the path of redis-server, skipping or failing t when there
// is none (see the package doc).
func binary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "" {
		t.Skipf("%s not on PATH: %v", name, err)
	}
	t.Fatalf("%s not on PATH, and CI is set (CI installs it): %v", name, err)
	return ""
}

// freePort returns a loopback port nobody listens on right now.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Start runs a redis-server without persistence on a free loopback port and
// waits until it answers PING. It is stopped when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t)
}

func start(t testing.TB, extra ...string) *Server {
	t.Helper()
	binary(t, "redis-server")
	s := &Server{t: t, port: freePort(t), dir: t.TempDir(), extra: extra}
	t.Cleanup(s.Stop)
	if err := s.run(); err != nil {
		t.Fatal(err)
	}
	return s
}

// Addr returns the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// run starts the process and waits for PING.
func (s *Server) run() error {
	args := append([]string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
	}, s.extra...)
	cmd := exec.Command(binary(s.t, "redis-server"), args...)
	out := new(bytes.Buffer)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting redis-server: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // reaps the process, also when Stop kills it
		close(exited)
	}()
	s.mu.Lock()
	s.proc = &process{cmd: cmd, out: out, exited: exited}
	s.mu.Unlock()
	deadline := time.Now().Add(startTimeout)
	for {
		reply, err := Do(s.Addr(), "PING")
		if err == nil && reply == "PONG" {
			return nil
		}
		select {
		case <-exited:
			s.Stop()
			return fmt.Errorf("redis-server on port %d exited: %s", s.port, out)
		default:
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("redis-server on port %d did not answer PING within %v: %v; output: %s", s.port, startTimeout, err, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server and waits for it to exit. Stopping a stopped server
// does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// Restart stops the server and starts a new, empty one on the same port, as
// a Redis that crashed and came back without its data would be.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	if err := s.run(); err != nil {
		s.t.Fatal(err)
	}
}

// Do sends one command, its arguments separated by spaces, to addr and
// returns the reply as text: a status or bulk string, an integer in
// decimal, or an error for an error reply. It is enough for PING and
// CLUSTER INFO; tests talk to Redis through a real client.
func Do(addr, command string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(command + "\r\n")); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("%s", line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", fmt.Errorf("bad bulk reply %q", line)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

// StartCluster runs n cluster-enabled servers (at least 3, the minimum of
// masters redis-cli accepts), joins them into one cluster without replicas,
// waits until every node reports cluster_state:ok, and returns their
// addresses. The nodes are stopped when the test ends.
func StartCluster(t testing.TB, n int) []string {
	t.Helper()
	cli := binary(t, "redis-cli")
	addrs := make([]string, n)
	for i := range addrs {
		// The bus port is given, not left to the default of port+10000,
		// which for an ephemeral port can lie beyond 65535 or be taken.
		addrs[i] = start(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(freePort(t))).Addr()
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v: %s", err, out)
	}
	deadline := time.Now().Add(startTimeout)
	for _, a := range addrs {
		for {
			info, err := Do(a, "CLUSTER INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster node %s not ok within %v: %v %s", a, startTimeout, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return addrs
}
