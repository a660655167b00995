// offpeak trader page: live order book, depth, trades, candles and capacity over /v1/ws.
//
// Plain JavaScript, no build step, nothing loaded from the internet. Prices arrive as USD
// decimal strings and are kept as integer micro-dollars, so nothing is rounded by floats
// until it is drawn. The book follows the feed's seq rules: a delta applies when
// prev_seq <= our seq < its seq, is skipped when seq <= ours, and a gap (prev_seq > ours)
// makes the page subscribe again for a fresh snapshot.
//
// The buyers' and suppliers' console (sign in, bid, orders, leases, blocks) is web/console.js,
// loaded after this file; it uses the helpers below and this file calls it through
// window.offpeakConsole (a ladder level's price into the ticket, the pool picked, key c).

'use strict';

const LADDER_ROWS_MAX = 40;
const TAPE_ROWS_MAX = 80;
const DEPTH_LEVELS = 60;
const PING_EVERY_MS = 10000;
const SILENCE_MAX_MS = 30000;
const RETRY_MIN_MS = 300;
const RETRY_MAX_MS = 5000;
const INTERVALS = { '1m': 60000, '5m': 300000, '15m': 900000, '1h': 3600000 };

const $ = (id) => document.getElementById(id);

const state = {
  pools: [],           // [{id, tick, ...}] from REST
  pool: null,          // selected pool id
  decimals: 2,         // price decimals shown, from the pool's tick
  book: { seq: null, bids: new Map(), asks: new Map(), changed: new Map() },
  trades: [],          // newest first: {id, price (micros), gpus, side, at (ms)}
  tradeIds: new Set(),
  candles: [],         // oldest first: {start, open, high, low, close, volume}
  interval: '1m',
  capacity: new Map(), // pool -> {idle, leased, reclaiming}
  stats: null,
  ws: null,
  connected: false,
  retries: 0,
  lastHeard: 0,
  gaps: 0,
  resyncs: 0,
};

// ----- numbers ---------------------------------------------------------------------------

function toMicros(text) {
  if (text === null || text === undefined) return null;
  const s = String(text);
  const [whole, frac = ''] = s.split('.');
  return Number(whole) * 1e6 + Number((frac + '000000').slice(0, 6));
}

function decimalsOf(tickText) {
  const frac = String(tickText || '0.01').split('.')[1] || '';
  return Math.max(2, frac.replace(/0+$/, '').length);
}

function fmtPrice(micros, decimals = state.decimals) {
  if (micros === null || micros === undefined) return '—';
  const whole = Math.floor(micros / 1e6);
  const frac = String(micros % 1e6).padStart(6, '0').slice(0, decimals);
  return `${whole}.${frac}`;
}

// A model pool's price per million tokens for a price per GPU-hour (DESIGN section 12):
// price / (tokens_per_s_per_gpu * 3600) * 1e6, rounded down, in micro-dollars; null for
// bare-metal pools. Integer arithmetic stays exact: micros * 1e6 < 2^53 for any price in band.
function perMillionTokens(pool, micros) {
  if (!pool || pool.offering !== 'model' || !pool.tokens_per_s_per_gpu || micros === null) return null;
  return Math.floor((micros * 1e6) / (pool.tokens_per_s_per_gpu * 3600));
}

const intFmt = new Intl.NumberFormat('en-US');
function fmtInt(n) { return intFmt.format(n); }

function fmtTime(ms) {
  const d = new Date(ms);
  return d.toTimeString().slice(0, 8);
}

// ----- connection status -----------------------------------------------------------------

function setStatus(kind, text) {
  const el = $('status');
  el.dataset.state = kind;
  $('status-text').textContent = text;
  // Until the feed is live again, what is on screen may be stale: say so by dimming it.
  document.body.classList.toggle('stale', kind !== 'live');
}

// ----- REST ------------------------------------------------------------------------------

async function getJson(path) {
  const res = await fetch(path, { cache: 'no-store' });
  if (!res.ok) throw new Error(`${path}: ${res.status}`);
  return res.json();
}

