'use strict';
// A throwaway nats-server for a test file: loopback, an ephemeral port (read from its ports file),
// a temporary folder; stop() and start() again on the same port (a restart).
//   const nats = await startNats();  nats.url  ...  await nats.stop();  await nats.start();

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function startNats(opts = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nh-nats-'));
  const n = { dir, port: opts.port || null, proc: null, url: null };
  n.start = async () => {
    const args = ['-a', '127.0.0.1', '-p', n.port ? String(n.port) : '-1', '--ports_file_dir', dir];
    for (const f of fs.readdirSync(dir)) if (f.endsWith('.ports')) fs.rmSync(path.join(dir, f));
    n.proc = spawn('nats-server', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    live.add(n.proc);
    n.proc.once('exit', () => live.delete(n.proc));
    n.log = '';
    n.proc.stderr.on('data', (d) => { n.log += d; });
    for (let i = 0; i < 200; i++) {
      const f = fs.readdirSync(dir).find((x) => x.endsWith('.ports'));
      if (f) {
        // the server may be caught between creating the file and writing it: read again later
        let ports = null;
        try { ports = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')); } catch (e) { /* partial */ }
        if (ports && ports.nats && ports.nats[0]) {
          n.port = Number(ports.nats[0].split(':').pop());
          n.url = `nats://127.0.0.1:${n.port}`;
          return n;
        }
      }
      if (n.proc.exitCode !== null) break;
      await sleep(25);
    }
    throw new Error(`nats-server did not start (is it installed? scripts/setup installs it)\n${n.log}`);
  };
  n.stop = async () => {
    if (!n.proc || n.proc.exitCode !== null) return;
    const done = new Promise((r) => n.proc.once('exit', r));
    n.proc.kill('SIGTERM');
    await Promise.race([done, sleep(5000).then(() => n.proc.kill('SIGKILL'))]);
  };
  n.cleanup = async () => {
    await n.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  if (!opts.deferStart) await n.start();
  return n;
}

// never leave a server behind, whatever happens to the test process
const live = new Set();
process.on('exit', () => {
  for (const p of live) try { p.kill('SIGKILL'); } catch (e) { /* gone */ }
});

module.exports = { startNats };
