'use strict';
// Turns scripts/bench's raw results (one "label result k=v ..." line per load generator run) into
// the markdown that goes into docs/benchmarks.md: figures as ratios beside their targets.
//   node report.js results.txt <json of run facts>
const fs = require('node:fs');

const [, , resultsPath, factsJson] = process.argv;
const facts = JSON.parse(factsJson);
const runs = [];
let reloadMs = null;
for (const line of fs.readFileSync(resultsPath, 'utf8').split('\n')) {
  if (!line.trim()) continue;
  if (line.startsWith('pbinstr_')) {
    const m = line.match(/^pbinstr_(\w+) count=(\d+) ir=(\d+)/);
    if (m) (facts.pbinstr = facts.pbinstr || {})[m[1]] = { count: +m[2], ir: +m[3] };
    continue;
  }
  if (line.startsWith('instr ') || line.startsWith('instr_nested ') || line.startsWith('instr_push ')) {
    const m = /count=(\d+) ir=(\d+)/.exec(line);
    const key = { instr: 'instr', instr_nested: 'instrNested', instr_push: 'instrPush' }[line.split(' ')[0]];
    if (m) facts[key] = { count: +m[1], ir: +m[2] };
    continue;
  }
  if (line.startsWith('instrmx ')) {
    const m = /^instrmx (\w+) count=(\d+) ir=(\d+)/.exec(line);
    if (m && +m[2] > 0) {
      const all = (facts.instrmx = facts.instrmx || {});
      const prev = all[m[1]];
      if (!prev || +m[3] / +m[2] < prev.ir / prev.count) all[m[1]] = { count: +m[2], ir: +m[3] }; // the lower of the runs
    }
    continue;
  }
  if (line.startsWith('reload_ms ')) {
    reloadMs = line.split(' ')[1];
    continue;
  }
  const [label, , ...kv] = line.split(' ');
  const r = { label };
  for (const p of kv) {
    const i = p.indexOf('=');
    if (i > 0) r[p.slice(0, i)] = Number.isNaN(Number(p.slice(i + 1))) ? p.slice(i + 1) : Number(p.slice(i + 1));
  }
  const [kind, server, transport, round] = label.split('/');
  Object.assign(r, { kind, server, transport, round });
  runs.push(r);
}

const ok = (r) => r && !r.failed && r.count > 0;
const ok0 = (r) => r && !r.failed && r.up > 0 && !r.closed; // runs that count connections, not requests (none closed by the server)
const cpuPer = (r) => (ok(r) && r.srv_cpu > 0 ? (r.srv_cpu * 1e6) / r.count : null); // us/op
const fmt = (v, d = 0) => (v == null || !Number.isFinite(v) ? '—' : v.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }));
const ratio = (a, b) => (a != null && b != null && b > 0 ? a / b : null);
// a ratio beside its target: a third decimal where two would round it onto the target
const fmtNear = (v, target) => fmt(v, v != null && Math.abs(v - target) < 0.005 ? 3 : 2);
const mark = (v, target, higherIsBetter = true) => {
  if (v == null) return '—';
  const met = higherIsBetter ? v >= target : v <= target;
  return met ? 'met' : '**not met**';
};

// the least disturbed of the equal-load rounds: the lowest server CPU per request
function calmest(kind, server, transport) {
  const c = runs.filter((r) => r.kind === kind && r.server === server && r.transport === transport && ok(r) && cpuPer(r) != null);
  if (!c.length) return null;
  const b = c.reduce((a, r) => (cpuPer(r) < cpuPer(a) ? r : a));
  return { ...b, cpu_us: cpuPer(b), rounds: c.length };
}

// best round per server/transport: the highest rate (least disturbed by other work)
function best(kind, server, transport) {
  const c = runs.filter((r) => r.kind === kind && r.server === server && r.transport === transport && ok(r));
  if (!c.length) return null;
  const b = c.reduce((a, r) => (r.rate > a.rate ? r : a));
  const cpus = c.map(cpuPer).filter((v) => v != null);
  return { ...b, cpu_us: cpus.length ? Math.min(...cpus) : null, rounds: c.length };
}

const out = [];
const p = (s = '') => out.push(s);
const serversOf = (kind) => ['floor', 'nano', 'pomelo'].filter((s) => runs.some((r) => r.server === s && r.kind === kind));
let servers = serversOf('pp');
const names = { floor: 'floor (bare epoll, C, no Lua/JSON)', nano: 'nano-host (Lua handler, JSON)', pomelo: `pomelo ${facts.pomelo || ''} (hybridconnector)` };

p(`## Results (written by \`scripts/bench${facts.quick ? ' --quick' : ''}\`)`);
p();
p(`- Run: ${facts.date}, commit ${facts.commit}; ${facts.rounds} round(s) of ${facts.secs} s per ping-pong figure after warm-up, servers alternating; each ping-pong row is the round with the highest rate (its latencies with it) and the lowest server CPU/op of all rounds.`);
p(`- Machine: ${facts.machine}; Node ${facts.node}; load average before the run: ${facts.load}.`);
if (facts.self) p(`- **The method against itself** (\`--self ${facts.self}\`): in the turns (1c, 4c) both places ran the ${facts.self === 'nano' ? 'nano-host' : 'floor'}, so "floor" and "nano-host" there are two copies of one server, and their ratios are the method's own spread. The rounds are as usual.`);
p(`- Pinning: every server on CPU ${facts.srv_cpu} (taskset; pomelo's master and connector too), the load generator on CPU ${facts.lg_cpu}.`);
p('- "server CPU/op": the server process\'s own CPU time (its threads\' time on a CPU, /proc/PID/task/*/schedstat, in nanoseconds; user + system from /proc/PID/stat where there is no schedstat) over the measured window divided by the operations completed. On a shared 2-core machine this is the steadiest figure: the rate can be capped by the load generator or by other work on the machine, the CPU spent per request much less so. "CPU ratio" = floor\'s CPU/op ÷ this server\'s: the share of the floor\'s throughput it would reach were it the bottleneck.');
p();
// Issue 18's figures, gathered by the sections below and put here at the end (issue18Summary)
const i18 = {};
const i18At = out.length;

