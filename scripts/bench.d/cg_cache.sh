#!/usr/bin/env bash
# usage: scripts/bench.d/cg_cache.sh SERVER_BIN LOADGEN [OUT]
# What a request touches when each connection's next one comes long after its last (callgrind's
# cache simulation, user space only, deterministic): 1,000 connections of JSON ping-pong at 1,000
# requests/s in all, instructions, first-level data-cache misses and "LL" misses per request. The
# LL is simulated at 256 KiB, less than this machine's: between two requests of one connection
# the kernel's own work (its sockets, its buffers) passes through the real caches too, and what
# misses a 256 KiB cache here is, near enough, what a connection's request finds gone from them:
# the lines a request pays for in memory latency, where its instructions are cheap. SERVER_BIN is
# nano-host (scripts/bench.d/nano/main.lua) or the floor; both print "listening tcp://...".
# Counters zeroed after a warm-up; requests in the window = the offered rate x its length.
set -u
SRV=$1 LOADGEN=$2 OUT=${3:-/tmp/cg-cache.out}
RATE=${CG_CACHE_RATE:-1000} CONNS=${CG_CACHE_CONNS:-1000} WINDOW=${CG_CACHE_WINDOW:-10}
LOG=$OUT.log
rm -f "$OUT"*
args=(scripts/bench.d/nano/main.lua)
[ "$(basename "$SRV")" = floor ] && args=()
valgrind --tool=callgrind --cache-sim=yes --D1=32768,8,64 --LL=262144,16,64 \
    --callgrind-out-file="$OUT" "$SRV" "${args[@]}" 2>"$LOG" &
PID=$!
for _ in $(seq 120); do grep -q 'listening tcp://' "$LOG" && break; sleep 1; done
PORT=$(grep -oE 'listening tcp://[0-9.]+:[0-9]+' "$LOG" | head -1 | sed 's/.*://')
[ -n "$PORT" ] || { echo "cg_cache: the server did not start (see $LOG)" >&2; kill $PID; exit 1; }
"$LOADGEN" --port "$PORT" -c "$CONNS" -w 4 -d $((WINDOW + 30)) --mode pingpong --route Bench.ping \
    --rate "$RATE" >"$OUT.lg" 2>&1 &
LG=$!
sleep "${CG_CACHE_ZERO_AT:-12}" # the connections made and the code compiled, under valgrind
callgrind_control -z $PID >/dev/null 2>&1
t0=$(date +%s.%N)
sleep "$WINDOW"
callgrind_control -d $PID >/dev/null 2>&1
t1=$(date +%s.%N)
kill $LG 2>/dev/null
wait $LG 2>/dev/null
kill $PID
wait $PID 2>/dev/null
python3 - "$RATE" "$t0" "$t1" "$OUT".[0-9]* <<'PY'
import sys
rate, t0, t1 = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
events, totals = None, None
for f in sys.argv[4:]:
    for line in open(f):
        if line.startswith("events:"): events = line.split()[1:]
        if line.startswith(("summary:", "totals:")): totals = [int(x) for x in line.split()[1:]]
if not events or not totals: sys.exit("cg_cache: no totals in the dump")
v = dict(zip(events, totals + [0] * len(events)))  # callgrind leaves out trailing zeros
n = rate * (t1 - t0)
print("requests=%.0f ir=%.0f d1_miss=%.1f ll_miss=%.1f per request" % (
    n, v["Ir"] / n, (v["D1mr"] + v["D1mw"]) / n, (v["DLmr"] + v["DLmw"]) / n))
PY
