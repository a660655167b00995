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
import { spawn, spawnSync } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, openSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const OUT = join(ROOT, 'target', 'e2e');
const SECRET = 'offpeak-e2e-secret-0123456789abcdef0123456789';
const POOL = 'h100-sxm.us-east';
const ADMIN_URL = process.env.OFFPEAK_TEST_PG_ADMIN || 'postgres://postgres@127.0.0.1:5432/postgres';
const WAIT_MS = 15000;

function binary() {
  if (process.env.OFFPEAK_BIN) return process.env.OFFPEAK_BIN;
  for (const profile of ['release', 'debug']) {
    const path = join(ROOT, 'target', profile, 'offpeak');
    if (existsSync(path)) return path;
  }
  throw new Error('build the server first: cargo build --release --bin offpeak');
}

function psql(sql) {
  const run = spawnSync('psql', [ADMIN_URL, '-v', 'ON_ERROR_STOP=1', '-q', '-c', sql], { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`psql ${sql}: ${run.stderr}`);
}

function base64url(value) {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
}

/** An HS256 token signed with the server's secret, as `offpeak token` mints them. */
function token(sub, role) {
  const now = Math.floor(Date.now() / 1000);
  const head = base64url({ alg: 'HS256', typ: 'JWT' });
  const body = base64url({ sub, role, iss: 'offpeak', aud: 'offpeak', iat: now, exp: now + 3600 });
  const sig = createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

async function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.on('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

async function eventually(what, check, within = WAIT_MS) {
  const deadline = Date.now() + within;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

const ctx = {};

function startServer() {
  const log = openSync(join(OUT, 'server.log'), 'a');
  const server = spawn(binary(), ['serve'], {
    env: {
      ...process.env,
      DATABASE_URL: ctx.dbUrl,
      OFFPEAK_LISTEN: `127.0.0.1:${ctx.port}`,
      OFFPEAK_JWT_SECRET: SECRET,
      OFFPEAK_DATA_DIR: ctx.dataDir,
      RUST_LOG: process.env.RUST_LOG || 'info',
    },
    stdio: ['ignore', log, log],
  });
  ctx.server = server;
  ctx.exited = new Promise((ok) => server.on('exit', ok));
  return eventually('the server to be ready', async () => {
    const res = await fetch(`${ctx.base}/readyz`);
    return res.ok;
  }, 60000);
}

async function stopServer() {
  if (!ctx.server || ctx.server.exitCode !== null) return;
  ctx.server.kill('SIGTERM');
  const stopped = await Promise.race([ctx.exited, sleep(15000).then(() => 'timeout')]);
  if (stopped === 'timeout') {
    ctx.server.kill('SIGKILL');
    await ctx.exited;
  }
}

async function api(method, path, tok, body) {
  const res = await fetch(`${ctx.base}${path}`, {
    method,
    headers: { 'content-type': 'application/json', ...(tok ? { authorization: `Bearer ${tok}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

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
  mkdirSync(OUT, { recursive: true });
  ctx.dbName = `offpeak_e2e_${randomBytes(6).toString('hex')}`;
  psql(`CREATE DATABASE ${ctx.dbName}`);
  ctx.dbUrl = ADMIN_URL.replace(/\/[^/]*$/, `/${ctx.dbName}`);
  ctx.dataDir = mkdtempSync(join(tmpdir(), 'offpeak-e2e-'));
  ctx.port = await freePort();
  ctx.base = `http://127.0.0.1:${ctx.port}`;
  ctx.supplier = token('dc-east-1', 'supplier');
  ctx.buyer = token('acme', 'buyer');
  await startServer();
  ctx.browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-quic',
    ],
  });
  ctx.page = await ctx.browser.newPage({ viewport: { width: 1366, height: 768 } });
  ctx.errors = [];
  ctx.page.on('pageerror', (e) => ctx.errors.push(e.message));
  ctx.page.on('console', (m) => { if (m.type() === 'error') ctx.errors.push(m.text()); });
});

after(async () => {
  if (ctx.browser) await ctx.browser.close();
  await stopServer();
  if (ctx.dbName) psql(`DROP DATABASE IF EXISTS ${ctx.dbName} WITH (FORCE)`);
});

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
