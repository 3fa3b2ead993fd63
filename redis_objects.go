package openairelay

import (
	"context"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// redisObjects is the objectStore of redisState: the records are written
// through to Redis, as {prefix}:obj:<object id> hashes (key, owner,
// created, models), so that an object created through one instance is its
// creator's on every instance. The process's own table (objectOwners)
// answers first; a record it lacks is read from Redis and kept.
type redisObjects struct {
	rs    *redisState
	local *objectTable
}

// objectTTL is how long Redis keeps a record after it was last read.
const objectTTL = 90 * 24 * time.Hour

// rememberScript records an object unless it is recorded: the first key
// and client that made it are its creators. KEYS: the record. ARGV: key,
// owner, created, ttl ms.
var rememberScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'key', ARGV[1], 'owner', ARGV[2], 'created', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
`)

// remember is written before the answer that names the object reaches the
// client, so that the client's next request, on any instance, finds it.
func (o *redisObjects) remember(id, key, owner string, created time.Time) {
	o.local.remember(id, key, owner, created)
	if _, ok := o.local.get(id); !ok || o.rs.down.Load() {
		return // not a kind of object the relay keeps
	}
	err := o.rs.call(func(ctx context.Context) error {
		return rememberScript.Run(ctx, o.rs.client, []string{o.rs.key("obj", id)}, key, owner, created.Unix(), objectTTL.Milliseconds()).Err()
	})
	if err != nil {
		o.rs.logger.Warn("could not record an object's owner in Redis", zap.Error(err))
		o.rs.failed(err)
	}
}

func (o *redisObjects) setModels(id string, models []string) {
	o.local.setModels(id, models)
	if o.rs.down.Load() {
		return
	}
	joined := strings.Join(models, "\n")
	err := o.rs.call(func(ctx context.Context) error {
		return o.rs.client.HSet(ctx, o.rs.key("obj", id), "models", joined).Err()
	})
	o.rs.failed(err)
}

func (o *redisObjects) forget(id string) {
	o.local.forget(id)
	if o.rs.down.Load() {
		return
	}
	o.rs.later(func(ctx context.Context) {
		if err := o.rs.client.Del(ctx, o.rs.key("obj", id)).Err(); err != nil {
			o.rs.logger.Debug("could not forget an object in Redis", zap.Error(err))
		}
	})
}

func (o *redisObjects) get(id string) (objectRecord, bool) {
	if rec, ok := o.local.get(id); ok {
		return rec, true
	}
	if o.rs.down.Load() {
		return objectRecord{}, false
	}
	var f map[string]string
	err := o.rs.call(func(ctx context.Context) (err error) {
		key := o.rs.key("obj", id)
		f, err = o.rs.client.HGetAll(ctx, key).Result()
		if err == nil && len(f) > 0 {
			o.rs.client.PExpire(ctx, key, objectTTL)
		}
		return err
	})
	if err != nil {
		o.rs.failed(err)
		return objectRecord{}, false
	}
	if f["owner"] == "" {
		return objectRecord{}, false
	}
	o.local.remember(id, f["key"], f["owner"], time.Unix(atoi64(f["created"]), 0))
	if m := f["models"]; m != "" {
		o.local.setModels(id, strings.Split(m, "\n"))
	}
	return o.local.get(id)
}

func (o *redisObjects) len() int                   { return o.local.len() }
func (o *redisObjects) snapshot() *objectsSnapshot { return o.local.snapshot() }
func (o *redisObjects) restore(s *objectsSnapshot) { o.local.restore(s) }

var _ objectStore = (*redisObjects)(nil)
