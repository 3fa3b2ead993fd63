package cache

import (
	"context"
	"encoding/binary"
	"sync"
	"time"
)

// Memory is an in-process Store: a least-recently-used cache bounded by bytes, with a
// TTL per entry. It is split into shards chosen by key, each with its own lock and its
// own share of the byte bound, so that concurrent requests rarely wait on each other;
// every operation is O(1). The recency order is therefore kept per shard, which is an
// approximation of a global LRU that costs nothing in hit ratio for uniform keys.
type Memory struct {
	shards   []memShard
	mask     uint64
	maxEntry int64
	now      func() time.Time // replaced in tests
}

// maxShards bounds the shard count; past the number of cores more shards only cut
// each shard's share of the bound.
const maxShards = 16

type memShard struct {
	mu    sync.Mutex
	items map[Key]*memNode
	root  memNode // sentinel of the recency list: root.next is the most recent
	bytes int64
	limit int64
	stats Stats // Entries and Bytes are filled in by Stats

	_ [64]byte // keep shards on separate cache lines
}

type memNode struct {
	key        Key
	e          *Entry
	size       int64
	expires    int64 // unix nanoseconds; 0 never
	prev, next *memNode
}

// NewMemory returns a memory store holding at most maxBytes (as counted by
// Entry.Size), in which no entry larger than maxEntry is stored. maxEntry <= 0 means
// maxBytes. The store uses as many shards (up to 16) as keeps each shard's share of
// maxBytes at least maxEntry, so that any admissible entry fits.
func NewMemory(maxBytes, maxEntry int64) *Memory {
	maxBytes = max(maxBytes, 0)
	if maxEntry <= 0 || maxEntry > maxBytes {
		maxEntry = maxBytes
	}
	n := maxShards
	for n > 1 && maxBytes/int64(n) < maxEntry {
		n /= 2
	}
	m := &Memory{
		shards:   make([]memShard, n),
		mask:     uint64(n - 1),
		maxEntry: maxEntry,
		now:      time.Now,
	}
	for i := range m.shards {
		s := &m.shards[i]
		s.items = make(map[Key]*memNode)
		s.root.next, s.root.prev = &s.root, &s.root
		s.limit = maxBytes / int64(n)
	}
	return m
}

func (m *Memory) shard(k Key) *memShard {
	// Keys are SHA-256 digests: any eight bytes are uniformly distributed.
	return &m.shards[binary.LittleEndian.Uint64(k[:8])&m.mask]
}

// Get returns the live entry for k and marks it most recently used.
func (m *Memory) Get(_ context.Context, k Key) (*Entry, bool) {
	now := m.now().UnixNano()
	s := m.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.items[k]
	if n == nil {
		s.stats.Misses++
		return nil, false
	}
	if n.expires != 0 && now >= n.expires {
		s.remove(n)
		s.stats.Expired++
		s.stats.Misses++
		return nil, false
	}
	s.unlink(n)
	s.pushFront(n)
	s.stats.Hits++
	return n.e, true
}

// Set stores e under k for ttl (ttl <= 0: until evicted) and evicts the least recently
// used entries of its shard as needed. An entry larger than maxEntry is not stored,
// and the older entry for k is removed, since it is no longer the latest answer. A
// zero e.Stored is taken as now, on a copy of e.
func (m *Memory) Set(_ context.Context, k Key, e *Entry, ttl time.Duration) {
	now := m.now()
	if e.Stored.IsZero() {
		c := *e
		c.Stored = now
		e = &c
	}
	var expires int64
	if ttl > 0 {
		expires = now.Add(ttl).UnixNano()
	}
	size := e.Size()
	s := m.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.items[k]
	if size > m.maxEntry || size > s.limit {
		if n != nil {
			s.remove(n)
		}
		return
	}
	if n != nil {
		s.unlink(n)
		s.bytes += size - n.size
		n.e, n.size, n.expires = e, size, expires
	} else {
		n = &memNode{key: k, e: e, size: size, expires: expires}
		s.items[k] = n
		s.bytes += size
	}
	s.pushFront(n)
	nowNano := now.UnixNano()
	for s.bytes > s.limit {
		old := s.root.prev
		s.remove(old)
		if old.expires != 0 && nowNano >= old.expires {
			s.stats.Expired++
		} else {
			s.stats.Evictions++
		}
	}
}

// Delete removes the entry for k, if any.
func (m *Memory) Delete(_ context.Context, k Key) {
	s := m.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.items[k]; n != nil {
		s.remove(n)
	}
}

// Purge removes every entry. Counters other than Entries and Bytes are kept.
func (m *Memory) Purge(_ context.Context) {
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		clear(s.items)
		s.root.next, s.root.prev = &s.root, &s.root
		s.bytes = 0
		s.mu.Unlock()
	}
}

// Stats returns the store's counters summed over its shards.
func (m *Memory) Stats() Stats {
	var t Stats
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		t.Entries += int64(len(s.items))
		t.Bytes += s.bytes
		t.Hits += s.stats.Hits
		t.Misses += s.stats.Misses
		t.Evictions += s.stats.Evictions
		t.Expired += s.stats.Expired
		s.mu.Unlock()
	}
	return t
}

func (s *memShard) pushFront(n *memNode) {
	n.prev, n.next = &s.root, s.root.next
	n.next.prev = n
	s.root.next = n
}

func (s *memShard) unlink(n *memNode) {
	n.prev.next, n.next.prev = n.next, n.prev
	n.prev, n.next = nil, nil
}

func (s *memShard) remove(n *memNode) {
	s.unlink(n)
	delete(s.items, n.key)
	s.bytes -= n.size
}

var _ Store = (*Memory)(nil)
