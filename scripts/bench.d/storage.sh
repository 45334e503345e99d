#!/usr/bin/env bash
# scripts/bench --only storage: what a handler that waits on storage costs.
#   1. ping-pong at 100 connections, plain (Bench.ping)
#   2. the same through a handler doing one Redis GET and one PostgreSQL primary-key SELECT
#      (Bench.store: nano.redis + nano.pg, pool of 8)
#   3. redis-benchmark's own GET rate on this machine (50 clients, no pipelining): the ceiling a
#      Redis client on one core is measured against
#   4. other sessions' p99: plain ping-pong at 2,000 requests/s while 1,000 connections keep a
#      storage request in flight each
# Throwaway redis-server and PostgreSQL on loopback ports in a temp folder, stopped at exit.
# The nano-host server is pinned to CPU 0, the load generator to CPU 1 (the databases float).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
secs=${SECS:-4}
bdir=${NH_BENCH_DIR:-$root/build-bench}
work=$(mktemp -d /tmp/nh-bench-storage.XXXXXX)
PG_BIN=/usr/lib/postgresql/15/bin
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
SRV=""
cleanup() {
    [ -n "$SRV" ] && kill "$SRV" 2>/dev/null && wait "$SRV" 2>/dev/null || true
    [ -f "$work/redis.pid" ] && kill "$(cat "$work/redis.pid")" 2>/dev/null || true
    [ -d "$work/pg" ] && as_pg "$PG_BIN/pg_ctl" -D "$work/pg" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() {
    node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"
}
for b in redis-server redis-benchmark redis-cli "$PG_BIN/initdb"; do
    command -v "$b" >/dev/null || { echo "bench storage: $b is not installed" >&2; exit 1; }
done

echo "bench storage: building nano-host (release) and loadgen in $bdir" >&2
mkdir -p "$bdir/tools"
cmake -S "$root" -B "$bdir" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$bdir" -j2 --target nano-host >/dev/null
# shellcheck disable=SC2046
cc -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -o "$bdir/tools/loadgen" \
    scripts/bench.d/loadgen.c $(pkg-config --cflags --libs libuv)

echo "bench storage: starting redis-server and PostgreSQL" >&2
rport=$(free_port)
redis-server --bind 127.0.0.1 --port "$rport" --dir "$work" --daemonize yes \
    --pidfile "$work/redis.pid" --logfile "$work/redis.log" --save '' --appendonly no
for _ in $(seq 100); do redis-cli -p "$rport" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
redis-cli -p "$rport" set bench:key "some value" >/dev/null
[ "$(id -u)" = 0 ] && chown postgres: "$work"
pport=$(free_port)
as_pg "$PG_BIN/initdb" -D "$work/pg" -A trust -U postgres --no-sync >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w \
    -o "-p $pport -k $work -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50" start >/dev/null
as_pg "$PG_BIN/psql" -q -h 127.0.0.1 -p "$pport" -U postgres -c \
    "CREATE TABLE bench_players (id int PRIMARY KEY, name text); INSERT INTO bench_players SELECT g, 'player' || g FROM generate_series(1, 1000) g;" >/dev/null

echo "bench storage: starting nano-host" >&2
NH_BENCH_REDIS="redis://127.0.0.1:$rport/0" NH_BENCH_PG="host=127.0.0.1 port=$pport user=postgres dbname=postgres" \
    taskset -c 0 "$bdir/nano-host" scripts/bench.d/storage/main.lua 2>"$work/nano.log" &
SRV=$!
for _ in $(seq 200); do grep -q 'listening ws://' "$work/nano.log" && break; sleep 0.05; done
port=$(grep -oE 'listening tcp://[0-9.]+:[0-9]+' "$work/nano.log" | head -1 | sed 's/.*://')

lg() { taskset -c 1 "$bdir/tools/loadgen" --port "$port" --mode pingpong --server-pid "$SRV" "$@" 2>>"$work/loadgen.log" | grep '^result' || echo "result failed"; }
field() { echo "$1" | grep -oE "(^| )$2=[^ ]+" | cut -d= -f2; }

plain=$(lg -c 100 -w 1 -d "$secs" --route Bench.ping)
store=$(lg -c 100 -w 1 -d "$secs" --route Bench.store)
rb=$(redis-benchmark -h 127.0.0.1 -p "$rport" -t get -n 200000 -c 50 -q 2>/dev/null | tr '\r' '\n' | grep -E '^GET' | tail -1)
# other sessions while 1,000 storage requests are in flight
lg -c 1000 -w 1 -d $((secs + 2)) --route Bench.store >"$work/busy.txt" &
busy=$!
sleep 1.5
others=$(lg -c 50 -w 0 -d "$secs" --route Bench.ping --rate 2000)
wait $busy || true
busy_line=$(grep '^result' "$work/busy.txt" || echo "result failed")
errs=$(grep -c ' error ' "$work/nano.log" || true)

cat <<REPORT
## storage ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); commit $(git rev-parse --short HEAD))
| figure | requests/s | p50 µs | p99 µs | nano-host CPU s |
|---|---|---|---|---|
| ping-pong, 100 conns, plain | $(field "$plain" rate) | $(field "$plain" p50_us) | $(field "$plain" p99_us) | $(field "$plain" srv_cpu) |
| ping-pong, 100 conns, handler: Redis GET + PostgreSQL PK SELECT | $(field "$store" rate) | $(field "$store" p50_us) | $(field "$store" p99_us) | $(field "$store" srv_cpu) |
| 1,000 conns each with a storage request in flight | $(field "$busy_line" rate) | $(field "$busy_line" p50_us) | $(field "$busy_line" p99_us) | |
| other sessions meanwhile: 50 conns plain ping-pong at 2,000/s | $(field "$others" rate) | $(field "$others" p50_us) | $(field "$others" p99_us) | |

redis-benchmark on this machine (GET, 50 clients, no pipelining): ${rb:-not measured}
errors in the nano-host log: $errs
REPORT