async function loadPools() {
  const body = await getJson('/v1/pools');
  state.pools = body.pools;
  const select = $('pool');
  const current = select.value;
  select.textContent = '';
  for (const p of state.pools) {
    const opt = document.createElement('option');
    opt.value = p.id;
    opt.textContent = p.offering === 'model' ? `${p.id} (model API)` : p.id;
    select.appendChild(opt);
  }
  for (const p of state.pools) {
    if (!state.capacity.has(p.id)) {
      state.capacity.set(p.id, { idle: p.idle_gpus, leased: p.leased_gpus, reclaiming: p.reclaiming_gpus });
    }
  }
  const wanted = new URLSearchParams(location.hash.slice(1)).get('pool') || current || state.pool;
  // Without a choice, open the busiest pool: the one with the most GPUs offered or leased.
  const busiest = [...state.pools].sort((a, b) => (b.idle_gpus + b.leased_gpus) - (a.idle_gpus + a.leased_gpus))[0];
  const pick = state.pools.find((p) => p.id === wanted) || busiest;
  if (pick) select.value = pick.id;
  if (window.offpeakConsole) window.offpeakConsole.poolsLoaded(pick ? pick.id : null);
  return pick ? pick.id : null;
}

async function loadHistory(pool) {
  const interval = state.interval;
  const [candles, trades, stats] = await Promise.all([
    getJson(`/v1/pools/${encodeURIComponent(pool)}/candles?interval=${interval}&limit=300`),
    getJson(`/v1/pools/${encodeURIComponent(pool)}/trades?limit=${TAPE_ROWS_MAX}`),
    getJson(`/v1/pools/${encodeURIComponent(pool)}/stats?window=24h`).catch(() => null),
  ]);
  if (pool !== state.pool || interval !== state.interval) return;
  state.candles = candles.candles.map((c) => ({
    start: Date.parse(c.start),
    open: toMicros(c.open),
    high: toMicros(c.high),
    low: toMicros(c.low),
    close: toMicros(c.close),
    volume: c.volume_gpus,
  }));
  // Trades that arrived over the feed while REST was loading stay; REST fills in the rest.
  addTrades(trades.trades, false);
  state.stats = stats;
  render.all();
}

// ----- feed ------------------------------------------------------------------------------

function send(msg) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(msg));
}

function subscribePool(pool) {
  state.book = { seq: null, bids: new Map(), asks: new Map(), changed: new Map() };
  send({ op: 'subscribe', channels: [`book:${pool}`, `trades:${pool}`] });
}

