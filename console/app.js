// The Tollgate console: a single page over the public admin API (no private endpoints).
// Plain ES modules and the DOM: nothing to build, nothing fetched from a CDN.
import { signRequest } from './sha256.js';
import { lineChart } from './chart.js';
import { DAY, HOUR, parseUsage, renderUsage } from './usage.js';

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
const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
/** The console's own links: ids are URI-encoded into the hash, never written as markup. */
const keyHref = (id) => `#/key/${encodeURIComponent(id)}`;
const tenantHref = (id) => `#/tenant/${encodeURIComponent(id)}`;
const keyLink = (id) => (id ? el('a', { href: keyHref(id), class: 'key-link' }, id) : '—');

// ---------------------------------------------------------------------------------- routing

const views = ['signin', 'keys', 'key', 'tenant', 'audit', 'admin', 'webhooks', 'traffic', 'playground'];
/** Views with a parameter (`#/key/<id>`, `#/tenant/<id>`) and no place in the navigation. */
const NAV_OF = { key: 'keys', tenant: 'keys' };
let stopTraffic = () => undefined;

function show(view, param, query) {
  for (const v of views) $(`#view-${v}`).hidden = v !== view;
  for (const a of $$('#nav a')) {
    if (a.dataset.view === (NAV_OF[view] ?? view)) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  stopTraffic();
  if (view === 'keys') void loadKeys(true);
  if (view === 'key') void showKey(param, query);
  if (view === 'tenant') void showTenantPage(param, query);
  if (view === 'audit') void loadAudit();
  if (view === 'admin') void loadAdmin();
  if (view === 'webhooks') void loadWebhooks();
  if (view === 'traffic') stopTraffic = startTraffic();
  if (view === 'playground') renderSignature();
}

/** `#/<view>[/<param>][?<query>]`: the param is one URI-encoded id. */
function parseHash() {
  const [path, q = ''] = location.hash.replace(/^#\/?/, '').split('?');
  const slash = path.indexOf('/');
  const view = slash < 0 ? path : path.slice(0, slash);
  let param;
  try {
    param = slash < 0 ? undefined : decodeURIComponent(path.slice(slash + 1));
  } catch {
    param = undefined;
  }
  return { view, param, query: new URLSearchParams(q) };
}

function route() {
  const signedIn = sessionStorage.getItem(TOKEN_KEY) !== null;
  $('#nav').hidden = !signedIn;
  if (!signedIn) return show('signin');
  const { view, param, query } = parseHash();
  const needsParam = view === 'key' || view === 'tenant';
  if (!views.includes(view) || view === 'signin' || (needsParam && !param)) return show('keys');
  show(view, param, query);
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

function revokedRow(k) {
  return el(
    'tr',
    { 'data-id': k.id, class: 'revoked' },
    el('td', {}, el('a', { href: keyHref(k.id) }, k.name)),
    el('td', {}, el('code', {}, k.maskedKey)),
    el('td', {}, k.ownerId ?? '—'),
    el('td', {}, k.tenantId ? el('a', { href: tenantHref(k.tenantId) }, k.tenantId) : '—'),
    el('td', { class: 'wrap' }, k.scopes.join(' ') || '—'),
    el('td', { class: 'wrap' }, planText(k)),
    el('td', {}, `revoked ${when(k.revokedAt)}`),
    el('td', {}, when(k.lastUsedAt)),
    el('td', {}, when(k.expiresAt)),
    el('td', {}),
  );
}

function keyRow(k) {
  if (k.revokedAt) return revokedRow(k);
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
    el('td', {}, el('a', { href: keyHref(k.id) }, k.name)),
    el('td', {}, el('code', {}, k.maskedKey)),
    el('td', {}, k.ownerId ?? '—'),
    el('td', {}, k.tenantId ? el('a', { href: tenantHref(k.tenantId) }, k.tenantId) : '—'),
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
  if (form.get('state') === 'revoked') params.set('state', 'revoked');
  if (!reset && keysCursor) params.set('cursor', keysCursor);
  try {
    const page = await api('GET', `/keys?${params}`);
    const body = $('#keys-table tbody');
    if (reset) body.replaceChildren();
    for (const k of page.items) body.append(keyRow(k));
    if (body.children.length === 0)
      body.append(
        el('tr', {}, el('td', { colspan: '10' }, params.has('state') ? 'No revoked keys.' : 'No keys.')),
      );
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

// ------------------------------------------------------------------------ key and tenant pages

const kvRows = (pairs) => pairs.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v ?? '—')]);

/** A key by id: a live one, else a revoked one the gateway still remembers; undefined if neither. */
async function findKey(id) {
  try {
    return await api('GET', `/keys/${encodeURIComponent(id)}`);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) throw err;
    const { items } = await api('GET', '/keys?state=revoked&limit=200');
    return items.find((k) => k.id === id);
  }
}

async function showKey(id, query) {
  $('#key-title').textContent = `Key ${id}`;
  $('#key-details').replaceChildren();
  mountUsage($('#key-usage'), { api: `/keys/${encodeURIComponent(id)}/usage`, hash: keyHref(id) }, query);
  try {
    const k = await findKey(id);
    if (k === undefined) {
      $('#key-details').replaceChildren(
        ...kvRows([
          ['Id', id],
          ['State', 'no such key (or revoked long ago)'],
        ]),
      );
      return;
    }
    $('#key-title').textContent = `Key ${k.name}`;
    const state = k.revokedAt ? `revoked ${when(k.revokedAt)}` : k.enabled ? 'active' : 'disabled';
    $('#key-details').replaceChildren(
      ...kvRows([
        ['Id', k.id],
        ['Key', el('code', {}, k.maskedKey)],
        ['State', `${state} · ${k.environment}${k.hmac ? ' · HMAC' : ''}`],
        ['Owner', k.ownerId],
        ['Tenant', k.tenantId ? el('a', { href: tenantHref(k.tenantId) }, k.tenantId) : '—'],
        ['Plan', planText(k)],
        ['Scopes', k.scopes.join(' ') || '—'],
        ['Created', when(k.createdAt)],
        ['Last used', when(k.lastUsedAt)],
        ['Expires', when(k.expiresAt)],
        [
          'Requests',
          el('a', { href: '#/audit', 'data-credential': k.id, class: 'audit-of' }, 'In the audit trail'),
        ],
      ]),
    );
  } catch (err) {
    reportError(err);
  }
}

async function showTenantPage(id, query) {
  $('#tenant-title').textContent = `Tenant ${id}`;
  $('#tenant-details').replaceChildren();
  mountUsage(
    $('#tenant-usage'),
    { api: `/tenants/${encodeURIComponent(id)}/usage`, hash: tenantHref(id) },
    query,
  );
  let plan = 'none';
  try {
    const t = await api('GET', `/tenants/${encodeURIComponent(id)}`);
    plan = `${t.plan ?? 'none'}${t.updatedAt ? ` (set ${when(t.updatedAt)})` : ''}`;
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) return reportError(err);
  }
  const keys = el(
    'button',
    { type: 'button', class: 'link', onclick: () => keysOfTenant(id) },
    'Show its keys',
  );
  $('#tenant-details').replaceChildren(
    ...kvRows([
      ['Id', id],
      ['Plan', plan],
      ['Keys', keys],
    ]),
  );
}

