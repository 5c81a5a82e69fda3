// The Tollgate console: a single page over the public admin API (no private endpoints).
// Plain ES modules and the DOM: nothing to build, nothing fetched from a CDN.
import { signRequest } from './sha256.js';

const TOKEN_KEY = 'tollgate.adminToken';
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
// Where problem slugs link: `problems#` (the catalog this listener serves) or the operator's
// `problems.typeBase`, as GET /console/status says.
let problemDocs = 'problems#';

// ---------------------------------------------------------------------------- API and status

class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail ?? `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

async function api(method, path, body) {
  const headers = { authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) ?? ''}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 204) return undefined;
  const data = await res.json().catch(() => undefined);
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

function status(text, bad = false) {
  const el = $('#status');
  el.textContent = text;
  el.classList.toggle('bad', bad);
}

function reportError(err) {
  if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
    signOut('Your admin token was refused. Sign in again.');
    return;
  }
  const id = err instanceof ApiError ? err.problem?.request_id : undefined;
  status(`${err.message}${id ? ` (request ${id})` : ''}`, true);
}

const el = (tag, props = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') node.className = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ''));
  return node;
};
const when = (iso) => (iso ? new Date(iso).toLocaleString() : '—');

// ---------------------------------------------------------------------------------- routing

const views = ['signin', 'keys', 'audit', 'traffic', 'playground'];
let stopTraffic = () => undefined;

function show(view) {
  for (const v of views) $(`#view-${v}`).hidden = v !== view;
  for (const a of $$('#nav a')) {
    if (a.dataset.view === view) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  stopTraffic();
  if (view === 'keys') void loadKeys(true);
  if (view === 'audit') void loadAudit();
  if (view === 'traffic') stopTraffic = startTraffic();
  if (view === 'playground') renderSignature();
}

function route() {
  const signedIn = sessionStorage.getItem(TOKEN_KEY) !== null;
  $('#nav').hidden = !signedIn;
  if (!signedIn) return show('signin');
  const view = location.hash.replace(/^#\//, '') || 'keys';
  show(views.includes(view) && view !== 'signin' ? view : 'keys');
}

function signOut(message = 'Signed out.') {
  sessionStorage.removeItem(TOKEN_KEY);
  status(message, message !== 'Signed out.');
  location.hash = '';
  route();
}

/** What the admin listener says without a token: is the admin API on, where do problems link. */
async function consoleStatus() {
  try {
    const res = await fetch('/console/status', { cache: 'no-store' });
    const data = res.ok ? await res.json() : undefined;
    if (data && typeof data.problemDocs === 'string') problemDocs = data.problemDocs;
    return data;
  } catch {
    return undefined; // unreachable: the sign-in attempt reports it
  }
}

/** With no admin token configured, signing in cannot work: say so instead of "not valid". */
function showAdminApi(info) {
  const off = info?.adminApi === 'off';
  $('#admin-off').hidden = !off;
  for (const input of $$('#signin-form input, #signin-form button')) input.disabled = off;
  if (off) $('#signin-error').textContent = '';
  return !off;
}

$('#signin-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const token = $('#token').value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    await api('GET', '/keys?limit=1');
    $('#token').value = '';
    $('#signin-error').textContent = '';
    status('Signed in.');
    location.hash = '#/keys';
    route();
  } catch (err) {
    sessionStorage.removeItem(TOKEN_KEY);
    // A refusal may mean the tokens were removed since the page loaded: ask again.
    if (err instanceof ApiError && err.status === 401 && !showAdminApi(await consoleStatus())) return;
    $('#signin-error').textContent =
      err instanceof ApiError && err.status === 401 ? 'That token is not valid.' : err.message;
  }
});
$('#sign-out').addEventListener('click', () => signOut());
window.addEventListener('hashchange', route);

// ------------------------------------------------------------------------------------- keys

let keysCursor = null;

