// Time to first paint of the Approvals and Audit log pages on loopback with a
// large store: 1,000 runs and at least 10,000 events. Not part of CI (seeding
// takes a while): `CONSOLE_TEST_BIN=../../target/release/happyx node perf.js`.
'use strict';

const { Server, launch, signIn } = require('./lib');

async function main() {
  const s = await Server.start();
  const operator = s.token('operator');
  const agent = s.token('agent');
  const t0 = Date.now();
  const runs = [];
  for (let i = 0; i < 1000; i += 20) {
    const batch = await Promise.all(Array.from({ length: 20 }, (_, j) => s.call('POST', '/v1/runs', agent, { recipe: 'echo', args: { text: 'run ' + (i + j) } })));
    runs.push(...batch.map((r) => r.body.id));
  }
  for (const id of runs.slice(-20)) await s.waitRun(agent, id);
  for (let i = 0; i < 5; i++) await s.requestApproval(agent, '/v1/runs', { recipe: 'shell', args: { command: 'echo pending ' + i } });
  let seq = (await s.call('GET', '/v1/events?order=desc&limit=1', operator)).body.events[0].seq;
  while (seq < 10000) {
    await Promise.all(Array.from({ length: 50 }, (_, j) => s.call('POST', '/v1/tasks', agent, { title: 'task ' + seq + '-' + j })));
    seq = (await s.call('GET', '/v1/events?order=desc&limit=1', operator)).body.events[0].seq;
  }
  console.log(`seeded ${runs.length} runs and ${seq} events in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  const browser = await launch();
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  await signIn(page, s.url, operator);
  for (const [name, hash, heading] of [['Approvals', '#/approvals', 'Approvals'], ['Audit log', '#/audit', 'Audit log']]) {
    const samples = [];
    for (let i = 0; i < 5; i++) {
      await page.goto('about:blank');
      const start = Date.now();
      await page.goto(s.url + '/' + hash);
      await page.getByRole('heading', { name: heading, exact: true }).waitFor();
      await page.locator('tbody tr').first().waitFor();
      const ready = Date.now() - start;
      const paint = await page.evaluate(() => {
        const p = performance.getEntriesByType('paint').find((e) => e.name === 'first-contentful-paint');
        return p ? p.startTime : null;
      });
      samples.push({ fcp: paint, ready });
    }
    const med = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    console.log(`${name}: first contentful paint ${med(samples.map((x) => x.fcp)).toFixed(0)} ms, page with data ${med(samples.map((x) => x.ready))} ms (median of 5)`);
  }
  await browser.close();
  await s.stop();
}

main().catch((e) => { console.error(e); process.exit(1); });