p('### 1–2. Ping-pong, 1,000 connections (closed loop, one request in flight per connection)');
p();
p('| server | transport | responses/s | p50 ms | p99 ms | max ms | server CPU/op µs | load gen CPU/op µs | errors |');
p('|---|---|---|---|---|---|---|---|---|');
for (const tr of ['tcp', 'ws']) {
  for (const s of servers) {
    const b = best('pp', s, tr);
    if (!b) {
      p(`| ${names[s]} | ${tr} | failed | | | | | | |`);
      continue;
    }
    p(`| ${names[s]} | ${tr.toUpperCase()} | ${fmt(b.rate)} | ${fmt(b.p50_us / 1000, 1)} | ${fmt(b.p99_us / 1000, 1)} | ${fmt(b.max_us / 1000, 1)} | ${fmt(b.cpu_us, 1)} | ${fmt((b.lg_cpu * 1e6) / b.count, 1)} | ${b.errors + b.closed + b.unanswered} |`);
  }
}
p();
p('| figure | TCP | WS | target |');
p('|---|---|---|---|');
const pp = {};
for (const s of servers) for (const tr of ['tcp', 'ws']) pp[`${s}/${tr}`] = best('pp', s, tr);
const g = (s, tr) => pp[`${s}/${tr}`] || {};
// issue 18's CPU-ratio targets, by transport
const cpuTarget = (tr) => (tr === 'tcp' ? 0.85 : 0.8);
const row = (label, f, target, tgt, higher = true) => {
  const vt = f('tcp'), vw = f('ws');
  const tt = typeof tgt === 'function' ? tgt('tcp') : tgt, tw = typeof tgt === 'function' ? tgt('ws') : tgt;
  p(`| ${label} | ${fmtNear(vt, tt)} (${mark(vt, tt, higher)}) | ${fmtNear(vw, tw)} (${mark(vw, tw, higher)}) | ${target} |`);
};
// A figure whose target is judged in turns (1c): the rounds' value, for reference. Each server's
// best round of four, made minutes apart, meets the machine in a state of its own: the same two
// binaries gave 0.81 and 1.15 in rounds (docs/benchmarks.md, seventeenth pass).
const JUDGED_IN_TURNS = 'judged in turns (1c): the rounds meet the machine in different states';
const refRow = (label, f, target) => {
  p(`| ${label} | ${fmt(f('tcp'), 2)} (rounds) | ${fmt(f('ws'), 2)} (rounds) | ${target}, ${JUDGED_IN_TURNS} |`);
};
row('nano-host ÷ floor, responses/s', (tr) => ratio(g('nano', tr).rate, g('floor', tr).rate), '≥ 0.75 TCP, ≥ 0.65 WS', (tr) => (tr === 'tcp' ? 0.75 : 0.65));
// issue 18's targets: CPU ratio >= 0.85 TCP, >= 0.80 WS (flat out and at equal load), p99 within 1.2x
refRow('nano-host ÷ floor, CPU ratio', (tr) => ratio(g('floor', tr).cpu_us, g('nano', tr).cpu_us), '≥ 0.85 TCP, ≥ 0.80 WS');
refRow('nano-host p99 ÷ floor p99', (tr) => ratio(g('nano', tr).p99_us, g('floor', tr).p99_us), '≤ 1.2');
if (servers.includes('pomelo')) {
  row('nano-host ÷ pomelo, responses/s', (tr) => ratio(g('nano', tr).rate, g('pomelo', tr).rate), '≥ 2', 2);
  row('nano-host ÷ pomelo, CPU ratio', (tr) => ratio(g('pomelo', tr).cpu_us, g('nano', tr).cpu_us), '≥ 2', 2);
  row('pomelo ÷ floor, responses/s', (tr) => ratio(g('pomelo', tr).rate, g('floor', tr).rate), '(reference)', 0);
}
p();

servers = serversOf('eq');
if (servers.length) {
  p(`### 1b. Ping-pong at an equal load: ${fmt(facts.eq_rate)} requests/s offered over 1,000 connections`);
  p();
  p('Each connection sends its next request one interval after its previous one (or at once, if the answer came later than that). Every server does the same work per second, so CPU per request and latency compare like for like. The round shown is the one with the lowest server CPU per request.');
  p();
  p('| server | transport | responses/s | p50 ms | p99 ms | max ms | server CPU/op µs | CPU ratio (floor ÷ server) | errors |');
  p('|---|---|---|---|---|---|---|---|---|');
  for (const tr of ['tcp', 'ws']) {
    const f = calmest('eq', 'floor', tr);
    for (const s of servers) {
      const b = calmest('eq', s, tr);
      if (!b) {
        p(`| ${names[s]} | ${tr.toUpperCase()} | failed | | | | | | |`);
        continue;
      }
      p(`| ${names[s]} | ${tr.toUpperCase()} | ${fmt(b.rate)} | ${fmt(b.p50_us / 1000, 2)} | ${fmt(b.p99_us / 1000, 2)} | ${fmt(b.max_us / 1000, 1)} | ${fmt(b.cpu_us, 1)} | ${fmt(ratio(f && f.cpu_us, b.cpu_us), 2)} | ${b.errors + b.closed + b.unanswered} |`);
    }
  }
  p();
  const e = (s, tr) => calmest('eq', s, tr) || {};
  p('| figure | TCP | WS | target |');
  p('|---|---|---|---|');
  refRow('nano-host ÷ floor, CPU ratio at equal load', (tr) => ratio(e('floor', tr).cpu_us, e('nano', tr).cpu_us), '≥ 0.85 TCP, ≥ 0.80 WS');
  row('nano-host p99 ÷ floor p99 at equal load', (tr) => ratio(e('nano', tr).p99_us, e('floor', tr).p99_us), '≤ 2', 2, false);
  if (servers.includes('pomelo')) row('nano-host ÷ pomelo, CPU ratio at equal load', (tr) => ratio(e('pomelo', tr).cpu_us, e('nano', tr).cpu_us), '≥ 2', 2);
  p();
}