function keyRow(k) {
  const toggle = el(
    'button',
    { type: 'button', class: 'secondary', onclick: () => setEnabled(k, !k.enabled) },
    k.enabled ? 'Disable' : 'Enable',
  );
  const rotate = el('button', { type: 'button', class: 'secondary', onclick: () => rotateKey(k) }, 'Rotate');
  const revoke = el('button', { type: 'button', class: 'danger', onclick: () => revokeKey(k) }, 'Revoke');
  const state = k.enabled
    ? k.expiresAt && Date.parse(k.expiresAt) < Date.now()
      ? 'expired'
      : 'active'
    : 'disabled';
  return el(
    'tr',
    { 'data-id': k.id },
    el('td', {}, k.name),
    el('td', {}, el('code', {}, k.maskedKey)),
    el('td', {}, k.ownerId ?? '—'),
    el('td', {}, k.tenantId ?? '—'),
    el('td', { class: 'wrap' }, k.scopes.join(' ') || '—'),
    el('td', { class: 'wrap' }, planText(k)),
    el('td', {}, state + (k.environment === 'test' ? ' · test' : '') + (k.hmac ? ' · HMAC' : '')),
    el('td', {}, when(k.lastUsedAt)),
    el('td', {}, when(k.expiresAt)),
    el('td', {}, el('div', { class: 'actions' }, toggle, rotate, revoke)),
  );
}

/** The plan column: the key's own plan (or its tenant's), and its own limits (overrides). */
function planText(k) {
  const plan = k.plan ?? (k.tenantId ? 'tenant’s' : '—');
  const own = (k.rateLimits ?? []).map((rl) => `${rl.name} ${rl.limit}/${rl.windowSec}s`);
  return own.length ? `${plan} + ${own.join(', ')}` : plan;
}

/** `name:by:limit:windowSec[:cost]`, comma separated (as `keys create --rate-limit`). */
function parseRateLimits(text) {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => {
      const [name, by, limit, windowSec, cost] = s.split(':');
      const rl = { name, by, limit: Number(limit), windowSec: Number(windowSec) };
      if (cost !== undefined) rl.cost = Number(cost);
      return rl;
    });
}

async function loadKeys(reset) {
  const form = new FormData($('#key-filter'));
  const params = new URLSearchParams({ limit: '25' });
  for (const f of ['ownerId', 'tenantId']) if (form.get(f)) params.set(f, String(form.get(f)));
  if (!reset && keysCursor) params.set('cursor', keysCursor);
  try {
    const page = await api('GET', `/keys?${params}`);
    const body = $('#keys-table tbody');
    if (reset) body.replaceChildren();
    for (const k of page.items) body.append(keyRow(k));
    if (body.children.length === 0) body.append(el('tr', {}, el('td', { colspan: '10' }, 'No keys.')));
    keysCursor = page.nextCursor;
    $('#keys-more').hidden = !keysCursor;
  } catch (err) {
    reportError(err);
  }
}

$('#key-filter').addEventListener('submit', (event) => {
  event.preventDefault();
  void loadKeys(true);
});
$('#keys-more').addEventListener('click', () => void loadKeys(false));

function showSecret(created) {
  $('#secret-key').textContent = created.key;
  $('#secret-signing').hidden = !created.signingSecret;
  $('#secret-value').textContent = created.signingSecret ?? '';
  $('#secret-dialog').showModal();
}

for (const button of $$('[data-copy]'))
  button.addEventListener('click', async () => {
    const text = $(`#${button.dataset.copy}`).textContent;
    try {
      await navigator.clipboard.writeText(text);
      status('Copied.');
    } catch {
      // No clipboard permission (plain http): select the text for a manual copy instead.
      const range = document.createRange();
      range.selectNodeContents($(`#${button.dataset.copy}`));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      status('Selected: press Ctrl+C (⌘C) to copy.');
    }
  });

$('#create-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = { name: String(form.get('name')).trim() };
  for (const f of ['ownerId', 'tenantId', 'plan'])
    if (String(form.get(f)).trim()) body[f] = String(form.get(f)).trim();
  const scopes = String(form.get('scopes'))
    .split(/[\s,]+/)
    .filter(Boolean);
  if (scopes.length) body.scopes = scopes;
  if (form.get('expiresAt')) body.expiresAt = new Date(String(form.get('expiresAt'))).toISOString();
  if (String(form.get('remaining')) !== '') body.remaining = Number(form.get('remaining'));
  if (form.get('hmac')) body.hmac = true;
  if (form.get('environment') === 'test') body.environment = 'test';
  const rateLimits = parseRateLimits(String(form.get('rateLimits') ?? ''));
  if (rateLimits.length) body.rateLimits = rateLimits;
  try {
    const created = await api('POST', '/keys', body);
    event.target.reset();
    status(`Key ${created.name} created.`);
    showSecret(created);
    void loadKeys(true);
  } catch (err) {
    const errors = err instanceof ApiError ? err.problem?.errors : undefined;
    if (errors) status(errors.map((e) => `${e.pointer || 'body'}: ${e.message}`).join('; '), true);
    else reportError(err);
  }
});

