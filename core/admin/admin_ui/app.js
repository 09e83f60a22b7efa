// The admin page: session, overview with live charts, and chat through the
// real router (the "web" channel). No inline script: the page's
// Content-Security-Policy allows scripts from this origin only. Every text
// a user reads comes from i18n.js (t, say, fill); what the page last drew
// is kept so that a switch of language draws it again.
'use strict';

const state = { csrf: '', charts: {}, timer: null, tail: null, overview: null, conversations: null,
                conversation: 'web-' + Math.random().toString(36).slice(2, 10) };

const $ = (id) => document.getElementById(id);
const PAGES = ['overview', 'chat', 'conversations', 'config', 'logs'];

// The API said 401: the session is gone and the login form shows.
class LoggedOut extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (options.body !== undefined) headers['Content-Type'] = 'application/json';
  if ((options.method || 'GET') !== 'GET') headers['X-CSRF-Token'] = state.csrf;
  const resp = await fetch(path, Object.assign({}, options, { headers, credentials: 'same-origin' }));
  if (resp.status === 401) { showLogin(); throw new LoggedOut(); }
  return resp;
}

function show(section) {
  for (const id of ['login', ...PAGES]) $(id).hidden = id !== section;
  $('nav').hidden = section === 'login';
  if (section !== 'logs' && state.tail) { state.tail.close(); state.tail = null; }
  for (const id of PAGES) {
    $('nav-' + id).classList.toggle('active', id === section);
  }
}

function showLogin() {
  if (state.timer) { clearInterval(state.timer); state.timer = null; }
  show('login');
}

async function start() {
  const resp = await fetch('/admin/api/session', { credentials: 'same-origin' });
  if (resp.status !== 200) { showLogin(); return; }
  const session = await resp.json();
  state.csrf = session.csrf;
  $('logout').hidden = session.auth === 'none';
  route();
}

function route() {
  const wanted = location.hash.slice(1);
  const section = PAGES.includes(wanted) ? wanted : 'overview';
  show(section);
  if (section === 'conversations') loadConversations();
  if (section === 'logs') tailLogs();
  if (section === 'config') loadConfig();
  if (section === 'overview') {
    refresh();
    if (!state.timer) state.timer = setInterval(refresh, 5000);
  }
}

function loadConfig() {
  api('/admin/api/config').then((r) => r.json())
    .then((doc) => { $('config-text').textContent = JSON.stringify(doc, null, 2); })
    .catch(() => {});
}

// Re-reads the config file; says what took effect live and what a new
// process took over with (a handover: the page's session goes with it).
async function reloadConfig() {
  const result = $('config-reload-result');
  say(result, 'reload.running');
  const resp = await api('/admin/api/reload', { method: 'POST', body: '{}' });
  const doc = await resp.json().catch(() => ({}));
  if (!doc.reloaded) {
    say(result, 'reload.failed', { detail: String(doc.error || resp.status) });
    return;
  }
  if (doc.handover.length) {
    say(result, doc.applied.length ? 'reload.handoverAlso' : 'reload.handover',
        { pid: String(doc.pid), keys: doc.handover, applied: doc.applied });
  } else if (doc.applied.length) {
    say(result, 'reload.applied', { keys: doc.applied });
  } else {
    say(result, 'reload.nothing');
  }
  // The old process still answers for a moment (requests already on their
  // way): the config shown is the new process's once it answers.
  for (let i = 0; doc.handover.length && i < 50; i++) {
    const st = await api('/admin/api/status').then((r) => r.json()).catch(() => ({}));
    if (st.pid === doc.pid) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  loadConfig();
}

async function login(event) {
  event.preventDefault();
  unsay($('login-error'));
  const resp = await fetch('/admin/api/login', {
    method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ token: $('token').value }) });
  $('token').value = '';
  if (resp.status !== 200) {
    const doc = await resp.json().catch(() => ({}));
    if (resp.status === 401) say($('login-error'), 'login.wrongToken');
    else if (resp.status === 429) say($('login-error'), 'login.lockedOut');
    else say($('login-error'), 'login.failed', { detail: String(doc.error || resp.status) });
    return;
  }
  state.csrf = (await resp.json()).csrf;
  $('logout').hidden = false;
  route();
}

async function logout() {
  await api('/admin/api/logout', { method: 'POST', body: '{}' }).catch(() => {});
  state.csrf = '';
  showLogin();
}