function connect() {
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/ws`;
  setStatus(state.retries ? 'reconnecting' : 'connecting', state.retries ? 'Reconnecting…' : 'Connecting…');
  let ws;
  try {
    ws = new WebSocket(url);
  } catch (e) {
    scheduleReconnect();
    return;
  }
  state.ws = ws;
  ws.onopen = async () => {
    state.lastHeard = Date.now();
    try {
      // Resync everything: pools may have changed while we were away.
      const pool = await loadPools();
      state.pool = pool;
      state.decimals = decimalsOf((state.pools.find((p) => p.id === pool) || {}).tick);
      send({ op: 'subscribe', channels: ['capacity'] });
      if (pool) {
        subscribePool(pool);
        await loadHistory(pool);
      }
      if (state.retries) state.resyncs += 1;
      state.retries = 0;
      state.connected = true;
      setStatus('live', 'Live');
    } catch (e) {
      ws.close();
    }
  };
  ws.onmessage = (ev) => {
    state.lastHeard = Date.now();
    let msg;
    try { msg = JSON.parse(ev.data); } catch (e) { return; }
    onMessage(msg);
  };
  ws.onclose = () => {
    if (state.ws !== ws) return;
    state.ws = null;
    state.connected = false;
    scheduleReconnect();
  };
  ws.onerror = () => { /* onclose follows */ };
}

function scheduleReconnect() {
  state.retries += 1;
  const wait = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** (state.retries - 1)) * (0.75 + Math.random() * 0.5);
  setStatus('reconnecting', `Reconnecting in ${(wait / 1000).toFixed(1)} s…`);
  setTimeout(connect, wait);
}

setInterval(() => {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  if (Date.now() - state.lastHeard > SILENCE_MAX_MS) {
    state.ws.close();
    return;
  }
  send({ op: 'ping' });
}, PING_EVERY_MS);

function onMessage(msg) {
  const channel = msg.channel || '';
  if (msg.type === 'error') {
    console.warn('feed error', msg);
    return;
  }
  if (channel === `book:${state.pool}`) {
    if (msg.type === 'snapshot') onBookSnapshot(msg);
    else if (msg.type === 'delta') onBookDelta(msg);
  } else if (channel === `trades:${state.pool}`) {
    if (msg.type === 'snapshot' || msg.type === 'trades') onTrades(msg.trades, msg.type === 'trades');
  } else if (channel === 'capacity') {
    for (const p of msg.pools) {
      state.capacity.set(p.pool, { idle: p.idle_gpus, leased: p.leased_gpus, reclaiming: p.reclaiming_gpus });
      const known = state.pools.find((x) => x.id === p.pool);
      if (known) {
        known.best_bid = p.best_bid;
        known.best_ask = p.best_ask;
        known.last_price = p.last_price;
      }
    }
    render.schedule('capacity', 'ticker');
  }
}

function onBookSnapshot(msg) {
  const book = { seq: msg.seq, bids: new Map(), asks: new Map(), changed: new Map() };
  for (const l of msg.bids) book.bids.set(toMicros(l.price), l.gpus);
  for (const l of msg.asks) book.asks.set(toMicros(l.price), l.gpus);
  state.book = book;
  render.schedule('book', 'depth', 'ticker');
}

function onBookDelta(msg) {
  const book = state.book;
  if (book.seq === null) return;          // waiting for the snapshot
  if (msg.seq <= book.seq) return;        // already in our book
  if (msg.prev_seq > book.seq) {          // we missed a delta: ask for a new snapshot
    state.gaps += 1;
    resyncBook();
    return;
  }
  for (const c of msg.changes) {
    const side = c.side === 'bid' ? book.bids : book.asks;
    const price = toMicros(c.price);
    if (c.gpus === 0) side.delete(price);
    else side.set(price, c.gpus);
    book.changed.set(`${c.side}:${price}`, performance.now());
  }
  book.seq = msg.seq;
  render.schedule('book', 'depth', 'ticker');
}

function resyncBook() {
  state.book.seq = null;
  send({ op: 'subscribe', channels: [`book:${state.pool}`] });
}

function addTrades(list, live) {
  let added = 0;
  for (const t of list) {
    if (state.tradeIds.has(t.id)) continue;
    state.tradeIds.add(t.id);
    const trade = {
      id: t.id,
      price: toMicros(t.price),
      gpus: t.gpus,
      // maker_side ask: a bid lifted resting supply (a buy); bid: new supply hit a bid.
      side: t.maker_side === 'ask' ? 'buy' : 'sell',
      at: Date.parse(t.at),
      fresh: live,
    };
    state.trades.push(trade);
    added += 1;
    if (live) addToCandles(trade);
  }
  if (added) {
    state.trades.sort((a, b) => Number(b.id) - Number(a.id));
    for (const old of state.trades.splice(TAPE_ROWS_MAX)) state.tradeIds.delete(old.id);
  }
  return added;
}

function onTrades(list, live) {
  if (addTrades(list, live)) {
    render.schedule('tape', 'candles', 'ticker');
    if (live) refreshStatsSoon();
  }
}

// The 24-hour figures come from REST; trades make them move, at most every two seconds.
let statsTimer = null;
let statsAt = 0;
function refreshStatsSoon() {
  if (statsTimer) return;
  const wait = Math.max(300, statsAt + 2000 - Date.now());
  statsTimer = setTimeout(async () => {
    statsAt = Date.now();
    statsTimer = null;
    const pool = state.pool;
    try {
      const stats = await getJson(`/v1/pools/${encodeURIComponent(pool)}/stats?window=24h`);
      if (pool === state.pool) {
        state.stats = stats;
        render.schedule('ticker');
      }
    } catch (e) { /* the next trade tries again */ }
  }, wait);
}

function addToCandles(trade) {
  const width = INTERVALS[state.interval];
  const start = Math.floor(trade.at / width) * width;
  const last = state.candles[state.candles.length - 1];
  if (last && last.start === start) {
    last.high = Math.max(last.high, trade.price);
    last.low = Math.min(last.low, trade.price);
    last.close = trade.price;
    last.volume += trade.gpus;
  } else if (!last || start > last.start) {
    state.candles.push({ start, open: trade.price, high: trade.price, low: trade.price, close: trade.price, volume: trade.gpus });
  }
}

// ----- pool switching and keys -----------------------------------------------------------

function selectPool(id) {
  if (!id || id === state.pool) return;
  const old = state.pool;
  state.pool = id;
  state.decimals = decimalsOf((state.pools.find((p) => p.id === id) || {}).tick);
  $('pool').value = id;
  history.replaceState(null, '', `#pool=${encodeURIComponent(id)}`);
  if (window.offpeakConsole) window.offpeakConsole.poolChanged(id);
  if (old) send({ op: 'unsubscribe', channels: [`book:${old}`, `trades:${old}`] });
  state.trades = [];
  state.tradeIds = new Set();
  state.candles = [];
  state.stats = null;
  subscribePool(id);
  render.all();
  loadHistory(id).catch((e) => console.warn(e));
}

