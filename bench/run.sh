#!/usr/bin/env bash
# make bench: the relay against plain Caddy reverse_proxy and against the
# upstream itself, under the same load, in one run, on 127.0.0.1 only.
#
#   bench/run.sh                 full run (10 s per measurement), writes docs/benchmarks.md
#   BENCH_QUICK=1 bench/run.sh   smoke test (2 s per measurement), leaves the doc alone
#
# It builds bench/bin/{caddy,fakeopenai,loadgen}, installs wrk from Debian if
# it is missing, and for every case starts a fresh stack:
#
#   fakeopenai -any-key          the upstream               (direct)
#   caddy + reverse_proxy        plain proxy to it          (reverse_proxy)
#   caddy + openai_relay         the relay to it            (relay)
#
# then drives the same load at each target in turn. Cases:
#   a32, a128  small non-stream chat completions, wrk, 32 and 128 connections
#   b          open loop at half of reverse_proxy's saturation (loadgen rate)
#   c          streams of 50 chunks, wrk, 32 connections
#   d          1,000 keys in the relay's pool, wrk, 128 connections
#   e          cache hits (skipped with a note while the relay rejects `cache`)
#   f          BENCH_STREAMS (10,000) chat-completion streams held open at once
#              through each proxy (loadgen streams), against a slow upstream
#              (fakeopenai -chunk-delay 1s): the proxy's VmRSS idle and with
#              all of them open, and the difference per stream (a table of
#              its own, below the first)
#   g          case a at BENCH_REDIS_CONNS (128) connections against a fourth
#              target, relay+redis: the same relay config plus `state redis`
#              on a redis-server of its own (loopback), so that reverse_proxy,
#              the relay in memory and the relay on Redis are measured in one
#              run; redis-server's CPU is reported apart (a note per row)
#   h          three relay instances (BENCH_SHARED_CONNS: 64, 32 and 32 wrk
#              connections) with the same `state redis` prefix in front of one
#              fakeopenai whose BENCH_SHARED_KEYS keys have limits
#              (BENCH_SHARED_RPM, BENCH_SHARED_TPM), all under load at once:
#              each instance's throughput and CPU, redis-server's CPU, the
#              upstream's 2xx rate in the central part of the run against the
#              pool's capacity, and its 429s (must be 0); a table of its own
#
# Cases g and h start redis-server from PATH (--save "" --appendonly no, on
# the first free port from BENCH_PORT_BASE+10) and stop it at the end of the
# case; without redis-server they are skipped with a note.
# For each target: req/s, p50/p99/p99.9, CPU seconds of the proxy process per
# 1,000 requests (utime+stime from /proc/PID/stat) and its peak RSS (VmHWM
# from /proc/PID/status, reset after the warm-up through clear_refs). The
# markdown table goes to stdout and into docs/benchmarks.md, between its
# bench markers; raw figures and logs stay in bench/results/<stamp>/.
#
# On a machine with 2 CPUs or more the load tools run on the first half of
# the CPUs and the three servers on the rest (taskset), so that the load
# generator does not take the proxies' CPU; the table says which.
#
# reverse_proxy and the relay use the same transport settings: Caddy's
# default transport, with a pool of 256 idle connections per upstream
# instead of 32, because at 32 concurrent requests or more Caddy's default
# closes and redials upstream connections all the time (thousands of sockets
# in TIME-WAIT), which then dominates the cost of both and can exhaust
# ephemeral ports. BENCH_UPSTREAM_IDLE_CONNS=0 keeps Caddy's default.
#
# Case f needs about 2 file descriptors per stream in each proxy: the script
# raises its open-file limit (and so its children's) to 65536, or to the hard
# limit when it cannot, and lowers the number of streams to what that limit
# allows (with a note in the table). Both proxies run with their admin API
# on 127.0.0.1 in case f (ports BENCH_PORT_BASE+3 and +4), so that heap and
# goroutine profiles are taken while the streams are open, after the RSS
# samples; they stay in bench/results/<stamp>/logs/f-*.
#
# Knobs (environment): BENCH_QUICK=1, BENCH_DURATION (s), BENCH_WARMUP (s),
# BENCH_CASES ("a32 a128 b c d e f"), BENCH_KEYS (relay pool for the other
# cases, default 10), BENCH_BIG_KEYS (case d, default 1000), BENCH_PORT_BASE
# (default 18180; uses it and the next two ports, four in case f), BENCH_PIN (0: no CPU
# pinning), BENCH_THREADS (wrk threads, default: the load CPUs),
# BENCH_UPSTREAM_IDLE_CONNS (default 256), BENCH_REPEAT (measure every case
# N times, targets interleaved, and report medians; default 1), BENCH_WRITE_DOC (1 to write the
# doc in quick mode, 0 to never write it), BENCH_CACHE_DIRECTIVE (the cache
# block of case e), BENCH_STREAMS (case f: streams held at once, default
# 10000), BENCH_STREAMS_CHUNK_DELAY (case f: seconds between the upstream's
# chunks, default 1), BENCH_STREAMS_OPEN_TIMEOUT (case f: seconds allowed for
# all the streams to get their first event, default 120), BENCH_STREAMS_SOURCES
# (case f: spread the load generator's connections over 127.0.0.1..N, for
# when loopback ephemeral ports run out; default 1), BENCH_REDIS_CONNS (case
# g, default 128), BENCH_REDIS_TIMEOUT (the relays' `state redis` timeout,
# default 1s: at the relay's default of 50ms, a relay saturated on a CPU it
# shares with redis-server times out on Redis now and then, and with reject
# answers 503s, which then dominate the figures), BENCH_REDIS_ON_ERROR (default reject, so
# that a relay which loses Redis shows errors instead of quietly measuring
# local mode), BENCH_SHARED_KEYS (case h, default 10), BENCH_SHARED_RPM
# (default 3000 per key), BENCH_SHARED_TPM (default 1000000 per key, so that
# RPM is the limit that binds), BENCH_SHARED_CONNS (default "64 32 32": one
# number per instance).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

QUICK=${BENCH_QUICK:-0}
if [[ $QUICK == 1 ]]; then
	DUR=${BENCH_DURATION:-2}
	WARM=${BENCH_WARMUP:-1}
	WRITE_DOC=${BENCH_WRITE_DOC:-0}
else
	DUR=${BENCH_DURATION:-10}
	WARM=${BENCH_WARMUP:-2}
	WRITE_DOC=${BENCH_WRITE_DOC:-1}
