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
# CG_BCAST_WS=1: the members over WebSocket (each push framed) instead of raw TCP
if [ "${CG_BCAST_WS:-0}" = 1 ]; then
    PORT=$(grep -oE 'listening ws://[0-9.]+:[0-9]+' "$LOG" | head -1 | sed 's/.*://') WS=(--ws /nano)
else
    PORT=$(grep -oE 'listening tcp://[0-9.]+:[0-9]+' "$LOG" | head -1 | sed 's/.*://') WS=()
fi
# one load generator: members join, a warm-up, then the counters are zeroed mid-run and dumped
# while it still runs (it is stopped after), so the count holds pushes only, no connection set-up
# or teardown. CG_BCAST_INFLIGHT: broadcasts in flight (4, as scripts/bench's section 4; 16: 4a).
"$LOADGEN" --port "$PORT" "${WS[@]}" -c "$N" -w 8 -d 120 --mode bcast --join-route Bench.join --bcast-route Bench.bcast \
    --window "${CG_BCAST_INFLIGHT:-4}" >"$OUT.lg" 2>&1 &
LG=$!
sleep "${CG_BCAST_ZERO_AT:-14}"
callgrind_control -z $PID >/dev/null 2>&1
sleep "${CG_BCAST_WINDOW:-4}"
callgrind_control -d $PID >/dev/null 2>&1
kill $LG 2>/dev/null
wait $LG 2>/dev/null
kill $PID
wait $PID 2>/dev/null
ir=$(cat "$OUT".[0-9]* 2>/dev/null | grep -E '^(summary|totals):' | awk '{print $2}' | sort -n | tail -1)
# pushes: the calls into client_send_shared (the session's op: one per member per broadcast;
# the broadcast requests' own responses take another way)
pushes=$(python3 - "$OUT".[0-9]* <<'PY'
import re, sys
names, total, pending = {}, 0, False
for f in sys.argv[1:]:
    for line in open(f):
        m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.strip())
        if m and m.group(2): names[m.group(1)] = m.group(2)  # an id's name, given once
        if line.startswith("cfn="):
            pending = bool(m) and names.get(m.group(1), "").startswith("client_send_shared")
        elif line.startswith("calls=") and pending:
            total += int(line.split("=")[1].split()[0])
            pending = False
print(total)
PY
)
[ "${pushes:-0}" -gt 0 ] || { echo "cg_bcast: no pushes counted in the window" >&2; exit 1; }
echo "ir=$ir pushes=$pushes per_push=$((ir / pushes))"
