package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"reflect"
	"sync"
	"testing"
	"time"
)

func key(s string) Key { return sha256.Sum256([]byte(s)) }

// entryOf returns an entry whose Size is exactly size.
func entryOf(size int) *Entry {
	return &Entry{Status: 200, Body: make([]byte, size-entryOverhead), Stored: time.Unix(1, 0)}
}

// fakeClock is a settable clock for TTL tests.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestMemoryShards(t *testing.T) {
	for _, tc := range []struct {
		maxBytes, maxEntry int64
		shards             int
	}{
		{64 << 20, 1 << 20, 16},
		{10 << 20, 5 << 20, 2},
		{1000, 0, 1},
		{0, 0, 16},
	} {
		m := NewMemory(tc.maxBytes, tc.maxEntry)
		if len(m.shards) != tc.shards {
			t.Errorf("NewMemory(%d, %d): %d shards, want %d", tc.maxBytes, tc.maxEntry, len(m.shards), tc.shards)
		}
		for i := range m.shards {
			if m.shards[i].limit < m.maxEntry {
				t.Errorf("NewMemory(%d, %d): shard limit %d below max entry %d", tc.maxBytes, tc.maxEntry, m.shards[i].limit, m.maxEntry)
			}
		}
	}
}

func TestMemoryLRU(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(1000, 0) // one shard: a strict LRU
	for _, k := range []string{"a", "b", "c"} {
		m.Set(ctx, key(k), entryOf(300), 0)
	}
	if _, ok := m.Get(ctx, key("a")); !ok { // a is now the most recent
		t.Fatal("a missing")
	}
	m.Set(ctx, key("d"), entryOf(300), 0) // 1200 > 1000: evicts b, the least recent
	// In this order, so that d ends up the most recent and a the least.
	for _, c := range []struct {
		k    string
		want bool
	}{{"a", true}, {"b", false}, {"c", true}, {"d", true}} {
		if _, ok := m.Get(ctx, key(c.k)); ok != c.want {
			t.Errorf("%s present %v, want %v", c.k, ok, c.want)
		}
	}
	m.Set(ctx, key("e"), entryOf(700), 0) // needs two evictions: a, then c
	st := m.Stats()
	if want := (Stats{Entries: 2, Bytes: 1000, Hits: 4, Misses: 1, Evictions: 3}); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	for k, want := range map[string]bool{"d": true, "e": true, "a": false, "c": false} {
		if _, ok := m.Get(ctx, key(k)); ok != want {
			t.Errorf("%s present %v, want %v", k, ok, want)
		}
	}
}

func TestMemoryByteBound(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(64<<10, 4<<10)
	for i := range 1000 {
		m.Set(ctx, key(fmt.Sprint(i)), entryOf(200+i%3000), time.Hour)
		if st := m.Stats(); st.Bytes > 64<<10 {
			t.Fatalf("after %d sets: %d bytes held", i, st.Bytes)
		}
	}
	st := m.Stats()
	if st.Entries == 0 || st.Evictions == 0 {
		t.Errorf("stats %+v: expected entries and evictions", st)
	}
	var sum int64
	for i := range m.shards {
		s := &m.shards[i]
		n := 0
		for x := s.root.next; x != &s.root; x = x.next {
			sum += x.size
			n++
		}
		if n != len(s.items) {
			t.Errorf("shard %d: list has %d nodes, map %d", i, n, len(s.items))
		}
	}
	if sum != st.Bytes {
		t.Errorf("nodes hold %d bytes, stats say %d", sum, st.Bytes)
	}
}