function keysOfTenant(id) {
  const form = $('#key-filter');
  form.elements.ownerId.value = '';
  form.elements.tenantId.value = id;
  form.elements.state.value = 'active';
  if (location.hash === '#/keys') void loadKeys(true);
  else location.hash = '#/keys';
}

// The audit trail of one key: its page's link fills the credential filter.
document.addEventListener('click', (event) => {
  const link = event.target instanceof Element ? event.target.closest('a.audit-of') : null;
  if (link) $('#audit-filter').elements.credentialId.value = link.dataset.credential;
});

/** `datetime-local` text of an epoch-ms time, in local time. */
function localInput(t) {
  const d = new Date(t - new Date(t).getTimezoneOffset() * 60_000);
  return d.toISOString().slice(0, 16);
}

/** The range of the page's query (`from`, `to` ISO; `granularity`), else the last 24 hours by hour. */
function usageRange(query) {
  const g = query.get('granularity') === 'day' ? 'day' : 'hour';
  const to = Date.parse(query.get('to') ?? '');
  const from = Date.parse(query.get('from') ?? '');
  if (Number.isFinite(to) && Number.isFinite(from) && from < to) return { from, to, granularity: g };
  const end = Math.ceil(Date.now() / HOUR) * HOUR;
  return { from: end - DAY, to: end, granularity: 'hour' };
}

