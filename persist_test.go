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
	l := inMemory.load("key:"+poolID, lim)
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

// TestRestoreKeyCopesWithDamage checks that a damaged snapshot entry
// neither retires a key without a reason nor keeps it from its probes.
func TestRestoreKeyCopesWithDamage(t *testing.T) {
	persisted.mu.Lock()
	saved := persisted.restore.Retired
	persisted.restore.Retired = map[string]retiredSnapshot{
		"blank": {Reason: ""},
		"huge":  {Reason: "401 invalid_api_key", ProbeBackoff: 1 << 62},
	}
	persisted.mu.Unlock()
	defer func() {
		persisted.mu.Lock()
		persisted.restore.Retired = saved
		persisted.mu.Unlock()
	}()
	var blank, huge keyState
	restoreKey("blank", &blank, time.Second)
	if blank.retired() {
		t.Error("an entry without a reason retired the key")
	}
	restoreKey("huge", &huge, time.Second)
	if !huge.retired() || huge.probeBackoff != maxProbeDelay || time.Until(huge.nextProbe) > maxProbeDelay {
		t.Errorf("restored backoff %v, next probe in %v; want at most %v", huge.probeBackoff, time.Until(huge.nextProbe), maxProbeDelay)
	}
}