function setInterval_(name) {
  if (!INTERVALS[name] || name === state.interval) return;
  state.interval = name;
  for (const b of document.querySelectorAll('.seg button')) {
    b.setAttribute('aria-pressed', String(b.dataset.interval === name));
  }
  state.candles = [];
  render.schedule('candles');
  if (state.pool) loadHistory(state.pool).catch((e) => console.warn(e));
}

$('pool').addEventListener('change', (e) => selectPool(e.target.value));
for (const b of document.querySelectorAll('.seg button')) {
  b.addEventListener('click', () => setInterval_(b.dataset.interval));
}

// Whether a key press belongs to a control the user is typing in or choosing with: the page's
// one-key shortcuts must then stay out of the way (a "1" typed into a price is a digit).
function isTypingIn(el) {
  if (!el || !el.tagName) return false;
  return ['INPUT', 'TEXTAREA', 'SELECT'].includes(el.tagName) || el.isContentEditable;
}

document.addEventListener('keydown', (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (isTypingIn(e.target)) return;
  const ids = state.pools.map((p) => p.id);
  const at = ids.indexOf(state.pool);
  if (e.key === ']' && ids.length) selectPool(ids[(at + 1) % ids.length]);
  else if (e.key === '[' && ids.length) selectPool(ids[(at - 1 + ids.length) % ids.length]);
  else if (/^[1-9]$/.test(e.key) && ids[Number(e.key) - 1]) selectPool(ids[Number(e.key) - 1]);
  else if (e.key === 'i') {
    const names = Object.keys(INTERVALS);
    setInterval_(names[(names.indexOf(state.interval) + 1) % names.length]);
  } else if (e.key === 'r') {
    resyncBook();
    if (state.pool) loadHistory(state.pool).catch((err) => console.warn(err));
  } else if (e.key === 'c' && window.offpeakConsole) {
    window.offpeakConsole.focus();
  } else return;
  e.preventDefault();
});

// ----- rendering ---------------------------------------------------------------------------

const render = {
  dirty: new Set(),
  pending: false,
  schedule(...parts) {
    for (const p of parts) this.dirty.add(p);
    if (!this.pending) {
      this.pending = true;
      requestAnimationFrame(() => this.flush());
    }
  },
  all() { this.schedule('book', 'depth', 'tape', 'candles', 'capacity', 'ticker'); },
  flush() {
    this.pending = false;
    const parts = this.dirty;
    this.dirty = new Set();
    if (parts.has('book')) drawLadder();
    if (parts.has('depth')) drawDepth();
    if (parts.has('tape')) drawTape();
    if (parts.has('candles')) drawCandles();
    if (parts.has('capacity')) drawCapacity();
    if (parts.has('ticker')) drawTicker();
    const seq = state.book.seq;
    $('seq').textContent = seq === null ? 'seq —' : `seq ${seq}`;
    document.body.dataset.seq = seq === null ? '' : String(seq);
  },
};

function ladderRowsFitting(el) {
  const h = el.clientHeight || 200;
  return Math.max(3, Math.min(LADDER_ROWS_MAX, Math.floor(h / 20)));
}

function sortedLevels(side) {
  const map = side === 'bid' ? state.book.bids : state.book.asks;
  const prices = [...map.keys()].sort((a, b) => (side === 'bid' ? b - a : a - b));
  return prices.map((p) => ({ price: p, gpus: map.get(p) }));
}

function withCumulative(levels) {
  let total = 0;
  return levels.map((l) => { total += l.gpus; return { ...l, cum: total }; });
}