// the pairs' CPU ratios of a run in turns (scripts/bench's pair_ratios, on nano-host's line)
const pairCol = (n) => (n && n.pairs ? `${fmt(n.pair_median, 2)} (${fmt(n.pair_low, 2)}, ${fmt(n.pair_high, 2)})` : '—');
// a run in turns (sections 1c and 4c): one per server, transport and load
const turnRun = (k, s, tr) => {
  const r = runs.find((x) => x.kind === k && x.server === s && x.transport === tr && ok(x));
  return r ? { ...r, cpu_us: cpuPer(r) } : null;
};
if (serversOf('turns').length) {
  p('### 1c. Ping-pong with the floor and nano-host in turns, 1,000 connections each');
  p();
  p(`Both servers up at once on the same CPU, one load generator each; the load generators take turns of ${facts.turn_s} s (${facts.turns} turns each, in pairs whose order alternates: floor then nano-host, nano-host then floor), and only the turns are measured (their time, answers, latencies and server CPU; a turn ends when its last answer is in). This machine's speed swings by a third over tens of seconds: the rounds of sections 1–2 and 1b each meet it in a different state, the turns meet it in the same one, so the CPU and flat-out p99 targets are judged here. The CPU ratio is the whole run's (all turns' CPU over all their answers); beside it, the median of the ${facts.turns} pairs' ratios, which one disturbed pair does not move. Flat out, and at ${fmt(facts.eq_rate)} requests/s offered.`);
  p();
  p('| load | transport | floor CPU/op µs | nano-host CPU/op µs | CPU ratio (floor ÷ nano-host) | median pair (lowest, highest) | floor p99 ms | nano-host p99 ms | p99 ratio | responses/s floor, nano-host | errors |');
  p('|---|---|---|---|---|---|---|---|---|---|---|');
  const tv = {};
  for (const [k, load] of [['turns', 'flat out'], ['turnseq', `${fmt(facts.eq_rate)} req/s`]]) {
    for (const tr of ['tcp', 'ws']) {
      const f = turnRun(k, 'floor', tr), n = turnRun(k, 'nano', tr);
      tv[`${k}/${tr}`] = { cpu: ratio(f && f.cpu_us, n && n.cpu_us), p99: ratio(n && n.p99_us, f && f.p99_us) };
      if (!f || !n) {
        p(`| ${load} | ${tr.toUpperCase()} | ${f ? fmt(f.cpu_us, 1) : 'failed'} | ${n ? fmt(n.cpu_us, 1) : 'failed'} | | | | | | | |`);
        continue;
      }
      p(`| ${load} | ${tr.toUpperCase()} | ${fmt(f.cpu_us, 1)} | ${fmt(n.cpu_us, 1)} | ${fmt(tv[`${k}/${tr}`].cpu, 2)} | ${pairCol(n)} | ${fmt(f.p99_us / 1000, 2)} | ${fmt(n.p99_us / 1000, 2)} | ${fmt(tv[`${k}/${tr}`].p99, 2)} | ${fmt(f.rate)}, ${fmt(n.rate)} | ${f.errors + f.closed + f.unanswered + n.errors + n.closed + n.unanswered} |`);
    }
  }
  p();
  p('| figure (in turns) | TCP | WS | target |');
  p('|---|---|---|---|');
  i18.turns = tv;
  row('nano-host ÷ floor, CPU ratio, flat out', (tr) => tv[`turns/${tr}`].cpu, '≥ 0.85 TCP, ≥ 0.80 WS', cpuTarget);
  row('nano-host ÷ floor, CPU ratio at equal load', (tr) => tv[`turnseq/${tr}`].cpu, '≥ 0.85 TCP, ≥ 0.80 WS', cpuTarget);
  row('nano-host p99 ÷ floor p99, flat out', (tr) => tv[`turns/${tr}`].p99, '≤ 1.2', 1.2, false);
  // no target: nano-host against the same binary in turns gave 0.2 to 10.5 at this load (25 runs)
  p(`| nano-host p99 ÷ floor p99 at equal load | ${fmt(tv['turnseq/tcp'].p99, 2)} | ${fmt(tv['turnseq/ws'].p99, 2)} | none: nano-host against itself gave 0.2 to 10.5 (docs, eighteenth pass) |`);
  p();
}

servers = serversOf('idle');
p('### 3. Memory per idle handshaken connection, 10,000 connections');
p();
p('RSS of the server process after every connection has handshaken and the server has had 2 s to settle, minus its RSS before the first connect, divided by the connections. Heartbeats run (10 s) and are answered one interval late.');
p();
p('| server | TCP KiB/conn | WS KiB/conn | target |');
p('|---|---|---|---|');
const idle = (s, tr) => {
  const r = runs.find((x) => x.kind === 'idle' && x.server === s && x.transport === tr);
  if (!r || r.failed || !(r.up > 0) || !(r.rss_up_kb > 0)) return { v: null, r };
  return { v: (r.rss_up_kb - r.rss0_kb) / r.up, r };
};
for (const s of servers) {
  const t = idle(s, 'tcp'), w = idle(s, 'ws');
  const up = (x) => (x.r && x.r.up !== x.r.conns ? ` (${x.r.up} up)` : '');
  const tgt = s === 'nano' ? `≤ 4: TCP ${mark(t.v, 4, false)}, WS ${mark(w.v, 4, false)}` : '';
  p(`| ${names[s]} | ${fmt(t.v, 2)}${up(t)} | ${fmt(w.v, 2)}${up(w)} | ${tgt} |`);
}
p();

