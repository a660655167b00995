// Browser test of the page's console for buyers and suppliers: the real server (the cargo-built
// binary on a fresh PostgreSQL database), headless system Chromium driven by playwright-core,
// set up as page.test.mjs does (see there why Node and playwright-core).
//
// The page is driven the way a person drives it: controls found by their visible labels and
// roles (getByLabel, getByRole), typed into and clicked. The other side of each trade (the
// supplier's capacity and handoff, a buyer's API bids) goes through the REST API. Screenshots
// go to target/e2e/console-*.png.
//
// Environment: OFFPEAK_BIN (default target/release/offpeak, else target/debug/offpeak),
// CHROMIUM (default /usr/bin/chromium), OFFPEAK_TEST_PG_ADMIN (default
// postgres://postgres@127.0.0.1:5432/postgres).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import * as harness from './harness.mjs';
import { OUT, POOL, WAIT_MS, eventually, sleep, token } from './harness.mjs';

const SSH = 'ssh -p 2222 ubuntu@10.0.0.5';

const ctx = {};
const startServer = () => harness.startServer(ctx, 'console-server.log');
const stopServer = () => harness.stopServer(ctx);
const api = (method, path, tok, body) => harness.api(ctx, method, path, tok, body);

async function release(blockId, gpus, price) {
  const until = new Date(Date.now() + 6 * 3600 * 1000).toISOString();
  const r = await api('POST', '/v1/capacity', ctx.supplier, {
    block_id: blockId, pool: POOL, gpus, reserve_price: price, available_until: until,
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
}

async function shoot(name) {
  await sleep(300);
  await ctx.page.screenshot({ path: join(OUT, `${name}.png`), fullPage: true });
}

const text = async (locator) => (await locator.textContent()).trim();
const orderRow = (id) => ctx.page.locator(`#orders tr[data-order="${id}"]`);
const leaseRow = (id) => ctx.page.locator(`#leases tr[data-lease="${id}"]`);
const blockRow = (id) => ctx.page.locator(`#blocks tr[data-block="${id}"]`);
/** A row's cells as text. */
const cells = async (row) => row.locator('td').allTextContents();

async function signIn(tok) {
  const page = ctx.page;
  await page.getByLabel('Token').fill(tok);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#private-status[data-state="live"]').waitFor({ timeout: WAIT_MS });
}

before(async () => {
  await harness.prepare(ctx);
  ctx.supplier = token('dc-east-1', 'supplier');
  ctx.buyer = token('acme', 'buyer');
  await startServer();
  ctx.browser = await harness.launchChromium();
  ctx.context = await ctx.browser.newContext({ viewport: { width: 1366, height: 768 } });
  await ctx.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: ctx.base });
  ctx.page = await ctx.context.newPage();
  ctx.errors = [];
  ctx.urls = [];
  ctx.logs = [];
  ctx.page.on('pageerror', (e) => ctx.errors.push(e.message));
  ctx.page.on('console', (m) => {
    ctx.logs.push(m.text());
    if (m.type() === 'error') ctx.errors.push(m.text());
  });
  ctx.page.on('request', (r) => ctx.urls.push(r.url()));
  ctx.page.on('websocket', (ws) => ctx.urls.push(ws.url()));
  ctx.page.on('framenavigated', (f) => ctx.urls.push(f.url()));
});

after(() => harness.tearDown(ctx));

