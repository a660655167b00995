// Browser test of the trader page: the real server (the cargo-built binary on a fresh
// PostgreSQL database), headless system Chromium driven by playwright-core.
//
// It places capacity and bids through the REST API and asserts that the depth ladder, the
// trades tape and the price chart change without a reload; then it restarts the server and
// asserts that the page reconnects and resynchronizes by itself. Screenshots go to
// target/e2e/*.png.
//
// Why Node and playwright-core rather than a Rust DevTools client (chromiumoxide,
// headless_chrome): playwright-core is the most used and best kept driver, waits for the page
// by itself, and is one small npm package with no browser download (it drives the system
// Chromium given as executablePath). A Rust CDP crate would add a large, less maintained
// dependency tree to every `cargo build` of the workspace on a 2-core machine, for one test.
// The server under test is still the cargo-built binary, started as a child process.
//
// Environment: OFFPEAK_BIN (default target/release/offpeak, else target/debug/offpeak),
// CHROMIUM (default /usr/bin/chromium), OFFPEAK_TEST_PG_ADMIN (default
// postgres://postgres@127.0.0.1:5432/postgres).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import * as harness from './harness.mjs';
import { OUT, POOL, WAIT_MS, eventually, sleep, token } from './harness.mjs';

const ctx = {};
const startServer = () => harness.startServer(ctx, 'server.log');
const stopServer = () => harness.stopServer(ctx);
const api = (method, path, tok, body) => harness.api(ctx, method, path, tok, body);

