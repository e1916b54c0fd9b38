// Harness of the console browser suite: the real happyx binary on a temp data
// dir, tokens through its CLI, Chromium through playwright-core, screenshot
// comparison against committed baselines, and axe-core.
'use strict';

const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const { chromium } = require('playwright-core');
const { PNG } = require('pngjs');
const pixelmatch = require('pixelmatch');

const ROOT = path.resolve(__dirname, '..', '..');
const BIN = path.resolve(process.env.CONSOLE_TEST_BIN || path.join(ROOT, 'target', 'debug', 'happyx'));
const BASELINES = path.join(__dirname, 'baselines');
const DIFFS = path.join(ROOT, 'target', 'browser-diffs');
const UPDATE = process.env.UPDATE_BASELINES === '1';
/** Share of pixels allowed to differ (after per-pixel threshold) before a page fails. */
const MAX_DIFF_RATIO = Number(process.env.VISUAL_MAX_DIFF || 0.005);

const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--no-first-run', '--disable-sync', '--font-render-hinting=none',
  '--disable-lcd-text', '--force-color-profile=srgb'];

function cli(...args) {
  return execFileSync(BIN, args, { encoding: 'utf8', cwd: os.tmpdir(), stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

class Server {
  static async start() {
    const base = fs.mkdtempSync(path.join(os.tmpdir(), 'hpx-console-'));
    // Children run as an unprivileged user in ./happyx-workspace beside the data
    // dir: they must be able to traverse the parent (the data dir stays 0700).
    fs.chmodSync(base, 0o755);
    const dataDir = path.join(base, 'data');
    // HAPPYX_* variables are server configuration: pass none but the plugin cache.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HAPPYX_')));
    if (process.env.CONSOLE_TEST_PLUGIN_CACHE) env.HAPPYX_PLUGINS__CACHE_DIR = process.env.CONSOLE_TEST_PLUGIN_CACHE;
    const stderr = fs.openSync(path.join(base, 'serve.stderr'), 'w');
    const child = spawn(BIN, ['serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0'],
      { cwd: base, env, stdio: ['ignore', 'pipe', stderr] });
    const url = await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('happyx serve did not print its address')), 120000);
      readline.createInterface({ input: child.stdout }).once('line', (l) => { clearTimeout(t); resolve(l.trim()); });
      child.once('error', (e) => { clearTimeout(t); reject(e); });
      child.once('exit', (c) => clearTimeout(t) || reject(new Error('happyx serve exited with ' + c + ': ' + fs.readFileSync(path.join(base, 'serve.stderr'), 'utf8'))));
    });
    for (let i = 0; i < 300; i++) {
      try { if ((await fetch(url + '/healthz')).ok) break; } catch (_) { /* not yet */ }
      await sleep(50);
    }
    const s = new Server();
    Object.assign(s, { base, dataDir, child, url });
    return s;
  }

  token(role) { return cli('token', 'create', '--data-dir', this.dataDir, '--role', role); }
  revoke(token) { return cli('token', 'revoke', token.slice(4, 16), '--data-dir', this.dataDir); }

  async call(method, p, token, body) {
    const r = await fetch(this.url + p, {
      method,
      headers: { Authorization: 'Bearer ' + token, ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    let json; try { json = JSON.parse(text); } catch (_) { json = text; }
    return { status: r.status, body: json };
  }

  /** An agent's high-risk action: returns {approval_id, approval_token}. */
  async requestApproval(agent, p, body) {
    const r = await this.call('POST', p, agent, body);
    if (r.status !== 403 || r.body.code !== 'approval_required') throw new Error('expected approval_required, got ' + r.status + ' ' + JSON.stringify(r.body));
    return r.body;
  }

  async approvedAs(agent, operator, p, body) {
    const a = await this.requestApproval(agent, p, body);
    const d = await this.call('POST', '/v1/approvals/' + a.approval_id + '/approve', operator, {});
    if (d.status !== 200) throw new Error('approve failed ' + JSON.stringify(d.body));
    const r = await this.call('POST', p, agent, { ...body, approval_token: a.approval_token });
    if (r.status !== 201) throw new Error('retry failed ' + r.status + ' ' + JSON.stringify(r.body));
    return r.body;
  }

  async waitRun(token, id) {
    for (let i = 0; i < 600; i++) {
      const r = await this.call('GET', '/v1/runs/' + id, token);
      if (['succeeded', 'failed', 'timed_out', 'lost'].includes(r.body.status)) return r.body;
      await sleep(50);
    }
    throw new Error('run ' + id + ' did not finish');
  }

  async waitPty(token, id, states) {
    for (let i = 0; i < 600; i++) {
      const r = await this.call('GET', '/v1/pty/' + id, token);
      if (states.includes(r.body.state)) return r.body;
      await sleep(50);
    }
    throw new Error('pty ' + id + ' never reached ' + states);
  }

  async stop() {
    if (this.child.exitCode === null) {
      this.child.kill('SIGTERM');
      await new Promise((r) => { const t = setTimeout(() => { this.child.kill('SIGKILL'); r(); }, 5000); this.child.once('exit', () => { clearTimeout(t); r(); }); });
    }
    fs.rmSync(this.base, { recursive: true, force: true });
  }
}

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

async function launch() {
  return chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: CHROMIUM_ARGS });
}

