#!/usr/bin/env bash
# usage: scripts/bench.d/cg_bcast.sh NANO_BIN LOADGEN [OUT]
# Callgrind instructions per push delivered for nano-host's broadcast (scripts/bench's section 4:
# 5,000 members, 4 broadcasts in flight): user space only and deterministic, so the push path's
# cost is known independently of the machine's timing noise. Counters zeroed after a warm-up.
set -u
NANO=$1 LOADGEN=$2 OUT=${3:-/tmp/cg-bcast.out}
N=${CG_BCAST_CONNS:-5000}
LOG=$OUT.log
rm -f "$OUT"*
valgrind --tool=callgrind --callgrind-out-file="$OUT" "$NANO" scripts/bench.d/nano/main.lua 2>"$LOG" &
PID=$!
for _ in $(seq 120); do grep -q 'listening ws://' "$LOG" && break; sleep 1; done
PORT=$(grep -oE 'listening tcp://[0-9.]+:[0-9]+' "$LOG" | head -1 | sed 's/.*://')
# one load generator: members join, a warm-up, then the counters are zeroed mid-run and dumped
"$LOADGEN" --port "$PORT" -c "$N" -w 8 -d 8 --mode bcast --join-route Bench.join --bcast-route Bench.bcast --window "${CG_BCAST_WINDOW:-4}" \
    >"$OUT.lg" 2>&1 &
LG=$!
sleep "${CG_BCAST_ZERO_AT:-14}"
callgrind_control -z $PID >/dev/null 2>&1
z0=$(date +%s.%N)
sleep "${CG_BCAST_WINDOW:-4}"
callgrind_control -d $PID >/dev/null 2>&1
z1=$(date +%s.%N)
wait $LG
kill $PID; wait $PID 2>/dev/null
rate=$(grep -oE '^result .*' "$OUT.lg" | grep -oE ' rate=[0-9.]+' | cut -d= -f2)
ir=$(cat "$OUT".* 2>/dev/null | grep -E '^(summary|totals):' | awk '{print $2}' | sort -n | tail -1)
echo "window=$(echo "$z1 - $z0" | bc) rate=$rate ir=$ir"
grep '^result' "$OUT.lg"