function levelRow(side, level, maxCum, maxOwn, now) {
  const row = document.createElement('div');
  row.className = 'lvl';
  row.setAttribute('role', 'row');
  row.dataset.price = String(level.price);
  // A click puts the level's price into the console's bid ticket (when a buyer is signed in).
  row.addEventListener('click', () => {
    if (window.offpeakConsole) window.offpeakConsole.pickPrice(state.pool, level.price);
  });
  const changedAt = state.book.changed.get(`${side}:${level.price}`);
  if (changedAt && now - changedAt < 600) row.classList.add('flash');
  // A faint bar for the cumulative depth, a stronger one for the level's own size.
  const bar = document.createElement('div');
  bar.className = 'bar cum';
  bar.style.width = `${maxCum ? (100 * level.cum) / maxCum : 0}%`;
  const own = document.createElement('div');
  own.className = 'bar own';
  own.style.width = `${maxOwn ? (100 * level.gpus) / maxOwn : 0}%`;
  const px = document.createElement('span');
  px.className = 'px';
  px.setAttribute('role', 'cell');
  px.textContent = fmtPrice(level.price);
  const gpus = document.createElement('span');
  gpus.setAttribute('role', 'cell');
  gpus.className = 'gpus';
  gpus.textContent = fmtInt(level.gpus);
  const cum = document.createElement('span');
  cum.setAttribute('role', 'cell');
  cum.className = 'cum';
  cum.textContent = fmtInt(level.cum);
  row.append(bar, own, px, gpus, cum);
  return row;
}

function drawLadder() {
  const asksEl = $('asks');
  const bidsEl = $('bids');
  const rows = Math.min(ladderRowsFitting(asksEl), ladderRowsFitting(bidsEl));
  const asks = withCumulative(sortedLevels('ask').slice(0, rows));
  const bids = withCumulative(sortedLevels('bid').slice(0, rows));
  const maxCum = Math.max(asks.length ? asks[asks.length - 1].cum : 0, bids.length ? bids[bids.length - 1].cum : 0);
  const maxOwn = Math.max(0, ...asks.map((l) => l.gpus), ...bids.map((l) => l.gpus));
  const now = performance.now();
  const askRows = asks.map((l) => levelRow('ask', l, maxCum, maxOwn, now)).reverse();
  const bidRows = bids.map((l) => levelRow('bid', l, maxCum, maxOwn, now));
  asksEl.replaceChildren(...(askRows.length ? askRows : [emptyNote(state.book.seq === null ? 'Loading…' : 'No idle capacity offered')]));
  bidsEl.replaceChildren(...(bidRows.length ? bidRows : [emptyNote(state.book.seq === null ? 'Loading…' : 'No bids')]));
  const bestBid = bids.length ? bids[0].price : null;
  const bestAsk = asks.length ? asks[0].price : null;
  const spreadEl = $('spread');
  spreadEl.textContent = '';
  const mid = document.createElement('span');
  mid.className = 'mid';
  const spread = document.createElement('span');
  if (bestBid !== null && bestAsk !== null) {
    // The mid can fall between ticks: one more decimal, always, so the column does not jump.
    mid.textContent = fmtPrice(Math.round((bestBid + bestAsk) / 2), Math.min(6, state.decimals + 1));
    spread.textContent = `spread ${fmtPrice(bestAsk - bestBid)}`;
  } else {
    mid.textContent = '—';
    spread.textContent = 'spread —';
  }
  spreadEl.append(mid, spread);
  // Drop flash marks that have played.
  for (const [key, at] of state.book.changed) if (now - at > 1000) state.book.changed.delete(key);
}

function emptyNote(text) {
  const el = document.createElement('div');
  el.className = 'empty-note';
  el.textContent = text;
  return el;
}

function drawTape() {
  const body = $('trades');
  const rows = state.trades.map((t) => {
    const row = document.createElement('div');
    row.className = `trade ${t.side}${t.fresh ? ' new' : ''}`;
    row.setAttribute('role', 'row');
    row.dataset.id = t.id;
    const time = document.createElement('span');
    time.className = 'time';
    time.textContent = fmtTime(t.at);
    const px = document.createElement('span');
    px.className = 'tpx';
    px.textContent = fmtPrice(t.price);
    const gpus = document.createElement('span');
    gpus.textContent = fmtInt(t.gpus);
    row.append(time, px, gpus);
    t.fresh = false;
    return row;
  });
  body.replaceChildren(...(rows.length ? rows : [emptyNote('No trades yet')]));
  $('tape-count').textContent = state.trades.length ? `${state.trades.length} latest` : '';
}