/** Signs in through the form; returns when the navigation is visible. */
async function signIn(page, url, token) {
  await page.goto(url + '/');
  await page.getByLabel('Token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('button', { name: 'Sign out' }).waitFor();
}

/** Compares a PNG buffer with its committed baseline (or writes it under UPDATE_BASELINES=1). */
function compare(name, png) {
  const file = path.join(BASELINES, name + '.png');
  if (UPDATE || !fs.existsSync(file)) {
    if (!UPDATE) return { ok: false, message: 'no baseline ' + path.relative(ROOT, file) + ' (run with UPDATE_BASELINES=1 to create it)' };
    fs.mkdirSync(BASELINES, { recursive: true });
    fs.writeFileSync(file, png);
    return { ok: true, updated: true };
  }
  const want = PNG.sync.read(fs.readFileSync(file));
  const got = PNG.sync.read(png);
  fs.mkdirSync(DIFFS, { recursive: true });
  if (want.width !== got.width || want.height !== got.height) {
    fs.writeFileSync(path.join(DIFFS, name + '.actual.png'), png);
    return { ok: false, message: `${name}: size ${got.width}x${got.height} differs from the baseline's ${want.width}x${want.height}` };
  }
  const diff = new PNG({ width: want.width, height: want.height });
  const n = pixelmatch(want.data, got.data, diff.data, want.width, want.height, { threshold: 0.15 });
  const ratio = n / (want.width * want.height);
  if (ratio > MAX_DIFF_RATIO) {
    fs.writeFileSync(path.join(DIFFS, name + '.actual.png'), png);
    fs.writeFileSync(path.join(DIFFS, name + '.diff.png'), PNG.sync.write(diff));
    return { ok: false, message: `${name}: ${(ratio * 100).toFixed(2)}% of pixels differ (limit ${(MAX_DIFF_RATIO * 100).toFixed(2)}%); see ${path.relative(ROOT, DIFFS)}/${name}.diff.png` };
  }
  return { ok: true, ratio };
}

const AXE_SOURCE = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

/** axe-core on the page as it is; returns the serious and critical violations. */
async function axe(page) {
  // evaluate() runs outside the page's CSP, which forbids inline scripts.
  await page.evaluate(AXE_SOURCE);
  const res = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { exclude: [['.xterm-helpers'], ['.xterm-accessibility']], resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
  });
  return res.filter((v) => v.impact === 'serious' || v.impact === 'critical');
}

module.exports = { Server, launch, signIn, compare, axe, sleep, cli, ROOT, UPDATE };