const scaleRuns = runs.filter((x) => x.kind === 'scale' && x.server === 'nano' && ok0(x));
if (scaleRuns.length) {
  p('### 3b. Scale: idle handshaken connections, 1,000 to 19,000 (nano-host)');
  p();
  p('Memory as in section 3; CPU: the server\'s CPU time over a 10 s window divided by the window, with a heartbeat interval (1 h) longer than the window, so it is what the sweep and the timers cost with nothing due. The heartbeat rounds\' cost: the same at the largest count with a 5 s interval (two rounds in the window), minus the idle figure, per round. 100,000: see "Connection scale" below.');
  p();
  p('"B/conn" is the RSS growth over all connections ÷ N (fixed costs of the first connections included); "marginal" is the growth from the previous row\'s count to this one ÷ the connections added: the cost of one more connection.');
  p();
  p('| connections | TCP B/conn | TCP marginal | WS B/conn | WS marginal | TCP % of a core | WS % of a core | target |');
  p('|---|---|---|---|---|---|---|---|');
  const per = (r) => (r && r.up > 0 && r.rss_up_kb > 0 ? ((r.rss_up_kb - r.rss0_kb) * 1024) / r.up : null);
  const pct = (r) => (r && r.secs > 0 ? (100 * r.srv_cpu) / r.secs : null);
  const counts = [...new Set(scaleRuns.map((r) => +r.round))].sort((a, b) => a - b);
  const marginal = (tr, i) => {
    if (i === 0) return null;
    const a = scaleRuns.find((r) => r.transport === tr && +r.round === counts[i - 1]);
    const b = scaleRuns.find((r) => r.transport === tr && +r.round === counts[i]);
    if (!a || !b || !(a.rss_up_kb > 0) || !(b.rss_up_kb > 0)) return null;
    return ((b.rss_up_kb - b.rss0_kb - (a.rss_up_kb - a.rss0_kb)) * 1024) / (b.up - a.up);
  };
  counts.forEach((n, idx) => {
    const t = scaleRuns.find((r) => r.transport === 'tcp' && +r.round === n);
    const w = scaleRuns.find((r) => r.transport === 'ws' && +r.round === n);
    i18.scale = { n, tcp: per(t), ws: per(w), tcpCpu: pct(t), wsCpu: pct(w) }; // the largest count last
    const tgt = n === counts[counts.length - 1] ? `≤ 768 B: TCP ${mark(per(t), 768, false)}, WS ${mark(per(w), 768, false)}; < 0.5%: ${mark(Math.max(pct(t) ?? Infinity, pct(w) ?? Infinity), 0.5, false)}` : '';
    p(`| ${fmt(n)} | ${fmt(per(t))} | ${fmt(marginal('tcp', idx))} | ${fmt(per(w))} | ${fmt(marginal('ws', idx))} | ${fmt(pct(t), 2)} | ${fmt(pct(w), 2)} | ${tgt} |`);
  });
  for (const tr of ['tcp', 'ws']) {
    const h = runs.find((x) => x.kind === 'scalehb' && x.transport === tr && ok0(x));
    const i = h && scaleRuns.find((r) => r.transport === tr && +r.round === +h.round);
    if (h && i && h.secs > 0) {
      const rounds = Math.floor(h.secs / 5);
      const ms = rounds > 0 ? ((h.srv_cpu - (i.srv_cpu * h.secs) / i.secs) * 1000) / rounds : null;
      p();
      p(`Heartbeat rounds, ${tr.toUpperCase()}, ${fmt(+h.round)} connections, 5 s interval: ${fmt(pct(h), 2)}% of a core over the window; one round (a heartbeat out and one in per connection) ≈ ${fmt(ms, 1)} ms of CPU, ${fmt(ms != null ? (ms * 1000) / +h.round : null, 2)} µs per connection.`);
    }
  }
  p();
}

servers = serversOf('bcast');
p('### 4. Broadcast: one group of 5,000 members (TCP)');
p();
p('Connection 0 asks for broadcasts (a request per broadcast) with 4 in flight; a broadcast is complete when all 5,000 members have it; every member checks the sequence.');
p();
p('| server | pushes delivered/s | broadcasts/s | server CPU/push µs | ÷ floor, pushes/s | ÷ floor, CPU ratio | errors |');
p('|---|---|---|---|---|---|---|');
// The median round (rate and CPU/push each), not the best: a single broadcast round moved 2x
// between runs minutes apart; the rounds' spread is printed under the table.
function medianOf(kind, server, transport) {
  const c = runs.filter((r) => r.kind === kind && r.server === server && r.transport === transport && ok(r));
  if (!c.length) return null;
  const mid = (v) => {
    const a = v.filter((x) => x != null).sort((x, y) => x - y);
    if (!a.length) return null;
    return a.length % 2 ? a[(a.length - 1) / 2] : (a[a.length / 2 - 1] + a[a.length / 2]) / 2;
  };
  const byRate = [...c].sort((a, b) => a.rate - b.rate);
  return { ...byRate[Math.floor((byRate.length - 1) / 2)], rate: mid(c.map((r) => r.rate)), cpu_us: mid(c.map(cpuPer)), all: c };
}
const bf = medianOf('bcast', 'floor', 'tcp');
for (const s of servers) {
  const b = medianOf('bcast', s, 'tcp');
  if (!b) {
    p(`| ${names[s]} | failed | | | | | |`);
    continue;
  }
  p(`| ${names[s]} | ${fmt(b.rate)} | ${fmt(b.bcasts / b.secs, 1)} | ${fmt(b.cpu_us, 2)} | ${fmt(ratio(b.rate, bf && bf.rate), 2)} | ${fmt(ratio(bf && bf.cpu_us, b.cpu_us), 2)} | ${b.errors + b.closed} |`);
}
p();
p(`Median of ${bf ? bf.all.length : 0} round(s), servers alternating. Per round, pushes/s: ${servers.map((s) => { const b = medianOf('bcast', s, 'tcp'); return b ? `${s} ${b.all.map((r) => fmt(r.rate)).join(' / ')}` : `${s} failed`; }).join('; ')}.`);
p();