func TestMemoryMaxEntry(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(10000, 1000)
	m.Set(ctx, key("a"), entryOf(500), 0)
	m.Set(ctx, key("b"), entryOf(1001), 0)
	if _, ok := m.Get(ctx, key("b")); ok {
		t.Error("oversized entry stored")
	}
	m.Set(ctx, key("a"), entryOf(2000), 0)
	if _, ok := m.Get(ctx, key("a")); ok {
		t.Error("an oversized replacement left the old answer in place")
	}
	if st := m.Stats(); st.Bytes != 0 || st.Entries != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestMemoryTTL(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{t: time.Unix(1000, 0)}
	m := NewMemory(1<<20, 0)
	m.now = clock.now
	m.Set(ctx, key("short"), entryOf(200), time.Minute)
	m.Set(ctx, key("long"), entryOf(200), time.Hour)
	m.Set(ctx, key("forever"), entryOf(200), 0)
	clock.t = clock.t.Add(59 * time.Second)
	if _, ok := m.Get(ctx, key("short")); !ok {
		t.Error("expired early")
	}
	clock.t = clock.t.Add(time.Second)
	if _, ok := m.Get(ctx, key("short")); ok {
		t.Error("served after its TTL")
	}
	clock.t = clock.t.Add(24 * time.Hour)
	if _, ok := m.Get(ctx, key("long")); ok {
		t.Error("served after its TTL")
	}
	if _, ok := m.Get(ctx, key("forever")); !ok {
		t.Error("entry without TTL expired")
	}
	if st := m.Stats(); st.Expired != 2 || st.Entries != 1 || st.Bytes != 200 {
		t.Errorf("stats %+v", st)
	}
}

func TestMemoryReplaceDeletePurge(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(1<<20, 0)
	m.Set(ctx, key("a"), entryOf(200), 0)
	m.Set(ctx, key("a"), entryOf(400), 0)
	if e, _ := m.Get(ctx, key("a")); e.Size() != 400 {
		t.Errorf("replacement not stored")
	}
	if st := m.Stats(); st.Entries != 1 || st.Bytes != 400 {
		t.Errorf("stats after replace %+v", st)
	}
	m.Delete(ctx, key("a"))
	m.Delete(ctx, key("nothing"))
	if st := m.Stats(); st.Entries != 0 || st.Bytes != 0 {
		t.Errorf("stats after delete %+v", st)
	}
	for i := range 100 {
		m.Set(ctx, key(fmt.Sprint(i)), entryOf(200), 0)
	}
	m.Purge(ctx)
	if st := m.Stats(); st.Entries != 0 || st.Bytes != 0 {
		t.Errorf("stats after purge %+v", st)
	}
	m.Set(ctx, key("b"), entryOf(200), 0)
	if _, ok := m.Get(ctx, key("b")); !ok {
		t.Error("store unusable after purge")
	}
}

func TestMemoryStoredDefault(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{t: time.Unix(5000, 0)}
	m := NewMemory(1<<20, 0)
	m.now = clock.now
	e := &Entry{Status: 200, Body: []byte("x")}
	m.Set(ctx, key("a"), e, 0)
	got, _ := m.Get(ctx, key("a"))
	if !got.Stored.Equal(clock.t) || !e.Stored.IsZero() {
		t.Errorf("Stored = %v (caller's %v)", got.Stored, e.Stored)
	}
	clock.t = clock.t.Add(90*time.Second + 500*time.Millisecond)
	if age := got.Age(clock.t); age != 90*time.Second {
		t.Errorf("Age = %v", age)
	}
}

func TestMemoryConcurrent(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(256<<10, 8<<10)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				k := key(fmt.Sprint(i % 300))
				switch (i + g) % 5 {
				case 0, 1:
					m.Set(ctx, k, entryOf(200+i%4000), time.Duration(i%3)*time.Second)
				case 4:
					m.Delete(ctx, k)
				default:
					if e, ok := m.Get(ctx, k); ok && e.Status != 200 {
						t.Error("bad entry")
					}
				}
				if i%500 == 0 {
					m.Stats()
				}
			}
		})
	}
	wg.Wait()
	if st := m.Stats(); st.Bytes > 256<<10 {
		t.Errorf("byte bound exceeded: %+v", st)
	}
}

func TestEntryBinary(t *testing.T) {
	for _, e := range []*Entry{
		{Status: 200, Header: http.Header{"Content-Type": {"application/json"}, "Openai-Model": {"gpt-4o-2024-08-06"}},
			Body: []byte(`{"id":"x"}`), Stored: time.Unix(1700000000, 123456789)},
		{Status: 201, Header: http.Header{}, Body: []byte("data: x\n\n"), Stream: true, Stored: time.Unix(0, 0)},
		{Status: 299, Header: http.Header{"X": {"a", "b", ""}}, Body: []byte{}, Stored: time.Unix(-5, 0)},
	} {
		b, err := e.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var got Entry
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		if !got.Stored.Equal(e.Stored) || got.Status != e.Status || got.Stream != e.Stream ||
			!bytes.Equal(got.Body, e.Body) || !reflect.DeepEqual(got.Header, e.Header) {
			t.Errorf("round trip: %+v, want %+v", got, e)
		}
		// Every truncation and a trailing byte must be refused, not half-decoded.
		for n := range len(b) {
			if err := new(Entry).UnmarshalBinary(b[:n]); err == nil {
				t.Errorf("truncated at %d of %d accepted", n, len(b))
			}
		}
		if err := new(Entry).UnmarshalBinary(append(b, 0)); err == nil {
			t.Error("trailing byte accepted")
		}
	}
}

func TestReplayHeader(t *testing.T) {
	h := http.Header{
		"Content-Type":                   {"text/event-stream; charset=utf-8"},
		"Openai-Model":                   {"gpt-4o"},
		"X-Request-Id":                   {"req_1"},
		"X-Ratelimit-Remaining-Requests": {"10"},
		"Date":                           {"now"},
	}
	got := ReplayHeader(h)
	want := http.Header{"Content-Type": {"text/event-stream; charset=utf-8"}, "Openai-Model": {"gpt-4o"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ReplayHeader = %v", got)
	}
	h["Content-Type"][0] = "changed"
	if got.Get("Content-Type") == "changed" {
		t.Error("ReplayHeader shares the values")
	}
}

func BenchmarkMemoryGetParallel(b *testing.B) {
	ctx := context.Background()
	m := NewMemory(64<<20, 1<<20)
	keys := make([]Key, 4096)
	for i := range keys {
		keys[i] = key(fmt.Sprint(i))
		m.Set(ctx, keys[i], entryOf(2048), time.Hour)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, ok := m.Get(ctx, keys[i&4095]); !ok {
				b.Error("miss")
			}
			i++
		}
	})
}

func BenchmarkMemorySetParallel(b *testing.B) {
	ctx := context.Background()
	m := NewMemory(8<<20, 1<<20) // small enough to keep evicting
	keys := make([]Key, 16384)
	for i := range keys {
		keys[i] = key(fmt.Sprint(i))
	}
	e := entryOf(2048)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			m.Set(ctx, keys[i&16383], e, time.Hour)
			i += 7
		}
	})
}