fi
CASES=${BENCH_CASES:-"a32 a128 b c d e f g h"}
REPEAT=${BENCH_REPEAT:-1}
KEYS=${BENCH_KEYS:-10}
BIG_KEYS=${BENCH_BIG_KEYS:-1000}
PORT_BASE=${BENCH_PORT_BASE:-18180}
UPSTREAM_IDLE=${BENCH_UPSTREAM_IDLE_CONNS:-256}
NCPU=$(nproc)
PIN=${BENCH_PIN:-1}
if [[ $PIN == 1 && $NCPU -ge 2 ]] && command -v taskset >/dev/null; then
	cpu_range() { if (($1 == $2)); then echo "$1"; else echo "$1-$2"; fi; }
	LOAD_CPUS=$(cpu_range 0 $((NCPU / 2 - 1)))
	SERVER_CPUS=$(cpu_range $((NCPU / 2)) $((NCPU - 1)))
	LOAD_PIN=(taskset -c "$LOAD_CPUS")
	SERVER_PIN=(taskset -c "$SERVER_CPUS")
	THREADS=${BENCH_THREADS:-$((NCPU / 2))}
else
	PIN=0
	LOAD_PIN=()
	SERVER_PIN=()
	THREADS=${BENCH_THREADS:-$NCPU}
fi
STREAM_CHUNKS=50
CACHE_DIRECTIVE=${BENCH_CACHE_DIRECTIVE:-$'cache memory {\n\t\t\tttl 1h\n\t\t}'}
STREAMS=${BENCH_STREAMS:-10000}
STREAMS_CHUNK_DELAY=${BENCH_STREAMS_CHUNK_DELAY:-1}
STREAMS_OPEN_TIMEOUT=${BENCH_STREAMS_OPEN_TIMEOUT:-120}
STREAMS_SOURCES=${BENCH_STREAMS_SOURCES:-1}
REDIS_CONNS=${BENCH_REDIS_CONNS:-128}
REDIS_TIMEOUT=${BENCH_REDIS_TIMEOUT:-1s}
REDIS_ON_ERROR=${BENCH_REDIS_ON_ERROR:-reject}
SHARED_KEYS=${BENCH_SHARED_KEYS:-10}
SHARED_RPM=${BENCH_SHARED_RPM:-3000}
SHARED_TPM=${BENCH_SHARED_TPM:-1000000}
SHARED_CONNS=${BENCH_SHARED_CONNS:-"64 32 32"}
# The upstream's streams must outlast the opening (bounded by the open
# timeout), the settling and the RSS samples; the load generator closes them
# once it has measured.
STREAMS_CHUNKS=$(awk -v t="$STREAMS_OPEN_TIMEOUT" -v d="$STREAMS_CHUNK_DELAY" 'BEGIN {c = (t + 30) / d; printf "%d", (c == int(c)) ? c : int(c) + 1}')

FAKE_PORT=$PORT_BASE
RP_PORT=$((PORT_BASE + 1))
RELAY_PORT=$((PORT_BASE + 2))
RP_ADMIN_PORT=$((PORT_BASE + 3))    # case f only
RELAY_ADMIN_PORT=$((PORT_BASE + 4)) # case f only
REDIS_RELAY_PORT=$((PORT_BASE + 5)) # case g: relay+redis; case h: the first of the instances
REDIS_PORT_FIRST=$((PORT_BASE + 10)) # cases g and h: the first port tried for redis-server
CLIENT_KEY=rk-bench-client
DIRECT_KEY=sk-bench-direct

BIN=$ROOT/bench/bin
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/bench/results/$STAMP
RESULTS=$OUT/results.tsv
STREAMS_RESULTS=$OUT/streams.tsv
SHARED_RESULTS=$OUT/shared.tsv
mkdir -p "$OUT/logs" "$OUT/xdg"
# Caddy's autosave and storage stay inside the results directory.
export XDG_CONFIG_HOME=$OUT/xdg/config XDG_DATA_HOME=$OUT/xdg/data

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# Case f holds thousands of sockets in every process: raise the open-file
# limit of this shell, and so of everything it starts, as far as it goes.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)

# ---------------------------------------------------------------- processes
PIDS=()
cleanup() {
	local pid
	for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
		wait "$pid" 2>/dev/null || true
	done
	PIDS=()
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# start NAME CMD... runs CMD in the background, logging to logs/NAME.log, and
# sets STARTED_PID.
start() {
	local name=$1
	shift
	"$@" >"$OUT/logs/$name.log" 2>&1 &
	STARTED_PID=$!
	PIDS+=("$STARTED_PID")
}

# forget PID: a process of PIDS that has ended and been waited for.
forget() {
	local pid keep=()
	for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
		[[ $pid == "$1" ]] || keep+=("$pid")
	done
	PIDS=("${keep[@]+"${keep[@]}"}")
}

stop_stack() {
	cleanup
	STACK_PIDS=()
	sleep 0.3 # let the ports go
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------- tools
ensure_wrk() {
	command -v wrk >/dev/null && return
	log "wrk not found: installing it from Debian"
	local sudo=()
	[[ $(id -u) == 0 ]] || sudo=(sudo)
	"${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq wrk >/dev/null
	command -v wrk >/dev/null || die "wrk could not be installed"
}

build() {
	log "building bench/bin/caddy, fakeopenai, loadgen"
	mkdir -p "$BIN"
	go build -o "$BIN/caddy" ./cmd/caddy
	go build -o "$BIN/fakeopenai" ./internal/fakeopenai/cmd/fakeopenai
	go build -o "$BIN/loadgen" ./bench/loadgen
}

# ---------------------------------------------------------------- measures
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
peak_rss_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
reset_peak_rss() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || true; }
CLK_TCK=$(getconf CLK_TCK)

# field NAME LINE: the value of NAME=value in LINE.
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }

row() { # case label target requests seconds rps p50 p99 p999 errors cpu_ticks rss_kb note [aux_cpu_ticks aux_name]
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
		"$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "$9" "${10}" "${11}" "$CLK_TCK" "${12}" "${13:-}" "${14:--1}" "${15:-}" >>"$RESULTS"
}

# target NAME sets URL, AUTH and PID (of the proxy process; empty for
# direct), and AUX_PID and AUX_NAME (a process the proxy depends on, whose
# CPU is measured too: redis-server for relay+redis; else empty).
target() {
	AUX_PID= AUX_NAME= AUX_LOG=
	case $1 in
	direct)
		URL=http://127.0.0.1:$FAKE_PORT/v1/chat/completions AUTH="Bearer $DIRECT_KEY" PID=
		;;
	reverse_proxy)
		URL=http://127.0.0.1:$RP_PORT/v1/chat/completions AUTH="Bearer $DIRECT_KEY" PID=$RP_PID
		;;
	relay | relay+cache)
		URL=http://127.0.0.1:$RELAY_PORT/v1/chat/completions AUTH="Bearer $CLIENT_KEY" PID=$RELAY_PID
		;;
	relay+redis)
		URL=http://127.0.0.1:$REDIS_RELAY_PORT/v1/chat/completions AUTH="Bearer $CLIENT_KEY" PID=$REDIS_RELAY_PID
		AUX_PID=$REDIS_PID AUX_NAME=redis-server AUX_LOG=$REDIS_RELAY_LOG
		;;
	esac
}

