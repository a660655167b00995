// Browser test of the owner's view (DESIGN section 13): an admin signs in to the page's console
// and reads what idle capacity earned, per pool and for the fleet, in a table and on a chart.
//
// Set up as console.test.mjs is (see page.test.mjs for why Node and playwright-core): the real
// server (the cargo-built binary on a fresh PostgreSQL database), headless system Chromium.
// The market's side (a supplier's block, a buyer's bid, the handoff, the release) goes through
// the REST API; the page is driven by its visible labels and roles. The figures on the page
// are checked against `GET /v1/admin/report` and the lease's own cost. Screenshot:
// target/e2e/owner.png.
//
// Environment: OFFPEAK_BIN (default target/release/offpeak, else target/debug/offpeak),
// CHROMIUM (default /usr/bin/chromium), OFFPEAK_TEST_PG_ADMIN (default
// postgres://postgres@127.0.0.1:5432/postgres).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import * as harness from './harness.mjs';
import { OUT, POOL, WAIT_MS, eventually, sleep, token } from './harness.mjs';

// The page asks for the report again 15 s after its last answer (web/owner.js).
const AUTO_REFRESH_WAIT_MS = 20000;

const ctx = {};
const startServer = () => harness.startServer(ctx, 'owner-server.log');
const stopServer = () => harness.stopServer(ctx);
const api = (method, path, tok, body) => harness.api(ctx, method, path, tok, body);

const text = async (locator) => (await locator.textContent()).trim();
const poolRow = (pool) => ctx.page.locator(`#owner-pools tr[data-pool="${pool}"]`);
const figure = (row, name) => text(row.locator(`td[data-figure="${name}"]`));

/** How many of the chart's pixels are painted (the canvas starts fully transparent). */
const paintedPixels = () => ctx.page.$eval('#owner-chart', (canvas) => {
  const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
  let painted = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i]) painted += 1;
  return painted;
});

before(async () => {
  await harness.prepare(ctx);
  ctx.supplier = token('dc-east-1', 'supplier');
  ctx.buyer = token('acme', 'buyer');
  ctx.admin = token('owner', 'admin');
  await startServer();
  ctx.browser = await harness.launchChromium();
  ctx.context = await ctx.browser.newContext({ viewport: { width: 1366, height: 768 } });
  ctx.page = await ctx.context.newPage();
  ctx.errors = [];
  ctx.reports = [];
  ctx.page.on('pageerror', (e) => ctx.errors.push(e.message));
  ctx.page.on('console', (m) => { if (m.type() === 'error') ctx.errors.push(m.text()); });
  ctx.page.on('request', (r) => { if (r.url().includes('/v1/admin/report')) ctx.reports.push({ url: r.url(), at: Date.now() }); });
});

after(() => harness.tearDown(ctx));