// Tenant plans (PUT/GET /tenants/{id}): keys without a plan of their own follow their tenant's.
function showTenant(t) {
  $('#tenant-result').textContent =
    `${t.id}: ${t.plan ?? 'no plan'}${t.updatedAt ? ` (set ${when(t.updatedAt)})` : ''}`;
}

async function tenantCall(method) {
  const form = new FormData($('#tenant-form'));
  const id = String(form.get('tenant')).trim();
  if (!id) return;
  const plan = String(form.get('plan')).trim();
  try {
    const path = `/tenants/${encodeURIComponent(id)}`;
    const t = method === 'PUT' ? await api('PUT', path, { plan: plan || null }) : await api('GET', path);
    showTenant(t);
    if (method === 'PUT') status(`Tenant ${id} is on ${t.plan ?? 'no plan'}.`);
  } catch (err) {
    const errors = err instanceof ApiError ? err.problem?.errors : undefined;
    if (errors) status(errors.map((e) => `${e.pointer || 'body'}: ${e.message}`).join('; '), true);
    else if (err instanceof ApiError && err.status === 404) status(err.message, true);
    else reportError(err);
  }
}

$('#tenant-form').addEventListener('submit', (event) => {
  event.preventDefault();
  void tenantCall('PUT');
});
$('#tenant-show').addEventListener('click', () => void tenantCall('GET'));

function confirmDialog(text) {
  return new Promise((resolve) => {
    const dialog = $('#confirm-dialog');
    $('#confirm-text').textContent = text;
    dialog.returnValue = '';
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.showModal();
  });
}

async function setEnabled(k, enabled) {
  try {
    await api('PATCH', `/keys/${encodeURIComponent(k.id)}`, { enabled });
    status(`Key ${k.name} ${enabled ? 'enabled' : 'disabled'}.`);
    void loadKeys(true);
  } catch (err) {
    reportError(err);
  }
}

function rotateKey(k) {
  const dialog = $('#rotate-dialog');
  dialog.returnValue = '';
  dialog.addEventListener(
    'close',
    async () => {
      if (dialog.returnValue !== 'ok') return;
      try {
        const rotated = await api('POST', `/keys/${encodeURIComponent(k.id)}/rotate`, {
          gracePeriodSec: Number($('#rotate-form [name=grace]').value),
        });
        status(`Key ${k.name} rotated; the old key works until ${when(rotated.previous.expiresAt)}.`);
        showSecret(rotated);
        void loadKeys(true);
      } catch (err) {
        reportError(err);
      }
    },
    { once: true },
  );
  dialog.showModal();
}

async function revokeKey(k) {
  if (!(await confirmDialog(`Revoke ${k.name} (${k.maskedKey})? Requests with it will be refused at once.`)))
    return;
  try {
    await api('DELETE', `/keys/${encodeURIComponent(k.id)}`);
    status(`Key ${k.name} revoked.`);
    void loadKeys(true);
  } catch (err) {
    reportError(err);
  }
}

// ------------------------------------------------------------------------------------ audit

function problemLink(slug) {
  if (!slug) return '—';
  return el('a', { href: problemDocs + encodeURIComponent(slug), target: '_blank', rel: 'noopener' }, slug);
}

function showRecord(record) {
  const box = $('#audit-record');
  const rows = Object.entries(record).map(([k, v]) =>
    el(
      'tr',
      {},
      el('th', { scope: 'row' }, k),
      el(
        'td',
        { class: 'wrap' },
        k === 'problem'
          ? problemLink(v)
          : v === null
            ? '—'
            : typeof v === 'object'
              ? JSON.stringify(v)
              : String(v),
      ),
    ),
  );
  box.replaceChildren(
    el('h3', {}, `Request ${record.request_id}`),
    el('div', { class: 'table-wrap' }, el('table', { id: 'record-table' }, el('tbody', {}, ...rows))),
  );
  box.hidden = false;
  box.focus();
}

