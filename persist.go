package openairelay

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddyrelay/openairelay/internal/limit"
)

// What survives a restart: the daily counters of keys, limit groups and
// clients (so RPD and TPD hold across a restart on the same UTC day), which
// keys are retired and why (so a dead key is not tried again at once), and
// what clients spent this day and month (for budgets).
// They are written as a JSON snapshot in Caddy's data directory every
// snapshotInterval and when a config is unloaded (a reload or a stop), and
// read at the first provision of the process. Secrets are not in it: keys are
// named by the upstream URL and a hash.

const snapshotInterval = 30 * time.Second

// snapshotEvery is the writer's interval, snapshotInterval but in tests.
var snapshotEvery atomic.Int64

func init() { snapshotEvery.Store(int64(snapshotInterval)) }

// snapshot is the file's content.
type snapshot struct {
	Version  int                         `json:"version"`
	Saved    time.Time                   `json:"saved"`
	Retired  map[string]retiredSnapshot  `json:"retired,omitempty"`
	Counters map[string]limit.DailyState `json:"counters,omitempty"`
	Spend    map[string]spendSnapshot    `json:"spend,omitempty"`
	// Objects are the stored objects' creating keys and owners (objects.go).
	Objects *objectsSnapshot `json:"objects,omitempty"`
}

type spendSnapshot struct {
	Day        string  `json:"day"`
	SpentDay   float64 `json:"spent_day"`
	Month      string  `json:"month"`
	SpentMonth float64 `json:"spent_month"`
}

// restoreSpend applies a client's saved spend to its state just created.
func restoreSpend(id string, cs *clientState) {
	persisted.mu.Lock()
	sp, ok := persisted.restore.Spend[id]
	delete(persisted.restore.Spend, id)
	persisted.mu.Unlock()
	if !ok {
		return
	}
	cs.mu.Lock()
	cs.spendDay, cs.spentDay, cs.spendMonth, cs.spentMonth = sp.Day, sp.SpentDay, sp.Month, sp.SpentMonth
	cs.mu.Unlock()
}

type retiredSnapshot struct {
	Reason       string        `json:"reason"`
	At           time.Time     `json:"at"`
	ProbeBackoff time.Duration `json:"probe_backoff"`
	Manual       bool          `json:"manual,omitempty"`
}

func snapshotPath() string {
	return filepath.Join(caddy.AppDataDir(), "openai_relay", "state.json")
}

// persisted is the snapshot read at start, applied to each key and limiter
// as it is created, and the writer's state.
var persisted struct {
	mu      sync.Mutex
	loaded  bool
	restore snapshot
	configs int    // configs provisioned and not yet cleaned up
	stop    func() // ends the periodic writer; nil when none runs
}

// loadSnapshot reads the snapshot once per process.
func loadSnapshot(logger *zap.Logger) {
	persisted.mu.Lock()
	defer persisted.mu.Unlock()
	if persisted.loaded {
		return
	}
	persisted.loaded = true
	data, err := os.ReadFile(snapshotPath())
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err == nil {
		err = json.Unmarshal(data, &persisted.restore)
	}
	if err != nil && logger != nil {
		logger.Warn("could not read the saved relay state; starting afresh", zap.String("file", snapshotPath()), zap.Error(err))
	}
	objectOwners.restore(persisted.restore.Objects)
	persisted.restore.Objects = nil
}

