// offpeak owner's view (DESIGN section 13): with an admin token, what idle capacity earned.
// Per pool over a window: offered and leased GPU-hours, utilisation, revenue, revenue per
// offered GPU-hour, average price, preemptions and notices honoured, with a fleet total; and a
// chart of utilisation and revenue per bucket over time for one pool or the whole fleet.
//
// Loaded after app.js (its helpers: $, toMicros, fmtInt, fmtTime and the canvas helpers
// prepareCanvas, color, niceStep, placeholder) and before console.js, which mounts this view
// when an admin signs in and hands it its authenticated `call`: the token never reaches this
// file. Everything lives inside one function; only `window.offpeakOwner` (mount, unmount) is
// global.
//
// The report is asked for again 15 s after the last answer, but only while the tab is shown
// and the panel is on screen; coming back to it after that asks at once.

'use strict';

(() => {
  const REFRESH_EVERY_MS = 15000;
  const WINDOWS = { '1h': 3600000, '6h': 21600000, '24h': 86400000, '7d': 604800000 };
  const BUCKETS = { '1m': 60000, '15m': 900000, '1h': 3600000, '1d': 86400000 };
  // The bucket each window opens with: 24 to 168 points, enough to see a day's shape.
  const BUCKET_FOR = { '1h': '1m', '6h': '15m', '24h': '1h', '7d': '1h' };
  // The server refuses more buckets than this (limits::REPORT_BUCKETS_MAX).
  const BUCKETS_MAX = 2000;
  // The chart's value for "all pools".
  const FLEET = '';
  // Where time labels may fall, in minutes: round times of a clock and a calendar.
  const LABEL_STEPS_MS = [1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080].map((m) => m * 60000);
  // The revenue axis never spans less than a cent, so that a quiet window is not magnified.
  const REVENUE_AXIS_MIN_MICROS = 10000;

  const view = {
    call: null,          // the console's authenticated REST call, while an admin is signed in
    report: null,        // the last answer
    asked: 0,            // the number of the latest request: older answers are dropped
    loadedAt: 0,
    timer: null,
    due: false,          // a refresh fell due while the panel was out of sight
    onScreen: true,
    observer: null,
    resizer: null,
    chartPool: FLEET,
    cursor: null,        // the bucket the chart's readout shows (mouse or arrow keys)
    points: [],
  };

  // ----- small helpers -------------------------------------------------------------------

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'className') node.className = v;
      else if (k === 'dataset') Object.assign(node.dataset, v);
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : v);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  // Money as the server writes it: two to six decimals, trailing zeros dropped.
  function usdText(micros) {
    if (micros === null || micros === undefined) return '—';
    let digits = String(micros % 1e6).padStart(6, '0');
    while (digits.length > 2 && digits.endsWith('0')) digits = digits.slice(0, -1);
    return `${Math.floor(micros / 1e6)}.${digits}`;
  }

  function fmtHours(h) {
    if (h === null || h === undefined) return '—';
    if (h >= 100) return fmtInt(Math.round(h));
    return h.toFixed(h >= 1 ? 2 : 3);
  }

  // A fraction as a percentage: one decimal, two below 1 %, so that a little use is not 0.0 %.
  function fmtPct(fraction) {
    if (fraction === null || fraction === undefined) return '—';
    const p = fraction * 100;
    return `${p.toFixed(p > 0 && p < 1 ? 2 : 1)}%`;
  }

  const pad = (n) => String(n).padStart(2, '0');

  // A bucket's start: its time of day in a window of a day (the server widens the window by up
  // to a bucket), else with its date too; whole days by their UTC date, since the server cuts
  // days at midnight UTC.
  function fmtStart(ms, bucketMs, spanMs) {
    const d = new Date(ms);
    if (bucketMs >= BUCKETS['1d']) return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
    const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    return spanMs > BUCKETS['1d'] + bucketMs ? `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hm}` : hm;
  }

  function showError(err) {
    const box = $('owner-error');
    if (!box) return;
    box.replaceChildren(el('code', {}, err.code || 'error'), ' ', err.message || '');
    box.hidden = false;
  }

  function clearError() {
    const box = $('owner-error');
    if (box) { box.hidden = true; box.textContent = ''; }
  }

  // ----- controls --------------------------------------------------------------------------

  // Buckets that would make more than the server allows are not offered for the window.
  function fitBuckets() {
    const windowMs = WINDOWS[$('o-window').value];
    for (const option of $('o-bucket').options) {
      option.disabled = windowMs / BUCKETS[option.value] > BUCKETS_MAX;
    }
  }

  function onWindowChange() {
    $('o-bucket').value = BUCKET_FOR[$('o-window').value];
    fitBuckets();
    refresh();
  }

  // ----- loading -----------------------------------------------------------------------------

  async function refresh() {
    if (!view.call) return;
    const asked = ++view.asked;
    const windowName = $('o-window').value;
    const bucket = $('o-bucket').value;
    const from = new Date(Date.now() - WINDOWS[windowName]).toISOString();
    clearTimeout(view.timer);
    view.due = false;
    $('o-refresh').setAttribute('aria-busy', 'true');
    try {
      const report = await view.call('GET', `/v1/admin/report?bucket=${encodeURIComponent(bucket)}&from=${encodeURIComponent(from)}`);
      if (asked !== view.asked || !view.call) return;
      view.report = report;
      view.loadedAt = Date.now();
      clearError();
      draw();
    } catch (err) {
      if (asked !== view.asked || !view.call) return;
      showError(err);
    } finally {
      if (asked === view.asked && view.call) {
        $('o-refresh').removeAttribute('aria-busy');
        view.timer = setTimeout(tick, REFRESH_EVERY_MS);
      }
    }
  }

  const shown = () => document.visibilityState === 'visible' && view.onScreen;

  function tick() {
    if (shown()) refresh();
    else view.due = true;
  }

  function comeBack() {
    if (view.call && view.due && shown()) refresh();
  }

  document.addEventListener('visibilitychange', comeBack);

  // ----- the table -------------------------------------------------------------------------

  function figureCells(f) {
    const emergency = f.emergency_reclaims
      ? el('span', { className: 'muted' }, ` (${fmtInt(f.emergency_reclaims)} emergency)`) : null;
    const cell = (figure, text, ...more) => el('td', { className: 'num', dataset: { figure } }, text, ...more);
    return [
      cell('offered', fmtHours(f.offered_gpu_hours)),
      cell('leased', fmtHours(f.leased_gpu_hours)),
      cell('utilisation', fmtPct(f.utilisation)),
      cell('revenue', f.revenue),
      cell('revenue-per-offered', f.revenue_per_offered_gpu_hour || '—'),
      cell('average-price', f.average_price || '—'),
      cell('preemptions', fmtInt(f.preemptions), emergency),
      cell('notices-honoured', f.notices_honoured_pct === null || f.notices_honoured_pct === undefined
        ? '—' : `${f.notices_honoured_pct.toFixed(f.notices_honoured_pct % 1 ? 1 : 0)}%`),
    ];
  }

  // The pool's name is a button: it puts the pool on the chart (the fleet's row, all pools).
  function poolRow(pool, label, figures) {
    const selected = view.chartPool === pool;
    return el('tr', { className: selected ? 'selected' : '', dataset: { pool } },
      el('th', { scope: 'row' },
        el('button', {
          type: 'button', className: 'pool-btn', 'aria-pressed': String(selected), title: `Chart ${label}`,
          dataset: { key: `chart:${pool}` }, onclick: () => pickChartPool(pool),
        }, label)),
      ...figureCells(figures));
  }

  // Rows are rebuilt with each report; the button that had the keyboard keeps it.
  function replaceRows(body, rows) {
    const active = document.activeElement;
    const key = active && body.contains(active) ? active.dataset.key : null;
    body.replaceChildren(...rows);
    if (key) {
      const again = body.querySelector(`[data-key="${CSS.escape(key)}"]`);
      if (again) again.focus();
    }
  }

  function drawTable() {
    const report = view.report;
    const rows = report.pools.map((p) => poolRow(p.pool, p.pool, p.total));
    replaceRows($('owner-pools'), rows.length ? rows
      : [el('tr', { className: 'empty-row' }, el('td', { colspan: '9' }, 'No pools.'))]);
    replaceRows($('owner-fleet'), [poolRow(FLEET, 'Fleet', report.total)]);
    const from = Date.parse(report.from);
    const to = Date.parse(report.to);
    const span = to - from;
    $('owner-range').textContent = `${fmtStart(from, 0, span)} – ${fmtStart(to, 0, span)} in ${report.bucket} buckets · updated ${fmtTime(view.loadedAt)}`;
  }

  function drawChartPicker() {
    const select = $('o-chart');
    const ids = view.report.pools.map((p) => p.pool);
    if (view.chartPool !== FLEET && !ids.includes(view.chartPool)) view.chartPool = FLEET;
    const wanted = [FLEET, ...ids];
    if ([...select.options].map((o) => o.value).join('\n') !== wanted.join('\n')) {
      select.replaceChildren(el('option', { value: FLEET }, 'Fleet (all pools)'), ...ids.map((id) => el('option', { value: id }, id)));
    }
    select.value = view.chartPool;
  }

  function pickChartPool(pool) {
    view.chartPool = pool;
    view.cursor = null;
    draw();
  }

  // ----- the chart -------------------------------------------------------------------------

  // The chosen pool's buckets, or the fleet's (the pools' sums; utilisation from the sums).
  function series() {
    const report = view.report;
    if (!report) return [];
    const pools = view.chartPool === FLEET ? report.pools : report.pools.filter((p) => p.pool === view.chartPool);
    if (!pools.length) return [];
    return pools[0].buckets.map((b, i) => {
      let offered = 0;
      let leased = 0;
      let revenue = 0;
      for (const p of pools) {
        const x = p.buckets[i];
        offered += x.offered_gpu_hours;
        leased += x.leased_gpu_hours;
        revenue += toMicros(x.revenue);
      }
      const utilisation = pools.length === 1 ? b.utilisation : (offered > 0 ? leased / offered : null);
      return { start: Date.parse(b.start), offered, leased, utilisation, revenue };
    });
  }

  function chartName() {
    return view.chartPool === FLEET ? 'the fleet' : view.chartPool;
  }

  function drawChart() {
    const canvas = $('owner-chart');
    if (!canvas) return;
    const points = series();
    view.points = points;
    if (view.cursor !== null && view.cursor >= points.length) view.cursor = null;
    canvas.dataset.points = String(points.length);
    canvas.dataset.pool = view.chartPool || 'fleet';
    const { ctx, w, h } = prepareCanvas(canvas);
    if (!points.length) {
      placeholder(ctx, w, h, view.report ? 'No buckets' : 'Loading…');
      canvas.setAttribute('aria-label', 'Utilisation and revenue over time: no data');
      drawReadout();
      return;
    }
    const report = view.report;
    const bucketMs = BUCKETS[report.bucket] || (points.length > 1 ? points[1].start - points[0].start : BUCKETS['1h']);
    const spanMs = Date.parse(report.to) - Date.parse(report.from);
    const axisW = 64;
    const timeH = 18;
    const titleH = 18;
    const gap = 12;
    const plotW = w - axisW;
    const inner = Math.max(40, h - timeH - 2 * titleH - gap);
    const uTop = titleH;
    const uH = Math.round(inner * 0.5);
    const rTop = uTop + uH + gap + titleH;
    const rH = inner - uH;
    const slot = plotW / points.length;
    const x = (i) => i * slot + slot / 2;
    const yU = (fraction) => uTop + uH - fraction * uH;
    const maxRevenue = Math.max(REVENUE_AXIS_MIN_MICROS, ...points.map((p) => p.revenue));
    const rStep = niceStep(maxRevenue, 3, REVENUE_AXIS_MIN_MICROS);
    const rMax = Math.ceil(maxRevenue / rStep) * rStep;
    const yR = (micros) => rTop + rH - (micros / rMax) * rH;

    // Titles, grids and axes.
    ctx.fillStyle = color('--muted');
    ctx.textAlign = 'left';
    ctx.font = `11px ${color('--sans')}`;
    ctx.fillText('Utilisation, % of offered GPU-hours', 0, uTop - titleH / 2);
    ctx.fillText(`Revenue per ${report.bucket}, USD`, 0, rTop - titleH / 2);
    ctx.font = `11px ${color('--mono')}`;
    ctx.strokeStyle = color('--line');
    ctx.lineWidth = 1;
    const utilSteps = uH >= 100 ? [0, 0.25, 0.5, 0.75, 1] : [0, 0.5, 1];
    for (const f of utilSteps) {
      const yy = Math.round(yU(f)) + 0.5;
      ctx.beginPath(); ctx.moveTo(0, yy); ctx.lineTo(plotW, yy); ctx.stroke();
      ctx.fillText(`${f * 100}%`, plotW + 6, yy);
    }
    for (let v = 0; v <= rMax + 1; v += rStep) {
      const yy = Math.round(yR(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(0, yy); ctx.lineTo(plotW, yy); ctx.stroke();
      ctx.fillText(usdText(v), plotW + 6, yy);
    }
    // Time labels on round times (whole hours, midnights...) as far apart as their width needs.
    ctx.textAlign = 'center';
    const sample = fmtStart(points[points.length - 1].start, bucketMs, spanMs);
    const labelW = ctx.measureText(sample).width;
    const gapMs = ((labelW + 18) / slot) * bucketMs;
    const stepMs = LABEL_STEPS_MS.find((m) => m >= gapMs && m % bucketMs === 0)
      || Math.ceil(gapMs / bucketMs) * bucketMs;
    const local = (ms) => (bucketMs >= BUCKETS['1d'] ? ms : ms - new Date(ms).getTimezoneOffset() * 60000);
    points.forEach((p, i) => {
      if (local(p.start) % stepMs !== 0 || x(i) - labelW / 2 < 0 || x(i) + labelW / 2 > w) return;
      ctx.fillText(fmtStart(p.start, bucketMs, spanMs), x(i), h - timeH / 2);
    });

    // Revenue: a bar per bucket (at least a pixel for any revenue at all).
    ctx.fillStyle = 'rgba(38,179,122,0.75)';
    const barW = Math.max(1, slot * 0.7);
    points.forEach((p, i) => {
      if (!p.revenue) return;
      const top = Math.min(yR(p.revenue), rTop + rH - 1);
      ctx.fillRect(x(i) - barW / 2, top, barW, rTop + rH - top);
    });

    // Utilisation: a line through the buckets that offered anything, broken where none did,
    // with a dot where a bucket stands alone (or where the buckets are wide enough to show).
    const accent = color('--accent');
    const runs = [];
    let run = [];
    points.forEach((p, i) => {
      if (p.utilisation === null || p.utilisation === undefined) {
        if (run.length) runs.push(run);
        run = [];
      } else {
        run.push(i);
      }
    });
    if (run.length) runs.push(run);
    ctx.lineWidth = 1.5;
    for (const r of runs) {
      const fraction = (i) => Math.min(1, points[i].utilisation);
      ctx.beginPath();
      ctx.moveTo(x(r[0]), yU(0));
      for (const i of r) ctx.lineTo(x(i), yU(fraction(i)));
      ctx.lineTo(x(r[r.length - 1]), yU(0));
      ctx.closePath();
      ctx.fillStyle = 'rgba(90,169,255,0.14)';
      ctx.fill();
      ctx.beginPath();
      r.forEach((i, k) => (k ? ctx.lineTo(x(i), yU(fraction(i))) : ctx.moveTo(x(i), yU(fraction(i)))));
      ctx.strokeStyle = accent;
      ctx.stroke();
      if (r.length === 1 || slot >= 8) {
        ctx.fillStyle = accent;
        for (const i of r) {
          ctx.beginPath(); ctx.arc(x(i), yU(fraction(i)), 2.5, 0, 2 * Math.PI); ctx.fill();
        }
      }
    }
    ctx.lineWidth = 1;

    // The bucket the readout shows.
    if (view.cursor !== null) {
      const cx = Math.round(x(view.cursor)) + 0.5;
      ctx.strokeStyle = color('--faint');
      ctx.setLineDash([3, 3]);
      ctx.beginPath(); ctx.moveTo(cx, uTop); ctx.lineTo(cx, rTop + rH); ctx.stroke();
      ctx.setLineDash([]);
    }

    const used = points.filter((p) => p.utilisation !== null && p.utilisation !== undefined);
    const peak = used.length ? Math.max(...used.map((p) => p.utilisation)) : null;
    const revenue = points.reduce((sum, p) => sum + p.revenue, 0);
    canvas.setAttribute('aria-label', `Utilisation and revenue per ${report.bucket} bucket for ${chartName()}: `
      + `${points.length} buckets, peak utilisation ${fmtPct(peak)}, revenue ${usdText(revenue)} USD. `
      + 'Arrow keys step through the buckets.');
    drawReadout();
  }

  function drawReadout() {
    const out = $('owner-readout');
    if (!out) return;
    const points = view.points;
    if (!points.length) { out.textContent = ''; return; }
    const i = view.cursor === null ? points.length - 1 : view.cursor;
    const p = points[i];
    const report = view.report;
    const bucketMs = BUCKETS[report.bucket] || 0;
    const when = fmtStart(p.start, bucketMs, Date.parse(report.to) - Date.parse(report.from));
    out.textContent = `${view.cursor === null ? 'Latest bucket' : 'Bucket'} ${when} (${report.bucket}), ${chartName()}: `
      + `utilisation ${fmtPct(p.utilisation)} · revenue ${usdText(p.revenue)} USD · `
      + `offered ${fmtHours(p.offered)} GPU-h · leased ${fmtHours(p.leased)} GPU-h`;
  }

  function moveCursor(to) {
    const n = view.points.length;
    if (!n) return;
    view.cursor = to === null ? null : Math.max(0, Math.min(n - 1, to));
    drawChart();
  }

  function onChartKey(e) {
    const n = view.points.length;
    const at = view.cursor === null ? n : view.cursor;
    if (e.key === 'ArrowLeft') moveCursor(at - 1);
    else if (e.key === 'ArrowRight') moveCursor(view.cursor === null ? n - 1 : at + 1);
    else if (e.key === 'Home') moveCursor(0);
    else if (e.key === 'End') moveCursor(n - 1);
    else if (e.key === 'Escape') moveCursor(null);
    else return;
    e.preventDefault();
  }

  function onChartPointer(e) {
    const canvas = e.currentTarget;
    const n = view.points.length;
    const plotW = canvas.clientWidth - 64;
    const px = e.clientX - canvas.getBoundingClientRect().left;
    if (!n || px < 0 || px > plotW) { if (view.cursor !== null) moveCursor(null); return; }
    const i = Math.min(n - 1, Math.floor(px / (plotW / n)));
    if (i !== view.cursor) moveCursor(i);
  }

  function draw() {
    if (!view.report || !$('owner-pools')) return;
    drawTable();
    drawChartPicker();
    drawChart();
  }

  // ----- mounting ----------------------------------------------------------------------------

  function mount(call) {
    unmount();
    view.call = call;
    const panel = $('owner');
    $('o-window').addEventListener('change', onWindowChange);
    $('o-bucket').addEventListener('change', refresh);
    $('owner-controls').addEventListener('submit', (e) => { e.preventDefault(); refresh(); });
    $('o-chart').addEventListener('change', (e) => pickChartPool(e.target.value));
    const canvas = $('owner-chart');
    canvas.addEventListener('keydown', onChartKey);
    canvas.addEventListener('mousemove', onChartPointer);
    canvas.addEventListener('mouseleave', () => moveCursor(null));
    // The readout speaks only while the chart has the keyboard: a refresh must not chatter.
    canvas.addEventListener('focus', () => $('owner-readout').setAttribute('aria-live', 'polite'));
    canvas.addEventListener('blur', () => $('owner-readout').setAttribute('aria-live', 'off'));
    $('o-bucket').value = BUCKET_FOR[$('o-window').value];
    fitBuckets();
    view.onScreen = true;
    view.observer = new IntersectionObserver((entries) => {
      view.onScreen = entries[entries.length - 1].isIntersecting;
      comeBack();
    });
    view.observer.observe(panel);
    view.resizer = new ResizeObserver(() => drawChart());
    view.resizer.observe(canvas.parentElement);
    drawChart();
    refresh();
  }

  function unmount() {
    clearTimeout(view.timer);
    if (view.observer) view.observer.disconnect();
    if (view.resizer) view.resizer.disconnect();
    Object.assign(view, {
      call: null, report: null, asked: view.asked + 1, loadedAt: 0, timer: null, due: false,
      observer: null, resizer: null, chartPool: FLEET, cursor: null, points: [],
    });
  }

  window.offpeakOwner = { mount, unmount };
})();