async function loadAudit() {
  const form = new FormData($('#audit-filter'));
  const params = new URLSearchParams({ limit: '50' });
  for (const f of ['status', 'route', 'credentialId'])
    if (String(form.get(f) ?? '').trim()) params.set(f, String(form.get(f)).trim());
  try {
    const { items } = await api('GET', `/requests?${params}`);
    const body = $('#audit-table tbody');
    body.replaceChildren(
      ...items.map((r) =>
        el(
          'tr',
          {},
          el('td', {}, new Date(r.time).toLocaleTimeString()),
          el('td', {}, r.method ?? ''),
          el('td', { class: 'wrap' }, r.path),
          el('td', {}, r.route ?? '—'),
          el('td', {}, String(r.status)),
          el('td', {}, problemLink(r.problem)),
          el('td', {}, r.credential_id ?? '—'),
          el('td', {}, String(r.latency_ms)),
          el(
            'td',
            {},
            el(
              'button',
              {
                type: 'button',
                class: 'secondary',
                onclick: () => showRecord(r),
                'aria-label': `Open request ${r.request_id}`,
              },
              'Open',
            ),
          ),
        ),
      ),
    );
    if (items.length === 0) body.append(el('tr', {}, el('td', { colspan: '9' }, 'No requests match.')));
  } catch (err) {
    reportError(err);
  }
}

$('#audit-filter').addEventListener('submit', (event) => {
  event.preventDefault();
  void loadAudit();
});