# stack_alive: whether the servers of the current stack (STACK_PIDS) still run.
STACK_PIDS=()
stack_alive() {
	local pid
	for pid in "${STACK_PIDS[@]+"${STACK_PIDS[@]}"}"; do
		kill -0 "$pid" 2>/dev/null || return 1
	done
}

# measure CASE LABEL TARGET BODYFILE MODE ARG: one warm-up and one measured
# run; MODE is wrk (ARG connections) or rate (ARG requests per second). It
# returns 2, recording nothing, when a server of the stack died meanwhile.
measure() {
	local id=$1 label=$2 tgt=$3 body=$4 mode=$5 arg=$6
	target "$tgt"
	local out="$OUT/logs/$id-$tgt-r${REP_I:-0}.out" line
	log "$label → $tgt ($mode $arg, ${WARM}s warm-up + ${DUR}s)"
	if [[ $mode == wrk ]]; then
		BENCH_BODY_FILE=$body BENCH_AUTH=$AUTH "${LOAD_PIN[@]}" wrk -t "$THREADS" -c "$arg" -d "${WARM}s" --timeout 5s \
			-s "$ROOT/bench/wrk/chat.lua" "$URL" >/dev/null 2>&1 || true
	else
		"${LOAD_PIN[@]}" "$BIN/loadgen" rate -conns 64 -url "$URL" -body-file "$body" -H "Authorization: $AUTH" \
			-rate "$arg" -duration "${WARM}s" >/dev/null 2>&1 || true
	fi
	stack_alive || return 2
	local cpu0=-1 cpu1=-1 rss=-1 aux0=-1 aux1=-1
	if [[ -n $PID ]]; then
		reset_peak_rss "$PID"
		cpu0=$(cpu_ticks "$PID")
	fi
	local lost0=0
	if [[ -n $AUX_PID ]]; then
		aux0=$(cpu_ticks "$AUX_PID")
		lost0=$(redis_losses "$AUX_LOG")
	fi
	if [[ $mode == wrk ]]; then
		BENCH_BODY_FILE=$body BENCH_AUTH=$AUTH "${LOAD_PIN[@]}" wrk -t "$THREADS" -c "$arg" -d "${DUR}s" --timeout 5s \
			-s "$ROOT/bench/wrk/chat.lua" "$URL" >"$out" 2>&1 || true
	else
		"${LOAD_PIN[@]}" "$BIN/loadgen" rate -conns 64 -url "$URL" -body-file "$body" -H "Authorization: $AUTH" \
			-rate "$arg" -duration "${DUR}s" >"$out" 2>&1 || true
	fi
	if [[ -n $PID ]]; then
		cpu1=$(cpu_ticks "$PID" 2>/dev/null) || return 2
		rss=$(peak_rss_kb "$PID" 2>/dev/null) || return 2
	fi
	if [[ -n $AUX_PID ]]; then
		aux1=$(cpu_ticks "$AUX_PID" 2>/dev/null) || return 2
	fi
	stack_alive || return 2
	line=$(grep '^RESULT' "$out") || die "no result from $mode for $tgt; see ${out#"$ROOT"/}"
	local requests seconds rps errors note=
	if [[ $mode == wrk ]]; then
		requests=$(field requests "$line")
		seconds=$(awk -v d="$(field duration_us "$line")" 'BEGIN {printf "%.3f", d / 1e6}')
		rps=$(awk -v n="$requests" -v s="$seconds" 'BEGIN {printf "%.1f", n / s}')
		errors=$(field errors "$line")
	else
		requests=$(field requests "$line")
		seconds=$(field seconds "$line")
		rps=$(field rps "$line")
		errors=$(($(field errors "$line") + $(field non2xx "$line") + $(field dropped "$line")))
		note="open loop at $arg req/s; generator lag p99 $(field sched_p99_us "$line") µs"
	fi
	local cpu=-1 aux=-1
	[[ -n $PID ]] && cpu=$((cpu1 - cpu0))
	if [[ -n $AUX_PID ]]; then
		aux=$((aux1 - aux0))
		local lost=$(($(redis_losses "$AUX_LOG") - lost0))
		((lost == 0)) || note="${note:+$note; }the relay logged losing Redis $lost times during the measurement (on_error $REDIS_ON_ERROR; see ${AUX_LOG#"$ROOT"/})"
	fi
	row "$id" "$label" "$tgt" "$requests" "$seconds" "$rps" \
		"$(field p50_us "$line")" "$(field p99_us "$line")" "$(field p999_us "$line")" \
		"$errors" "$cpu" "$rss" "$note" "$aux" "$AUX_NAME"
	log "   $rps req/s, p50 $(field p50_us "$line") µs, p99 $(field p99_us "$line") µs, errors $errors"
}

# ---------------------------------------------------------------- the stack
write_keys() { # N FILE
	awk -v n="$1" 'BEGIN { for (i = 1; i <= n; i++) printf "sk-bench-%05d\n", i }' >"$2"
}

# transport_block INDENT: the transport settings both proxies use.
transport_block() {
	((UPSTREAM_IDLE > 0)) || return 0
	printf '%stransport http {\n%s\tkeepalive_idle_conns_per_host %d\n%s}\n' "$1" "$1" "$UPSTREAM_IDLE" "$1"
}

# admin_directive [ADDR]: Caddy's admin API on ADDR, or off.
admin_directive() { if [[ -n ${1:-} ]]; then echo "admin $1"; else echo "admin off"; fi; }

write_rp_config() { # [FILE] [ADMIN_ADDR]
	cat >"${1:-$OUT/rp.Caddyfile}" <<EOF
{
	$(admin_directive "${2:-}")
	log {
		level ERROR
	}
}
http://127.0.0.1:$RP_PORT {
	reverse_proxy 127.0.0.1:$FAKE_PORT {
$(transport_block $'\t\t')
	}
}
EOF
}

# write_relay_config FILE NKEYS [CACHE] [ADMIN_ADDR] [PORT] [STATE] [KEYS_FILE]:
# STATE is a `state` block (cases g and h), KEYS_FILE a keys_file of the
# caller's (case h: keys with limits) instead of NKEYS keys without limits.
write_relay_config() {
	local file=$1 keys=$2 cache=${3:-} admin=${4:-} port=${5:-$RELAY_PORT} state=${6:-} keys_file=${7:-}
	if [[ -z $keys_file ]]; then
		keys_file=$OUT/keys-$keys.txt
		write_keys "$keys" "$keys_file"
	fi
	cat >"$file" <<EOF
{
	$(admin_directive "$admin")
	log {
		level ERROR
	}
}
http://127.0.0.1:$port {
	openai_relay {
		client bench {
			key $CLIENT_KEY
		}
		upstream fake {
			url http://127.0.0.1:$FAKE_PORT/v1
			keys_file $keys_file
$(transport_block $'\t\t\t')
		}
		${cache}
		${state}
	}
}
EOF
}