function drawCapacity() {
  const body = $('capacity');
  const rows = [];
  for (const p of state.pools) {
    const c = state.capacity.get(p.id) || { idle: 0, leased: 0, reclaiming: 0 };
    const tr = document.createElement('tr');
    tr.dataset.pool = p.id;
    if (p.id === state.pool) tr.className = 'selected';
    const name = document.createElement('td');
    const btn = document.createElement('button');
    btn.className = 'pool-btn';
    btn.type = 'button';
    btn.textContent = p.id;
    btn.title = p.id;
    btn.addEventListener('click', () => selectPool(p.id));
    name.appendChild(btn);
    if (p.offering === 'model') {
      // Model pools sell GPUs of a model deployment: show what a million tokens costs.
      const tag = document.createElement('span');
      tag.className = 'model-tag';
      const perM = perMillionTokens(p, toMicros(p.best_ask));
      tag.textContent = perM === null ? 'model API' : `model API · $${fmtPrice(perM, 2)} / 1M tokens`;
      name.appendChild(tag);
    }
    const cells = [c.idle, c.leased, c.reclaiming].map((v, i) => {
      const td = document.createElement('td');
      td.className = i === 2 && v > 0 ? 'num reclaiming' : 'num';
      td.textContent = fmtInt(v);
      return td;
    });
    const barTd = document.createElement('td');
    const bar = document.createElement('div');
    bar.className = 'use-bar';
    const total = c.idle + c.leased;
    const leased = document.createElement('span');
    leased.className = 'leased';
    leased.style.width = `${total ? (100 * (c.leased - c.reclaiming)) / total : 0}%`;
    const reclaim = document.createElement('span');
    reclaim.className = 'reclaim';
    reclaim.style.width = `${total ? (100 * c.reclaiming) / total : 0}%`;
    bar.append(leased, reclaim);
    bar.title = total ? `${Math.round((100 * c.leased) / total)}% leased` : 'no capacity';
    barTd.appendChild(bar);
    tr.append(name, ...cells, barTd);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
}

function drawTicker() {
  const bids = sortedLevels('bid');
  const asks = sortedLevels('ask');
  const bestBid = bids.length ? bids[0].price : null;
  const bestAsk = asks.length ? asks[0].price : null;
  const last = state.trades.length ? state.trades[0].price
    : toMicros((state.pools.find((p) => p.id === state.pool) || {}).last_price);
  $('t-last').textContent = fmtPrice(last);
  $('t-bid').textContent = fmtPrice(bestBid);
  $('t-ask').textContent = fmtPrice(bestAsk);
  $('t-spread').textContent = bestBid !== null && bestAsk !== null ? fmtPrice(bestAsk - bestBid) : '—';
  const pool = state.pools.find((p) => p.id === state.pool);
  const perM = pool && pool.offering === 'model' ? perMillionTokens(pool, bestAsk) : null;
  $('t-tokens-wrap').hidden = !(pool && pool.offering === 'model');
  $('t-tokens').textContent = perM === null ? '—' : fmtPrice(perM, 2);
  const s = state.stats;
  $('t-range').textContent = s && s.price_min ? `${fmtPrice(toMicros(s.price_min))}–${fmtPrice(toMicros(s.price_max))}` : '—';
  $('t-volume').textContent = s ? `${fmtInt(Math.round(s.volume_gpu_hours))} GPU-h` : '—';
}

// ----- canvas charts -----------------------------------------------------------------------

const css = getComputedStyle(document.documentElement);
const color = (name) => css.getPropertyValue(name).trim();

function prepareCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = `11px ${color('--mono')}`;
  ctx.textBaseline = 'middle';
  return { ctx, w, h };
}

// A round step near range/target: 1, 2 or 5 times a power of ten, and never below `least`
// (for prices, one tick, so that every label is a price that can be shown exactly).
function niceStep(range, target, least = 1) {
  const raw = Math.max(range / Math.max(1, target), least);
  const pow = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * pow >= raw) return m * pow;
  return 10 * pow;
}

const tickMicros = () => 10 ** (6 - state.decimals);

function placeholder(ctx, w, h, text) {
  ctx.fillStyle = color('--faint');
  ctx.textAlign = 'center';
  ctx.font = `12px ${color('--sans')}`;
  ctx.fillText(text, w / 2, h / 2);
}

