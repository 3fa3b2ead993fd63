package openairelay

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// The spendStore of redisState. A client's spend is a hash,
// {prefix}:spend:<client id> (day, spent_day, month, spent_month, total);
// the estimates of its requests in flight are members of
// {prefix}:spendres:<client id> scored by their expiry (so that an instance
// that dies gives them back) with their amounts in {prefix}:spendamt:<client id>.
// The clientState mirrors the spend from every reply.

// spendResTTL is how long a budget reservation outlives its instance.
const spendResTTL = 15 * time.Minute

// reserveSpendScript admits a request against the budget as
// clientState.reserveSpend does in memory. KEYS: spend, spendres, spendamt.
// ARGV: reservation id, usd, budget, period, day, month, ttl ms. Reply:
// ok, spent_day, spent_month, total (the amounts as strings).
var reserveSpendScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, rid in ipairs(expired) do redis.call('HDEL', KEYS[3], rid) end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) end
local reserved = 0
for _, v in ipairs(redis.call('HVALS', KEYS[3])) do reserved = reserved + tonumber(v) end
local s = redis.call('HMGET', KEYS[1], 'day', 'spent_day', 'month', 'spent_month', 'total')
local day = 0
if s[1] == ARGV[5] then day = tonumber(s[2] or '0') end
local month = 0
if s[3] == ARGV[6] then month = tonumber(s[4] or '0') end
local spent = month
if ARGV[4] == 'daily' then spent = day end
local ok = 0
if spent + reserved < tonumber(ARGV[3]) then
	ok = 1
	local ttl = tonumber(ARGV[7])
	redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
	redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
	redis.call('PEXPIRE', KEYS[2], ttl)
	redis.call('PEXPIRE', KEYS[3], ttl)
end
return {ok, tostring(day), tostring(month), tostring(tonumber(s[5] or '0'))}
`)

// addSpendScript adds usd to the day's and the month's spend, starting a
// new period where day or month changed. KEYS: spend. ARGV: usd, day,
// month. Reply: spent_day, spent_month, total.
var addSpendScript = redis.NewScript(`
local s = redis.call('HMGET', KEYS[1], 'day', 'month')
if s[1] ~= ARGV[2] then redis.call('HSET', KEYS[1], 'day', ARGV[2], 'spent_day', 0) end
if s[2] ~= ARGV[3] then redis.call('HSET', KEYS[1], 'month', ARGV[3], 'spent_month', 0) end
local d = redis.call('HINCRBYFLOAT', KEYS[1], 'spent_day', ARGV[1])
local m = redis.call('HINCRBYFLOAT', KEYS[1], 'spent_month', ARGV[1])
local total = redis.call('HINCRBYFLOAT', KEYS[1], 'total', ARGV[1])
redis.call('PEXPIRE', KEYS[1], 40 * 86400 * 1000)
return {d, m, total}
`)

// spendSeq numbers budget reservations within the instance.
var spendSeq atomic.Uint64

func (rs *redisState) reserveSpend(cs *clientState, now time.Time, period string, budget, usd float64) (spendHold, bool) {
	if rs.down.Load() {
		return "", cs.reserveSpend(now, period, rs.localBudget(cs, period, now, budget), usd)
	}
	id := cs.describeID()
	rid := rs.instance + "." + strconv.FormatUint(spendSeq.Add(1), 36)
	day, month := periodOf("daily", now), periodOf("monthly", now)
	var reply []any
	err := rs.call(func(ctx context.Context) error {
		v, err := reserveSpendScript.Run(ctx, rs.client,
			[]string{rs.key("spend", id), rs.key("spendres", id), rs.key("spendamt", id)},
			rid, ftoa(usd), ftoa(budget), period, day, month, spendResTTL.Milliseconds()).Slice()
		reply = v
		return err
	})
	if err == nil && len(reply) != 4 {
		err = fmt.Errorf("reserve spend: unexpected reply %v", reply)
	}
	if err != nil {
		rs.failed(err)
		return "", cs.reserveSpend(now, period, rs.localBudget(cs, period, now, budget), usd)
	}
	cs.mirrorSpend(day, parseFloat(reply[1]), month, parseFloat(reply[2]), parseFloat(reply[3]))
	if ok, _ := reply[0].(int64); ok != 1 {
		return "", false
	}
	return spendHold(rid), true
}

// localBudget is this instance's share, in local mode, of what was left of
// the budget when Redis stopped answering.
func (rs *redisState) localBudget(cs *clientState, period string, now time.Time, budget float64) float64 {
	n := float64(max(rs.alive.Load(), 1))
	rs.mu.Lock()
	defer rs.mu.Unlock()
	at, ok := rs.spendAt[cs]
	if !ok {
		at = [2]float64{cs.spent("daily", now), cs.spent("monthly", now)}
		if rs.spendAt != nil {
			rs.spendAt[cs] = at
		}
	}
	spent := at[1]
	if period == "daily" {
		spent = at[0]
	}
	return spent + max(budget-spent, 0)/n
}

func (rs *redisState) releaseSpend(cs *clientState, h spendHold, usd float64) {
	if h == "" {
		cs.releaseSpend(usd)
		return
	}
	id := cs.describeID()
	rs.later(func(ctx context.Context) {
		_, err := rs.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.ZRem(ctx, rs.key("spendres", id), string(h))
			p.HDel(ctx, rs.key("spendamt", id), string(h))
			return nil
		})
		if err != nil {
			rs.logger.Debug("could not release a budget reservation in Redis (it expires)", zap.Error(err))
		}
	})
}

func (rs *redisState) addSpend(cs *clientState, now time.Time, usd float64) {
	if rs.down.Load() {
		cs.addSpend(now, usd)
		return
	}
	id := cs.describeID()
	day, month := periodOf("daily", now), periodOf("monthly", now)
	// The mirror counts it at once, so that the client's next request here
	// sees it; Redis's reply then replaces it with everyone's.
	cs.addSpend(now, usd)
	rs.later(func(ctx context.Context) {
		v, err := addSpendScript.Run(ctx, rs.client, []string{rs.key("spend", id)}, ftoa(usd), day, month).Slice()
		if err == nil && len(v) != 3 {
			err = fmt.Errorf("add spend: unexpected reply %v", v)
		}
		if err != nil {
			rs.logger.Warn("could not add spend in Redis", zap.String("client", cs.describeName()), zap.Error(err))
			rs.failed(err)
			return
		}
		cs.mirrorSpend(day, parseFloat(v[0]), month, parseFloat(v[1]), parseFloat(v[2]))
	})
}

func (cs *clientState) describeID() string {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.id
}

func (cs *clientState) describeName() string {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.name
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func parseFloat(v any) float64 {
	s, _ := v.(string)
	f, _ := strconv.ParseFloat(s, 64)
	return f
}