/**
 * The usage block of a key or tenant page: a range form and the charts, fed by the usage API on
 * every visit (nothing is kept in the page, so a reload shows the same). The range lives in the
 * page's hash (`?from=&to=&granularity=`): a reload or a shared link shows the same range.
 */
function mountUsage(root, target, query) {
  if (!root.firstElementChild) {
    root.append($('#usage-template').content.cloneNode(true));
    const form = $('.usage-form', root);
    const go = (from, to, granularity) => {
      const q = new URLSearchParams({
        from: new Date(from).toISOString(),
        to: new Date(to).toISOString(),
        granularity,
      });
      location.hash = `${root.usageTarget.hash}?${q}`;
    };
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const from = Date.parse(form.elements.from.value);
      const to = Date.parse(form.elements.to.value);
      if (!(from < to)) return status('The usage range must end after it starts.', true);
      go(from, to, form.elements.granularity.value);
    });
    for (const button of $$('[data-range]', root))
      button.addEventListener('click', () => {
        const days = { '24h': 1, '7d': 7, '30d': 30 }[button.dataset.range];
        const end = Math.ceil(Date.now() / HOUR) * HOUR;
        go(end - days * DAY, end, days > 7 ? 'day' : 'hour');
      });
  }
  root.usageTarget = target;
  const range = usageRange(query);
  const form = $('.usage-form', root);
  form.elements.from.value = localInput(range.from);
  form.elements.to.value = localInput(range.to);
  form.elements.granularity.value = range.granularity;
  void loadUsage(root, target, range);
}

async function loadUsage(root, target, range) {
  const note = $('.usage-note', root);
  note.textContent = 'Loading usage…';
  const q = new URLSearchParams({
    from: new Date(range.from).toISOString(),
    to: new Date(range.to).toISOString(),
    granularity: range.granularity,
  });
  let usage;
  try {
    usage = parseUsage(await api('GET', `${target.api}?${q}`));
    note.textContent = `${range.granularity === 'day' ? 'Daily' : 'Hourly'} usage, ${when(new Date(range.from).toISOString())} – ${when(new Date(range.to).toISOString())}.`;
  } catch (err) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) return reportError(err);
    const errors = err instanceof ApiError ? err.problem?.errors : undefined;
    note.textContent = errors
      ? errors.map((e) => `${e.pointer || 'query'}: ${e.message}`).join('; ')
      : `No usage: ${err.message}`;
    usage = { granularity: range.granularity, buckets: [] };
  }
  if (root.usageTarget !== target) return; // another page was opened meanwhile
  renderUsage(root, usage, { from: range.from, to: range.to, color: css });
}

// --------------------------------------------------------------------------- admin activity

async function loadAdmin() {
  const form = new FormData($('#admin-filter'));
  const params = new URLSearchParams({ kind: 'admin', limit: '100' });
  for (const f of ['actor', 'action'])
    if (String(form.get(f) ?? '').trim()) params.set(f, String(form.get(f)).trim());
  try {
    const { items } = await api('GET', `/requests?${params}`);
    const body = $('#admin-table tbody');
    body.replaceChildren(
      ...items.map((r) =>
        el(
          'tr',
          { class: `outcome-${r.outcome ?? 'unknown'}` },
          el('td', {}, when(r.time)),
          el('td', {}, r.actor ?? (r.outcome === 'refused' ? '(refused credential)' : '—')),
          el('td', {}, r.action ?? '—'),
          el('td', {}, targetCell(r)),
          el('td', {}, el('span', { class: `badge ${r.outcome ?? ''}` }, r.outcome ?? '—')),
          el('td', {}, String(r.status)),
          el(
            'td',
            {},
            el(
              'button',
              {
                type: 'button',
                class: 'link',
                'aria-label': `Open admin call ${r.request_id}`,
                onclick: () => {
                  location.hash = '#/audit';
                  showRecord(r);
                },
              },
              r.request_id,
            ),
          ),
          el('td', {}, r.client_ip ?? '—'),
        ),
      ),
    );
    if (items.length === 0)
      body.append(el('tr', {}, el('td', { colspan: '8' }, 'No admin activity matches.')));
  } catch (err) {
    reportError(err);
  }
}

$('#admin-filter').addEventListener('submit', (event) => {
  event.preventDefault();
  void loadAdmin();
});

// ------------------------------------------------------------------------- webhook deliveries