# ---------------------------------------------------------------- Redis (cases g, h)
have_redis() { command -v redis-server >/dev/null; }

# redis_cmd CMD: the first line of Redis's answer to the inline command CMD.
redis_cmd() {
	(
		exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" || exit 1
		printf '%s\r\n' "$1" >&3
		IFS= read -r -t 2 r <&3 || exit 1
		printf '%s\n' "${r%$'\r'}"
	) 2>/dev/null
}

# start_redis ID: redis-server from PATH, without persistence, on the first
# free port from REDIS_PORT_FIRST; sets REDIS_PID and REDIS_PORT and adds it
# to the stack (stop_stack ends it).
start_redis() {
	local id=$1 p=$REDIS_PORT_FIRST i
	while ! port_free "$p"; do
		p=$((p + 1))
		((p < REDIS_PORT_FIRST + 100)) || die "no free port for redis-server from $REDIS_PORT_FIRST"
	done
	REDIS_PORT=$p
	mkdir -p "$OUT/redis-$id"
	start "$id-redis" "${SERVER_PIN[@]}" redis-server --save "" --appendonly no --port "$p" --bind 127.0.0.1 --dir "$OUT/redis-$id"
	REDIS_PID=$STARTED_PID
	STACK_PIDS+=("$REDIS_PID")
	for ((i = 0; i < 100; i++)); do
		[[ $(redis_cmd PING) == +PONG ]] && return
		kill -0 "$REDIS_PID" 2>/dev/null || break
		sleep 0.1
	done
	die "redis-server does not answer on port $p; see ${OUT#"$ROOT"/}/logs/$id-redis.log"
}

# redis_commands: Redis's total_commands_processed (INFO stats).
redis_commands() {
	(
		exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" || exit 1
		printf 'INFO stats\r\nQUIT\r\n' >&3
		timeout 2 cat <&3
	) 2>/dev/null | sed -n 's/^total_commands_processed:\([0-9]*\).*/\1/p'
}

# state_block PREFIX: the relays' `state redis` block.
state_block() {
	printf 'state redis {\n\t\t\taddress 127.0.0.1:%s\n\t\t\tprefix %s\n\t\t\ttimeout %s\n\t\t\ton_error %s\n\t\t}' \
		"$REDIS_PORT" "$1" "$REDIS_TIMEOUT" "$REDIS_ON_ERROR"
}

# redis_used: fail unless the relays have written keys into Redis.
redis_used() {
	local n
	n=$(redis_cmd DBSIZE)
	[[ $n =~ ^:([0-9]+)$ ]] && ((BASH_REMATCH[1] > 0)) ||
		die "the relay on state redis wrote nothing into Redis (DBSIZE: ${n:-no answer})"
}

# redis_losses LOG...: how many times the relays logged losing Redis.
redis_losses() { cat "$@" 2>/dev/null | grep -c 'Redis is unreachable' || true; }

# start_redis_relay ID: redis-server and, on it, the relay of case g
# (relay+redis): the relay's config plus `state redis`.
start_redis_relay() {
	local id=$1
	port_free "$REDIS_RELAY_PORT" || die "port $REDIS_RELAY_PORT is in use (set BENCH_PORT_BASE)"
	start_redis "$id"
	write_relay_config "$OUT/relay-redis.Caddyfile" "$KEYS" "" "" "$REDIS_RELAY_PORT" "$(state_block "bench-$id")"
	start "$id-relay+redis" "${SERVER_PIN[@]}" "$BIN/caddy" run --config "$OUT/relay-redis.Caddyfile" --adapter caddyfile
	REDIS_RELAY_PID=$STARTED_PID
	REDIS_RELAY_LOG=$OUT/logs/$id-relay+redis.log
	STACK_PIDS+=("$REDIS_RELAY_PID")
	"$BIN/loadgen" wait -url "http://127.0.0.1:$REDIS_RELAY_PORT/" -timeout 20s ||
		die "nothing answers on port $REDIS_RELAY_PORT; see $OUT/logs/$id-*.log"
}

