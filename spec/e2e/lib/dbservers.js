'use strict';
// Throwaway database servers for e2e tests (the Lua side has nt.redis / nt.postgres): each runs
// in a temporary folder on a free loopback port and is stopped by stop() (and at exit).
//   const redis = await startRedis();   redis.url, redis.kill(), redis.start(), redis.stop()
//   const pg = await startPostgres();   pg.conninfo, pg.kill(), pg.start(), pg.stop()
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const net = require('node:net');
const { execFileSync, spawnSync } = require('node:child_process');

const PG_BIN = '/usr/lib/postgresql/15/bin';
const live = new Set();
process.on('exit', () => { for (const s of live) { try { s.stopSync(); } catch (e) { /* exiting */ } } });

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function need(bin, pkg) {
  if (!fs.existsSync(bin)) throw new Error(`${bin} is not installed (Debian package ${pkg}; scripts/setup installs it)`);
}

async function startRedis() {
  need('/usr/bin/redis-server', 'redis-server');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nh-e2e-redis-'));
  const port = await freePort();
  const srv = {
    port, dir, url: `redis://127.0.0.1:${port}/0`,
    async start() {
      execFileSync('redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--dir', dir,
        '--daemonize', 'yes', '--pidfile', path.join(dir, 'redis.pid'), '--logfile',
        path.join(dir, 'redis.log'), '--save', '', '--appendonly', 'no']);
      for (let i = 0; i < 100; i++) {
        const r = spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' });
        if (r.stdout && r.stdout.includes('PONG')) return;
        await sleep(50);
      }
      throw new Error('redis-server did not start');
    },
    signal(sig) {
      const file = path.join(dir, 'redis.pid');
      if (!fs.existsSync(file)) return;
      const pid = Number(fs.readFileSync(file, 'utf8'));
      try { process.kill(pid, sig); } catch (e) { /* gone */ }
      for (let i = 0; i < 200; i++) {
        try { process.kill(pid, 0); } catch (e) { break; }
        spawnSync('sleep', ['0.02']);
      }
      fs.rmSync(file, { force: true });
    },
    kill() { this.signal('SIGKILL'); },
    // a client is blocked in a command (BLPOP) on the server now
    blocked() {
      const r = spawnSync('redis-cli', ['-p', String(port), 'client', 'list'], { encoding: 'utf8' });
      return /cmd=blpop/.test(r.stdout || '');
    },
    stopSync() { this.signal('SIGTERM'); fs.rmSync(dir, { recursive: true, force: true }); live.delete(this); },
    stop() { this.stopSync(); },
  };
  live.add(srv);
  await srv.start();
  return srv;
}

async function startPostgres() {
  need(`${PG_BIN}/initdb`, 'postgresql');
  const root = process.getuid() === 0;
  const asPg = (cmd, args) => (root ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args]);
  const run = (cmd, args) => {
    const [c, a] = asPg(cmd, args);
    return spawnSync(c, a, { encoding: 'utf8' });
  };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nh-e2e-pg-'));
  if (root) execFileSync('chown', ['postgres:', dir]);
  const port = await freePort();
  const init = run(`${PG_BIN}/initdb`, ['-D', `${dir}/data`, '-A', 'trust', '-U', 'postgres', '--no-sync']);
  if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr}`);
  const srv = {
    port, dir, conninfo: `host=127.0.0.1 port=${port} user=postgres dbname=postgres`,
    async start() {
      const r = run(`${PG_BIN}/pg_ctl`, ['-D', `${dir}/data`, '-l', `${dir}/log`, '-w', '-o',
        `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`, 'start']);
      if (r.status !== 0) throw new Error(`pg_ctl start failed: ${r.stderr}${fs.readFileSync(`${dir}/log`, 'utf8')}`);
    },
    kill() { run(`${PG_BIN}/pg_ctl`, ['-D', `${dir}/data`, '-m', 'immediate', '-w', 'stop']); },
    // a query is sleeping on the server now (pg_sleep)
    blocked() {
      const r = run(`${PG_BIN}/psql`, ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-Atc',
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' AND pid <> pg_backend_pid()"]);
      return (r.stdout || '').trim() === '1';
    },
    stopSync() {
      run(`${PG_BIN}/pg_ctl`, ['-D', `${dir}/data`, '-m', 'fast', '-w', 'stop']);
      fs.rmSync(dir, { recursive: true, force: true });
      live.delete(this);
    },
    stop() { this.stopSync(); },
  };
  live.add(srv);
  await srv.start();
  return srv;
}

// Polls fn (bounded) until it returns true.
async function waitFor(fn, what, ms = 10000) {
  for (const end = Date.now() + ms; Date.now() < end;) {
    if (fn()) return;
    await sleep(20);
  }
  throw new Error(`timed out waiting for ${what}`);
}

module.exports = { startRedis, startPostgres, freePort, waitFor };
