package openairelay

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// The healthStore of redisState. Each key's health is a hash,
// {prefix}:health:<pool id>, written by the instance that changed it and
// announced on the channel {prefix}:health (the message is the pool id);
// every instance applies it to its keyState, and reads all of them every
// healthRefresh in case a message was lost. One instance probes a retired
// key: the one that claims {prefix}:probe:<pool id> (SET NX PX).

// trackedKey is a key whose health this instance mirrors.
type trackedKey struct {
	ks   *keyState
	refs int
}

// keyHealth is what instances share of a key's health.
type keyHealth struct {
	reason    string
	retiredAt time.Time
	nextProbe time.Time
	backoff   time.Duration
	manual    bool
}

// health returns the key's shared health.
func (ks *keyState) health() keyHealth {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return keyHealth{reason: ks.retiredReason, retiredAt: ks.retiredAt, nextProbe: ks.nextProbe, backoff: ks.probeBackoff, manual: ks.manual}
}

// setHealth replaces the key's health by another instance's.
func (ks *keyState) setHealth(h keyHealth) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.retiredReason, ks.retiredAt, ks.nextProbe, ks.probeBackoff, ks.manual = h.reason, h.retiredAt, h.nextProbe, h.backoff, h.manual
}

// endProbe gives up a probe claimed by probeDue that another instance makes.
func (ks *keyState) endProbe() {
	ks.mu.Lock()
	ks.probing = false
	ks.mu.Unlock()
}

func (rs *redisState) track(poolID string, ks *keyState) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	t := rs.keys[poolID]
	if t == nil {
		t = &trackedKey{ks: ks}
		rs.keys[poolID] = t
	}
	t.ks = ks
	t.refs++
}

func (rs *redisState) untrack(poolID string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if t := rs.keys[poolID]; t != nil {
		if t.refs--; t.refs <= 0 {
			delete(rs.keys, poolID)
		}
	}
}

// poolIDOf is the pool id of a key state.
func (rs *redisState) poolIDOf(ks *keyState) (string, bool) {
	id := ks.info().poolID
	return id, id != ""
}

func (rs *redisState) retire(ks *keyState, reason string, now time.Time, firstProbe time.Duration) bool {
	newly := ks.retire(reason, now, firstProbe)
	rs.publishHealth(ks)
	return newly
}

func (rs *redisState) retireManually(ks *keyState, now time.Time) bool {
	newly := ks.retireManually(now)
	rs.publishHealth(ks)
	return newly
}

func (rs *redisState) restoreManually(ks *keyState) bool {
	was := ks.restoreManually()
	rs.publishHealth(ks)
	return was
}

// probeDue claims the probe for this instance: the others see the claim
// and wait for the result.
func (rs *redisState) probeDue(ks *keyState, now time.Time) bool {
	if !ks.probeDue(now) {
		return false
	}
	if rs.down.Load() {
		return true
	}
	id, ok := rs.poolIDOf(ks)
	if !ok {
		return true
	}
	hold := max(ks.health().backoff, 30*time.Second)
	var claimed bool
	err := rs.call(func(ctx context.Context) (err error) {
		claimed, err = rs.client.SetNX(ctx, rs.key("probe", id), rs.instance, hold).Result()
		return err
	})
	if err != nil {
		rs.failed(err)
		return true
	}
	if !claimed {
		ks.endProbe()
	}
	return claimed
}

func (rs *redisState) probed(ks *keyState, ok bool, now time.Time) bool {
	restored := ks.probed(ok, now)
	rs.publishHealth(ks)
	return restored
}

// publishHealth writes the key's health and announces it, before the
// caller goes on: another instance asked right after (the admin API, a
// request) sees it. Health changes are rare; the wait is one round trip.
func (rs *redisState) publishHealth(ks *keyState) {
	id, ok := rs.poolIDOf(ks)
	if !ok || rs.down.Load() {
		return
	}
	h := ks.health()
	err := rs.call(func(ctx context.Context) error {
		_, err := rs.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
			key := rs.key("health", id)
			p.HSet(ctx, key, "reason", h.reason, "retired_at", unixMilli(h.retiredAt),
				"next_probe", unixMilli(h.nextProbe), "backoff", h.backoff.Milliseconds(), "manual", boolInt(h.manual))
			p.Publish(ctx, rs.tag+":health", id)
			return nil
		})
		return err
	})
	if err != nil {
		rs.logger.Warn("could not share a key's health in Redis", zap.Error(err))
		rs.failed(err)
	}
}

// subscriber applies the health other instances announce.
func (rs *redisState) subscriber(ctx context.Context) {
	defer rs.done.Done()
	sub := rs.client.Subscribe(ctx, rs.tag+":health")
	defer sub.Close()
	ch := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-ch:
			if !ok {
				return
			}
			rs.later(func(ctx context.Context) { rs.readHealth(ctx, []string{msg.Payload}) })
		}
	}
}

// refreshHealth reads every tracked key's health.
func (rs *redisState) refreshHealth(ctx context.Context) bool {
	rs.mu.Lock()
	ids := make([]string, 0, len(rs.keys))
	for id := range rs.keys {
		ids = append(ids, id)
	}
	rs.mu.Unlock()
	c, cancel := context.WithTimeout(ctx, 10*rs.timeout)
	defer cancel()
	return rs.readHealth(c, ids)
}

// readHealth reads the health of the keys ids and applies it.
func (rs *redisState) readHealth(ctx context.Context, ids []string) bool {
	if len(ids) == 0 {
		return true
	}
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	_, err := rs.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, rs.key("health", id))
		}
		return nil
	})
	if err != nil {
		if ctx.Err() == nil {
			rs.failed(err)
		}
		return false
	}
	for i, id := range ids {
		f := cmds[i].Val()
		if len(f) == 0 {
			continue // no instance changed its health: as it is here
		}
		rs.mu.Lock()
		t := rs.keys[id]
		rs.mu.Unlock()
		if t == nil {
			continue
		}
		was := t.ks.retired()
		t.ks.setHealth(keyHealth{
			reason:    f["reason"],
			retiredAt: fromUnixMilli(f["retired_at"]),
			nextProbe: fromUnixMilli(f["next_probe"]),
			backoff:   time.Duration(atoi64(f["backoff"])) * time.Millisecond,
			manual:    f["manual"] == "1",
		})
		if was && !t.ks.retired() {
			capacityReleased()
		}
	}
	return true
}

func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromUnixMilli(s string) time.Time {
	ms := atoi64(s)
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

func atoi64(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