if (runs.some((r) => r.kind === 'bcastw')) {
  p('### 4a. Broadcast with 16 in flight (TCP, 5,000 members)');
  p();
  p('The same broadcast with 16 requests in flight: the pushes to each member pile up between two writes (one `send` carries several), so the figure is the push path\'s own cost rather than how the server and the load generator overlap.');
  p();
  p('| server | pushes delivered/s | server CPU/push µs | ÷ floor, pushes/s | ÷ floor, CPU ratio | errors |');
  p('|---|---|---|---|---|---|');
  const wf = medianOf('bcastw', 'floor', 'tcp');
  for (const s of serversOf('bcastw')) {
    const b = medianOf('bcastw', s, 'tcp');
    if (!b) {
      p(`| ${names[s]} | failed | | | | |`);
      continue;
    }
    p(`| ${names[s]} | ${fmt(b.rate)} | ${fmt(b.cpu_us, 2)} | ${fmt(ratio(b.rate, wf && wf.rate), 2)} | ${fmt(ratio(wf && wf.cpu_us, b.cpu_us), 2)} | ${b.errors + b.closed} |`);
  }
  p();
  p(`Median of ${wf ? wf.all.length : 0} round(s). Per round, pushes/s: ${serversOf('bcastw').map((s) => { const b = medianOf('bcastw', s, 'tcp'); return b ? `${s} ${b.all.map((r) => fmt(r.rate)).join(' / ')}` : `${s} failed`; }).join('; ')}.`);
  p();
}

if (runs.some((r) => r.kind === 'turnsbc' || r.kind === 'turnsbcw')) {
  p('### 4c. Broadcast with the floor and nano-host in turns (TCP, 5,000 members each)');
  p();
  p(`As in 1c: both servers up at once, 5,000 members each, the load generators taking turns of 1 s (${facts.turns} each, the order alternating); a turn ends when its broadcasts in flight have reached every member. Both servers' CPU per push is higher here than in sections 4 and 4a (by a quarter to three quarters in the runs so far; twice the sockets are open, and each turn fills and drains its pipeline; not explained further): the ratio is what compares.`);
  p();
  p('| in flight | floor pushes/s | nano-host pushes/s | ÷ floor, pushes/s | floor CPU/push µs | nano-host CPU/push µs | ÷ floor, CPU ratio | median pair (lowest, highest) | errors |');
  p('|---|---|---|---|---|---|---|---|---|');
  const bt = {};
  for (const [k, w] of [['turnsbc', 4], ['turnsbcw', 16]]) {
    const f = turnRun(k, 'floor', 'tcp'), n = turnRun(k, 'nano', 'tcp');
    if (!f || !n) {
      p(`| ${w} | ${f ? fmt(f.rate) : 'failed'} | ${n ? fmt(n.rate) : 'failed'} | | | | | | |`);
      continue;
    }
    bt[w] = ratio(n.rate, f.rate);
    p(`| ${w} | ${fmt(f.rate)} | ${fmt(n.rate)} | ${fmt(bt[w], 2)} | ${fmt(f.cpu_us, 2)} | ${fmt(n.cpu_us, 2)} | ${fmt(ratio(f.cpu_us, n.cpu_us), 2)} | ${pairCol(n)} | ${f.errors + f.closed + n.errors + n.closed} |`);
  }
  p();
  i18.bcast = bt;
  p('| figure (in turns) | 4 in flight | 16 in flight | target |');
  p('|---|---|---|---|');
  p(`| nano-host ÷ floor, pushes/s | ${fmtNear(bt[4], 1.0)} (${mark(bt[4], 1.0)}) | ${fmtNear(bt[16], 1.0)} (${mark(bt[16], 1.0)}) | ≥ 1.0 (sections 4 and 4a: the same in rounds, for reference) |`);
  p();
}

if (runs.some((r) => r.kind === 'pb')) {
  p('### 4b. Protobuf payloads against JSON (nano-host ping-pong, 1,000 connections)');
  p();
  p('The same Bench.ping echo with `{ n }` as JSON (`{"n":N}`) and as protobuf (`bench.proto` Ping, `nano.protobuf`): decode into a Lua table, handler, encode again.');
  p();
  p('| payload | TCP responses/s | WS responses/s | TCP server CPU/request µs | WS server CPU/request µs |');
  p('|---|---|---|---|---|');
  const pb = {};
  for (const ser of ['json', 'protobuf']) {
    for (const tr of ['tcp', 'ws']) pb[`${ser}/${tr}`] = best('pb', ser, tr) || {};
    p(`| ${ser} | ${fmt(pb[`${ser}/tcp`].rate)} | ${fmt(pb[`${ser}/ws`].rate)} | ${fmt(pb[`${ser}/tcp`].cpu_us, 1)} | ${fmt(pb[`${ser}/ws`].cpu_us, 1)} |`);
  }
  p();
  p('| figure | TCP | WS | target |');
  p('|---|---|---|---|');
  const pr = (f) => (tr) => f(pb[`protobuf/${tr}`], pb[`json/${tr}`]);
  row('protobuf ÷ JSON, responses/s', pr((a, b) => ratio(a.rate, b.rate)), '≥ 1', 1);
  row('protobuf ÷ JSON, CPU ratio', pr((a, b) => ratio(b.cpu_us, a.cpu_us)), '≥ 1', 1);
  p();
}
if (facts.pbinstr) {
  const per = (x) => (x && x.count > 0 ? x.ir / x.count : null);
  const j = per(facts.pbinstr.json), pbuf = per(facts.pbinstr.protobuf);
  p('User-space instructions per request of the same echo under callgrind (50 connections, TCP; steady on a busy machine):');
  p();
  p('| JSON | protobuf | JSON ÷ protobuf | target |');
  p('|---|---|---|---|');
  p(`| ${fmt(j)} | ${fmt(pbuf)} | ${fmt(ratio(j, pbuf), 2)} | ≥ 1: ${mark(ratio(j, pbuf), 1)} |`);
  p();
}