test('an admin sees each pool\'s utilisation and revenue, the fleet total and a chart over time', async () => {
  // The market: 8 GPUs released, 4 of them leased, handed over, used for 2 s and released.
  const until = new Date(Date.now() + 6 * 3600 * 1000).toISOString();
  const released = await api('POST', '/v1/capacity', ctx.supplier, {
    block_id: 'owner-rack', pool: POOL, gpus: 8, reserve_price: '2.40', available_until: until,
  });
  assert.equal(released.status, 201, JSON.stringify(released.body));
  const bid = await api('POST', '/v1/orders', ctx.buyer, { pool: POOL, gpus: 4, price: '2.50', duration_s: 3600 });
  assert.equal(bid.status, 201, JSON.stringify(bid.body));
  assert.equal(bid.body.leases.length, 1, 'the bid filled at once');
  const leaseId = bid.body.leases[0].id;
  const ready = await api('POST', `/v1/capacity/owner-rack/leases/${leaseId}/ready`, ctx.supplier, {
    endpoints: [{ host: '10.0.0.1', port: 22, user: 'u' }],
  });
  assert.equal(ready.status, 200, JSON.stringify(ready.body));
  await sleep(2100);
  const ended = await api('POST', `/v1/leases/${leaseId}/release`, ctx.buyer);
  assert.equal(ended.status, 200, JSON.stringify(ended.body));
  const cost = ended.body.lease.cost;
  assert.notEqual(cost, '0.00', 'two seconds of four GPUs cost something');

  // An admin signs in: the console shows the owner's view instead of a trading console.
  const page = ctx.page;
  await page.goto(`${ctx.base}/#pool=${POOL}`);
  await page.waitForSelector('#status[data-state="live"]', { timeout: WAIT_MS });
  await page.getByLabel('Token').fill(ctx.admin);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#private-status[data-state="live"]').waitFor({ timeout: WAIT_MS });
  assert.equal(await text(page.locator('#acct-role')), 'admin');
  assert.ok(await page.getByRole('heading', { name: 'Owner' }).isVisible());
  assert.equal(await page.locator('.other-role').count(), 0, 'no "this role has no console" note');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'o-window', 'the keyboard goes to the first control');
  assert.equal(await page.getByLabel('Window', { exact: true }).inputValue(), '24h');
  assert.equal(await page.getByLabel('Bucket', { exact: true }).inputValue(), '1h');
  assert.ok(await page.getByRole('button', { name: 'Refresh' }).isVisible());

  // The pool's row: the revenue is the report's, which is the lease's cost.
  const row = poolRow(POOL);
  await row.waitFor({ timeout: WAIT_MS });
  const report = await api('GET', '/v1/admin/report?bucket=1h', ctx.admin);
  assert.equal(report.status, 200, JSON.stringify(report.body));
  const mine = report.body.pools.find((p) => p.pool === POOL);
  assert.equal(mine.total.revenue, cost);
  assert.equal(await figure(row, 'revenue'), mine.total.revenue);
  assert.equal(await figure(row, 'average-price'), mine.total.average_price);
  assert.equal(await figure(row, 'average-price'), '2.40');
  assert.ok(mine.total.utilisation > 0, `utilisation in the report: ${mine.total.utilisation}`);
  const utilisation = await figure(row, 'utilisation');
  assert.match(utilisation, /^\d+\.\d{1,2}%$/);
  assert.ok(parseFloat(utilisation) > 0, utilisation);
  assert.match(await figure(row, 'offered'), /^\d/);
  assert.equal(await figure(row, 'preemptions'), '0');
  assert.equal(await figure(row, 'notices-honoured'), '—');
  // The fleet's row totals every pool; only this pool earned anything.
  const fleet = page.locator('#owner-fleet tr');
  assert.equal(await text(fleet.locator('th')), 'Fleet');
  assert.equal(await figure(fleet, 'revenue'), report.body.total.revenue);
  assert.equal(report.body.total.revenue, cost);
  assert.equal(await page.locator('#owner-pools tr[data-pool]').count(), report.body.pools.length);

  // The chart: the fleet's buckets over the window, drawn.
  const canvas = page.locator('#owner-chart');
  const points = Number(await canvas.getAttribute('data-points'));
  assert.ok(points >= 24 && points <= 25, `a day of hourly buckets, not ${points}`);
  assert.equal(await canvas.getAttribute('data-pool'), 'fleet');
  assert.ok(await paintedPixels() > 1000, 'the chart has axes, a line and a bar');
  assert.match(await canvas.getAttribute('aria-label'), /revenue \d+\.\d+ USD/);
  assert.match(await text(page.locator('#owner-readout')), /^Latest bucket .*utilisation \d+\.\d+% · revenue \d+\.\d+ USD/);

  // The pool's name puts it on the chart; the chart steps through buckets with arrow keys.
  await row.getByRole('button', { name: POOL }).click();
  assert.equal(await canvas.getAttribute('data-pool'), POOL);
  assert.equal(await page.getByLabel('Chart', { exact: true }).inputValue(), POOL);
  assert.equal(await row.getByRole('button', { name: POOL }).getAttribute('aria-pressed'), 'true');
  await canvas.focus();
  await page.keyboard.press('End');
  assert.match(await text(page.locator('#owner-readout')), new RegExp(`^Bucket \\d\\d:\\d\\d \\(1h\\), ${POOL.replace(/\./g, '\\.')}: utilisation`));
  await page.keyboard.press('Escape');
  await harness.assertLabelled(ctx.page);
  await canvas.scrollIntoViewIfNeeded();
  await page.locator('#owner').scrollIntoViewIfNeeded();
  await sleep(300);
  await page.screenshot({ path: join(OUT, 'owner.png'), fullPage: true });

  // A shorter window brings its own bucket: an hour by the minute.
  await page.getByLabel('Window', { exact: true }).selectOption('1h');
  assert.equal(await page.getByLabel('Bucket', { exact: true }).inputValue(), '1m');
  await eventually('an hour of minutes on the chart', async () => {
    const n = Number(await canvas.getAttribute('data-points'));
    return n >= 60 && n <= 61;
  });
  assert.equal(await figure(poolRow(POOL), 'revenue'), cost, 'the same revenue by the minute');
  // A week has no 1-minute buckets to offer (the server allows 2,000 buckets at most).
  await page.getByLabel('Window', { exact: true }).selectOption('7d');
  assert.equal(await page.getByLabel('Bucket', { exact: true }).inputValue(), '1h');
  assert.equal(await page.locator('#o-bucket option[value="1m"]').isDisabled(), true);

  // A refusal is shown beside the controls with the server's code and message (here a bucket
  // the page does not offer, forced into the select).
  await page.$eval('#o-bucket option[value="1m"]', (o) => { o.disabled = false; });
  await page.getByLabel('Bucket', { exact: true }).selectOption('1m');
  const refusal = page.locator('#owner-error');
  await refusal.waitFor({ timeout: WAIT_MS });
  assert.match(await text(refusal), /^invalid_query at most 2000 buckets/);
  await page.getByLabel('Bucket', { exact: true }).selectOption('1d');
  await eventually('the refusal to clear', async () => await refusal.isHidden());
  assert.equal(await figure(poolRow(POOL), 'revenue'), cost);

  // Refresh asks at once; left alone, the view asks again every 15 s while it is shown.
  let asked = ctx.reports.length;
  await page.getByRole('button', { name: 'Refresh' }).click();
  await eventually('the refresh', async () => ctx.reports.length > asked);
  assert.ok(ctx.reports[ctx.reports.length - 1].url.includes('bucket=1d'));
  asked = ctx.reports.length;
  await eventually('an automatic refresh', async () => ctx.reports.length > asked, AUTO_REFRESH_WAIT_MS);
  assert.ok(ctx.reports.every((r) => r.url.includes('bucket=') && r.url.includes('from=')));

  // A reload of the tab keeps the admin signed in, with the owner's view.
  await page.reload();
  await poolRow(POOL).waitFor({ timeout: WAIT_MS });
  assert.equal(await figure(poolRow(POOL), 'revenue'), cost);

  // Signing out puts the view away.
  await page.getByRole('button', { name: 'Sign out' }).click();
  assert.equal(await page.locator('#owner').count(), 0);
  assert.deepEqual(ctx.errors.filter((e) => !/WebSocket|Failed to load resource/.test(e)), []);
});