// restoreKey applies the saved retirement of a key whose state was just
// created.
func restoreKey(poolID string, ks *keyState, probeBackoff time.Duration) {
	persisted.mu.Lock()
	r, ok := persisted.restore.Retired[poolID]
	delete(persisted.restore.Retired, poolID) // applied once: later state is live
	persisted.mu.Unlock()
	if !ok {
		return
	}
	if r.Reason == "" {
		return // not a retirement: a damaged entry retires nothing
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.retiredReason, ks.retiredAt, ks.manual = r.Reason, r.At, r.Manual
	// A damaged or hand-edited backoff must not keep the key from its
	// probes for longer than the longest backoff.
	ks.probeBackoff = min(max(r.ProbeBackoff, probeBackoff), maxProbeDelay)
	ks.nextProbe = time.Now().Add(ks.probeBackoff)
}

// restoreCounters applies saved daily counters to a limiter just created.
func restoreCounters(id string, l *limit.Limiter) {
	persisted.mu.Lock()
	st, ok := persisted.restore.Counters[id]
	delete(persisted.restore.Counters, id)
	persisted.mu.Unlock()
	if ok {
		l.RestoreDaily(st)
	}
}

// takeSnapshot gathers the state of everything in use.
func takeSnapshot() snapshot {
	s := snapshot{Version: 1, Saved: time.Now().UTC(),
		Retired: make(map[string]retiredSnapshot), Counters: make(map[string]limit.DailyState)}
	keyStates.Range(func(k, v any) bool {
		ks := v.(*keyState)
		ks.mu.Lock()
		if ks.retiredReason != "" {
			s.Retired[k.(string)] = retiredSnapshot{Reason: ks.retiredReason, At: ks.retiredAt,
				ProbeBackoff: ks.probeBackoff, Manual: ks.manual}
		}
		ks.mu.Unlock()
		return true
	})
	limiterStates.Range(func(k, v any) bool {
		if st := v.(sharedLimiter).DailySnapshot(); st.Requests > 0 || st.Tokens > 0 {
			s.Counters[k.(string)] = st
		}
		return true
	})
	s.Spend = make(map[string]spendSnapshot)
	clientStates.Range(func(k, v any) bool {
		cs := v.(*clientState)
		cs.mu.Lock()
		if cs.spentDay > 0 || cs.spentMonth > 0 {
			s.Spend[k.(string)] = spendSnapshot{Day: cs.spendDay, SpentDay: cs.spentDay, Month: cs.spendMonth, SpentMonth: cs.spentMonth}
		}
		cs.mu.Unlock()
		return true
	})
	s.Objects = objectOwners.snapshot()
	return s
}

// saveSnapshot writes the snapshot atomically (a temporary file renamed).
func saveSnapshot() error {
	data, err := json.MarshalIndent(takeSnapshot(), "", "\t")
	if err != nil {
		return err
	}
	path := snapshotPath()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".state-*.json")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(data)
	// On disk before the rename: a crash must leave the old snapshot or
	// the new one, never an empty file under the real name.
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// startSnapshots counts a config that holds state and starts the periodic
// writer when it is the first. The writer belongs to the process, not to a
// config: a reload provisions the new config before it cleans up the old
// one, so a writer tied to either config's context would stop with the old
// one. It runs with a context of its own while some config is loaded, and
// stopSnapshots ends it when the last one is unloaded (waiting for a write
// in progress, so that the final snapshot of Cleanup is the last word).
func startSnapshots() {
	persisted.mu.Lock()
	defer persisted.mu.Unlock()
	persisted.configs++
	if persisted.stop != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	persisted.stop = func() { cancel(); <-done }
	go writeSnapshots(ctx, time.Duration(snapshotEvery.Load()), done)
}

// writeSnapshots saves the snapshot every interval until ctx is done.
func writeSnapshots(ctx context.Context, interval time.Duration, done chan<- struct{}) {
	defer close(done)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		if err := saveSnapshot(); err != nil {
			caddy.Log().Named("openai_relay").Warn("could not save the relay state", zap.String("file", snapshotPath()), zap.Error(err))
		}
	}
}

// stopSnapshots counts a config unloaded, and stops the writer with the last.
func stopSnapshots() {
	persisted.mu.Lock()
	persisted.configs = max(persisted.configs-1, 0)
	var stop func()
	if persisted.configs == 0 {
		stop, persisted.stop = persisted.stop, nil
	}
	persisted.mu.Unlock()
	if stop != nil {
		stop()
	}
}
