'use strict';
// Debian's Chromium, headless, driven by npm playwright-core (it never downloads a browser).
//   const b = await launchChromium({ ignoreHTTPSErrors: true });
//   if (b.skip) t.skip(b.skip)   // only when Chromium cannot start here
//   ... b.context.newPage() ...; await b.close();

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const CHROMIUM = process.env.NH_CHROMIUM || '/usr/bin/chromium';
// Without the background-networking flags Chromium tries to reach Google's hosts at every start.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

async function launchChromium(extra = {}) {
  if (!fs.existsSync(CHROMIUM)) return { skip: `${CHROMIUM} not found (scripts/setup installs Debian's chromium)` };
  // Not a reason to skip: scripts/setup installs it (npm, spec/e2e/package.json).
  const { chromium } = require('playwright-core');
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'nh-chromium-'));
  try {
    const context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 760, height: 520 },
      timeout: 30000,
      ...extra,
    });
    return { context, userDataDir };
  } catch (e) {
    fs.rmSync(userDataDir, { recursive: true, force: true });
    return { skip: `Chromium cannot start here: ${e.message.split('\n')[0]}` };
  }
}

module.exports = { launchChromium, CHROMIUM };
