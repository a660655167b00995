// offpeak console: sign in with a token, then bid and follow orders and leases (a buyer),
// release, reclaim and forecast capacity blocks (a supplier), or read the owner's report (an
// admin: web/owner.js, mounted here with `call`, so the token stays in this file).
//
// Loaded after app.js and uses its helpers ($, toMicros, fmtPrice, fmtInt, fmtTime, decimalsOf,
// perMillionTokens, state.pools). Everything here lives inside one function so that nothing,
// the token least of all, becomes a global.
//
// The token: kept in memory and in sessionStorage (so a reload of this tab stays signed in and
// closing it forgets), sent only in the Authorization header of REST calls and in the private
// WebSocket's first message. Never in a URL, localStorage, a cookie or a log.
//
// Live state: a second WebSocket, authenticated with `{"op":"auth"}`, subscribes to the
// account's private channels; once the server confirms the subscriptions, REST lists fill in
// what happened before. Both sources merge through `newer()`, so their order does not matter:
// an order or block keeps the copy with the later `updated_at`, a lease the one further along
// its life (active, preempting, ended; provisioning, ready or failed).

'use strict';

(() => {
  const TOKEN_KEY = 'offpeak.token';
  const QUOTE_DEBOUNCE_MS = 250;
  const AUTH_TIMEOUT_MS = 10000;
  const PING_EVERY_MS = 10000;
  const RETRY_MIN_MS = 500;
  const RETRY_MAX_MS = 8000;
  const ROWS_SHOWN_MAX = 60;
  const ENDED_LEASE = new Set(['preempted', 'completed', 'released', 'failed']);
  const CHANNELS = { buyer: ['orders', 'leases'], supplier: ['blocks'] };

  const session = {
    token: null,
    account: null,
    role: null,
    exp: null,            // seconds since the epoch, from the token (display only)
    ws: null,
    retries: 0,
    pendingSubs: new Set(),
    orders: new Map(),
    leases: new Map(),
    blocks: new Map(),
    forecasts: new Map(), // lease id -> reclaim_at (ms) from reclaim_warning events
    sshDefaults: [],      // the account's default ssh keys (GET /v1/account/ssh-keys)
    sshLoaded: false,
    amending: null,       // the order id in the amend form
    reclaimConfirm: false,
    quoteTimer: null,
    quoteAsked: 0,
    drawPending: false,
  };

  // ----- small helpers -------------------------------------------------------------------

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'className') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k === 'dataset') Object.assign(node.dataset, v);
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : v);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  const usd = (micros) => (micros === null || micros === undefined ? '—' : fmtPrice(micros, 2));
  const poolOf = (id) => state.pools.find((p) => p.id === id) || null;
  const priceText = (pool, text) => fmtPrice(toMicros(text), decimalsOf((poolOf(pool) || {}).tick));
  const badge = (status, title) => el('span', { className: `badge ${status}`, title }, status.replace(/_/g, ' '));

  // A time within the day around now as HH:MM:SS (or HH:MM, short), else with its date.
  function fmtWhen(ms, short) {
    if (!Number.isFinite(ms)) return '—';
    const d = new Date(ms);
    if (Math.abs(ms - Date.now()) < 20 * 3600 * 1000) return short ? fmtTime(ms).slice(0, 5) : fmtTime(ms);
    const pad = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  function fmtCountdown(ms) {
    const s = Math.max(0, Math.ceil(ms / 1000));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
  }

  // A datetime-local value ("2026-11-29T21:00") is local time; the API wants RFC 3339 UTC.
  const localToIso = (value) => (value ? new Date(value).toISOString() : null);

  function toLocalInput(ms) {
    const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
    return d.toISOString().slice(0, 16);
  }

  // An integer from a form field, or the text itself so that the server names what is wrong.
  function intOr(text) {
    const t = String(text).trim();
    return /^\d+$/.test(t) ? Number(t) : t;
  }

  // The JWT's payload, decoded for display only: the server checks the signature, not us.
  function tokenClaims(token) {
    const parts = token.split('.');
    if (parts.length !== 3) return null;
    try {
      const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
      const bytes = Uint8Array.from(atob(b64.padEnd(Math.ceil(b64.length / 4) * 4, '=')), (c) => c.charCodeAt(0));
      const claims = JSON.parse(new TextDecoder().decode(bytes));
      return claims && typeof claims === 'object' ? claims : null;
    } catch (e) {
      return null;
    }
  }

  // ----- refusals: the server's code and message, beside the control ------------------------

  function refusal(code, message) {
    return Object.assign(new Error(message), { code });
  }

  function showRefusal(id, err) {
    const box = $(id);
    if (!box) return;
    box.replaceChildren(el('code', {}, err.code || 'error'), ' ', err.message || '');
    box.hidden = false;
  }

  function clearRefusal(id) {
    const box = $(id);
    if (box) { box.hidden = true; box.textContent = ''; }
  }

  function setResult(id, text, ok = true) {
    const out = $(id);
    if (!out) return;
    out.textContent = text;
    out.classList.toggle('ok', ok && !!text);
  }

  // ----- REST ----------------------------------------------------------------------------

  async function call(method, path, body) {
    const headers = { authorization: `Bearer ${session.token}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, {
        method, headers, cache: 'no-store', body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw refusal('network', 'could not reach the server');
    }
    const text = await res.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch (e) { /* not JSON: use the status */ }
    if (!res.ok) {
      const err = json && json.error ? json.error : { code: `http_${res.status}`, message: res.statusText };
      throw Object.assign(refusal(err.code, err.message), { status: res.status });
    }
    return json;
  }

  // ----- merging live and listed state ---------------------------------------------------

  function leaseProgress(l) {
    const status = l.status === 'active' ? 0 : l.status === 'preempting' ? 1 : 2;
    const access = l.access && l.access.status !== 'provisioning' ? 1 : 0;
    return status * 2 + access;
  }

  function newer(kind, incoming, current) {
    if (!current) return true;
    if (kind === 'lease') return leaseProgress(incoming) >= leaseProgress(current);
    return Date.parse(incoming.updated_at) >= Date.parse(current.updated_at);
  }

  function merge(kind, item) {
    if (!item) return;
    const map = kind === 'order' ? session.orders : kind === 'lease' ? session.leases : session.blocks;
    const key = kind === 'block' ? item.block_id : item.id;
    if (newer(kind, item, map.get(key))) map.set(key, item);
    drawSoon();
  }

  async function loadMine() {
    try {
      if (session.role === 'buyer') {
        const [orders, leases, keys] = await Promise.all([
          call('GET', '/v1/orders?limit=200'),
          call('GET', '/v1/leases?limit=200'),
          call('GET', '/v1/account/ssh-keys'),
        ]);
        for (const o of orders.orders) merge('order', o);
        for (const l of leases.leases) merge('lease', l);
        const first = !session.sshLoaded;
        session.sshDefaults = keys.keys;
        session.sshLoaded = true;
        if (first && $('t-keys') && !$('t-keys').value) $('t-keys').value = keys.keys.join('\n');
      } else if (session.role === 'supplier') {
        const blocks = await call('GET', '/v1/capacity?limit=500');
        for (const b of blocks.blocks) merge('block', b);
      }
      setPrivateStatus('live');
    } catch (err) {
      setPrivateStatus(`could not load: ${err.code}`);
    }
  }

  // ----- the private WebSocket -----------------------------------------------------------

  const wsUrl = () => `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/ws`;

  // Opens a connection and authenticates it; resolves with {ws, account, role} once the server
  // says `authenticated`, rejects with the server's refusal (or a network one).
  function openPrivate(token) {
    return new Promise((resolve, reject) => {
      let ws;
      try { ws = new WebSocket(wsUrl()); } catch (e) { reject(refusal('network', 'could not open a WebSocket')); return; }
      let authed = false;
      const timer = setTimeout(() => { if (!authed) { ws.close(); reject(refusal('timeout', 'the server did not answer the sign-in')); } }, AUTH_TIMEOUT_MS);
      ws.onopen = () => ws.send(JSON.stringify({ op: 'auth', token }));
      ws.onmessage = (ev) => {
        let msg;
        try { msg = JSON.parse(ev.data); } catch (e) { return; }
        if (authed) { onPrivateMessage(ws, msg); return; }
        if (msg.type === 'authenticated') {
          authed = true;
          clearTimeout(timer);
          resolve({ ws, account: msg.account, role: msg.role });
        } else if (msg.type === 'error') {
          clearTimeout(timer);
          ws.close();
          reject(refusal(msg.code, msg.message));
        }
      };
      ws.onerror = () => { /* onclose follows */ };
      ws.onclose = () => {
        clearTimeout(timer);
        if (!authed) reject(refusal('network', 'could not reach the server'));
        else onPrivateClosed(ws);
      };
    });
  }

  function startPrivate(ws) {
    session.ws = ws;
    session.retries = 0;
    const channels = CHANNELS[session.role] || [];
    session.pendingSubs = new Set(channels);
    if (channels.length) ws.send(JSON.stringify({ op: 'subscribe', channels }));
    else setPrivateStatus('live');
  }

  function onPrivateMessage(ws, msg) {
    if (ws !== session.ws) return;
    if (msg.type === 'subscribed') {
      session.pendingSubs.delete(msg.channel);
      // Subscribed before listing: nothing can fall between the list and the live events.
      if (session.pendingSubs.size === 0) loadMine();
    } else if (msg.type === 'order') {
      merge('order', msg.order);
    } else if (msg.type === 'lease' && msg.channel === 'leases') {
      if (msg.lease) merge('lease', msg.lease);
      else if (msg.event === 'reclaim_warning') {
        session.forecasts.set(msg.lease_id, Date.parse(msg.reclaim_at));
        drawSoon();
      }
    } else if (msg.type === 'block') {
      merge('block', msg.block);
    } else if (msg.type === 'error') {
      setPrivateStatus(`${msg.code}: ${msg.message}`);
    }
  }

  function onPrivateClosed(ws) {
    if (ws !== session.ws) return;
    session.ws = null;
    scheduleReconnect();
  }

  function scheduleReconnect() {
    if (!session.token) return;
    session.retries += 1;
    const wait = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** (session.retries - 1));
    setPrivateStatus(`reconnecting in ${(wait / 1000).toFixed(1)} s…`);
    setTimeout(reconnect, wait);
  }

  async function reconnect() {
    const token = session.token;
    if (!token || session.ws) return;
    try {
      const { ws, account } = await openPrivate(token);
      if (session.token !== token || account !== session.account) { ws.close(); return; }
      startPrivate(ws);
    } catch (err) {
      if (err.code === 'unauthorized') {
        signOut();
        showRefusal('signin-error', refusal(err.code, `${err.message}: the token expired or was revoked, sign in again`));
      } else {
        scheduleReconnect();
      }
    }
  }

  setInterval(() => {
    const ws = session.ws;
    if (ws && ws.readyState === WebSocket.OPEN) ws.send('{"op":"ping"}');
  }, PING_EVERY_MS);

  function setPrivateStatus(text) {
    const out = $('private-status');
    if (!out) return;
    out.textContent = text;
    out.dataset.state = text === 'live' ? 'live' : 'other';
  }

  // ----- sign in and out -----------------------------------------------------------------

  async function signIn(token, restoring) {
    clearRefusal('signin-error');
    token = token.trim();
    if (!token) { showRefusal('signin-error', refusal('token_missing', 'paste a token first')); return; }
    const claims = tokenClaims(token);
    if (!claims) { showRefusal('signin-error', refusal('token_malformed', 'a token is three base64url parts joined by dots')); return; }
    const button = $('signin-btn');
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
    try {
      const { ws, account, role } = await openPrivate(token);
      if (session.token) signOut(true);
      session.token = token;
      sessionStorage.setItem(TOKEN_KEY, token);
      session.account = account;
      session.role = role;
      session.exp = typeof claims.exp === 'number' ? claims.exp : null;
      $('token').value = '';
      showSignedIn();
      startPrivate(ws);
      // The form that had the keyboard is gone: give it to the first control of the console
      // (not when a reload restored the session: the keys then belong to the desk).
      if (!restoring) {
        const first = $('t-pool') || $('r-block') || $('o-window') || $('signout');
        first.focus({ preventScroll: true });
      }
    } catch (err) {
      if (restoring) sessionStorage.removeItem(TOKEN_KEY);
      showRefusal('signin-error', err);
    } finally {
      button.disabled = false;
      button.removeAttribute('aria-busy');
    }
  }

  function signOut(quiet) {
    const ws = session.ws;
    if (window.offpeakOwner) window.offpeakOwner.unmount();
    Object.assign(session, {
      token: null, account: null, role: null, exp: null, ws: null, sshDefaults: [], sshLoaded: false,
      amending: null, reclaimConfirm: false, pendingSubs: new Set(),
    });
    for (const map of [session.orders, session.leases, session.blocks, session.forecasts]) map.clear();
    sessionStorage.removeItem(TOKEN_KEY);
    if (ws && ws.close) ws.close();
    if (!quiet) showSignedOut();
  }

  function showSignedIn() {
    $('signin').hidden = true;
    $('signin-hint').hidden = true;
    $('signed-in').hidden = false;
    $('acct-name').textContent = session.account;
    $('acct-role').textContent = session.role;
    const who = $('who');
    who.textContent = `${session.account} · ${session.role}`;
    who.dataset.role = session.role;
    document.body.classList.toggle('can-bid', session.role === 'buyer');
    drawExpiry();
    const owner = session.role === 'admin' && window.offpeakOwner;
    const template = $(`tpl-${session.role in CHANNELS ? session.role : owner ? 'owner' : 'other'}`);
    $('console-body').replaceChildren(template.content.cloneNode(true));
    if (session.role === 'buyer') setUpBuyer();
    else if (session.role === 'supplier') setUpSupplier();
    else if (owner) window.offpeakOwner.mount(call);
    setPrivateStatus('subscribing…');
  }

  function showSignedOut() {
    $('signin').hidden = false;
    $('signin-hint').hidden = false;
    $('signed-in').hidden = true;
    $('console-body').replaceChildren();
    const who = $('who');
    who.textContent = 'Console';
    delete who.dataset.role;
    document.body.classList.remove('can-bid');
  }

  function drawExpiry() {
    const out = $('acct-exp');
    if (!out || !session.exp) { if (out) out.textContent = ''; return; }
    const left = session.exp * 1000 - Date.now();
    out.textContent = left > 0 ? `token expires in ${left > 5400000 ? `${Math.round(left / 3600000)} h` : `${Math.max(1, Math.round(left / 60000))} min`}` : 'token expired: sign in again';
    out.classList.toggle('ask', left <= 0);
  }

  // ----- buyer: the ticket ---------------------------------------------------------------

  function fillPoolSelect(select, preferred) {
    if (!select) return;
    const current = select.value || preferred;
    select.replaceChildren(...state.pools.map((p) => el('option', { value: p.id }, p.offering === 'model' ? `${p.id} (model API)` : p.id)));
    if (state.pools.some((p) => p.id === current)) select.value = current;
  }

  function setUpBuyer() {
    fillPoolSelect($('t-pool'), state.pool);
    $('t-keys').value = session.sshDefaults.join('\n');
    const form = $('ticket');
    form.addEventListener('submit', placeBid);
    form.addEventListener('input', onTicketInput);
    form.addEventListener('change', onTicketInput);
    $('amend').addEventListener('submit', amendOrder);
    $('amend-close').addEventListener('click', () => { session.amending = null; drawAmend(); });
    onTicketInput();
  }

  function onTicketInput(e) {
    const pool = poolOf($('t-pool').value);
    const gtd = $('t-tif').value === 'gtd';
    for (const node of document.querySelectorAll('#ticket .gtd-only')) node.hidden = !gtd;
    const model = pool && pool.offering === 'model';
    for (const node of document.querySelectorAll('#ticket .ssh-only')) node.hidden = !!model;
    $('t-price').placeholder = pool && pool.best_ask ? pool.best_ask : '2.50';
    // Persistent and time in force do not change the quote.
    if (!e || ['t-pool', 't-gpus', 't-min', 't-hours', 't-price'].includes(e.target.id)) {
      clearTimeout(session.quoteTimer);
      session.quoteTimer = setTimeout(fetchQuote, QUOTE_DEBOUNCE_MS);
    }
  }

  function ticketDuration() {
    const hours = Number($('t-hours').value);
    return Number.isFinite(hours) && hours > 0 ? Math.round(hours * 3600) : null;
  }

  async function fetchQuote() {
    const out = $('quote');
    if (!out) return;
    const pool = $('t-pool').value;
    const gpus = $('t-gpus').value.trim();
    const min = $('t-min').value.trim();
    const duration = ticketDuration();
    if (!pool || !/^\d+$/.test(gpus) || Number(gpus) < 1 || !duration) {
      out.replaceChildren('Enter GPUs and hours for a live quote.');
      delete out.dataset.fillable;
      return;
    }
    const asked = ++session.quoteAsked;
    const query = new URLSearchParams({ gpus, duration_s: String(duration) });
    if (/^\d+$/.test(min)) query.set('min_gpus', min);
    let body;
    let failed = null;
    try {
      // Public market data: no token goes with it.
      const res = await fetch(`/v1/pools/${encodeURIComponent(pool)}/quote?${query}`, { cache: 'no-store' });
      body = await res.json();
      if (!res.ok) failed = body.error || { code: `http_${res.status}`, message: res.statusText };
    } catch (e) {
      failed = { code: 'network', message: 'could not reach the server' };
    }
    if (asked !== session.quoteAsked || !$('quote')) return;
    if (failed) {
      out.replaceChildren('Quote: ', el('code', {}, failed.code), ` ${failed.message}`);
      delete out.dataset.fillable;
      return;
    }
    drawQuote(out, body);
  }

  function drawQuote(out, q) {
    out.dataset.fillable = String(q.fillable_gpus);
    out.dataset.average = q.average_price || '';
    out.dataset.total = q.total_cost;
    const hours = q.duration_s / 3600;
    const span = `${Number.isInteger(hours) ? hours : hours.toFixed(2)} h`;
    if (!q.fillable_gpus) {
      out.replaceChildren(`Nothing fillable now for ${fmtInt(q.gpus)} GPUs × ${span}: a GTC bid rests on the book.`);
      return;
    }
    const parts = [
      'Fillable now ', el('b', {}, fmtInt(q.fillable_gpus)), ` of ${fmtInt(q.gpus)} GPUs · avg `,
      el('b', {}, q.average_price), ` · worst ${q.worst_price} · total `, el('b', {}, q.total_cost), ` USD for ${span}`,
    ];
    if (q.price_per_million_tokens) parts.push(' · ', el('b', {}, q.price_per_million_tokens), ' / 1M tokens');
    if (q.reclaim_expected_at) parts.push(el('br'), `A reclaim is forecast at ${fmtWhen(Date.parse(q.reclaim_expected_at))}.`);
    const price = $('t-price').value.trim();
    if (/^\d+(\.\d+)?$/.test(price)) {
      const covers = toMicros(price) >= toMicros(q.worst_price);
      parts.push(el('br'), covers
        ? el('span', { className: 'fills' }, 'Your price reaches all of it: the bid fills now.')
        : el('span', { className: 'rests' }, 'Your price is below the worst level needed: it fills less, or rests.'));
    }
    out.replaceChildren(...parts);
  }

  function ticketBody() {
    const pool = $('t-pool').value;
    const body = {
      pool,
      gpus: intOr($('t-gpus').value),
      price: $('t-price').value.trim(),
      duration_s: ticketDuration() || intOr($('t-hours').value),
      tif: $('t-tif').value,
    };
    const min = $('t-min').value.trim();
    if (min) body.min_gpus = intOr(min);
    if ($('t-persistent').checked) body.persistent = true;
    if (body.tif === 'gtd') body.expires_at = localToIso($('t-expires').value);
    const p = poolOf(pool);
    if (!p || p.offering !== 'model') {
      const keys = $('t-keys').value.split('\n').map((k) => k.trim()).filter(Boolean);
      // The account's defaults go with every bid that names no keys: send them only if edited.
      if (keys.join('\n') !== session.sshDefaults.join('\n')) body.ssh_public_keys = keys;
    }
    return body;
  }

  async function placeBid(e) {
    e.preventDefault();
    clearRefusal('ticket-error');
    setResult('ticket-result', '');
    const button = $('place');
    button.disabled = true;
    try {
      const answer = await call('POST', '/v1/orders', ticketBody());
      merge('order', answer.order);
      for (const l of answer.leases) merge('lease', l);
      const o = answer.order;
      const leased = answer.leases.map((l) => l.id);
      setResult('ticket-result', leased.length
        ? `Bid ${o.id}: ${o.filled_gpus} GPUs leased (lease ${leased.join(', ')})${o.status === 'open' ? `, ${o.remaining_gpus} resting` : ''}`
        : `Bid ${o.id}: ${o.status === 'open' ? `resting, ${o.remaining_gpus} GPUs` : o.status}`);
    } catch (err) {
      // The ticket keeps every value: fix the one the server names and place it again.
      showRefusal('ticket-error', err);
    } finally {
      button.disabled = false;
    }
    scheduleQuoteSoon();
  }

  function scheduleQuoteSoon() {
    clearTimeout(session.quoteTimer);
    session.quoteTimer = setTimeout(fetchQuote, QUOTE_DEBOUNCE_MS);
  }

  // ----- buyer: orders -------------------------------------------------------------------

  async function cancelOrder(id) {
    clearRefusal('orders-error');
    try {
      const answer = await call('DELETE', `/v1/orders/${encodeURIComponent(id)}`);
      merge('order', answer.order);
      if (session.amending === id) session.amending = null;
    } catch (err) {
      showRefusal('orders-error', refusal(err.code, `order ${id}: ${err.message}`));
    }
  }

  function openAmend(id) {
    const o = session.orders.get(id);
    if (!o) return;
    session.amending = id;
    clearRefusal('amend-error');
    drawAmend();
    $('a-price').value = priceText(o.pool, o.price);
    $('a-gpus').value = String(o.gpus);
    $('a-price').focus();
    $('a-price').select();
  }

  function drawAmend() {
    const form = $('amend');
    if (!form) return;
    const id = session.amending;
    form.hidden = id === null;
    $('amend-title').textContent = id === null ? 'Amend order' : `Amend order ${id}`;
    for (const node of form.querySelectorAll('input, button[type="submit"]')) node.disabled = id === null;
  }

  async function amendOrder(e) {
    e.preventDefault();
    const id = session.amending;
    const o = session.orders.get(id);
    if (!o) return;
    clearRefusal('amend-error');
    const body = {};
    const price = $('a-price').value.trim();
    const gpus = $('a-gpus').value.trim();
    if (price && toMicros(price) !== toMicros(o.price)) body.price = price;
    if (gpus && gpus !== String(o.gpus)) body.gpus = intOr(gpus);
    try {
      const answer = await call('PATCH', `/v1/orders/${encodeURIComponent(id)}`, body);
      merge('order', answer.order);
      session.amending = null;
      drawAmend();
    } catch (err) {
      showRefusal('amend-error', err);
    }
  }

  function orderRows() {
    const all = [...session.orders.values()];
    all.sort((a, b) => (a.status === 'open') - (b.status === 'open') || Number(a.id) - Number(b.id)).reverse();
    return all.slice(0, ROWS_SHOWN_MAX).map((o) => {
      const open = o.status === 'open';
      const status = open && o.filled_gpus ? 'partially_filled' : o.status;
      return el('tr', { className: open ? (session.amending === o.id ? 'selected' : '') : 'done', dataset: { order: o.id } },
        el('td', { className: 'mono' }, o.id),
        el('td', { className: 'mono' }, o.pool),
        el('td', {}, badge(status, o.cancel_reason ? o.cancel_reason.replace(/_/g, ' ') : undefined)),
        el('td', { className: 'num' }, priceText(o.pool, o.price)),
        el('td', { className: 'num' }, `${fmtInt(o.filled_gpus)} / ${fmtInt(o.gpus)}`),
        el('td', { className: 'mono' }, o.tif + (o.persistent ? ' · persistent' : '')),
        el('td', { className: 'mono' }, fmtWhen(Date.parse(o.created_at))),
        el('td', { className: 'act' }, ...(open ? [
          el('button', { type: 'button', className: 'small', dataset: { key: `amend:${o.id}` }, onclick: () => openAmend(o.id) }, 'Amend'),
          el('button', { type: 'button', className: 'small danger', dataset: { key: `cancel:${o.id}` }, onclick: () => cancelOrder(o.id) }, 'Cancel'),
        ] : [])));
    });
  }

  // ----- buyer: leases -------------------------------------------------------------------

  function sshCommand(l) {
    const e = l.access && l.access.endpoints && l.access.endpoints[0];
    return e ? `ssh -p ${e.port} ${e.user}@${e.host}` : null;
  }

  function costSoFar(l) {
    const billed = toMicros(l.cost) || 0;
    if (ENDED_LEASE.has(l.status) || !l.access || !l.access.ready_at) return billed;
    const end = Math.min(Date.now(), Date.parse(l.notice_ends_at || l.ends_at));
    const seconds = Math.max(0, Math.floor((end - Date.parse(l.access.ready_at)) / 1000));
    return Math.max(billed, Math.floor((toMicros(l.price) * l.gpus * seconds) / 3600));
  }

  async function copySsh(button, command) {
    try {
      await navigator.clipboard.writeText(command);
    } catch (e) {
      // Without clipboard permission: copy from a selected, off-screen text area.
      const area = el('textarea', { 'aria-hidden': 'true', className: 'offscreen' });
      area.value = command;
      document.body.appendChild(area);
      area.select();
      document.execCommand('copy');
      area.remove();
    }
    button.textContent = 'Copied';
    setTimeout(() => { if (button.isConnected) button.textContent = 'Copy ssh'; }, 1500);
  }

  async function releaseLease(id) {
    clearRefusal('leases-error');
    try {
      const answer = await call('POST', `/v1/leases/${encodeURIComponent(id)}/release`);
      merge('lease', answer.lease);
    } catch (err) {
      showRefusal('leases-error', refusal(err.code, `lease ${id}: ${err.message}`));
    }
  }

  function leaseRows() {
    const all = [...session.leases.values()];
    all.sort((a, b) => (ENDED_LEASE.has(b.status) - ENDED_LEASE.has(a.status)) || Number(b.id) - Number(a.id));
    return all.slice(0, ROWS_SHOWN_MAX).map((l) => {
      const running = !ENDED_LEASE.has(l.status);
      const access = (l.access && l.access.status) || 'provisioning';
      const command = running && access === 'ready' ? sshCommand(l) : null;
      const endpoint = command || (l.access && l.access.endpoint) || (access === 'failed' ? l.access.reason : null);
      const ends = l.notice_ends_at ? Date.parse(l.notice_ends_at) : Date.parse(l.ends_at);
      return el('tr', { className: running ? '' : 'done', dataset: { lease: l.id } },
        el('td', { className: 'mono' }, l.id),
        el('td', { className: 'mono' }, l.pool),
        el('td', {}, badge(l.status, l.emergency ? 'emergency reclaim' : undefined)),
        el('td', {}, badge(access, l.access && l.access.reason ? l.access.reason : undefined)),
        el('td', { className: 'num' }, fmtInt(l.gpus)),
        el('td', { className: 'num' }, priceText(l.pool, l.price)),
        el('td', { className: 'mono' }, fmtWhen(l.ended_at ? Date.parse(l.ended_at) : ends)),
        el('td', { className: 'num', dataset: { cost: l.id } }, usd(costSoFar(l))),
        el('td', { className: 'endpoint' }, endpoint ? el('code', {}, endpoint) : '—'),
        el('td', { className: 'act' },
          command ? el('button', { type: 'button', className: 'small', title: command, dataset: { key: `ssh:${l.id}`, command }, onclick: (e) => copySsh(e.currentTarget, command) }, 'Copy ssh') : null,
          running ? el('button', { type: 'button', className: 'small danger', dataset: { key: `release:${l.id}` }, onclick: () => releaseLease(l.id) }, 'Release') : null));
    });
  }

  // The banners above the tables: a lease under notice counts down to its end; a forecast
  // reclaim of a running lease is announced.
  function drawNotices() {
    const box = $('notices');
    if (!box) return;
    const now = Date.now();
    const wanted = [];
    for (const l of session.leases.values()) {
      if (l.status === 'preempting' && l.notice_ends_at) wanted.push({ key: `notice:${l.id}`, lease: l, at: Date.parse(l.notice_ends_at) });
      else if (!ENDED_LEASE.has(l.status) && session.forecasts.get(l.id) > now) wanted.push({ key: `forecast:${l.id}`, lease: l, at: session.forecasts.get(l.id) });
    }
    const keys = new Set(wanted.map((w) => w.key));
    for (const node of [...box.children]) if (!keys.has(node.dataset.key)) node.remove();
    for (const w of wanted) {
      let node = box.querySelector(`[data-key="${w.key}"]`);
      if (!node) {
        const l = w.lease;
        const notice = w.key.startsWith('notice:');
        const what = `Lease ${l.id} (${fmtInt(l.gpus)} GPUs, ${l.pool})`;
        node = el('div', { className: notice ? 'notice' : 'notice forecast', role: 'alert', dataset: { key: w.key, lease: l.id } },
          el('span', { className: 'countdown', 'aria-hidden': 'true' }),
          el('span', {}, notice
            ? `${what} is being reclaimed by its supplier${l.emergency ? ' (emergency)' : ''}: it ends at ${fmtTime(w.at)}. Save your work.`
            : `${what}: its supplier expects to reclaim it at ${fmtWhen(w.at)}.`),
          notice ? el('span', { className: 'why' }, `notice ${Math.round((w.at - Date.parse(l.preempted_at || l.started_at)) / 1000)} s`) : null);
        box.appendChild(node);
      }
      node.querySelector('.countdown').textContent = fmtCountdown(w.at - now);
    }
  }

  // ----- supplier: blocks, release, reclaim, forecast ------------------------------------

  function setUpSupplier() {
    fillPoolSelect($('r-pool'), state.pool);
    $('f-at').value = toLocalInput(Date.now() + 3600000);
    $('release').addEventListener('submit', releaseBlock);
    $('reclaim').addEventListener('submit', reclaimBlock);
    $('reclaim').addEventListener('input', resetReclaimConfirm);
    $('reclaim').addEventListener('keydown', (e) => { if (e.key === 'Escape') resetReclaimConfirm(); });
    $('forecast').addEventListener('submit', forecastBlock);
  }

  async function releaseBlock(e) {
    e.preventDefault();
    clearRefusal('release-error');
    setResult('release-result', '');
    const hours = Number($('r-hours').value);
    const body = {
      block_id: $('r-block').value.trim(),
      pool: $('r-pool').value,
      gpus: intOr($('r-gpus').value),
      reserve_price: $('r-price').value.trim(),
      available_until: Number.isFinite(hours) && hours > 0 ? new Date(Date.now() + hours * 3600000).toISOString() : $('r-hours').value,
    };
    try {
      const answer = await call('POST', '/v1/capacity', body);
      merge('block', answer.block);
      const b = answer.block;
      setResult('release-result', `Released ${b.block_id}: ${fmtInt(b.gpus)} GPUs at ${b.reserve_price}${answer.leases_opened ? `, ${answer.leases_opened} leases opened at once` : ''}`);
    } catch (err) {
      showRefusal('release-error', err);
    }
  }

  function pickBlock(id, focusId) {
    const select = $('k-block');
    drawBlockSelect();
    select.value = id;
    resetReclaimConfirm();
    const target = $(focusId);
    target.scrollIntoView({ block: 'nearest' });
    target.focus();
  }

  function resetReclaimConfirm() {
    if (!session.reclaimConfirm) return;
    session.reclaimConfirm = false;
    $('reclaim-confirm').hidden = true;
    $('reclaim-btn').textContent = 'Reclaim';
  }

  async function reclaimBlock(e) {
    e.preventDefault();
    clearRefusal('reclaim-error');
    setResult('reclaim-result', '');
    const id = $('k-block').value;
    const body = { gpus: intOr($('k-gpus').value) };
    const notice = $('k-notice').value.trim();
    if (notice) body.notice_s = intOr(notice);
    if ($('k-emergency').checked) {
      // An emergency reclaim breaks the notice promised to buyers: ask once more.
      if (!session.reclaimConfirm) {
        session.reclaimConfirm = true;
        const box = $('reclaim-confirm');
        box.replaceChildren(`Emergency reclaim of ${body.gpus} GPUs from `, el('code', {}, id),
          `: buyers get ${notice ? `${notice} s` : "the pool's"} notice, maybe less than promised, and it is recorded and counted. Press again to confirm, Escape to go back.`);
        box.hidden = false;
        $('reclaim-btn').textContent = 'Confirm emergency reclaim';
        return;
      }
      body.emergency = true;
    }
    try {
      const answer = await call('POST', `/v1/capacity/${encodeURIComponent(id)}/reclaim`, body);
      merge('block', answer.block);
      const r = answer.reclaim;
      setResult('reclaim-result', `Reclaimed ${fmtInt(r.gpus)} GPUs of ${id}: ${fmtInt(r.gpus_from_book)} from the book, ${r.leases_preempted} leases preempted${r.leases_preempted ? `, notice ends ${fmtTime(Date.parse(r.notice_ends_at))}` : ''}${r.emergency ? ' (emergency)' : ''}`);
      resetReclaimConfirm();
    } catch (err) {
      showRefusal('reclaim-error', err);
    }
  }

  async function forecastBlock(e) {
    e.preventDefault();
    clearRefusal('forecast-error');
    setResult('forecast-result', '');
    const id = $('k-block').value;
    try {
      const answer = await call('POST', `/v1/capacity/${encodeURIComponent(id)}/forecast`, { reclaim_at: localToIso($('f-at').value) || $('f-at').value });
      merge('block', answer.block);
      setResult('forecast-result', `Forecast sent for ${id}: ${answer.leases_warned} leases warned`);
    } catch (err) {
      showRefusal('forecast-error', err);
    }
  }

  function drawBlockSelect() {
    const select = $('k-block');
    if (!select) return;
    const open = [...session.blocks.values()].filter((b) => b.status !== 'closed').map((b) => b.block_id).sort();
    const current = select.value;
    if ([...select.options].map((o) => o.value).join('\n') !== open.join('\n')) {
      select.replaceChildren(...open.map((id) => el('option', { value: id }, id)));
      if (open.includes(current)) select.value = current;
    }
  }

  function blockRows() {
    const all = [...session.blocks.values()].sort((a, b) => (a.status === 'closed') - (b.status === 'closed') || a.block_id.localeCompare(b.block_id));
    return all.slice(0, ROWS_SHOWN_MAX * 2).map((b) => {
      const forecast = b.reclaim_expected_at || b.reclaim_forecast_at;
      const live = b.status !== 'closed';
      return el('tr', { className: live ? '' : 'done', dataset: { block: b.block_id } },
        el('td', { className: 'mono' }, b.block_id),
        el('td', { className: 'mono' }, b.pool),
        el('td', {}, badge(b.gpus_reclaiming ? 'reclaiming' : b.status)),
        el('td', { className: 'num' }, fmtInt(b.gpus)),
        el('td', { className: 'num' }, fmtInt(b.gpus_sold)),
        el('td', { className: 'num' }, fmtInt(b.gpus_unsold)),
        el('td', { className: `num${b.gpus_reclaiming ? ' reclaiming' : ''}` }, fmtInt(b.gpus_reclaiming)),
        el('td', { className: 'num' }, fmtInt(b.gpus_failed)),
        el('td', { className: 'num' }, priceText(b.pool, b.reserve_price)),
        el('td', { className: 'num' }, usd(toMicros(b.revenue))),
        el('td', { className: 'mono' }, fmtWhen(Date.parse(b.available_until), true)),
        el('td', { className: 'mono' }, forecast ? fmtWhen(Date.parse(forecast), true) : '—'),
        el('td', { className: 'act' }, ...(live ? [
          el('button', { type: 'button', className: 'small', dataset: { key: `reclaim:${b.block_id}` }, onclick: () => pickBlock(b.block_id, 'k-gpus') }, 'Reclaim…'),
          el('button', { type: 'button', className: 'small', dataset: { key: `forecast:${b.block_id}` }, onclick: () => pickBlock(b.block_id, 'f-at') }, 'Forecast…'),
        ] : [])));
    });
  }

  // ----- drawing -------------------------------------------------------------------------

  function emptyRow(columns, text) {
    return el('tr', { className: 'empty-row' }, el('td', { colspan: String(columns) }, text));
  }

  // Rows are rebuilt when their data changes; the control that had the keyboard keeps it.
  function replaceRows(body, rows) {
    const active = document.activeElement;
    const key = active && body.contains(active) ? active.dataset.key : null;
    body.replaceChildren(...rows);
    if (key) {
      const again = body.querySelector(`[data-key="${CSS.escape(key)}"]`);
      if (again) again.focus();
    }
  }

  function drawSoon() {
    if (session.drawPending) return;
    session.drawPending = true;
    requestAnimationFrame(draw);
  }

  function draw() {
    session.drawPending = false;
    if (session.role === 'buyer' && $('orders')) {
      const orders = orderRows();
      replaceRows($('orders'), orders.length ? orders : [emptyRow(8, 'No orders yet: place a bid.')]);
      const open = [...session.orders.values()].filter((o) => o.status === 'open').length;
      $('orders-count').textContent = `${open} open`;
      const leases = leaseRows();
      replaceRows($('leases'), leases.length ? leases : [emptyRow(10, 'No leases yet.')]);
      drawNotices();
      drawAmend();
    } else if (session.role === 'supplier' && $('blocks')) {
      const blocks = blockRows();
      replaceRows($('blocks'), blocks.length ? blocks : [emptyRow(13, 'No blocks yet: release capacity.')]);
      drawBlockSelect();
      const revenue = [...session.blocks.values()].reduce((sum, b) => sum + toMicros(b.revenue), 0);
      $('blocks-total').textContent = `revenue ${usd(revenue)} USD`;
    }
  }

  // Every second: countdowns and costs move in place (no rows rebuilt, focus undisturbed).
  setInterval(() => {
    if (session.role !== 'buyer' || !$('leases')) return;
    drawNotices();
    for (const cell of document.querySelectorAll('#leases [data-cost]')) {
      const l = session.leases.get(cell.dataset.cost);
      if (l) cell.textContent = usd(costSoFar(l));
    }
  }, 1000);
  setInterval(drawExpiry, 30000);

  // ----- wiring --------------------------------------------------------------------------

  function focusConsole() {
    const target = !session.token ? $('token') : session.role === 'buyer' ? $('t-price') : session.role === 'supplier' ? $('r-block') : $('o-window') || $('signout');
    $('console').scrollIntoView({ block: 'start' });
    if (target) target.focus({ preventScroll: true });
  }

  $('signin').addEventListener('submit', (e) => {
    // The form never submits: a token must not end up in a URL or a request body of its own.
    e.preventDefault();
    signIn($('token').value, false);
  });
  $('signout').addEventListener('click', () => { signOut(); $('token').focus(); });
  $('who').addEventListener('click', focusConsole);
  // Escape leaves a console field, so that the desk's one-key shortcuts work again.
  $('console').addEventListener('keydown', (e) => {
    const t = e.target;
    if (e.key === 'Escape' && ['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName) && !session.reclaimConfirm) t.blur();
  });

  window.offpeakConsole = {
    focus: focusConsole,
    poolsLoaded() {
      fillPoolSelect($('t-pool'), state.pool);
      fillPoolSelect($('r-pool'), state.pool);
    },
    // The ticket follows the pool the desk shows (the ticket's own picker can still differ).
    poolChanged(id) {
      if (session.role !== 'buyer' || !$('t-pool')) return;
      $('t-pool').value = id;
      onTicketInput();
    },
    pickPrice(pool, micros) {
      if (session.role !== 'buyer' || !$('t-pool')) return;
      $('t-pool').value = pool;
      $('t-price').value = fmtPrice(micros, decimalsOf((poolOf(pool) || {}).tick));
      onTicketInput();
      $('ticket').scrollIntoView({ block: 'nearest', behavior: 'smooth' });
      $('t-price').focus({ preventScroll: true });
    },
  };

  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved, true);
})();