test('a buyer signs in with a pasted token and sees the account and role', async () => {
  const page = ctx.page;
  await page.goto(`${ctx.base}/#pool=${POOL}`);
  await page.waitForSelector('#status[data-state="live"]', { timeout: WAIT_MS });
  // Signed out, the console says how to get a token.
  assert.match(await text(page.locator('#signin-hint')), /offpeak token --sub acme --role buyer/);
  await harness.assertLabelled(ctx.page);
  // Key c (from the desk) takes the keyboard to the console's token field.
  await page.keyboard.press('c');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'token');
  await shoot('console-signed-out');

  // A token the server refuses is refused beside the form, with the server's code.
  await page.getByLabel('Token').fill(`${ctx.buyer.slice(0, -4)}AAAA`);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#signin-error').waitFor({ timeout: WAIT_MS });
  assert.match(await text(page.locator('#signin-error')), /^unauthorized /);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);

  await signIn(ctx.buyer);
  assert.equal(await text(page.locator('#acct-name')), 'acme');
  assert.equal(await text(page.locator('#acct-role')), 'buyer');
  assert.equal(await text(page.locator('#who')), 'acme · buyer');
  assert.ok(await page.getByRole('button', { name: 'Sign out' }).isVisible());
  assert.equal(await page.getByLabel('Token').count(), 1);
  assert.equal(await page.getByLabel('Token').isVisible(), false, 'the sign-in form is put away');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('offpeak.token')), ctx.buyer);
  await harness.assertLabelled(ctx.page);
});

test('a bid that crosses released capacity opens a lease: provisioning, then ready with its ssh command', async () => {
  const page = ctx.page;
  await release('rack-a', 8, '2.40');
  // The ticket's pool is its own control; the header's picker keeps its own name.
  await page.getByLabel('Pool', { exact: true }).selectOption(POOL);
  assert.equal(await page.getByLabel('Pool (keys [ and ])').inputValue(), POOL);
  await page.getByLabel('GPUs', { exact: true }).fill('4');
  await page.getByLabel('Hours', { exact: true }).fill('1');
  // Typing "2.50" into the price must not fire the page's shortcuts ("2" picks pool 2).
  await page.getByLabel('Price', { exact: true }).click();
  await page.keyboard.type('2.50');
  await page.keyboard.press(']');
  assert.equal(await page.$eval('#pool', (s) => s.value), POOL);
  await page.getByLabel('Price', { exact: true }).fill('2.50');

  // The live quote: 4 GPUs fillable at 2.40, 9.60 USD for the hour.
  await eventually('the quote', async () => (await page.getAttribute('#quote', 'data-fillable')) === '4');
  const quote = await text(page.locator('#quote'));
  assert.match(quote, /Fillable now 4 of 4 GPUs · avg 2\.40 · worst 2\.40 · total 9\.60 USD for 1 h/);
  assert.match(quote, /fills now/);

  await page.getByRole('button', { name: 'Place bid' }).click();
  await eventually('the fill in the ticket', async () => /leased \(lease \d+\)/.test(await text(page.locator('#ticket-result'))));
  const row = page.locator('#leases tr[data-lease]').first();
  await row.waitFor({ timeout: WAIT_MS });
  const leaseId = await row.getAttribute('data-lease');
  let shown = await cells(row);
  assert.deepEqual(shown.slice(0, 6), [leaseId, POOL, 'active', 'provisioning', '4', '2.40']);
  assert.equal(await row.getByRole('button', { name: 'Copy ssh' }).count(), 0, 'no ssh before the handoff');

  // The supplier's provisioner hands the machines over: the lease turns ready, live.
  const ready = await api('POST', `/v1/capacity/rack-a/leases/${leaseId}/ready`, ctx.supplier, {
    endpoints: [{ host: '10.0.0.5', port: 2222, user: 'ubuntu' }],
  });
  assert.equal(ready.status, 200, JSON.stringify(ready.body));
  await eventually('the lease to be ready', async () => (await cells(leaseRow(leaseId)))[3] === 'ready');
  shown = await cells(leaseRow(leaseId));
  assert.equal(shown[8], SSH);
  const copy = leaseRow(leaseId).getByRole('button', { name: 'Copy ssh' });
  assert.equal(await copy.getAttribute('data-command'), SSH);
  await copy.click();
  await eventually('the button to say it copied', async () => (await text(leaseRow(leaseId).locator('.act button').first())) === 'Copied');
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), SSH);
  assert.match(shown[7], /^\d+\.\d\d$/, 'cost so far');
  ctx.leaseId = leaseId;

  // The order that filled is in My orders, filled.
  const filled = await eventually('the filled order', async () => {
    const rows = await page.locator('#orders tr[data-order]').all();
    for (const r of rows) if ((await cells(r))[2] === 'filled') return r;
    return null;
  });
  assert.equal((await cells(filled))[4], '4 / 4');
  await harness.assertLabelled(ctx.page);
  await shoot('console-buyer');
});

