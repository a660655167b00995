// What the browser tests share: the real server (the cargo-built binary on a fresh PostgreSQL
// database), HS256 tokens signed with its secret, the REST API, headless system Chromium, and
// waiting for a condition. Each test file keeps its own `ctx` and passes it in.
//
// Environment: OFFPEAK_BIN (default target/release/offpeak, else target/debug/offpeak),
// CHROMIUM (default /usr/bin/chromium), OFFPEAK_TEST_PG_ADMIN (default
// postgres://postgres@127.0.0.1:5432/postgres).

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, openSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const OUT = join(ROOT, 'target', 'e2e');
export const SECRET = 'offpeak-e2e-secret-0123456789abcdef0123456789';
export const POOL = 'h100-sxm.us-east';
export const ADMIN_URL = process.env.OFFPEAK_TEST_PG_ADMIN || 'postgres://postgres@127.0.0.1:5432/postgres';
export const WAIT_MS = 15000;

/** The server binary under test. */
export function binary() {
  if (process.env.OFFPEAK_BIN) return process.env.OFFPEAK_BIN;
  for (const profile of ['release', 'debug']) {
    const path = join(ROOT, 'target', profile, 'offpeak');
    if (existsSync(path)) return path;
  }
  throw new Error('build the server first: cargo build --release --bin offpeak');
}

/** Runs one SQL statement on the maintenance database. */
export function psql(sql) {
  const run = spawnSync('psql', [ADMIN_URL, '-v', 'ON_ERROR_STOP=1', '-q', '-c', sql], { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`psql ${sql}: ${run.stderr}`);
}

function base64url(value) {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
}

/** An HS256 token signed with the server's secret, as `offpeak token` mints them. */
export function token(sub, role) {
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

export const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

/** Polls `check` every 100 ms until it returns something truthy, or throws after `within`. */
export async function eventually(what, check, within = WAIT_MS) {
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

/** A fresh database, data directory and port for `ctx`'s server (`ctx.base` its URL). */
export async function prepare(ctx) {
  mkdirSync(OUT, { recursive: true });
  ctx.dbName = `offpeak_e2e_${randomBytes(6).toString('hex')}`;
  psql(`CREATE DATABASE ${ctx.dbName}`);
  ctx.dbUrl = ADMIN_URL.replace(/\/[^/]*$/, `/${ctx.dbName}`);
  ctx.dataDir = mkdtempSync(join(tmpdir(), 'offpeak-e2e-'));
  ctx.port = await freePort();
  ctx.base = `http://127.0.0.1:${ctx.port}`;
}

/** Starts `ctx`'s server (its output appended to target/e2e/`logName`) and waits for /readyz. */
export function startServer(ctx, logName) {
  const log = openSync(join(OUT, logName), 'a');
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
  return eventually('the server to be ready', async () => (await fetch(`${ctx.base}/readyz`)).ok, 60000);
}

/** Stops `ctx`'s server: SIGTERM, then SIGKILL after 15 s. */
export async function stopServer(ctx) {
  if (!ctx.server || ctx.server.exitCode !== null) return;
  ctx.server.kill('SIGTERM');
  const stopped = await Promise.race([ctx.exited, sleep(15000).then(() => 'timeout')]);
  if (stopped === 'timeout') {
    ctx.server.kill('SIGKILL');
    await ctx.exited;
  }
}

/** One REST call to `ctx`'s server: `{status, body}` with the body parsed. */
export async function api(ctx, method, path, tok, body) {
  const res = await fetch(`${ctx.base}${path}`, {
    method,
    headers: { 'content-type': 'application/json', ...(tok ? { authorization: `Bearer ${tok}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** Headless system Chromium, with the flags this machine's closed network needs. */
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-quic',
    ],
  });
}

/** Closes the browser, stops the server and drops its database. */
export async function tearDown(ctx) {
  if (ctx.browser) await ctx.browser.close();
  await stopServer(ctx);
  if (ctx.dbName) psql(`DROP DATABASE IF EXISTS ${ctx.dbName} WITH (FORCE)`);
}

/** Every visible control of the console is named by a visible label or its own text, and every
 *  console table has header cells. */
export async function assertLabelled(page) {
  const unlabelled = await page.$$eval('#console input, #console select, #console textarea, #console button', (controls) =>
    controls.filter((c) => c.offsetParent !== null).filter((c) => {
      if (c.tagName === 'BUTTON') return !c.textContent.trim();
      const labels = [...(c.labels || [])].filter((l) => l.offsetParent !== null && l.textContent.trim());
      return labels.length === 0;
    }).map((c) => c.id || c.outerHTML.slice(0, 80)));
  assert.deepEqual(unlabelled, []);
  const headless = await page.$$eval('#console table', (tables) =>
    tables.filter((t) => t.querySelectorAll('thead th[scope="col"]').length === 0).length);
  assert.equal(headless, 0, 'every console table has header cells');
}