function drawCandles() {
  const canvas = $('candles');
  const { ctx, w, h } = prepareCanvas(canvas);
  canvas.dataset.candles = String(state.candles.length);
  canvas.dataset.last = state.candles.length ? String(state.candles[state.candles.length - 1].close) : '';
  const axisW = 64;
  const timeH = 18;
  const plotW = w - axisW;
  const volH = Math.max(20, (h - timeH) * 0.18);
  const priceH = h - timeH - volH - 8;
  const width = INTERVALS[state.interval];
  const nowBucket = Math.floor(Date.now() / width) * width;
  // Fit the history there is: wide candles for a young market, 6 px ones for a long one.
  const history = state.candles.length ? (nowBucket - state.candles[0].start) / width + 1 : 1;
  const slots = Math.max(24, Math.min(Math.floor((plotW - 8) / 6), Math.ceil(history * 1.15)));
  const slot = (plotW - 8) / slots;
  const firstBucket = nowBucket - (slots - 1) * width;
  const shown = state.candles.filter((c) => c.start >= firstBucket);
  if (!shown.length) {
    placeholder(ctx, plotW, h, state.candles.length ? 'No trades in view' : 'No trades yet');
    canvas.setAttribute('aria-label', 'Price candles: no trades yet');
    return;
  }
  let lo = Math.min(...shown.map((c) => c.low));
  let hi = Math.max(...shown.map((c) => c.high));
  if (hi === lo) { hi += 5 * 10 ** (6 - state.decimals); lo = Math.max(0, lo - 5 * 10 ** (6 - state.decimals)); }
  const pad = (hi - lo) * 0.08;
  lo -= pad; hi += pad;
  const y = (p) => 6 + priceH - ((p - lo) / (hi - lo)) * priceH;
  const x = (start) => 4 + ((start - firstBucket) / width) * slot + slot / 2;

  // Grid and price axis.
  const step = niceStep(hi - lo, 5, tickMicros());
  ctx.strokeStyle = color('--line');
  ctx.fillStyle = color('--muted');
  ctx.textAlign = 'left';
  ctx.lineWidth = 1;
  for (let p = Math.ceil(lo / step) * step; p <= hi; p += step) {
    const yy = Math.round(y(p)) + 0.5;
    ctx.beginPath(); ctx.moveTo(0, yy); ctx.lineTo(plotW, yy); ctx.stroke();
    ctx.fillText(fmtPrice(Math.round(p)), plotW + 6, yy);
  }
  // Time axis.
  ctx.textAlign = 'center';
  const labelEvery = Math.ceil(70 / slot);
  for (let i = slots - 1; i >= 0; i -= labelEvery) {
    const start = firstBucket + i * width;
    if (x(start) < 24) break;
    ctx.fillText(new Date(start).toTimeString().slice(0, 5), x(start), h - timeH / 2);
  }
  // Volume.
  const maxVol = Math.max(...shown.map((c) => c.volume), 1);
  for (const c of shown) {
    const vh = (c.volume / maxVol) * volH;
    ctx.fillStyle = c.close >= c.open ? 'rgba(38,179,122,0.35)' : 'rgba(239,93,107,0.35)';
    ctx.fillRect(x(c.start) - slot * 0.35, h - timeH - vh, slot * 0.7, vh);
  }
  // Candles.
  for (const c of shown) {
    const up = c.close >= c.open;
    ctx.strokeStyle = ctx.fillStyle = up ? color('--bid') : color('--ask');
    const cx = Math.round(x(c.start)) + 0.5;
    ctx.beginPath(); ctx.moveTo(cx, y(c.high)); ctx.lineTo(cx, y(c.low)); ctx.stroke();
    // A candle that did not move still gets a visible 3 px body, centred on its price.
    const span = Math.abs(y(c.open) - y(c.close));
    const top = span >= 3 ? y(Math.max(c.open, c.close)) : y(c.close) - 1.5;
    ctx.fillRect(cx - slot * 0.35, top, slot * 0.7, Math.max(3, span));
  }
  // Last price marker.
  const last = shown[shown.length - 1].close;
  const ly = Math.round(y(last)) + 0.5;
  ctx.setLineDash([3, 3]);
  ctx.strokeStyle = color('--accent');
  ctx.beginPath(); ctx.moveTo(0, ly); ctx.lineTo(plotW, ly); ctx.stroke();
  ctx.setLineDash([]);
  ctx.fillStyle = color('--accent');
  ctx.fillRect(plotW + 1, ly - 9, axisW - 2, 18);
  ctx.fillStyle = '#06101c';
  ctx.textAlign = 'left';
  ctx.fillText(fmtPrice(last), plotW + 6, ly);
  canvas.setAttribute('aria-label', `Price candles: last ${fmtPrice(last)}`);
}

