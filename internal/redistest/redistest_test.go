package redistest

import (
	"strings"
	"testing"
)

func TestStartRestart(t *testing.T) {
	s := Start(t)
	if _, err := Do(s.Addr(), "SET k v"); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	if got, err := Do(s.Addr(), "EXISTS k"); err != nil || got != "0" {
		t.Fatalf("EXISTS after Restart = %q, %v; want 0: a restarted server starts empty", got, err)
	}
	s.Stop()
	if _, err := Do(s.Addr(), "PING"); err == nil {
		t.Fatal("PING answered after Stop")
	}
	s.Stop() // twice is fine
}

func TestStartCluster(t *testing.T) {
	addrs := StartCluster(t, 3)
	if len(addrs) != 3 {
		t.Fatalf("%d addresses, want 3", len(addrs))
	}
	info, err := Do(addrs[0], "CLUSTER INFO")
	if err != nil || !strings.Contains(info, "cluster_known_nodes:3") {
		t.Fatalf("CLUSTER INFO = %q, %v", info, err)
	}
}
