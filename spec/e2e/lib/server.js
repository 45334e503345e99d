'use strict';
// Starts nano-host for a test file and stops it again.
//
//   const srv = await startServer(fixture('basic.lua'), [], { env: { NH_HEARTBEAT: '1' } });
//   srv.tcp  -> { host, port }          from "listening tcp://127.0.0.1:PORT" on stderr
//   srv.ws   -> { host, port, path }    from "listening ws://127.0.0.1:PORT/nano"
//   await srv.stop();                   SIGTERM, asserts exit code 0 within 10 s (else SIGKILL)

const assert = require('node:assert');
const path = require('node:path');
const fs = require('node:fs');
const { spawn } = require('node:child_process');

const SOURCE_DIR = process.env.NH_SOURCE_DIR || path.resolve(__dirname, '..', '..', '..');
const LOG_LIMIT = 4 * 1024 * 1024;
const LISTEN_RE = /listening (tcp|ws|tls|wss):\/\/([0-9.]+|\[[0-9a-f:]+\]|localhost):(\d+)(\/[^\s"']*)?/;

const running = new Set();

// NH_E2E_SLOW=N multiplies the server's start, stop and per-file time limits (nano-host under
// valgrind starts and stops several times slower; spec/e2e/valgrind/).
const SLOW = Math.max(1, Number(process.env.NH_E2E_SLOW) || 1);

function binaryPath() {
  return process.env.NANO_HOST || path.join(SOURCE_DIR, 'build', 'nano-host');
}

function fixture(name) {
  return path.join(__dirname, '..', 'fixtures', name);
}

// Never leave a server behind, whatever happens to the test process.
function killAllSync() {
  for (const s of running) {
    try {
      s.proc.kill('SIGKILL');
    } catch (e) {
      /* already gone */
    }
  }
}
process.on('exit', killAllSync);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    killAllSync();
    process.exit(130);
  });
}

function startServer(scriptPath, args = [], opts = {}) {
  const bin = binaryPath();
  if (!fs.existsSync(bin)) throw new Error(`nano-host binary not found at ${bin} (set NANO_HOST)`);
  const expect = opts.expect || ['tcp', 'ws'];
  const startTimeoutMs = (opts.startTimeoutMs || 10000) * SLOW;
  const proc = spawn(bin, [...args, scriptPath], {
    cwd: opts.cwd || SOURCE_DIR,
    env: { ...process.env, ...(opts.env || {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });

  const server = {
    proc,
    pid: proc.pid,
    stdout: '',
    stderr: '',
    exited: false,
    exitCode: null,
    exitSignal: null,
    listening: {},
    tcp: null,
    ws: null,
    log() {
      return `--- nano-host stderr ---\n${this.stderr}\n--- nano-host stdout ---\n${this.stdout}`;
    },
    logTail(lines = 40) {
      const tail = (s) => s.split('\n').slice(-lines).join('\n');
      return `--- nano-host stderr (tail) ---\n${tail(this.stderr)}\n--- nano-host stdout (tail) ---\n${tail(this.stdout)}`;
    },
    waitExit(timeoutMs) {
      if (this.exited) return Promise.resolve(true);
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          proc.off('exit', onExit);
          resolve(false);
        }, timeoutMs);
        const onExit = () => {
          clearTimeout(timer);
          resolve(true);
        };
        proc.once('exit', onExit);
      });
    },
    // SIGTERM, then wait up to timeoutMs for the exit; asserts a clean exit (code 0).
    async stop(timeoutMs = 10000) {
      timeoutMs *= SLOW;
      if (!this.exited) {
        const t0 = Date.now();
        proc.kill('SIGTERM');
        const ok = await this.waitExit(timeoutMs);
        if (!ok) {
          proc.kill('SIGKILL');
          await this.waitExit(2000);
          assert.fail(`nano-host did not exit within ${timeoutMs} ms of SIGTERM (killed)\n${this.logTail()}`);
        }
        this.stopMs = Date.now() - t0;
      }
      assert.strictEqual(
        this.exitCode,
        0,
        `nano-host exit code ${this.exitCode} signal ${this.exitSignal} (expected 0)\n${this.logTail()}`,
      );
      return { code: this.exitCode, ms: this.stopMs };
    },
    kill() {
      if (!this.exited) proc.kill('SIGKILL');
      return this.waitExit(2000);
    },
  };
  running.add(server);

  const append = (key, chunk) => {
    if (server[key].length < LOG_LIMIT) server[key] += chunk.toString();
  };
  proc.stdout.on('data', (d) => append('stdout', d));

  return new Promise((resolve, reject) => {
    let settled = false;
    let lineBuf = '';
    const finish = (err) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) {
        if (!server.exited) proc.kill('SIGKILL');
        reject(err);
      } else {
        resolve(server);
      }
    };
    const timer = setTimeout(
      () => finish(new Error(`nano-host did not print listening lines for ${expect.join('+')} within ${startTimeoutMs} ms\n${server.log()}`)),
      startTimeoutMs,
    );
    proc.stderr.on('data', (d) => {
      append('stderr', d);
      if (settled) return;
      lineBuf += d.toString();
      let nl;
      while ((nl = lineBuf.indexOf('\n')) >= 0) {
        const line = lineBuf.slice(0, nl);
        lineBuf = lineBuf.slice(nl + 1);
        const m = LISTEN_RE.exec(line);
        if (!m) continue;
        const host = m[2].replace(/^\[|\]$/g, '');
        const entry = { host, port: Number(m[3]) };
        if (m[1] === 'ws' || m[1] === 'wss') entry.path = m[4] || '/';
        if (!server.listening[m[1]]) server.listening[m[1]] = entry;
        if (m[1] === 'tcp' && !server.tcp) server.tcp = entry;
        if (m[1] === 'ws' && !server.ws) server.ws = entry;
      }
      // opts.readyRe: also wait for a line like it (a process with no listener: a cluster backend)
      if (expect.every((k) => server.listening[k]) && (!opts.readyRe || opts.readyRe.test(server.stderr))) finish(null);
    });
    proc.on('error', (err) => {
      server.exited = true;
      running.delete(server);
      finish(new Error(`cannot start ${bin}: ${err.message}`));
    });
    proc.on('exit', (code, signal) => {
      server.exited = true;
      server.exitCode = code;
      server.exitSignal = signal;
      running.delete(server);
      finish(new Error(`nano-host exited early (code ${code}, signal ${signal})\n${server.log()}`));
    });
  });
}

// Aborts the whole test file after `ms` (kills the servers; exit code 1) so nothing can hang.
function watchdog(ms = 115000) {
  ms *= SLOW;
  const t = setTimeout(() => {
    console.error(`# watchdog: test file exceeded ${ms} ms, killing nano-host and exiting`);
    for (const s of running) console.error(s.logTail());
    killAllSync();
    process.exit(1);
  }, ms);
  t.unref();
  return t;
}

module.exports = { startServer, fixture, watchdog, binaryPath, SOURCE_DIR };