function cell(text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

async function refresh() {
  try {
    const [status, plugins, history] = await Promise.all([
      api('/admin/api/status').then((r) => r.json()),
      api('/admin/api/plugins').then((r) => r.json()),
      api('/admin/api/history').then((r) => r.json())]);
    state.overview = { status, plugins, history };
    drawOverview();
  } catch (e) {
    if (!(e instanceof LoggedOut)) {
      say($('status-line'), 'status.unreachable', { detail: String(e) });
    }
  }
}

// A name the dictionary knows (a state, a kind) in the page's language;
// one it does not know as the server sent it.
const named = (prefix, name) =>
  (MESSAGES.en[prefix + name] !== undefined ? t(prefix + name) : name);

function drawOverview() {
  const { status, plugins, history } = state.overview;
  const listeners = status.listeners.map((l) => `${l.name} ${l.address}:${l.port}`);
  say($('status-line'), 'status.line', { version: status.version, abi: status.abi,
    uptime: status.uptimeSeconds, listeners, running: status.running,
    instances: status.instances, inFlight: status.inFlight });
  const q = status.queue;
  $('queue-panel').hidden = !q;
  if (q) {
    say($('queue-line'), 'queue.line', { instance: q.instance,
      health: { key: q.healthy ? 'queue.reachable' : 'queue.unreachable' }, length: q.length,
      pending: q.pending, oldest: q.oldestPendingSeconds, deadLetters: q.deadLetters,
      owned: q.partitionsOwned, partitions: q.partitions, members: q.members });
    $('queue-line').className = 'status' + (q.healthy && q.deadLetters === 0 ? '' : ' state-degraded');
  }
  const body = $('plugins').querySelector('tbody');
  body.replaceChildren(...plugins.plugins.map((p) => {
    const tr = document.createElement('tr');
    const st = cell(named('state.', p.state), 'state-' + p.state);
    if (p.reason) {
      fill(st, 'plugins.stateWithReason', { state: named('state.', p.state), detail: p.reason });
    }
    tr.append(cell(p.instance), cell(p.plugin), cell(named('kind.', p.kind)), cell(p.version),
              cell(p.abi), st);
    return tr;
  }));
  drawCharts(history);
}

const COLORS = ['#2f6fdf', '#1e8449', '#c0392b', '#b9770e', '#7d3c98', '#117a65'];

function chart(id, datasets, options = {}) {
  if (typeof Chart === 'undefined') return;
  let c = state.charts[id];
  if (!c) {
    c = new Chart($(id), {
      type: 'line',
      data: { labels: [], datasets: [] },
      options: Object.assign({ animation: false, responsive: true, spanGaps: true, locale: language,
        elements: { point: { radius: 2 } },
        scales: { y: { beginAtZero: true } },
        plugins: { legend: { position: 'bottom' } } }, options) });
    state.charts[id] = c;
  }
  return c;
}

function setChart(id, labels, series, options) {
  const c = chart(id, series, options);
  if (!c) return;
  // The axes' and tooltips' numbers follow the page's language.
  c.options.locale = language;
  c.data.labels = labels;
  c.data.datasets = series.map((s, i) => ({ label: s.label, data: s.data,
    borderColor: COLORS[i % COLORS.length], backgroundColor: COLORS[i % COLORS.length],
    borderWidth: 1.5 }));
  c.update();
}

// -1 in a sample means "nothing to measure in that interval": a gap.
const gap = (v) => (v === null || v < 0 ? null : v);

function drawCharts(history) {
  const s = history.samples;
  const labels = s.map((x) => clock(x.t));
  const channels = [...new Set(s.flatMap((x) => Object.keys(x.in)))];
  setChart('chart-messages', labels, channels.flatMap((channel) => [
    { label: t('series.in', { channel }), data: s.map((x) => x.in[channel] || 0) },
    { label: t('series.answered', { channel }), data: s.map((x) => x.out[channel] || 0) },
    { label: t('series.failed', { channel }), data: s.map((x) => x.failed[channel] || 0) }]));
  setChart('chart-success', labels, [{ label: t('series.success'),
    data: s.map((x) => gap(x.success)) }], { scales: { y: { min: 0, max: 1 } } });
  for (const [id, key] of [['chart-reply', 'reply'], ['chart-model', 'model']]) {
    setChart(id, labels, ['p50', 'p95', 'p99'].map((p, i) => ({ label: p,
      data: s.map((x) => gap(x[key][i])) })));
  }
  setChart('chart-cache', labels, [{ label: t('series.cache'),
    data: s.map((x) => gap(x.cacheHit)) }], { scales: { y: { min: 0, max: 1 } } });
  setChart('chart-errors', labels, [{ label: t('series.errors'), data: s.map((x) => x.errors) }]);
}

async function loadConversations() {
  const doc = await api('/admin/api/conversations').then((r) => r.json()).catch(() => null);
  if (!doc) return;
  state.conversations = doc;
  drawConversations();
}

function drawConversations() {
  const body = $('conversations-table').querySelector('tbody');
  body.replaceChildren(...state.conversations.conversations.map((c) => {
    const tr = document.createElement('tr');
    const exchange = c.question !== undefined ? `${c.question} → ${c.answer}` : t('conv.hidden');
    tr.append(cell(c.channel), cell(c.conversation), cell(num(c.messages)), cell(num(c.failed)),
              cell(num(c.turns)), cell(t('unit.ms', { n: c.lastLatencyMs })),
              cell(clock(c.lastAt)), cell(exchange));
    const td = document.createElement('td');
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = t('conv.reset');
    button.addEventListener('click', async () => {
      await api('/admin/api/conversations/reset', { method: 'POST',
        body: JSON.stringify({ channel: c.channel, conversation: c.conversation }) });
      loadConversations();
    });
    td.append(button);
    tr.append(td);
    return tr;
  }));
}

// The lines shown, each with the line it came from (the time is drawn in
// the page's language; the line itself stays as chatgate logged it).
const logLines = new WeakMap();
const logText = (line) => `${clock(line.t)} ${line.level} ${line.text}`;

// The last lines at the chosen level, then each new one (server-sent events).
function tailLogs() {
  if (state.tail) state.tail.close();
  $('logs-list').replaceChildren();
  state.tail = new EventSource('/admin/api/logs/stream?level=' + $('logs-level').value);
  state.tail.onmessage = (event) => {
    const line = JSON.parse(event.data);
    const li = document.createElement('li');
    li.className = 'log-' + line.level;
    li.textContent = logText(line);
    logLines.set(li, line);
    $('logs-list').append(li);
    while ($('logs-list').children.length > 1000) $('logs-list').firstElementChild.remove();
  };
}

function addMessage(cls, text) {
  const li = document.createElement('li');
  li.className = cls;
  li.textContent = text;
  $('chat-log').append(li);
  return li;
}

async function send(event) {
  event.preventDefault();
  const query = $('chat-input').value;
  $('chat-input').value = '';
  addMessage('user', query);
  const bot = addMessage('bot', '');
  try {
    const resp = await api('/admin/api/chat', { method: 'POST', body: JSON.stringify({
      userId: 'admin-web', conversationId: state.conversation, query, stream: true }) });
    if (!resp.ok || !resp.body) {
      const doc = await resp.json().catch(() => ({}));
      if (doc.answer) bot.textContent = doc.answer;
      else if (doc.error) say(bot, 'chat.serverError', { detail: doc.error });
      else say(bot, 'chat.httpStatus', { status: String(resp.status) });
      bot.classList.add('failed');
      return;
    }
    // Server-sent events: "data: {json}" lines, deltas then a final event.
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffered = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffered.indexOf('\n\n')) >= 0) {
        const event = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        for (const line of event.split('\n')) {
          if (!line.startsWith('data: ')) continue;
          const doc = JSON.parse(line.slice(6));
          if (doc.delta !== undefined) bot.textContent += doc.delta;
          if (doc.done) {
            bot.textContent = doc.answer;
            if (doc.error) bot.classList.add('failed');
          }
        }
      }
    }
  } catch (e) {
    if (e instanceof LoggedOut) say(bot, 'chat.loggedOut');
    else say(bot, 'chat.error', { detail: e.message });
    bot.classList.add('failed');
  }
}

// The switch: translates the page and draws again what it shows, without
// a reload; the session stays.
function switchLanguage() {
  useLanguage($('lang').value, true);
  if (state.overview) drawOverview();
  if (state.conversations) drawConversations();
  for (const li of $('logs-list').children) {
    if (logLines.has(li)) li.textContent = logText(logLines.get(li));
  }
}

window.addEventListener('DOMContentLoaded', () => {
  useLanguage(chooseLanguage(), false);
  $('lang').value = language;
  $('lang').addEventListener('change', switchLanguage);
  $('login-form').addEventListener('submit', login);
  $('chat-form').addEventListener('submit', send);
  $('logout').addEventListener('click', logout);
  $('logs-level').addEventListener('change', tailLogs);
  $('config-reload').addEventListener('click', () => reloadConfig().catch(() => {}));
  window.addEventListener('hashchange', route);
  start();
});