async function release(blockId, gpus, price, pool = POOL) {
  const until = new Date(Date.now() + 6 * 3600 * 1000).toISOString();
  const r = await api('POST', '/v1/capacity', ctx.supplier, {
    block_id: blockId, pool, gpus, reserve_price: price, available_until: until,
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
}

async function bid(gpus, price) {
  const r = await api('POST', '/v1/orders', ctx.buyer, { pool: POOL, gpus, price, duration_s: 3600 });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body;
}

/** The ladder as the page shows it: [[price text, gpus text, cumulative text], ...]. */
async function ladder(side) {
  return ctx.page.$$eval(`#${side} .lvl`, (rows) => rows.map((r) => [...r.querySelectorAll('span')].map((s) => s.textContent)));
}

async function shoot(name) {
  await ctx.page.screenshot({ path: join(OUT, `${name}.png`) });
}

before(async () => {
  await harness.prepare(ctx);
  ctx.supplier = token('dc-east-1', 'supplier');
  ctx.buyer = token('acme', 'buyer');
  await startServer();
  ctx.browser = await harness.launchChromium();
  ctx.page = await ctx.browser.newPage({ viewport: { width: 1366, height: 768 } });
  ctx.errors = [];
  ctx.page.on('pageerror', (e) => ctx.errors.push(e.message));
  ctx.page.on('console', (m) => { if (m.type() === 'error') ctx.errors.push(m.text()); });
});

after(() => harness.tearDown(ctx));

test('the page follows the live book, tape and chart, and resyncs after a server restart', async () => {
  const page = ctx.page;
  await page.goto(`${ctx.base}/#pool=${POOL}`);
  await page.waitForSelector('#status[data-state="live"]', { timeout: WAIT_MS });
  assert.equal(await page.$eval('#pool', (s) => s.value), POOL);
  // A marker that a reload would wipe: everything below must happen without one.
  await page.evaluate(() => { window.__e2eMarker = 'no reload'; });

  // Capacity released through the API shows up as asks, best (lowest) next to the spread.
  await release('rack1', 16, '2.40');
  await release('rack2', 8, '2.55');
  await release('rack3', 24, '2.70');
  const asks = await eventually('three ask levels', async () => {
    const rows = await ladder('asks');
    return rows.length === 3 ? rows : null;
  });
  assert.deepEqual(asks, [['2.70', '24', '48'], ['2.55', '8', '24'], ['2.40', '16', '16']]);

  // Bids that do not cross rest on the bid side, highest first, cumulative summed.
  await bid(4, '2.10');
  await bid(12, '2.25');
  const bids = await eventually('two bid levels', async () => {
    const rows = await ladder('bids');
    return rows.length === 2 ? rows : null;
  });
  assert.deepEqual(bids, [['2.25', '12', '12'], ['2.10', '4', '16']]);
  assert.match(await page.textContent('#spread'), /2\.325.*spread 0\.15/);
  await eventually('the depth chart to draw both sides', async () =>
    (await page.$eval('#depth', (c) => Number(c.dataset.levels))) === 5);

  // A crossing bid trades: the tape, the candles and the ladder all move.
  assert.equal(await page.$eval('#candles', (c) => c.dataset.candles), '0');
  await bid(8, '2.45');
  const tape = await eventually('a trade in the tape', async () => {
    const rows = await page.$$eval('#trades .trade', (rs) => rs.map((r) => r.textContent));
    return rows.length ? rows : null;
  });
  assert.match(tape[0], /2\.40\s*8$/);
  await eventually('a candle at 2.40', async () => {
    const [count, last] = await page.$eval('#candles', (c) => [c.dataset.candles, c.dataset.last]);
    return count === '1' && last === '2400000';
  });
  await eventually('the 2.40 ask to shrink to 8', async () =>
    JSON.stringify((await ladder('asks')).at(-1)) === JSON.stringify(['2.40', '8', '8']));
  assert.equal(await page.textContent('#t-last'), '2.40');
  await eventually('capacity to count the lease', async () => {
    const cells = await page.$$eval(`#capacity tr[data-pool="${POOL}"] td`, (tds) => tds.map((t) => t.textContent));
    return cells[1] === '40' && cells[2] === '8';
  });
  // More trades (one sweeping three levels) and levels, so the screenshot shows a market.
  for (const [gpus, price] of [[4, '2.60'], [2, '2.62'], [4, '2.30'], [6, '2.18'], [2, '2.05'], [20, '2.72']]) {
    await bid(gpus, price);
  }
  await release('rack4', 32, '2.85');
  await release('rack5', 12, '2.95');
  await release('rack6', 16, '2.78');
  await eventually('the ladder to settle', async () =>
    (await ladder('bids')).length === 5 && (await ladder('asks')).length === 4);
  await sleep(700);
  await shoot('live-book');

  // Keyboard: ] and [ move between pools and back.
  await page.keyboard.press(']');
  await eventually('the next pool', async () => (await page.$eval('#pool', (s) => s.value)) !== POOL);
  await page.keyboard.press('[');
  await eventually('back to the pool', async () => (await page.$eval('#pool', (s) => s.value)) === POOL);
  await eventually('the book to come back', async () => (await ladder('asks')).length === 4);

  // Restart the server: the page shows it is reconnecting, then resyncs by itself.
  await stopServer();
  await page.waitForSelector('#status:not([data-state="live"])', { timeout: WAIT_MS });
  await shoot('reconnecting');
  await startServer();
  await page.waitForSelector('#status[data-state="live"]', { timeout: 30000 });
  const rest = (await api('GET', `/v1/pools/${POOL}/book?depth=100`)).body;
  const fmt = (levels) => levels.map((l) => [l.price, String(l.gpus)]);
  await eventually('the page book to equal REST /book after the restart', async () => {
    const shown = {
      bids: (await ladder('bids')).map((r) => r.slice(0, 2)),
      asks: (await ladder('asks')).map((r) => r.slice(0, 2)).reverse(),
    };
    return JSON.stringify(shown) === JSON.stringify({ bids: fmt(rest.bids), asks: fmt(rest.asks) });
  });
  // And it is live again: a change after the restart arrives too.
  await bid(6, '2.28');
  await eventually('the post-restart bid', async () =>
    (await ladder('bids')).some((r) => r[0] === '2.28' && r[1] === '6'));
  assert.equal((await page.$$('#trades .trade')).length, 6, 'the tape was reloaded from REST');
  assert.equal(await page.evaluate(() => window.__e2eMarker), 'no reload');
  assert.ok(await page.evaluate(() => window.offpeak.resyncs) >= 1);
  await sleep(700);
  await shoot('after-restart');
  assert.deepEqual(ctx.errors.filter((e) => !/WebSocket|ERR_CONNECTION_REFUSED|Failed to load resource/.test(e)), []);
});

test('a model pool is shown beside the GPU pools with its price per million tokens', async () => {
  const page = ctx.page;
  const MODEL = 'llama-3.1-70b-instruct.us-east';
  // $1.44 per GPU-hour at 400 tokens/s per GPU is $1.00 per million tokens.
  await release('gw1', 8, '1.44', MODEL);
  await page.goto('about:blank');
  await page.goto(`${ctx.base}/#pool=${MODEL}`);
  await page.waitForSelector('#status[data-state="live"]', { timeout: WAIT_MS });
  const option = await page.$eval(`#pool option[value="${MODEL}"]`, (o) => o.textContent);
  assert.match(option, /model API/);
  await eventually('the per-token price in the ticker', async () =>
    (await page.textContent('#t-tokens')) === '1.00');
  assert.equal(await page.isVisible('#t-tokens-wrap'), true);
  const tag = await page.textContent(`#capacity tr[data-pool="${MODEL}"] .model-tag`);
  assert.match(tag, /\$1\.00 \/ 1M tokens/);
  await sleep(300);
  await shoot('model-pool');
  // A GPU pool shows no per-token price.
  await page.selectOption('#pool', POOL);
  await eventually('the ticker to hide the per-token price', async () => !(await page.isVisible('#t-tokens-wrap')));
});