async function loadWebhooks() {
  const outcome = String(new FormData($('#webhooks-filter')).get('outcome') ?? '');
  try {
    let { items } = await api('GET', '/webhooks/deliveries?limit=200');
    if (outcome) items = items.filter((a) => a.outcome === outcome);
    const body = $('#webhooks-table tbody');
    body.replaceChildren(
      ...items.map((a) =>
        el(
          'tr',
          { 'data-delivery': a.delivery_id },
          el('td', {}, when(a.time)),
          el('td', {}, a.type),
          el('td', {}, a.url),
          el('td', {}, a.status === null ? 'no answer' : String(a.status)),
          el('td', {}, String(a.attempts)),
          el('td', {}, el('span', { class: `badge ${a.outcome}` }, a.outcome)),
          el('td', {}, when(a.next_retry_at)),
          el('td', { class: 'wrap' }, a.error ?? '—'),
          el('td', {}, el('code', {}, a.event_id)),
        ),
      ),
    );
    if (items.length === 0) body.append(el('tr', {}, el('td', { colspan: '9' }, 'No deliveries.')));
  } catch (err) {
    reportError(err);
  }
}

$('#webhooks-filter').addEventListener('submit', (event) => {
  event.preventDefault();
  void loadWebhooks();
});

// ------------------------------------------------------------------------------------ audit

function problemLink(slug) {
  if (!slug) return '—';
  return el('a', { href: problemDocs + encodeURIComponent(slug), target: '_blank', rel: 'noopener' }, slug);
}

/** A credential id links to its key page when it is an API key's id (JWT subjects are not keys). */
const credentialCell = (r) =>
  r.credential_id && r.auth_method === 'api-key' ? keyLink(r.credential_id) : (r.credential_id ?? '—');

/** An admin record's target: a key id links to its key, a tenant to its tenant page. */
function targetCell(r) {
  if (!r.target) return '—';
  if (r.action === 'tenant.plan') return el('a', { href: tenantHref(r.target) }, r.target);
  return r.target.startsWith('key_') ? keyLink(r.target) : r.target;
}

/** Shadow-mode rate limits that would have refused the request (it was let through), and the enforced one that did. */
function limitsCell(r) {
  const marks = [];
  if (Array.isArray(r.rate_limit_shadow) && r.rate_limit_shadow.length)
    marks.push(
      el(
        'span',
        {
          class: 'badge shadow',
          title: 'A shadow-mode limit would have refused this request; it was let through.',
        },
        `shadow: ${r.rate_limit_shadow.join(', ')}`,
      ),
    );
  if (r.status === 429 && r.rate_limit_policy)
    marks.push(el('span', { class: 'badge refused' }, r.rate_limit_policy));
  return marks.length ? el('span', { class: 'marks' }, ...marks) : '—';
}

