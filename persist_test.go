package openairelay

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caddyrelay/openairelay/internal/limit"
)

// TestSnapshotRoundTrip saves retired keys and daily counters, forgets
// them as a restart would, and checks that new states take them back.
func TestSnapshotRoundTrip(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	const poolID = "https://api.example/v1#0123456789abcdef"
	ks := &keyState{}
	keyStates.LoadOrStore(poolID, ks)
	defer keyStates.Delete(poolID)
	ks.retire("401 invalid_api_key", time.Now(), time.Minute)

	lim := Limits{RPD: 100}
	l := loadLimiter("key:"+poolID, lim)
	defer limiterStates.Delete("key:" + poolID)
	for range 7 {
		r, _, ok := l.Reserve(time.Now(), 10)
		if !ok {
			t.Fatal("refused")
		}
		r.Settle(time.Now(), 10)
	}
	if err := saveSnapshot(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(snapshotPath())
	if !strings.Contains(string(data), "invalid_api_key") {
		t.Fatalf("snapshot: %s", data)
	}

	// A restart: the snapshot is read again, and new states pick it up.
	persisted.loaded = false
	persisted.restore = snapshot{}
	loadSnapshot(nil)
	fresh := &keyState{}
	restoreKey(poolID, fresh, 30*time.Second)
	if !fresh.retired() || fresh.retiredReason != "401 invalid_api_key" {
		t.Errorf("retirement not restored: %+v", fresh.retiredReason)
	}
	if fresh.probeBackoff != time.Minute {
		t.Errorf("probe backoff %v; want the saved 1m", fresh.probeBackoff)
	}
	nl := limit.NewLimiter(lim.core())
	restoreCounters("key:"+poolID, nl)
	if st := nl.Status(time.Now()); st.RequestsToday != 7 || st.TokensToday != 70 || st.RemainingRequestsToday != 93 {
		t.Errorf("counters not restored: %+v", st)
	}
	// Applied once: a key that comes back later in the same process starts
	// from its live state, not the old snapshot.
	again := &keyState{}
	restoreKey(poolID, again, time.Second)
	if again.retired() {
		t.Error("the snapshot was applied twice")
	}
}