test('a resting bid is amended and cancelled from its row; orders placed elsewhere arrive live', async () => {
  const page = ctx.page;
  // Clicking a ladder level puts its price into the ticket (4 GPUs are left at 2.40).
  await page.locator('#asks .lvl').last().click();
  assert.equal(await page.getByLabel('Price', { exact: true }).inputValue(), '2.40');
  assert.equal(await page.getByLabel('Pool', { exact: true }).inputValue(), POOL);

  await page.getByLabel('Price', { exact: true }).fill('2.10');
  await page.getByLabel('GPUs', { exact: true }).fill('2');
  await page.getByRole('button', { name: 'Place bid' }).click();
  await eventually('the resting bid', async () => /resting, 2 GPUs/.test(await text(page.locator('#ticket-result'))));
  const id = (await text(page.locator('#ticket-result'))).match(/Bid (\d+)/)[1];
  await orderRow(id).waitFor({ timeout: WAIT_MS });
  assert.deepEqual((await cells(orderRow(id))).slice(0, 5), [id, POOL, 'open', '2.10', '0 / 2']);

  // Amend the price from the row.
  await orderRow(id).getByRole('button', { name: 'Amend' }).click();
  await page.getByLabel('New price').fill('2.15');
  await page.getByRole('button', { name: 'Send amendment' }).click();
  await eventually('the amended price', async () => (await cells(orderRow(id)))[3] === '2.15');

  // Cancel it from its row.
  await orderRow(id).getByRole('button', { name: 'Cancel' }).click();
  await eventually('the cancelled order', async () => (await cells(orderRow(id)))[2] === 'cancelled');
  assert.equal(await orderRow(id).getByRole('button', { name: 'Cancel' }).count(), 0);

  // A bid placed through the API (another client of the same account) shows up over the
  // private orders channel, and so does its cancellation.
  const placed = await api('POST', '/v1/orders', ctx.buyer, { pool: POOL, gpus: 1, price: '1.50', duration_s: 3600 });
  assert.equal(placed.status, 201);
  const other = placed.body.order.id;
  await eventually('the API bid in My orders', async () => (await cells(orderRow(other)))[2] === 'open');
  assert.equal((await api('DELETE', `/v1/orders/${other}`, ctx.buyer)).status, 200);
  await eventually('its cancellation', async () => (await cells(orderRow(other)))[2] === 'cancelled');
});

test('a refused bid shows the server code beside the ticket, which keeps its values', async () => {
  const page = ctx.page;
  await page.getByLabel('GPUs', { exact: true }).fill('3');
  await page.getByLabel('Price', { exact: true }).fill('2.005');
  await page.getByLabel('Hours', { exact: true }).fill('2');
  await page.getByLabel('Persistent').check();
  await page.getByRole('button', { name: 'Place bid' }).click();
  const refusal = page.locator('#ticket').getByRole('alert');
  await refusal.waitFor({ timeout: WAIT_MS });
  assert.match(await text(refusal), /^price_not_on_tick price not on tick$/);
  assert.equal(await page.getByLabel('Pool', { exact: true }).inputValue(), POOL);
  assert.equal(await page.getByLabel('GPUs', { exact: true }).inputValue(), '3');
  assert.equal(await page.getByLabel('Price', { exact: true }).inputValue(), '2.005');
  assert.equal(await page.getByLabel('Hours', { exact: true }).inputValue(), '2');
  assert.equal(await page.getByLabel('Persistent').isChecked(), true);
  await shoot('console-refusal');
  // Fixing the price clears the refusal on the next try (an IOC that finds nothing is cancelled).
  await page.getByLabel('Price', { exact: true }).fill('2.00');
  await page.getByLabel('Persistent').uncheck();
  await page.getByLabel('Time in force').selectOption('ioc');
  await page.getByRole('button', { name: 'Place bid' }).click();
  await eventually('the IOC answer', async () => /cancelled/.test(await text(page.locator('#ticket-result'))));
  assert.equal(await refusal.isVisible(), false);
  await page.getByLabel('Time in force').selectOption('gtc');
});