function recordValue(record, k, v) {
  if (k === 'problem') return problemLink(v);
  if (k === 'credential_id') return credentialCell(record);
  if (k === 'target') return targetCell(record);
  if (k === 'rate_limit_shadow' && v) return limitsCell({ rate_limit_shadow: v });
  if (v === null || v === undefined) return '—';
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

function showRecord(record) {
  const box = $('#audit-record');
  const rows = Object.entries(record).map(([k, v]) =>
    el('tr', {}, el('th', { scope: 'row' }, k), el('td', { class: 'wrap' }, recordValue(record, k, v))),
  );
  box.replaceChildren(
    el(
      'h3',
      {},
      record.kind === 'admin' ? `Admin call ${record.request_id}` : `Request ${record.request_id}`,
    ),
    el('div', { class: 'table-wrap' }, el('table', { id: 'record-table' }, el('tbody', {}, ...rows))),
  );
  box.hidden = false;
  box.focus();
}

async function loadAudit() {
  const form = new FormData($('#audit-filter'));
  const shadowOnly = form.get('shadow') !== null;
  // The shadow filter is this page's: read more records to find the marked ones among them.
  const params = new URLSearchParams({ limit: shadowOnly ? '500' : '50' });
  for (const f of ['status', 'route', 'credentialId'])
    if (String(form.get(f) ?? '').trim()) params.set(f, String(form.get(f)).trim());
  try {
    let { items } = await api('GET', `/requests?${params}`);
    if (shadowOnly) items = items.filter((r) => r.rate_limit_shadow?.length).slice(0, 50);
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
          el('td', {}, limitsCell(r)),
          el('td', {}, problemLink(r.problem)),
          el('td', {}, credentialCell(r)),
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
    if (items.length === 0) body.append(el('tr', {}, el('td', { colspan: '10' }, 'No requests match.')));
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

/** The traffic page keeps this much history while it is open (one reading per 2 s). */
const TRAFFIC_WINDOW_MS = 5 * 60_000;

function perRoute(now, previous, dt) {
  const rows = [];
  for (const [id, r] of Object.entries(now.routes ?? {})) {
    const before = previous.routes?.[id];
    const d = (c) => Math.max(0, (r.requests[c] - (before?.requests[c] ?? 0)) / dt);
    const total = Object.values(r.requests).reduce((a, b) => a + b, 0);
    const dCount = r.durationCount - (before?.durationCount ?? 0);
    const dSum = r.durationSum - (before?.durationSum ?? 0);
    rows.push({
      id,
      rps: ['1xx', '2xx', '3xx', '4xx', '5xx'].reduce((a, c) => a + d(c), 0),
      r2: d('2xx'),
      r4: d('4xx'),
      r5: d('5xx'),
      // Mean over the interval; with no request in it, over everything since start.
      mean:
        dCount > 0
          ? (dSum / dCount) * 1000
          : r.durationCount > 0
            ? (r.durationSum / r.durationCount) * 1000
            : null,
      total,
      rateLimited: r.rateLimited,
      quotaRejected: r.quotaRejected,
    });
  }
  return rows.sort((a, b) => b.total - a.total || (a.id < b.id ? -1 : 1));
}

function startTraffic() {
  const points = [];
  let previous;
  let timer;
  let stopped = false;
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
          t: now.time,
          r2: rate('2xx'),
          r3: rate('3xx'),
          r4: rate('4xx'),
          r5: rate('5xx'),
          p50: quantile(delta, 0.5),
          p99: quantile(delta, 0.99),
          limited: Math.max(0, (now.rateLimited - previous.rateLimited) / dt),
          shadow: Math.max(0, ((now.shadowRejected ?? 0) - (previous.shadowRejected ?? 0)) / dt),
        });
        while (points.length && points[0].t < now.time - TRAFFIC_WINDOW_MS) points.shift();
        // A real time axis: at least the last minute, up to the window, ending at the newest reading.
        const to = now.time;
        const from = Math.min(points[0].t, to - 60_000);
        const line = (name, key, color) => ({ name, color, points: points.map((p) => [p.t, p[key]]) });
        lineChart($('#chart-rps'), {
          from,
          to,
          series: [
            line('2xx', 'r2', css('--c2')),
            line('3xx', 'r3', css('--c3')),
            line('4xx', 'r4', css('--c4')),
            line('5xx', 'r5', css('--c5')),
          ],
        });
        lineChart($('#chart-latency'), {
          from,
          to,
          series: [line('p50', 'p50', css('--c2')), line('p99', 'p99', css('--c5'))],
        });
        lineChart($('#chart-limited'), {
          from,
          to,
          series: [line('refused', 'limited', css('--c4')), line('shadow', 'shadow', css('--c3'))],
        });
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
            ['Shadow-mode would-be refusals/s', fmt(last.shadow)],
            ['Requests since start', String(Object.values(now.requests).reduce((a, b) => a + b, 0))],
          ].map(([k, v]) => el('tr', {}, el('th', { scope: 'row' }, k), el('td', { 'data-metric': k }, v))),
        );
        const routes = perRoute(now, previous, dt);
        $('#traffic-routes tbody').replaceChildren(
          ...routes.map((r) =>
            el(
              'tr',
              { 'data-route': r.id },
              el('th', { scope: 'row' }, r.id),
              el('td', {}, fmt(r.rps)),
              el('td', {}, fmt(r.r2)),
              el('td', {}, fmt(r.r4)),
              el('td', {}, fmt(r.r5)),
              el('td', {}, fmt(r.mean)),
              el('td', { 'data-total': 'requests' }, String(r.total)),
              el('td', {}, String(r.rateLimited)),
              el('td', {}, String(r.quotaRejected)),
            ),
          ),
        );
        if (routes.length === 0)
          $('#traffic-routes tbody').append(el('tr', {}, el('td', { colspan: '9' }, 'No requests yet.')));
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