p('### 5. Hot reload with 10,000 sessions under load');
p();
if (facts.reload_note) {
  p(facts.reload_note + '.');
} else {
  const r = runs.find((x) => x.kind === 'reload');
  if (!r || r.failed) p('The run failed; see the bench log.');
  else {
    p('SIGHUP half-way through a ping-pong run over 10,000 TCP connections.');
    p();
    p('| reload time (server log) | responses/s over the run | p99 ms | max ms | requests lost (unanswered + error responses + closed) |');
    p('|---|---|---|---|---|');
    p(`| ${reloadMs && reloadMs !== 'none' ? reloadMs + ' ms' : 'no "reloaded in" line'} | ${fmt(r.rate)} | ${fmt(r.p99_us / 1000, 1)} | ${fmt(r.max_us / 1000, 1)} | ${r.unanswered + r.errors + r.closed} |`);
  }
}
p();

if (runs.some((r) => r.kind === 'tlspp')) {
  p('### 6. TLS: ping-pong over TLS and wss, idle memory per TLS connection');
  p();
  p('One nano-host with plaintext and TLS listeners side by side (TLS 1.3, ECDSA P-256, the load generator runs TLS through the same core/tls.c as a client), 1,000 connections flat out, rounds alternating; idle memory at 10,000 handshaken connections as in section 3.');
  p();
  p('| server | transport | responses/s | p99 ms | server CPU/req µs | TLS ÷ plain, responses/s | TLS ÷ plain, CPU ratio |');
  p('|---|---|---|---|---|---|---|');
  for (const [plain, sec] of [['tcp', 'tls'], ['ws', 'wss']]) {
    const a = best('tlspp', 'nano', plain);
    for (const [s, tr] of [['nano', plain], ['nano', sec], ['pomelo', sec]]) {
      const x = best('tlspp', s, tr);
      if (!x) {
        if (s === 'nano') p(`| ${names[s]} | ${tr.toUpperCase()} | failed | | | | |`);
        continue;
      }
      const rel = s === 'nano' && tr === sec && a ? `${fmt(ratio(x.rate, a.rate), 2)} | ${fmt(ratio(a.cpu_us, x.cpu_us), 2)}` : ' | ';
      p(`| ${names[s]} | ${tr.toUpperCase()} | ${fmt(x.rate)} | ${fmt(x.p99_us / 1000, 2)} | ${fmt(x.cpu_us, 1)} | ${rel} |`);
    }
  }
  const pn = best('tlspp', 'nano', 'tls'), pp = best('tlspp', 'pomelo', 'tls');
  if (pn && pp) p(`\nnano-host ÷ pomelo over TLS (TCP): ${fmt(ratio(pn.rate, pp.rate), 2)}× the responses/s, ${fmt(ratio(pp.cpu_us, pn.cpu_us), 2)}× less CPU per request.`);
  p();
  p('| server | TLS KiB/conn | wss KiB/conn | plaintext TCP / WS (section 3) |');
  p('|---|---|---|---|');
  for (const s of ['nano', 'pomelo']) {
    const t = idle(s, 'tls'), w = idle(s, 'wss');
    if (t.v == null && w.v == null) continue;
    p(`| ${names[s]} | ${fmt(t.v, 2)} | ${fmt(w.v, 2)} | ${fmt(idle(s, 'tcp').v, 2)} / ${fmt(idle(s, 'ws').v, 2)} |`);
  }
  p();
}
if (runs.some((r) => r.kind === 'clpp')) {
  p('### 7. Cluster: a request through a gate and a backend, against one process');
  p();
  p('Ping-pong over TCP, 1,000 connections flat out. nano-host: one process, then a gate that forwards every request over NATS (nats-server 2.9) to a backend and the answer back (gate, backend and nats-server share the server CPU). pomelo: its connector alone, then connector + a backend server over its own RPC.');
  p();
  p('| setup | responses/s | p50 ms | p99 ms | server CPU/req µs | ÷ the same on one process |');
  p('|---|---|---|---|---|---|');
  const cl = { nano: 'nano-host, one process', gate: 'nano-host, gate → NATS → backend', pomelo: `pomelo ${facts.pomelo || ''}, connector`, 'pomelo-pair': `pomelo ${facts.pomelo || ''}, connector → backend (pomelo RPC)` };
  for (const s of ['nano', 'gate', 'pomelo', 'pomelo-pair']) {
    const b = best('clpp', s, 'tcp');
    if (!b) continue;
    const base = s === 'gate' ? best('clpp', 'nano', 'tcp') : s === 'pomelo-pair' ? best('clpp', 'pomelo', 'tcp') : null;
    p(`| ${cl[s]} | ${fmt(b.rate)} | ${fmt(b.p50_us / 1000, 2)} | ${fmt(b.p99_us / 1000, 2)} | ${s === 'gate' ? '(gate only) ' : ''}${fmt(b.cpu_us, 1)} | ${base ? fmt(ratio(b.rate, base.rate), 2) : ''} |`);
  }
  const one = runs.find((r) => r.kind === 'clbc' && r.server === 'nano');
  const g1 = runs.find((r) => r.kind === 'clbc' && r.server === 'gate');
  const g2 = runs.find((r) => r.kind === 'clbc' && r.server === 'gate2');
  if (one && g1 && g2 && ok(one) && ok(g1)) {
    const both = g1.rate + (ok(g2) ? g2.rate : 0);
    p('');
    p(`Broadcast to 5,000 members: one process ${fmt(one.rate)} pushes delivered/s; a backend's group with 2,500 members on each of two gates ${fmt(both)} pushes/s (${fmt(g1.rate)} + ${fmt(ok(g2) ? g2.rate : 0)}), ${fmt(ratio(both, one.rate), 2)} of one process; errors ${g1.errors + g1.closed + (g2.errors || 0) + (g2.closed || 0)}.`);
    const p1 = runs.find((r) => r.kind === 'clbc' && r.server === 'pomelo-pair');
    const p2 = runs.find((r) => r.kind === 'clbc' && r.server === 'pomelo-pair2');
    if (p1 && ok(p1)) {
      const pboth = p1.rate + (p2 && ok(p2) ? p2.rate : 0);
      p(`pomelo ${facts.pomelo || ''}, a backend's channel with 2,500 members on each of two connectors (its own RPC): ${fmt(pboth)} pushes/s; nano-host's gates ÷ pomelo's connectors: ${fmt(ratio(both, pboth), 2)}.`);
    }
  }
  const g = best('clpp', 'gate', 'tcp'), pp = best('clpp', 'pomelo-pair', 'tcp');
  if (g && pp) p(`\nnano-host's gate + backend ÷ pomelo's connector + backend: ${fmt(ratio(g.rate, pp.rate), 2)}× the responses/s.`);
  p();
}
if (facts.instr) {
  p('### 8. User-space instructions per request (callgrind)');
  p();
  p('nano-host under `valgrind --tool=callgrind`, 50 connections of JSON ping-pong over TCP; counters zeroed after a warm-up run, dumped after the measured run. Instructions, unlike time, are the same on a busy machine.');
  p();
  const per = facts.instr.count > 0 ? facts.instr.ir / facts.instr.count : null;
  p(`| requests | instructions | per request | target |`);
  p('|---|---|---|---|');
  p(`| ${fmt(facts.instr.count)} | ${fmt(facts.instr.ir)} | ${fmt(per)} | ≤ 4,000: ${mark(per, 4000, false)} |`);
  const n = facts.instrNested;
  if (n && n.count > 0 && n.ir > 0) {
    p();
    p(`The same server answering \`Bench.nested\`, a reply one level deep (\`{ p = msg, ok = true }\`, written by the flat writer): ${fmt(n.ir / n.count)} instructions per request over ${fmt(n.count)} requests, ${fmt(per ? n.ir / n.count / per : null, 2)}× the flat reply's.`);
  }
  const u = facts.instrPush;
  if (u && u.count > 0 && u.ir > 0) {
    p();
    p(`And \`Bench.note\`, a notify whose handler pushes its payload back (\`s:push\`, through the FFI): ${fmt(u.ir / u.count)} instructions per notify and push over ${fmt(u.count)}, ${fmt(per ? u.ir / u.count / per : null, 2)}× a request and its response.`);
  }
  p();
}
if (runs.some((r) => r.kind === 'stpp')) {
  p('### 9. Storage: a handler that waits for one query per request');
  p();
  p('Ping-pong over TCP, 1,000 connections flat out, against the same server\'s plain ping-pong in the same round. The handler starts a task that waits for the query (libuv\'s thread pool for SQLite) and answers with the request\'s payload.');
  p();
  p('| handler | responses/s | p50 ms | p99 ms | server CPU/req µs | ÷ plain |');
  p('|---|---|---|---|---|---|');
  const plain = best('stpp', 'plain', 'tcp');
  const label = { plain: 'plain (no query)', sqlite: 'one SQLite primary-key SELECT (:memory:)', redis: 'one Redis GET', pg: 'one PostgreSQL primary-key SELECT' };
  for (const s of ['plain', 'sqlite', 'redis', 'pg']) {
    const b = best('stpp', s, 'tcp');
    if (!b) continue;
    p(`| ${label[s]} | ${fmt(b.rate)} | ${fmt(b.p50_us / 1000, 2)} | ${fmt(b.p99_us / 1000, 2)} | ${fmt(b.cpu_us, 1)} | ${s === 'plain' ? '' : fmt(ratio(b.rate, plain && plain.rate), 2)} |`);
  }
  p();
}
if (facts.instrmx) {
  p('### 10. The cost of metrics (callgrind)');
  p();
  p('As section 8, with `nano.listen_metrics` off and on; while it is on, /metrics is scraped every 2 s (Prometheus usually every 15 s or more). Per request: the counters in C, the dispatcher\'s per-route count and handler time, and the scrapes spread over the requests.');
  p();
  const per = (x) => (x && x.count > 0 ? x.ir / x.count : null);
  const off = per(facts.instrmx.off), on = per(facts.instrmx.on);
  const cost = off && on ? (on / off - 1) * 100 : null;
  p('| metrics off, instructions/request | metrics on, instructions/request | cost | target |');
  p('|---|---|---|---|');
  p(`| ${fmt(off)} | ${fmt(on)} | ${cost == null ? '—' : fmt(cost, 1) + '%'} | < 3%: ${cost == null ? '—' : mark(cost, 3, false)} |`);
  p();
}
if (runs.some((r) => ['uring', 'uringeq', 'uringbcw'].includes(r.kind))) {
  p('### 11. io_uring: a turn\'s reads and writes in batches, against one system call each (nano-host, TCP)');
  p();
  p(`The same nano-host binary in both places of section 1c's turns (${facts.turns} each, the order alternating; 1 s turns for the broadcast), the first with \`NANO_HOST_IO_URING=0\`: every read and every write is then a system call of its own, as it was before the twenty-fifth pass. With io_uring (the default where the kernel has it), the connections a poll found readable are read in batches of up to 128, and the turn's writes go in batches of up to 512 (core/io_batch.h).`);
  p();
  p('| load | one call each: CPU/op µs | batched: CPU/op µs | CPU ratio (one each ÷ batched) | median pair (lowest, highest) | p99 ms, one each / batched | answers or pushes/s, one each / batched | errors |');
  p('|---|---|---|---|---|---|---|---|');
  for (const [k, load] of [['uring', 'ping-pong, 1,000 connections, flat out'], ['uringeq', `ping-pong, 1,000 connections, ${fmt(facts.eq_rate)} req/s`], ['uringbcw', 'broadcast to 5,000, 16 in flight (per push)']]) {
    const f = turnRun(k, 'floor', 'tcp'), n = turnRun(k, 'nano', 'tcp');
    if (!f || !n) {
      p(`| ${load} | ${f ? fmt(f.cpu_us, 2) : 'failed'} | ${n ? fmt(n.cpu_us, 2) : 'failed'} | | | | | |`);
      continue;
    }
    const p99 = f.p99_us > 0 && n.p99_us > 0 ? `${fmt(f.p99_us / 1000, 2)} / ${fmt(n.p99_us / 1000, 2)}` : '—';
    p(`| ${load} | ${fmt(f.cpu_us, 2)} | ${fmt(n.cpu_us, 2)} | ${fmt(ratio(f.cpu_us, n.cpu_us), 2)} | ${pairCol(n)} | ${p99} | ${fmt(f.rate)} / ${fmt(n.rate)} | ${f.errors + f.closed + f.unanswered + n.errors + n.closed + n.unanswered} |`);
  }
  p();
}
// Issue 18 asks for its figures old and new side by side: "when filed" is the full run the issue
// quoted (b3c1eff, 2026-11-27: rounds, as every timed figure was before the turns of the
// seventeenth pass), and the new user's callgrind count, idle memory and idle CPU in its text.
function issue18Summary() {
  const t = i18.turns, sc = i18.scale, bc = i18.bcast || {};
  const instr = facts.instr && facts.instr.count > 0 ? facts.instr.ir / facts.instr.count : null;
  if (facts.self || (!t && !sc && !instr && !i18.bcast)) return [];
  const pair = (a, b, d = 2) => `${fmt(a, d)} / ${fmt(b, d)}`;
  const both = (a, b, tgt, higher = true) => (a == null || b == null ? '—' : mark(higher ? Math.min(a, b) : Math.max(a, b), tgt, higher));
  // both transports against their own targets (cpuTarget, section 1–2)
  const cpuMet = (k) => {
    const vt = t[`${k}/tcp`].cpu, vw = t[`${k}/ws`].cpu;
    return vt == null || vw == null ? '—' : mark(Math.min(vt / cpuTarget('tcp'), vw / cpuTarget('ws')), 1);
  };
  const L = [];
  L.push("### Issue 18: this run beside the figures when it was filed");
  L.push('');
  L.push('"When filed": the full run issue 18 quoted (b3c1eff, 2026-11-27), where every timed figure was taken in rounds; this run\'s timed figures are the turns\' (1c, 4c), the others as in sections 3b and 8. A dash: not measured in this run.');
  L.push('');
  L.push('| figure | when filed | this run | target |');
  L.push('|---|---|---|---|');
  if (t) {
    L.push(`| CPU ratio flat out, TCP / WS (floor ÷ nano-host) | 0.74 / 0.66 | ${pair(t['turns/tcp'].cpu, t['turns/ws'].cpu)} | ≥ 0.85 / ≥ 0.80: ${cpuMet('turns')} |`);
    L.push(`| CPU ratio at ${fmt(facts.eq_rate)} req/s, TCP / WS | 0.67 / 0.71 | ${pair(t['turnseq/tcp'].cpu, t['turnseq/ws'].cpu)} | ≥ 0.85 / ≥ 0.80: ${cpuMet('turnseq')} |`);
    L.push(`| p99 flat out ÷ floor's, TCP / WS | 1.16 / 0.95 | ${pair(t['turns/tcp'].p99, t['turns/ws'].p99)} | ≤ 1.2: ${both(t['turns/tcp'].p99, t['turns/ws'].p99, 1.2, false)} |`);
  }
  if (instr) L.push(`| user-space instructions per request (callgrind) | ~8,300 | ${fmt(instr)} | ≤ 4,000: ${mark(instr, 4000, false)} |`);
  if (sc) {
    L.push(`| memory per idle connection at ${fmt(sc.n)}, TCP / WS | 1,068 B | ${pair(sc.tcp, sc.ws, 0)} B | ≤ 768 B: ${both(sc.tcp, sc.ws, 768, false)} |`);
    L.push(`| CPU with ${fmt(sc.n)} idle connections, TCP / WS | 1.7 % of a core | ${pair(sc.tcpCpu, sc.wsCpu)} % | < 0.5 %: ${both(sc.tcpCpu, sc.wsCpu, 0.5, false)} |`);
  }
  if (i18.bcast) L.push(`| broadcast to 5,000, pushes/s ÷ floor's, 4 / 16 in flight | 0.95 / — | ${fmtNear(bc[4], 1.0)} / ${fmtNear(bc[16], 1.0)} | ≥ 1.0: ${both(bc[4], bc[16], 1.0)} |`);
  L.push('');
  return L;
}
out.splice(i18At, 0, ...issue18Summary());
process.stdout.write(out.join('\n') + '\n');