test('a supplier reclaim shows the buyer a notice countdown, and the lease can be released', async () => {
  const page = ctx.page;
  const id = ctx.leaseId;
  const r = await api('POST', '/v1/capacity/rack-a/reclaim', ctx.supplier, { gpus: 8 });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const banner = page.locator(`#notices .notice[data-lease="${id}"]`);
  await banner.waitFor({ timeout: WAIT_MS });
  assert.match(await text(banner), new RegExp(`Lease ${id} \\(4 GPUs, ${POOL.replace(/\./g, '\\.')}\\) is being reclaimed`));
  const first = await text(banner.locator('.countdown'));
  assert.match(first, /^[12]:\d\d$/, 'about two minutes of notice');
  assert.equal((await cells(leaseRow(id)))[2], 'preempting');
  await eventually('the countdown to move', async () => (await text(banner.locator('.countdown'))) !== first, 3000);
  await shoot('console-notice');

  // The buyer gives the lease back before the notice ends.
  await leaseRow(id).getByRole('button', { name: 'Release' }).click();
  await eventually('the released lease', async () => (await cells(leaseRow(id)))[2] === 'released');
  await banner.waitFor({ state: 'detached', timeout: WAIT_MS });
  assert.equal(await leaseRow(id).getByRole('button', { name: 'Release' }).count(), 0);
});