function drawDepth() {
  const canvas = $('depth');
  const { ctx, w, h } = prepareCanvas(canvas);
  const bids = withCumulative(sortedLevels('bid').slice(0, DEPTH_LEVELS));
  const asks = withCumulative(sortedLevels('ask').slice(0, DEPTH_LEVELS));
  canvas.dataset.levels = String(bids.length + asks.length);
  if (!bids.length && !asks.length) {
    placeholder(ctx, w, h, state.book.seq === null ? 'Loading…' : 'Empty book');
    return;
  }
  const axisH = 18;
  const axisW = 52;
  const plotW = w - axisW;
  const plotH = h - axisH - 10;
  const prices = [...bids.map((l) => l.price), ...asks.map((l) => l.price)];
  let lo = Math.min(...prices);
  let hi = Math.max(...prices);
  if (hi === lo) { lo -= 10 ** (6 - state.decimals) * 5; hi += 10 ** (6 - state.decimals) * 5; }
  const pad = (hi - lo) * 0.04;
  lo -= pad; hi += pad;
  const maxCum = Math.max(bids.length ? bids[bids.length - 1].cum : 0, asks.length ? asks[asks.length - 1].cum : 0, 1);
  const x = (p) => ((p - lo) / (hi - lo)) * plotW;
  const y = (v) => 10 + plotH - (v / maxCum) * plotH;

  // Horizontal grid with GPU labels.
  ctx.strokeStyle = color('--line');
  ctx.fillStyle = color('--muted');
  ctx.textAlign = 'left';
  const gstep = niceStep(maxCum, 4);
  for (let v = gstep; v <= maxCum; v += gstep) {
    const yy = Math.round(y(v)) + 0.5;
    ctx.beginPath(); ctx.moveTo(0, yy); ctx.lineTo(plotW, yy); ctx.stroke();
    ctx.fillText(fmtInt(v), plotW + 6, yy);
  }
  const area = (levels, stroke, fill, toLeft) => {
    if (!levels.length) return;
    ctx.beginPath();
    ctx.moveTo(x(levels[0].price), y(0));
    let prevCum = 0;
    for (const l of levels) {
      ctx.lineTo(x(l.price), y(prevCum));
      ctx.lineTo(x(l.price), y(l.cum));
      prevCum = l.cum;
    }
    const edge = toLeft ? 0 : plotW;
    ctx.lineTo(edge, y(prevCum));
    ctx.lineTo(edge, y(0));
    ctx.closePath();
    ctx.fillStyle = fill;
    ctx.fill();
    ctx.strokeStyle = stroke;
    ctx.lineWidth = 1.5;
    ctx.stroke();
    ctx.lineWidth = 1;
  };
  area(bids, color('--bid'), 'rgba(38,179,122,0.18)', true);
  area(asks, color('--ask'), 'rgba(239,93,107,0.18)', false);
  // Price axis.
  ctx.fillStyle = color('--muted');
  ctx.textAlign = 'center';
  const pstep = niceStep(hi - lo, Math.max(2, Math.floor(plotW / 90)), tickMicros());
  for (let p = Math.ceil(lo / pstep) * pstep; p <= hi; p += pstep) {
    ctx.fillText(fmtPrice(Math.round(p)), x(p), h - axisH / 2);
  }
  if (bids.length && asks.length) {
    const mid = (bids[0].price + asks[0].price) / 2;
    ctx.strokeStyle = color('--faint');
    ctx.setLineDash([2, 3]);
    ctx.beginPath(); ctx.moveTo(Math.round(x(mid)) + 0.5, 10); ctx.lineTo(Math.round(x(mid)) + 0.5, 10 + plotH); ctx.stroke();
    ctx.setLineDash([]);
  }
}

// Redraw what depends on size when the window changes, and candles as time moves on.
new ResizeObserver(() => render.all()).observe(document.querySelector('.desk'));
setInterval(() => render.schedule('candles'), 15000);

// Exposed for the browser test and for curious traders in the console.
window.offpeak = state;

connect();