# start_stack ID CHUNKS RELAY_CONFIG [RP_CONFIG [FAKE_FLAG...]]: the fake
# upstream, reverse_proxy and the relay, each checked with one real request.
start_stack() {
	local id=$1 chunks=$2 relay_config=$3 rp_config=${4:-$OUT/rp.Caddyfile} p
	shift $(($# < 4 ? $# : 4))
	for p in "$FAKE_PORT" "$RP_PORT" "$RELAY_PORT"; do
		port_free "$p" || die "port $p is in use (set BENCH_PORT_BASE)"
	done
	start "$id-fake" "${SERVER_PIN[@]}" "$BIN/fakeopenai" -addr "127.0.0.1:$FAKE_PORT" -any-key -chunks "$chunks" "$@"
	FAKE_PID=$STARTED_PID
	start "$id-reverse_proxy" "${SERVER_PIN[@]}" "$BIN/caddy" run --config "$rp_config" --adapter caddyfile
	RP_PID=$STARTED_PID
	start "$id-relay" "${SERVER_PIN[@]}" "$BIN/caddy" run --config "$relay_config" --adapter caddyfile
	RELAY_PID=$STARTED_PID
	STACK_PIDS=("$FAKE_PID" "$RP_PID" "$RELAY_PID")
	for p in "$FAKE_PORT" "$RP_PORT" "$RELAY_PORT"; do
		"$BIN/loadgen" wait -url "http://127.0.0.1:$p/" -timeout 20s ||
			die "nothing answers on port $p; see $OUT/logs/$id-*.log"
	done
}

check_target() { # TARGET BODYFILE [loadgen check flags...]
	local tgt=$1 body=$2
	shift 2
	target "$tgt"
	"$BIN/loadgen" check -url "$URL" -body-file "$body" -H "Authorization: $AUTH" "$@" >/dev/null ||
		die "$tgt does not answer as it should"
}

# ---------------------------------------------------------------- cases
saturation() { # the highest reverse_proxy req/s measured so far
	awk -F'\t' '$3 == "reverse_proxy" && ($1 == "a32" || $1 == "a128") && $6 > max {max = $6} END {print max + 0}' "$RESULTS"
}

run_case() {
	if [[ $1 == f ]]; then
		run_streams_case
		return
	fi
	if [[ $1 == h ]]; then
		run_shared_case
		return
	fi
	local id=$1 label= targets= conns=0 chunks=5 body=$OUT/chat.json keys=$KEYS relay_config=$OUT/relay.Caddyfile
	case $id in
	a32) label="a. non-stream, 32 conns" conns=32 ;;
	a128) label="a. non-stream, 128 conns" conns=128 ;;
	b) label="b. open loop, ½ saturation" ;;
	c) label="c. stream, 50 chunks, 32 conns" conns=32 chunks=$STREAM_CHUNKS body=$OUT/stream.json ;;
	d) label="d. $BIG_KEYS keys, 128 conns" conns=128 keys=$BIG_KEYS relay_config=$OUT/relay-$BIG_KEYS.Caddyfile ;;
	e) label="e. cache hits, 128 conns" conns=128 relay_config=$OUT/relay-cache.Caddyfile ;;
	g) label="g. relay on state redis, $REDIS_CONNS conns" conns=$REDIS_CONNS ;;
	*) die "unknown case $id" ;;
	esac

	if [[ $id == e ]]; then
		# Cache hits (one request repeated) against reverse_proxy. A build
		# whose config rejects `cache` skips the case with the reason.
		write_relay_config "$relay_config" "$KEYS" "$CACHE_DIRECTIVE"
		local verr
		if ! verr=$("$BIN/caddy" validate --config "$relay_config" --adapter caddyfile 2>&1); then
			local reason
			reason=$(sed -n 's/.*"level":"error".*"msg":"\([^"]*\)".*/\1/p' <<<"$verr" | tail -1 | sed "s|$OUT/||g" | tr '\t' ' ' | cut -c1-240)
			[[ -n $reason ]] || reason=$(tail -1 <<<"$verr" | tr '\t' ' ' | cut -c1-200)
			log "$label: skipped, the relay config rejects cache: $reason"
			row "$id" "$label" skipped 0 0 0 -1 -1 -1 0 -1 -1 "the relay config rejects \`cache\` ($reason)"
			return
		fi
		targets="direct reverse_proxy relay+cache"
	elif [[ $id == g ]]; then
		if ! have_redis; then
			log "$label: skipped, redis-server is not in PATH"
			row "$id" "$label" skipped 0 0 0 -1 -1 -1 0 -1 -1 "redis-server is not in PATH (apt-get install redis-server)"
			return
		fi
		write_relay_config "$relay_config" "$keys"
		targets="direct reverse_proxy relay relay+redis"
	else
		write_relay_config "$relay_config" "$keys"
		targets="direct reverse_proxy relay"
	fi

	# A server killed from outside (a shared machine) spoils the case: its
	# rows are dropped and the case starts again on a fresh stack.
	local attempt rc
	for attempt in 1 2 3; do
		rc=0
		run_stack "$id" "$label" "$targets" "$conns" "$chunks" "$body" "$relay_config" || rc=$?
		stop_stack
		((rc == 2)) || return "$rc"
		log "case $label: a server died during the case (killed from outside?); starting it again"
		awk -F'\t' -v id="$id" 'NR == 1 || $1 != id' "$RESULTS" >"$RESULTS.tmp" && mv "$RESULTS.tmp" "$RESULTS"
	done
	die "case $label: a server died three times; see ${OUT#"$ROOT"/}/logs"
}

# run_stack ID LABEL TARGETS CONNS CHUNKS BODY RELAY_CONFIG: one attempt at a
# case; returns 2 when a server died.
run_stack() {
	local id=$1 label=$2 targets=$3 conns=$4 chunks=$5 body=$6 relay_config=$7
	log "case $label: starting the stack"
	start_stack "$id" "$chunks" "$relay_config"
	[[ $id == g ]] && start_redis_relay "$id"
	local contains='"chat.completion"'
	[[ $id == c ]] && contains='[DONE]'
	local t
	for t in $targets; do
		if [[ $t == relay+cache ]]; then
			check_target "$t" "$body" -n 2 -contains "$contains" -expect-header "X-Relay-Cache: HIT"
		else
			check_target "$t" "$body" -contains "$contains"
		fi
	done
	[[ $id == g ]] && redis_used

	if [[ $id == b ]]; then
		local sat rate
		sat=$(saturation)
		if [[ $sat == 0 ]]; then
			log "no saturation figure yet: measuring reverse_proxy at 128 connections for ${DUR}s"
			target reverse_proxy
			sat=$(BENCH_BODY_FILE=$body BENCH_AUTH=$AUTH "${LOAD_PIN[@]}" wrk -t "$THREADS" -c 128 -d "${DUR}s" \
				-s "$ROOT/bench/wrk/chat.lua" "$URL" 2>/dev/null | awk '/^RESULT/ {for (i = 2; i <= NF; i++) {split($i, kv, "="); v[kv[1]] = kv[2]}; printf "%.0f", v["requests"] / (v["duration_us"] / 1e6)}')
		fi
		rate=$(awk -v s="$sat" 'BEGIN {printf "%d", s / 2}')
		((rate > 0)) || die "no reverse_proxy saturation figure"
		label="b. open loop, $rate req/s (½ of $(printf '%.0f' "$sat"))"
		for ((REP_I = 0; REP_I < REPEAT; REP_I++)); do
			for t in $targets; do
				measure "$id" "$label" "$t" "$body" rate "$rate" || return
			done
		done
	else
		for ((REP_I = 0; REP_I < REPEAT; REP_I++)); do
			for t in $targets; do
				measure "$id" "$label" "$t" "$body" wrk "$conns" || return
			done
		done
	fi
}

# ---------------------------------------------------------------- case f
# run_streams_case: BENCH_STREAMS streams held open at once through
# reverse_proxy, then through the relay; one row per proxy in streams.tsv.
run_streams_case() {
	local id=f n=$STREAMS capnote=
	# Each proxy holds a client and an upstream socket per stream.
	local cap=$(((NOFILE - 64) / 2))
	if ((n > cap)); then
		capnote="$cap streams instead of $STREAMS: the open-file limit is $NOFILE (ulimit -Hn; it could not be raised) and a proxy holds 2 sockets per stream"
		log "case f: $capnote"
		n=$cap
	fi
	((n > 0)) || die "case f: no room for streams under an open-file limit of $NOFILE"
	local label="f. $n open streams"
	write_rp_config "$OUT/rp-streams.Caddyfile" "127.0.0.1:$RP_ADMIN_PORT"
	write_relay_config "$OUT/relay-streams.Caddyfile" "$KEYS" "" "127.0.0.1:$RELAY_ADMIN_PORT"
	local attempt rc
	for attempt in 1 2 3; do
		rc=0
		run_streams_stack "$id" "$label" "$n" "$capnote" || rc=$?
		stop_stack
		((rc == 2)) || return "$rc"
		log "case $label: a server died during the case (killed from outside?); starting it again"
		awk -F'\t' -v id="$id" 'NR == 1 || $1 != id' "$STREAMS_RESULTS" >"$STREAMS_RESULTS.tmp" && mv "$STREAMS_RESULTS.tmp" "$STREAMS_RESULTS"
	done
	die "case $label: a server died three times; see ${OUT#"$ROOT"/}/logs"
}