/** A request id from a pasted id, `instance` path or full URL. */
const idOf = (text) =>
  text
    .trim()
    .replace(/^.*\/requests\//, '')
    .replace(/[?#].*$/, '');

$('#audit-search').addEventListener('submit', async (event) => {
  event.preventDefault();
  const id = idOf(new FormData(event.target).get('id'));
  try {
    showRecord(await api('GET', `/requests/${encodeURIComponent(id)}`));
    status('');
  } catch (err) {
    if (err instanceof ApiError && err.status === 404)
      status(`No audit record for ${id} (yet: records appear within 2 seconds).`, true);
    else reportError(err);
  }
});

// ---------------------------------------------------------------------------------- traffic

function quantile(buckets, q) {
  const total = buckets.at(-1)?.count ?? 0;
  if (total <= 0) return null;
  const target = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const b of buckets) {
    if (b.count >= target) {
      if (b.le === null) return prevLe * 1000;
      const inBucket = b.count - prevCount;
      const frac = inBucket > 0 ? (target - prevCount) / inBucket : 1;
      return (prevLe + (b.le - prevLe) * frac) * 1000;
    }
    prevLe = b.le ?? prevLe;
    prevCount = b.count;
  }
  return prevLe * 1000;
}

function drawChart(svg, series, colors) {
  const width = 400;
  const height = 160;
  const pad = 24;
  const max = Math.max(1, ...series.flatMap((s) => s.map((p) => p ?? 0)));
  // One reading is a flat segment, not an invisible point.
  series = series.map((s) => (s.length === 1 ? [s[0], s[0]] : s));
  const n = Math.max(2, ...series.map((s) => s.length));
  const x = (i) => pad + (i * (width - pad - 4)) / (n - 1);
  const y = (v) => height - pad - (v / max) * (height - 2 * pad);
  const ns = 'http://www.w3.org/2000/svg';
  const node = (tag, attrs) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    return e;
  };
  const label = node('text', { x: 2, y: pad - 8, 'font-size': 11, fill: '#4f5660' });
  label.textContent = max >= 10 ? max.toFixed(0) : max.toFixed(2);
  const axis = node('line', { x1: pad, y1: height - pad, x2: width, y2: height - pad, stroke: '#d4d8de' });
  const lines = series.map((s, i) =>
    node('polyline', {
      fill: 'none',
      stroke: colors[i],
      'stroke-width': 2,
      points: s.map((v, j) => `${x(j).toFixed(1)},${y(v ?? 0).toFixed(1)}`).join(' '),
    }),
  );
  svg.replaceChildren(axis, label, ...lines);
}

function startTraffic() {
  const points = [];
  let previous;
  let timer;
  let stopped = false;
  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue(name).trim();
  const tick = async () => {
    try {
      const now = await api('GET', '/stats');
      if (previous) {
        const dt = Math.max(0.001, (now.time - previous.time) / 1000);
        const rate = (c) => Math.max(0, (now.requests[c] - previous.requests[c]) / dt);
        const delta = now.latency.map((b, i) => ({
          le: b.le,
          count: b.count - (previous.latency[i]?.count ?? 0),
        }));
        points.push({
          r2: rate('2xx'),
          r3: rate('3xx'),
          r4: rate('4xx'),
          r5: rate('5xx'),
          p50: quantile(delta, 0.5),
          p99: quantile(delta, 0.99),
          limited: Math.max(0, (now.rateLimited - previous.rateLimited) / dt),
        });
        if (points.length > 60) points.shift();
        drawChart(
          $('#chart-rps'),
          [
            points.map((p) => p.r2),
            points.map((p) => p.r3),
            points.map((p) => p.r4),
            points.map((p) => p.r5),
          ],
          ['--c2', '--c3', '--c4', '--c5'].map(color),
        );
        drawChart(
          $('#chart-latency'),
          [points.map((p) => p.p50), points.map((p) => p.p99)],
          [color('--c2'), color('--c5')],
        );
        drawChart($('#chart-limited'), [points.map((p) => p.limited)], [color('--c4')]);
        const last = points.at(-1);
        const fmt = (v) => (v === null ? '—' : v.toFixed(1));
        $('#traffic-now tbody').replaceChildren(
          ...[
            [
              'Requests/s (2xx · 3xx · 4xx · 5xx)',
              `${fmt(last.r2)} · ${fmt(last.r3)} · ${fmt(last.r4)} · ${fmt(last.r5)}`,
            ],
            ['Latency p50 · p99 (ms)', `${fmt(last.p50)} · ${fmt(last.p99)}`],
            ['Rate-limit rejections/s', fmt(last.limited)],
            ['Requests since start', String(Object.values(now.requests).reduce((a, b) => a + b, 0))],
          ].map(([k, v]) => el('tr', {}, el('th', { scope: 'row' }, k), el('td', { 'data-metric': k }, v))),
        );
      }
      previous = now;
    } catch (err) {
      reportError(err);
    }
    if (!stopped) timer = setTimeout(tick, 2000);
  };
  void tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// ------------------------------------------------------------------------------- playground

function renderSignature() {
  const form = new FormData($('#playground-form'));
  const input = {
    secret: String(form.get('secret') ?? ''),
    timestamp: String(form.get('timestamp') ?? ''),
    method: String(form.get('method') ?? 'POST'),
    pathAndQuery: String(form.get('path') ?? ''),
    body: String(form.get('body') ?? ''),
  };
  const out = signRequest(input);
  $('#pg-body-hash').textContent = out.bodySha256;
  $('#pg-string').textContent = out.signingString;
  $('#pg-signature').textContent = input.secret ? out.signature : '(enter the signing secret)';
  return out;
}

$('#playground-form').addEventListener('input', renderSignature);
$('#playground-form').addEventListener('change', renderSignature);
$('#ts-now').addEventListener('click', () => {
  $('#playground-form [name=timestamp]').value = String(Math.floor(Date.now() / 1000));
  renderSignature();
});

$('#playground-compare').addEventListener('submit', async (event) => {
  event.preventDefault();
  const id = idOf(new FormData(event.target).get('id'));
  const box = $('#pg-received');
  try {
    const record = await api('GET', `/requests/${encodeURIComponent(id)}`);
    const computed = renderSignature();
    const received = record.signature;
    const ts = String(new FormData($('#playground-form')).get('timestamp') ?? '');
    const verdict = (a, b) =>
      el('span', { class: a === b ? 'match' : 'mismatch' }, a === b ? 'matches' : 'differs');
    box.replaceChildren(
      el('h3', {}, `Received with request ${record.request_id}`),
      received
        ? el(
            'dl',
            { class: 'kv' },
            el('dt', {}, 'X-Timestamp received'),
            el('dd', {}, `${received.timestamp ?? '—'} `, verdict(received.timestamp, ts)),
            el('dt', {}, 'SHA-256 of the body received'),
            el('dd', {}, `${received.body_sha256} `, verdict(received.body_sha256, computed.bodySha256)),
            el('dt', {}, 'The gateway’s verdict'),
            el('dd', { id: 'pg-verdict' }, received.result),
            el('dt', {}, 'Request'),
            el('dd', {}, `${record.method} ${record.path} → ${record.status}`),
          )
        : el('p', {}, 'That request carried no signature.'),
    );
    box.hidden = false;
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) status(`No audit record for ${id}.`, true);
    else reportError(err);
  }
});

route();
void consoleStatus().then(showAdminApi);