test('a supplier signs in, releases from the form and reclaims from the page', async () => {
  const page = ctx.page;
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByLabel('Token').waitFor({ timeout: WAIT_MS });
  assert.equal(await page.evaluate(() => sessionStorage.getItem('offpeak.token')), null);
  assert.equal(await page.locator('#orders').count(), 0, 'the buyer console is gone');

  await signIn(ctx.supplier);
  assert.equal(await text(page.locator('#acct-role')), 'supplier');
  await blockRow('rack-a').waitFor({ timeout: WAIT_MS });

  // Release from the form.
  await page.getByLabel('Block ID').fill('web-1');
  await page.getByLabel('Pool', { exact: true }).selectOption(POOL);
  await page.getByLabel('GPUs', { exact: true }).fill('8');
  await page.getByLabel('Reserve price').fill('2.30');
  await page.getByLabel('Hours', { exact: true }).fill('4');
  await page.getByRole('button', { name: 'Release', exact: true }).click();
  await blockRow('web-1').waitFor({ timeout: WAIT_MS });
  // Block, pool, status, GPUs, sold, unsold, reclaiming, failed, reserve, revenue.
  assert.deepEqual((await cells(blockRow('web-1'))).slice(0, 10), ['web-1', POOL, 'open', '8', '0', '8', '0', '0', '2.30', '0.00']);

  // A buyer's bid (through the API) sells half of it: the blocks channel brings it live.
  const bid = await api('POST', '/v1/orders', ctx.buyer, { pool: POOL, gpus: 4, price: '2.30', duration_s: 3600 });
  assert.equal(bid.status, 201, JSON.stringify(bid.body));
  await eventually('the sale', async () => (await cells(blockRow('web-1')))[4] === '4');

  // Reclaim 2 unsold GPUs from the page: they come off the book.
  await blockRow('web-1').getByRole('button', { name: 'Reclaim…' }).click();
  assert.equal(await page.getByLabel('Block', { exact: true }).inputValue(), 'web-1');
  await page.getByLabel('Reclaim GPUs').fill('2');
  await page.getByRole('button', { name: 'Reclaim', exact: true }).click();
  await eventually('the reclaim from the book', async () => (await cells(blockRow('web-1')))[5] === '2');
  assert.match(await text(page.locator('#reclaim-result')), /Reclaimed 2 GPUs of web-1: 2 from the book, 0 leases preempted/);

  // A short notice needs emergency, and emergency needs a confirmation.
  await page.getByLabel('Reclaim GPUs').fill('6');
  await page.getByLabel('Notice (s)').fill('30');
  await page.getByRole('button', { name: 'Reclaim', exact: true }).click();
  await eventually('the notice_too_short refusal', async () => /^notice_too_short /.test(await text(page.locator('#reclaim-error'))));
  await page.getByLabel('Emergency (shorter notice)').check();
  await page.getByRole('button', { name: 'Reclaim', exact: true }).click();
  await page.locator('#reclaim-confirm').waitFor({ timeout: WAIT_MS });
  assert.match(await text(page.locator('#reclaim-confirm')), /Emergency reclaim of 6 GPUs from web-1/);
  assert.equal((await cells(blockRow('web-1')))[6], '0', 'nothing reclaimed before the confirmation');
  await page.getByRole('button', { name: 'Confirm emergency reclaim' }).click();
  await eventually('the emergency reclaim', async () => (await cells(blockRow('web-1')))[6] === '4');
  assert.match(await text(page.locator('#reclaim-result')), /1 leases preempted.*\(emergency\)/);
  const lease = (await api('GET', `/v1/leases/${bid.body.leases[0].id}`, ctx.buyer)).body.lease;
  assert.equal(lease.status, 'preempting');
  assert.equal(lease.emergency, true);

  // A forecast of the next reclaim (an hour ahead, the form's default).
  await blockRow('web-1').getByRole('button', { name: 'Forecast…' }).click();
  assert.equal(await page.getByLabel('Block', { exact: true }).inputValue(), 'web-1');
  await page.getByRole('button', { name: 'Send forecast' }).click();
  await eventually('the forecast', async () => /Forecast sent for web-1/.test(await text(page.locator('#forecast-result'))));
  await eventually('the forecast column', async () => (await cells(blockRow('web-1')))[11] !== '—');
  await harness.assertLabelled(ctx.page);
  await shoot('console-supplier');
});

test('the token is kept in sessionStorage only: no URL, localStorage, cookie or log', async () => {
  const page = ctx.page;
  // A reload of the tab keeps the session (sessionStorage), and still puts it nowhere else.
  await page.reload();
  await page.locator('#private-status[data-state="live"]').waitFor({ timeout: WAIT_MS });
  assert.equal(await text(page.locator('#acct-name')), 'dc-east-1');
  const where = await page.evaluate(() => ({
    session: sessionStorage.getItem('offpeak.token'),
    local: JSON.stringify({ ...localStorage }),
    cookie: document.cookie,
    url: location.href,
    tokenField: document.getElementById('token').value,
  }));
  assert.equal(where.session, ctx.supplier);
  assert.equal(where.tokenField, '');
  const urls = [...ctx.urls, page.url(), where.url];
  assert.ok(urls.some((u) => u.includes('/v1/ws')), 'the WebSocket URLs were recorded');
  for (const tok of [ctx.buyer, ctx.supplier]) {
    const sig = tok.split('.')[2];
    for (const u of urls) assert.ok(!u.includes(sig), `token in a URL: ${u.slice(0, 80)}`);
    assert.ok(!where.local.includes(sig), 'token in localStorage');
    assert.ok(!where.cookie.includes(sig), 'token in a cookie');
    for (const line of ctx.logs) assert.ok(!line.includes(sig), 'token in the console log');
  }
  const context = await page.context().cookies();
  assert.deepEqual(context, []);

  await page.getByRole('button', { name: 'Sign out' }).click();
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  assert.deepEqual(ctx.errors.filter((e) => !/WebSocket|Failed to load resource/.test(e)), []);
});