# run_streams_stack ID LABEL N CAPNOTE: one attempt at case f; returns 2 when
# a server died.
run_streams_stack() {
	local id=$1 label=$2 n=$3 capnote=$4 t p
	for p in "$RP_ADMIN_PORT" "$RELAY_ADMIN_PORT"; do
		port_free "$p" || die "port $p is in use (set BENCH_PORT_BASE)"
	done
	log "case $label: starting the stack (upstream streams of $STREAMS_CHUNKS chunks, ${STREAMS_CHUNK_DELAY}s apart)"
	start_stack "$id" "$STREAMS_CHUNKS" "$OUT/relay-streams.Caddyfile" "$OUT/rp-streams.Caddyfile" -chunk-delay "${STREAMS_CHUNK_DELAY}s"
	# The warm-up request of each proxy: a whole non-stream answer here (a
	# whole stream would take minutes); loadgen then opens and closes one
	# stream before it reads the idle RSS.
	for t in reverse_proxy relay; do
		check_target "$t" "$OUT/chat.json" -contains '"chat.completion"'
	done
	local admin lg out line note
	for t in reverse_proxy relay; do
		target "$t"
		admin=$RP_ADMIN_PORT
		[[ $t == relay ]] && admin=$RELAY_ADMIN_PORT
		out=$OUT/logs/$id-loadgen-$t.log
		log "$label → $t (up to ${STREAMS_OPEN_TIMEOUT}s to open them all)"
		start "$id-loadgen-$t" "${LOAD_PIN[@]}" "$BIN/loadgen" streams -n "$n" -url "$URL" -body-file "$OUT/stream.json" \
			-H "Authorization: $AUTH" -pid "$PID" -open-timeout "${STREAMS_OPEN_TIMEOUT}s" -sources "$STREAMS_SOURCES" \
			-save "http://127.0.0.1:$admin/debug/pprof/heap?gc=1=$OUT/logs/$id-$t-heap.pb.gz" \
			-save "http://127.0.0.1:$admin/debug/pprof/heap?debug=1&gc=1=$OUT/logs/$id-$t-heap.txt" \
			-save "http://127.0.0.1:$admin/debug/pprof/goroutine?debug=1=$OUT/logs/$id-$t-goroutine.txt"
		lg=$STARTED_PID
		wait "$lg" || true
		forget "$lg"
		stack_alive || return 2
		line=$(grep '^RESULT' "$out") || die "no result from loadgen streams for $t; see ${out#"$ROOT"/}"
		note=$capnote
		if [[ $(field held "$line") != "$n" ]]; then
			local why
			why=$(sed -n 's/^loadgen: first error: //p' "$out" | head -1 | tr '\t' ' ' | cut -c1-200)
			note="${note:+$note; }$(field held "$line") of $n held${why:+ (first error: $why)}"
		fi
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$label" "$t" "$n" \
			"$(field opened "$line")" "$(field first "$line")" "$(field held "$line")" \
			"$(($(field errors "$line") + $(field non2xx "$line")))" "$(field ended_early "$line")" \
			"$(field open_s "$line")" "$(field ttfe_p99_us "$line")" \
			"$(field rss_idle_kb "$line")" "$(field rss_open_kb "$line")" "$note" >>"$STREAMS_RESULTS"
		log "   opened $(field opened "$line"), first event $(field first "$line"), held $(field held "$line") in $(field open_s "$line") s; RSS $(field rss_idle_kb "$line") → $(field rss_open_kb "$line") KiB: $(field kib_per_stream "$line") KiB per stream"
		# Let the closed streams drain out of the upstream before the next.
		sleep 2
	done
}

# ---------------------------------------------------------------- case h
# shared_row TARGET CONNS REQUESTS SECONDS RPS P50 P99 P999 ERRORS CPU_TICKS CAPACITY 429 429_WINDOW NOTE
shared_row() {
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$SHARED_ID" "$SHARED_LABEL" \
		"$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "$9" "${10}" "$CLK_TCK" "${11}" "${12}" "${13}" "${14:-}" >>"$SHARED_RESULTS"
}

# fake_stats: "served rate_limited" from the fake's /_fake/stats (-stats).
fake_stats() {
	local body
	body=$( (
		exec 3<>"/dev/tcp/127.0.0.1/$FAKE_PORT" || exit 1
		printf 'GET /_fake/stats HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
		cat <&3
	) 2>/dev/null | tail -1)
	[[ $body =~ \"served\":([0-9]+) ]] || die "no stats from the fake upstream: $body"
	local served=${BASH_REMATCH[1]}
	[[ $body =~ \"rate_limited\":([0-9]+) ]] || die "no stats from the fake upstream: $body"
	echo "$served ${BASH_REMATCH[1]}"
}

# run_shared_case: case h, three (BENCH_SHARED_CONNS) relay instances on one
# Redis prefix in front of one upstream whose keys have limits, all loaded
# at once; one row per instance, one for redis-server and one for the
# upstream in shared.tsv.
run_shared_case() {
	local conns total=0 c
	read -r -a conns <<<"$SHARED_CONNS"
	for c in "${conns[@]}"; do total=$((total + c)); done
	SHARED_ID=h
	SHARED_LABEL="h. ${#conns[@]} relays on one Redis, $total conns"
	if ! have_redis; then
		log "$SHARED_LABEL: skipped, redis-server is not in PATH"
		shared_row skipped -1 0 0 0 -1 -1 -1 0 -1 -1 -1 -1 "redis-server is not in PATH (apt-get install redis-server)"
		return
	fi
	local attempt rc
	for attempt in 1 2 3; do
		rc=0
		run_shared_stack "${conns[@]}" || rc=$?
		stop_stack
		((rc == 2)) || return "$rc"
		log "case $SHARED_LABEL: a server died during the case (killed from outside?); starting it again"
		awk -F'\t' -v id="$SHARED_ID" 'NR == 1 || $1 != id' "$SHARED_RESULTS" >"$SHARED_RESULTS.tmp" && mv "$SHARED_RESULTS.tmp" "$SHARED_RESULTS"
	done
	die "case $SHARED_LABEL: a server died three times; see ${OUT#"$ROOT"/}/logs"
}

# run_shared_stack CONNS...: one attempt at case h; returns 2 when a server died.
run_shared_stack() {
	local id=$SHARED_ID conns=("$@") n=$# i p
	local ports=() pids=() logs=()
	for ((i = 0; i < n; i++)); do ports+=($((REDIS_RELAY_PORT + i))); done
	for p in "$FAKE_PORT" "${ports[@]}"; do
		port_free "$p" || die "port $p is in use (set BENCH_PORT_BASE)"
	done
	local keys_file=$OUT/keys-shared.txt
	awk -v n="$SHARED_KEYS" -v r="$SHARED_RPM" -v t="$SHARED_TPM" 'BEGIN { for (i = 1; i <= n; i++) printf "sk-bench-%05d rpm=%d tpm=%d\n", i, r, t }' >"$keys_file"
	local capacity
	capacity=$(awk -v k="$SHARED_KEYS" -v r="$SHARED_RPM" 'BEGIN {printf "%.1f", k * r / 60}')
	log "case $SHARED_LABEL: starting the stack ($SHARED_KEYS keys × $SHARED_RPM RPM = $capacity req/s)"
	start "$id-fake" "${SERVER_PIN[@]}" "$BIN/fakeopenai" -addr "127.0.0.1:$FAKE_PORT" -stats \
		-keys "$(awk '{print $1}' "$keys_file" | paste -sd,)" -rpm "$SHARED_RPM" -tpm "$SHARED_TPM"
	FAKE_PID=$STARTED_PID
	STACK_PIDS=("$FAKE_PID")
	start_redis "$id"
	for ((i = 0; i < n; i++)); do
		write_relay_config "$OUT/relay-shared-$((i + 1)).Caddyfile" 0 "" "" "${ports[i]}" "$(state_block "bench-$id")" "$keys_file"
		start "$id-relay-$((i + 1))" "${SERVER_PIN[@]}" "$BIN/caddy" run --config "$OUT/relay-shared-$((i + 1)).Caddyfile" --adapter caddyfile
		pids+=("$STARTED_PID")
		logs+=("$OUT/logs/$id-relay-$((i + 1)).log")
		STACK_PIDS+=("$STARTED_PID")
	done
	for p in "$FAKE_PORT" "${ports[@]}"; do
		"$BIN/loadgen" wait -url "http://127.0.0.1:$p/" -timeout 20s ||
			die "nothing answers on port $p; see $OUT/logs/$id-*.log"
	done
	for p in "${ports[@]}"; do
		"$BIN/loadgen" check -url "http://127.0.0.1:$p/v1/chat/completions" -body-file "$OUT/chat.json" \
			-H "Authorization: Bearer $CLIENT_KEY" -contains '"chat.completion"' >/dev/null ||
			die "the relay on port $p does not answer as it should"
	done
	redis_used
	local threads=$((THREADS / n))
	((threads >= 1)) || threads=1

	# load PHASE SECONDS: wrk at every instance at once, with its share of
	# the connections; waits for all of them.
	load() {
		local phase=$1 secs=$2 lp=() j
		for ((j = 0; j < n; j++)); do
			BENCH_BODY_FILE=$OUT/chat.json BENCH_AUTH="Bearer $CLIENT_KEY" start "$id-wrk-$phase-$((j + 1))-r${REP_I:-0}" \
				"${LOAD_PIN[@]}" wrk -t "$threads" -c "${conns[j]}" -d "${secs}s" --timeout 5s \
				-s "$ROOT/bench/wrk/chat.lua" "http://127.0.0.1:${ports[j]}/v1/chat/completions"
			lp+=("$STARTED_PID")
		done
		for j in "${lp[@]}"; do
			wait "$j" || true
			forget "$j"
		done
	}
	log "$SHARED_LABEL: warm-up, ${WARM}s (connections ${conns[*]})"
	load warmup "$WARM"
	stack_alive || return 2
	local cpu0=() cpu1=() rcpu0 rcpu1
	for p in "${pids[@]}"; do cpu0+=("$(cpu_ticks "$p")"); done
	rcpu0=$(cpu_ticks "$REDIS_PID")
	local rcmd0 rcmd1
	rcmd0=$(redis_commands)
	# The upstream's 2xx are counted in the central part of the measurement
	# (a margin of a quarter of it, at most 1 s, at each end), where every
	# instance is loaded: no edge where the buckets refill unused.
	local margin t0 t1 s0 s1
	margin=$(awk -v d="$DUR" 'BEGIN {m = d / 4; if (m > 1) m = 1; printf "%.3f", m}')
	log "$SHARED_LABEL: ${DUR}s measured"
	(
		sleep "$margin"
		echo "$(date +%s.%N) $(fake_stats)" >"$OUT/shared-stats0"
		sleep "$(awk -v d="$DUR" -v m="$margin" 'BEGIN {printf "%.3f", d - 2 * m}')"
		echo "$(date +%s.%N) $(fake_stats)" >"$OUT/shared-stats1"
	) &
	local sampler=$!
	load measure "$DUR"
	wait "$sampler" || die "the upstream's stats could not be read"
	for p in "${pids[@]}"; do cpu1+=("$(cpu_ticks "$p" 2>/dev/null)") || return 2; done
	rcpu1=$(cpu_ticks "$REDIS_PID" 2>/dev/null) || return 2
	rcmd1=$(redis_commands)
	stack_alive || return 2
	local final
	final=$(fake_stats)
	read -r t0 s0 l0 <"$OUT/shared-stats0"
	read -r t1 s1 l1 <"$OUT/shared-stats1"

	local out line requests seconds rps errors sum=0 lost
	for ((i = 0; i < n; i++)); do
		out=$OUT/logs/$id-wrk-measure-$((i + 1))-r${REP_I:-0}.log
		line=$(grep '^RESULT' "$out") || die "no result from wrk for relay-$((i + 1)); see ${out#"$ROOT"/}"
		requests=$(field requests "$line")
		seconds=$(awk -v d="$(field duration_us "$line")" 'BEGIN {printf "%.3f", d / 1e6}')
		rps=$(awk -v n="$requests" -v s="$seconds" 'BEGIN {printf "%.1f", n / s}')
		errors=$(field errors "$line")
		sum=$((sum + requests))
		lost=$(redis_losses "${logs[i]}")
		local note=
		((lost == 0)) || note="the instance logged losing Redis $lost times (on_error $REDIS_ON_ERROR; see ${logs[i]#"$ROOT"/})"
		shared_row "relay-$((i + 1))" "${conns[i]}" "$requests" "$seconds" "$rps" \
			"$(field p50_us "$line")" "$(field p99_us "$line")" "$(field p999_us "$line")" "$errors" \
			$((cpu1[i] - cpu0[i])) -1 -1 -1 "$note"
		log "   relay-$((i + 1)) (${conns[i]} conns): $rps req/s, p50 $(field p50_us "$line") µs, p99 $(field p99_us "$line") µs, errors $errors"
	done
	local cmdnote=
	if [[ -n $rcmd0 && -n $rcmd1 ]] && ((sum > 0)); then
		cmdnote="$((rcmd1 - rcmd0)) Redis commands over the measurement (total_commands_processed: every command of a pipeline and every call inside a script counts), $(awk -v c=$((rcmd1 - rcmd0)) -v n="$sum" 'BEGIN {printf "%.1f", c / n}') per answer"
	fi
	shared_row redis-server -1 "$sum" "$DUR" -1 -1 -1 -1 -1 $((rcpu1 - rcpu0)) -1 -1 -1 "$cmdnote"
	local window served win_rps
	window=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')
	served=$((s1 - s0))
	win_rps=$(awk -v n="$served" -v w="$window" 'BEGIN {printf "%.1f", n / w}')
	shared_row upstream -1 "$served" "$window" "$win_rps" -1 -1 -1 -1 -1 "$capacity" "${final#* }" $((l1 - l0)) \
		"pool: $SHARED_KEYS keys × $SHARED_RPM RPM (and $SHARED_TPM TPM, which does not bind) = $capacity req/s, declared in the relays' keys_file and enforced by the fake (token buckets of 1 s; the relay's hold 0.9 s)"
	log "   upstream: $win_rps req/s over the central ${window}s of a capacity of $capacity req/s ($(awk -v a="$win_rps" -v c="$capacity" 'BEGIN {printf "%.1f", 100 * a / c}')%); 429s: ${final#* } over the case"
}

redis_version() {
	if have_redis; then
		redis-server --version | sed -n 's/.* v=\([^ ]*\).*/redis-server \1/p'
	else
		echo "redis-server not in PATH"
	fi
}

machine_info() {
	local cpu commit kernel wrkv
	cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
	kernel=$(uname -sr)
	wrkv=$({ wrk --version 2>&1 || true; } | head -1 | awk '{print $1, $2}')
	if commit=$(git rev-parse --short HEAD 2>/dev/null); then
		# The bench's own files do not count as changes to what is measured.
		[[ -z $(git status --porcelain -- . ':!bench' ':!docs/benchmarks.md' ':!Makefile' ':!relay_bench_test.go' 2>/dev/null) ]] ||
			commit="$commit + uncommitted changes"
	else
		commit="unknown (not a git checkout)"
	fi
	local pinning="none (BENCH_PIN=0 or a single CPU)" transport="Caddy's default (32 idle connections per host)"
	[[ $PIN == 1 ]] && pinning="load tools on CPU $LOAD_CPUS; fake upstream, reverse_proxy and relay on CPU $SERVER_CPUS"
	((UPSTREAM_IDLE > 0)) && transport="Caddy's http transport with keepalive_idle_conns_per_host $UPSTREAM_IDLE, for reverse_proxy and the relay alike"
	local mode="full: ${DUR} s per measurement after a ${WARM} s warm-up"
	[[ $QUICK == 1 ]] && mode="BENCH_QUICK=1: ${DUR} s per measurement after a ${WARM} s warm-up"
	((REPEAT > 1)) && mode="$mode, each measured $REPEAT times with the targets interleaved, medians shown"
	cat <<EOF
Run of $(date -u '+%Y-%m-%d %H:%M UTC'), \`make bench\` ($mode), commit $commit.

| machine | |
|---|---|
| CPUs (nproc) | $(nproc) |
| CPU model | ${cpu:-unknown} |
| kernel | $kernel |
| Go | $(go env GOVERSION) |
| load tools | $wrkv (threads: $THREADS), bench/loadgen (open loop, 64 connections) |
| CPU pinning | $pinning |
| upstream transport | $transport |
| relay pool | 1 client key; $KEYS upstream keys without limits ($BIG_KEYS in case d) |
| upstream | internal/fakeopenai \`-any-key\` (\`-chunks $STREAM_CHUNKS\` in case c; \`-chunks $STREAMS_CHUNKS -chunk-delay ${STREAMS_CHUNK_DELAY}s\` in case f) |
| open-file limit | $NOFILE (case f needs about 2 per stream in each proxy) |
| Redis (cases g, h) | $(redis_version) on 127.0.0.1, \`--save "" --appendonly no\`, on the servers' CPU; relays' \`state redis\` with \`timeout $REDIS_TIMEOUT\`, \`on_error $REDIS_ON_ERROR\` |
| case h | instances with ${SHARED_CONNS// /, } wrk connections; $SHARED_KEYS keys × $SHARED_RPM RPM / $SHARED_TPM TPM in the fake and the relays' keys_file |

Everything runs on 127.0.0.1 of one machine; compare the rows of one case
with each other, not figures across runs or machines.

EOF
}

# ---------------------------------------------------------------- main
ensure_wrk
build
printf '%s\n' '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hello, how are you today?"}],"max_tokens":64}' >"$OUT/chat.json"
printf '%s\n' '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Tell me, in a few plain sentences, how a relay in front of an API spreads requests over a pool of keys and what it does when one of them is rate limited."}]}' >"$OUT/stream.json"
write_rp_config
printf 'case\tlabel\ttarget\trequests\tseconds\trps\tp50_us\tp99_us\tp999_us\terrors\tcpu_ticks\tclk_tck\trss_kb\tnote\taux_cpu_ticks\taux_name\n' >"$RESULTS"
printf 'case\tlabel\ttarget\tconns\trequests\tseconds\trps\tp50_us\tp99_us\tp999_us\terrors\tcpu_ticks\tclk_tck\tcapacity_rps\tupstream_429\tupstream_429_window\tnote\n' >"$SHARED_RESULTS"
printf 'case\tlabel\ttarget\tn\topened\tfirst\theld\terrors\tended_early\topen_s\tttfe_p99_us\trss_idle_kb\trss_open_kb\tnote\n' >"$STREAMS_RESULTS"

log "results in ${OUT#"$ROOT"/}; cases: $CASES"
for id in $CASES; do
	run_case "$id"
done

machine_info >"$OUT/machine.md"
doc_flags=()
[[ $WRITE_DOC == 1 ]] && doc_flags=(-doc "$ROOT/docs/benchmarks.md")
"$BIN/loadgen" table -results "$RESULTS" -streams "$STREAMS_RESULTS" -shared "$SHARED_RESULTS" -machine "$OUT/machine.md" "${doc_flags[@]}" | tee "$OUT/table.md"
if [[ $WRITE_DOC == 1 ]]; then
	log "table written to docs/benchmarks.md"
else
	log "docs/benchmarks.md left as it was (quick mode; BENCH_WRITE_DOC=1 writes it)"
fi
