// Browser test of the admin page: Debian's chromium, driven headless by
// playwright-core (no browser download), against the real chatgate binary
// on loopback. Logs in with the admin token, sees the plugin list and the
// charts, chats through the web channel and sees the streamed reply, checks
// that the token appears nowhere on the page, and saves a screenshot. Then
// the page's languages: the switch turns an English page Chinese and back,
// and the choice outlives a reload; a zh-CN browser gets the page in
// Chinese unasked, with no English left but data and operator detail, and
// numbers and times formatted for zh-CN (a second screenshot).
//
//   CHATGATE_BIN=build/chatgate CHATGATE_TEST_PLUGIN_DIR=build/plugins \
//   SCREENSHOT_DIR=build node tests/browser/admin_page.mjs
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const BIN = process.env.CHATGATE_BIN || 'build/chatgate';
const PLUGINS = process.env.CHATGATE_TEST_PLUGIN_DIR || 'build/plugins';
const SHOTS = process.env.SCREENSHOT_DIR || 'build';
const BROWSER = process.env.CHROMIUM || '/usr/bin/chromium';
const TOKEN = 'brw-T0ken-' + Math.random().toString(36).slice(2);

function check(cond, what) {
  if (!cond) throw new Error('check failed: ' + what);
  console.log('ok - ' + what);
}

// Script exceptions and CSP refusals; the expected 401s of the session
// probe and the wrong login are resource errors, not these.
function watchErrors(page, errors) {
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text());
  });
  page.on('response', (r) => {
    if (r.status() === 404) errors.push('404 for ' + r.url());
  });
}

// Words that may stay English on a Chinese page, because they are not
// words of the page's own but names:
//   chatgate  the product's name (the header, and inside sentences);
//   English   the language switch's label for English, written in English
//             so that an English reader finds it;
//   ABI       the name of the plugin interface whose version stands beside
//             it, written so in the project's Chinese docs (插件 ABI 1.5).
// Besides these: the names this gateway's own config and API give, read
// from the API (instance, plugin, listener and channel names); any token
// with a digit or one of . _ : / - inside (ids, versions, addresses, config
// keys, file names, p50/p95/p99); text in <code> (config keys and values in
// the hints); the config view and the chat log (data and user content);
// and what the page marks lang="en", which may only be an API's
// operator-facing detail (span.detail) or the log lines.
const ALLOWED_WORDS = ['chatgate', 'English', 'ABI'];

// Every visible text node, every option of a visible select, the title, the
// placeholder / title / aria-label attributes and the charts' labels of
// the page: each problem names the text.
function untranslated(page) {
  return page.evaluate(async (allowedWords) => {
    // Before login: no names to allow.
    const get = (path, none) => fetch(path).then((r) => (r.ok ? r.json() : none));
    const [plugins, status, conversations] = await Promise.all([
      get('/admin/api/plugins', { plugins: [] }), get('/admin/api/status', { listeners: [] }),
      get('/admin/api/conversations', { conversations: [] })]);
    const allowed = new Set([...allowedWords,
      ...plugins.plugins.flatMap((p) => [p.instance, p.plugin]),
      ...status.listeners.map((l) => l.name),
      ...conversations.conversations.map((c) => c.channel)]);
    const en = MESSAGES.en, zh = MESSAGES['zh-CN'];
    const english = new Set(Object.keys(en).filter((k) => en[k] !== zh[k]).map((k) => en[k]));
    const problems = [];
    const where = (el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
      (el.closest('[id]') && !el.id ? ' in #' + el.closest('[id]').id : '');
    const judge = (text, at) => {
      const s = String(text).trim();
      if (!s) return;
      if (english.has(s)) {
        problems.push(`${at}: "${s}" (the English dictionary's text)`);
        return;
      }
      const words = (s.match(/[A-Za-z0-9][A-Za-z0-9._:\/-]*/g) || [])
        .map((word) => word.replace(/[._:\/-]+$/, ''))
        .filter((word) => !/[0-9._:\/-]/.test(word) && /[A-Za-z]{2}/.test(word) && !allowed.has(word));
      if (words.length) problems.push(`${at}: "${s}" (English: ${words.join(', ')})`);
    };
    for (const el of document.querySelectorAll('body [lang="en"]')) {
      if (!el.matches('span.detail, #logs-list, option[value="en"]')) {
        problems.push(`${where(el)}: marked lang="en" but is not server detail or the log`);
      }
    }
    judge(document.title, 'title');
    const data = '#config-text, #chat-log, code, [lang="en"], select';
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let node; (node = walker.nextNode());) {
      const el = node.parentElement;
      if (el.checkVisibility() && !el.closest(data)) judge(node.data, where(el));
    }
    for (const select of document.querySelectorAll('select')) {
      if (select.checkVisibility()) for (const o of select.options) judge(o.text, where(select));
    }
    for (const el of document.querySelectorAll('*')) {
      for (const attr of ['placeholder', 'title', 'aria-label']) {
        if (el.hasAttribute(attr)) judge(el.getAttribute(attr), `${where(el)} [${attr}]`);
      }
    }
    for (const canvas of document.querySelectorAll('canvas')) {
      const chart = Chart.getChart(canvas);
      if (!chart || !canvas.checkVisibility()) continue;
      for (const d of chart.data.datasets) judge(d.label, `${where(canvas)} legend`);
      for (const axis of Object.values(chart.scales)) {
        for (const tick of axis.ticks) judge(tick.label, `${where(canvas)} ${axis.id} axis`);
      }
    }
    return problems;
  }, ALLOWED_WORDS);
}

async function checkTranslated(page, what) {
  const problems = await untranslated(page);
  check(problems.length === 0, `no English left on the ${what} but data: ` + problems.join('; '));
}

async function startGateway(dir) {
  // Port 0: the kernel picks, the ready line says which (a reload keeps them).
  const config = join(dir, 'chatgate.yaml');
  // The test rewrites it to reload: `chart` and `router` vary.
  const write = ({ chart = 1, router = '' } = {}) => writeFileSync(config, `listeners:
  api: {address: 127.0.0.1, port: 0}
  admin: {address: 127.0.0.1, port: 0}
admin:
  token: \${ADMIN_TOKEN}
  chartIntervalSeconds: ${chart}
plugins:
  dir: ${PLUGINS}
  instances:
    - {name: echo, plugin: echo.so}
    - {name: memory, plugin: memory.so}
router: {model: echo, cache: memory${router}}
`);
  write();
  const proc = spawn(BIN, ['--config', config], { env: { ...process.env, ADMIN_TOKEN: TOKEN } });
  let log = '';
  proc.stdout.on('data', (d) => { log += d; });
  proc.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const deadline = Date.now() + 30000;
  let ready;
  while (!(ready = / ready in [0-9.]+ ms \(pid \d+\): api on http:\/\/[^ ]*:(\d+), admin on http:\/\/[^ ]*:(\d+)/.exec(log))) {
    if (Date.now() > deadline || proc.exitCode !== null) throw new Error('chatgate did not start:\n' + log);
    await new Promise((r) => setTimeout(r, 20));
  }
  const [api, admin] = [Number(ready[1]), Number(ready[2])];
  return { proc, api, admin, write, exited, log: () => log };
}

const dir = mkdtempSync(join(tmpdir(), 'chatgate-browser-'));
let successor = 0;  // the pid a handover started, which this test then stops
const gw = await startGateway(dir);
const browser = await chromium.launch({ executablePath: BROWSER, args: ['--no-sandbox'] });
let failed = false;
try {
  // An English browser (the same list it would send as Accept-Language).
  const page = await browser.newPage({ viewport: { width: 1300, height: 1000 }, locale: 'en-US' });
  const errors = [];
  watchErrors(page, errors);
  const base = `http://127.0.0.1:${gw.admin}`;

  await page.goto(base + '/');
  await page.waitForSelector('#login-form', { state: 'visible' });
  check(page.url() === base + '/admin/', 'the root redirects to the page, which asks to log in');
  check(await page.title() === 'chatgate admin' && await page.getAttribute('html', 'lang') === 'en' &&
        await page.textContent('#login h2') === 'Log in' && await page.inputValue('#lang') === 'en',
        'an English browser gets the page in English');
  check(!(await page.isVisible('#nav')), 'the navigation is hidden until logged in');

  await page.fill('#token', 'not-the-token');
  await page.click('#login-form button');
  await page.waitForFunction(() => document.getElementById('login-error').textContent !== '');
  check((await page.textContent('#login-error')).includes('wrong admin token'), 'a wrong token is refused');

  await page.fill('#token', TOKEN);
  await page.click('#login-form button');
  await page.waitForSelector('#plugins tbody tr');
  const rows = await page.$$eval('#plugins tbody tr', (trs) => trs.map((tr) => tr.innerText));
  check(rows.length === 2 && rows[0].includes('echo') && rows[0].includes('running') &&
        rows[1].includes('memory'), 'the plugin list shows both instances running');
  const cookies = await page.context().cookies();
  check(cookies.some((c) => c.name === 'cg_admin' && c.httpOnly && c.sameSite === 'Strict'),
        'the session cookie is HttpOnly and SameSite=Strict');

  await page.click('#nav-chat');
  await page.fill('#chat-input', 'hello from the browser');
  await page.click('#chat-form button');
  await page.waitForFunction(() => {
    const bot = document.querySelector('#chat-log li.bot');
    return bot && bot.textContent.includes('echo: hello from the browser');
  });
  check((await page.textContent('#chat-log li.bot')) === 'echo: hello from the browser (turn 1)',
        'a chat message gets the streamed reply through the router');

  // Back to the overview: the web channel's message shows in the charts.
  await page.click('#nav-conversations');
  await page.waitForFunction(() => document.querySelectorAll('#conversations-table tbody tr').length > 0);
  const conv = await page.textContent('#conversations-table tbody tr');
  check(conv.includes('web') && conv.includes('(hidden)'),
        'the conversations page lists the web conversation without its text');
  await page.click('#conversations-table tbody tr button');
  await page.waitForFunction(() => {
    const cells = document.querySelectorAll('#conversations-table tbody tr td');
    return cells.length > 4 && cells[4].textContent === '0';
  });
  check(true, 'resetting a conversation from the page clears its context turns');

  await page.click('#nav-logs');
  await page.waitForFunction(() => [...document.querySelectorAll('#logs-list li')]
    .some((li) => li.textContent.includes(' ready in ')));
  check(true, 'the log page shows the last lines');
  await page.selectOption('#logs-level', 'warn');
  // A SIGHUP reload of a file with an error logs one: it must arrive live.
  gw.write({ router: ', colour: blue' });
  gw.proc.kill('SIGHUP');
  await page.waitForFunction(() => [...document.querySelectorAll('#logs-list li')]
    .some((li) => li.textContent.includes('refused, nothing changed') &&
                  li.textContent.includes('router.colour')));
  check(!(await page.textContent('#logs-list')).includes(' ready in '),
        'the live tail follows new warnings and filters out info lines');
  await page.click('#nav-overview');
  await page.waitForFunction(async () => {
    const r = await fetch('/admin/api/history');
    const h = await r.json();
    return h.samples.some((s) => (s.in.web || 0) > 0);
  }, null, { timeout: 8000 });
  await page.waitForTimeout(5500);  // one refresh of the page's own polling
  const chartCount = await page.$$eval('canvas', (cs) => cs.filter((c) => c.width > 0).length);
  check(chartCount === 6, 'six charts are drawn');

  const html = await page.content();
  check(!html.includes(TOKEN), 'the token appears nowhere on the page');

  await page.click('#nav-config');
  await page.waitForFunction(() => document.getElementById('config-text').textContent.includes('"router"'));
  const configText = await page.textContent('#config-text');
  check(configText.includes('"token": "********"') && !configText.includes(TOKEN) &&
        !(await page.content()).includes(TOKEN), 'the config page masks the admin token');
  gw.write({ router: ', contextTurns: 4' });
  await page.click('#config-reload');
  await page.waitForFunction(() => document.getElementById('config-reload-result').textContent
    === 'applied live: router.contextTurns');
  await page.waitForFunction(() => document.getElementById('config-text').textContent
    .includes('"contextTurns": 4'));
  check(true, 'the config page reloads the file and shows what took effect live');
  // A change only a new process can apply: the page says so, names the
  // process that took over, and stays logged in with it.
  gw.write({ chart: 2, router: ', contextTurns: 5' });
  await page.click('#config-reload');
  await page.waitForFunction(() => document.getElementById('config-reload-result').textContent
    .startsWith('handed over to a new process (pid '));
  const handed = await page.textContent('#config-reload-result');
  successor = Number(/pid (\d+)/.exec(handed)[1]);
  check(handed.endsWith('for admin.chartIntervalSeconds; it also applied router.contextTurns'),
        'a reload that needs a new process says which keys took the handover: ' + handed);
  await page.waitForFunction(() => document.getElementById('config-text').textContent
    .includes('"contextTurns": 5'));
  const status = await page.evaluate(async () => (await fetch('/admin/api/status')).json());
  check(status.pid === successor, 'the page, still logged in, talks to the new process');
  await page.click('#nav-overview');
  check(errors.length === 0, 'no script errors (CSP included): ' + errors.join('; '));
  await page.screenshot({ path: join(SHOTS, 'admin-overview.png'), fullPage: true });
  console.log('screenshot: ' + join(SHOTS, 'admin-overview.png'));

  // The switch: Chinese at once, no page load, still logged in.
  await page.evaluate(() => { window.sameDocument = true; });
  await page.selectOption('#lang', 'zh-CN');
  await page.waitForFunction(() => document.querySelector('#plugins tbody tr').textContent
    .includes('运行中'));
  const loggedIn = async (p) => (await p.isHidden('#login')) && (await p.isVisible('#overview'));
  check(await page.evaluate(() => window.sameDocument) && await loggedIn(page) &&
        await page.getAttribute('html', 'lang') === 'zh-CN' && await page.title() === 'chatgate 管理' &&
        await page.textContent('#nav-overview') === '概览' &&
        await page.evaluate(() => Chart.getChart('chart-success').data.datasets[0].label) ===
          '已回答 /（已回答 + 失败）' &&
        await page.evaluate(() => Chart.getChart('chart-success').options.locale) === 'zh-CN',
        'the switch turns the page Chinese without a reload and without logging out');
  await page.reload();
  await page.waitForFunction(() => document.querySelector('#plugins tbody tr') &&
    document.querySelector('#plugins tbody tr').textContent.includes('运行中'));
  check(await page.inputValue('#lang') === 'zh-CN' &&
        await page.getAttribute('html', 'lang') === 'zh-CN' && await loggedIn(page),
        'the choice survives a reload of the page (so does the session)');
  await page.selectOption('#lang', 'en');
  await page.waitForFunction(() => document.querySelector('#plugins tbody tr').textContent
    .includes('running'));
  check(await page.getAttribute('html', 'lang') === 'en' &&
        await page.textContent('#nav-overview') === 'Overview' &&
        await page.textContent('figcaption') === 'Messages in and out' &&
        await page.evaluate(() => Chart.getChart('chart-success').data.datasets[0].label) ===
          'answered / (answered + failed)' &&
        await page.evaluate(() => Chart.getChart('chart-success').options.locale) === 'en',
        'switching back gives the English page again');

  await page.click('#logout');
  await page.waitForSelector('#login-form', { state: 'visible' });
  check(true, 'logging out returns to the login form');
  // The switch is on the login form too.
  await page.selectOption('#lang', 'zh-CN');
  check(await page.textContent('#login h2') === '登录' &&
        await page.textContent('label[for=token]') === '管理令牌', 'the login form switches to Chinese');
  await page.selectOption('#lang', 'en');
  check(await page.textContent('#login h2') === 'Log in', 'and back to English');
  check(errors.length === 0, 'no script errors while switching: ' + errors.join('; '));

  // A Chinese browser: the page in Chinese with no choice made.
  const zh = await browser.newPage({ viewport: { width: 1300, height: 1000 }, locale: 'zh-CN' });
  const zhErrors = [];
  watchErrors(zh, zhErrors);
  await zh.goto(base + '/');
  await zh.waitForSelector('#login-form', { state: 'visible' });
  check(await zh.getAttribute('html', 'lang') === 'zh-CN' && await zh.title() === 'chatgate 管理' &&
        await zh.inputValue('#lang') === 'zh-CN' && await zh.textContent('#login h2') === '登录' &&
        await zh.textContent('label[for=token]') === '管理令牌' &&
        await zh.textContent('#login-form button') === '登录',
        'a zh-CN browser gets the login form in Chinese unasked');
  check(await zh.evaluate(() => JSON.stringify(Object.keys(MESSAGES.en).sort()) ===
                                JSON.stringify(Object.keys(MESSAGES['zh-CN']).sort())),
        'the English and Chinese dictionaries have the same keys');
  const unlike = await zh.evaluate(() => Object.keys(MESSAGES.en).filter((k) => {
    // The parameters and the code spans a text holds, in any order.
    const parts = (s) => JSON.stringify((String(s).match(/\{\w+\}|`[^`]*`/g) || []).sort());
    return parts(MESSAGES.en[k]) !== parts(MESSAGES['zh-CN'][k]);
  }));
  check(unlike.length === 0, 'each text has the same parameters and code in both languages' +
        (unlike.length ? ': not ' + unlike.join(', ') : ''));
  await checkTranslated(zh, 'login form');
  await zh.fill('#token', 'not-the-token');
  await zh.click('#login-form button');
  await zh.waitForFunction(() => document.getElementById('login-error').textContent !== '');
  check(await zh.textContent('#login-error') === '管理令牌不正确', 'a wrong token is refused in Chinese');
  await checkTranslated(zh, 'refused login');

  await zh.fill('#token', TOKEN);
  await zh.click('#login-form button');
  await zh.waitForSelector('#plugins tbody tr');
  const zhRows = await zh.$$eval('#plugins tbody tr', (trs) => trs.map((tr) => tr.innerText));
  check(zhRows.length === 2 && zhRows[0].includes('echo') && zhRows[0].includes('模型') &&
        zhRows[0].includes('运行中') && zhRows[1].includes('缓存') && zhRows[1].includes('运行中') &&
        await zh.textContent('#overview > h2') === '插件实例',
        'the plugin list is in Chinese, with states and kinds translated');

  await zh.click('#nav-chat');
  check(await zh.getAttribute('#chat-input', 'placeholder') === '说点什么' &&
        await zh.textContent('#chat-form button') === '发送', 'the chat form is in Chinese');
  await zh.fill('#chat-input', '你好');
  await zh.click('#chat-form button');
  await zh.waitForFunction(() => {
    const bot = document.querySelector('#chat-log li.bot');
    return bot && bot.textContent.startsWith('echo: 你好');
  });
  await checkTranslated(zh, 'chat page');

  await zh.click('#nav-overview');
  await zh.waitForFunction(async () => {
    const h = await (await fetch('/admin/api/history')).json();
    return h.samples.some((s) => (s.in.web || 0) > 0);
  }, null, { timeout: 8000 });
  await zh.click('#nav-chat');  // back to the overview: it draws at once
  await zh.click('#nav-overview');
  await zh.waitForFunction(() => Chart.getChart('chart-messages').data.datasets.length > 0);
  const charts = await zh.evaluate(async () => {
    const history = await (await fetch('/admin/api/history')).json();
    const time = new Intl.DateTimeFormat('zh-CN',
      { hour: 'numeric', minute: 'numeric', second: 'numeric' });
    const messages = Chart.getChart('chart-messages');
    return { caption: document.querySelector('figcaption').textContent,
             legend: messages.data.datasets.map((d) => d.label),
             labels: messages.data.labels, expected: history.samples.map((s) => time.format(s.t)),
             locale: messages.options.locale, tooltip: messages.scales.y.getLabelForValue(12345.5),
             number: new Intl.NumberFormat('zh-CN').format(12345.5) };
  });
  check(charts.caption === '收发消息' && charts.legend.join() === 'web 收到,web 已回答,web 失败',
        'the charts have Chinese titles and legends: ' + charts.legend.join(', '));
  check(charts.labels.length > 0 && charts.labels.join() === charts.expected.join() &&
        charts.locale === 'zh-CN' && charts.tooltip === charts.number,
        `the charts' times and numbers are formatted for zh-CN: ${charts.labels[0]}, ` +
        charts.tooltip);
  await checkTranslated(zh, 'overview');

  await zh.click('#nav-conversations');
  await zh.waitForFunction(() => document.querySelectorAll('#conversations-table tbody tr').length > 0);
  const row = await zh.evaluate(async () => {
    const doc = await (await fetch('/admin/api/conversations')).json();
    const c = doc.conversations.find((x) => x.channel === 'web');
    const tr = [...document.querySelectorAll('#conversations-table tbody tr')]
      .find((r) => r.cells[1].textContent === c.conversation);
    return { shown: [...tr.cells].map((td) => td.textContent),
             latency: new Intl.NumberFormat('zh-CN').format(c.lastLatencyMs) + ' 毫秒',
             at: new Intl.DateTimeFormat('zh-CN',
               { hour: 'numeric', minute: 'numeric', second: 'numeric' }).format(c.lastAt) };
  });
  check(row.shown[5] === row.latency && row.shown[6] === row.at && row.shown[7] === '（已隐藏）' &&
        row.shown[8] === '重置', 'a conversation shows its latency and time as zh-CN formats them: ' +
        row.shown.join(' | '));
  await checkTranslated(zh, 'conversations page');

  await zh.click('#nav-config');
  await zh.waitForFunction(() => document.getElementById('config-text').textContent
    .includes('"router"'));
  check(await zh.textContent('#config-reload') === '从文件重新加载', 'the reload button is in Chinese');
  // A file with an error: a Chinese frame around chatgate's English detail.
  gw.write({ chart: 2, router: ', contextTurns: 6, colour: blue' });
  await zh.click('#config-reload');
  await zh.waitForFunction(() => document.getElementById('config-reload-result').textContent
    .startsWith('重新加载失败：'));
  const refused = await zh.$eval('#config-reload-result span.detail', (s) => [s.lang, s.textContent]);
  check(refused[0] === 'en' && refused[1].includes('router.colour'),
        'a refused reload says so in Chinese, with chatgate\'s English detail: ' + refused[1]);
  await checkTranslated(zh, 'config page with a refused reload');
  gw.write({ chart: 2, router: ', contextTurns: 6' });
  await zh.click('#config-reload');
  await zh.waitForFunction(() => document.getElementById('config-reload-result').textContent
    === '已实时应用：router.contextTurns');
  check(true, 'a reload applied live says so in Chinese');
  await checkTranslated(zh, 'config page');

  await zh.click('#nav-logs');
  await zh.waitForFunction(() => document.querySelectorAll('#logs-list li').length > 0);
  check(await zh.textContent('#logs-level option[value=warn]') === '警告',
        'the log levels are in Chinese');
  await checkTranslated(zh, 'log page');

  await zh.click('#nav-overview');
  await zh.waitForSelector('#plugins tbody tr');
  await zh.screenshot({ path: join(SHOTS, 'admin-overview-zh-CN.png'), fullPage: true });
  console.log('screenshot: ' + join(SHOTS, 'admin-overview-zh-CN.png'));
  // A remembered choice wins over the browser's languages.
  await zh.selectOption('#lang', 'en');
  await zh.reload();
  await zh.waitForSelector('#plugins tbody tr');
  check(await zh.textContent('#nav-overview') === 'Overview' &&
        await zh.getAttribute('html', 'lang') === 'en',
        'a zh-CN browser that chose English keeps English after a reload');
  check(zhErrors.length === 0, 'no script errors on the Chinese page: ' + zhErrors.join('; '));
  await zh.close();
} catch (e) {
  failed = true;
  console.error(e.stack || String(e));
  console.error('chatgate log:\n' + gw.log());
} finally {
  await browser.close();
  gw.proc.kill('SIGTERM');
  if (successor) {
    // Not this script's child: stopped by pid. It writes to the same pipes
    // as the first process, so their end says both have exited.
    try { process.kill(successor, 'SIGTERM'); } catch (e) { failed = true; console.error(e); }
    if (!gw.proc.stdout.closed) await Promise.race([new Promise((r) => gw.proc.stdout.on('close', r)),
                        new Promise((r) => setTimeout(r, 30000))]);
    check(gw.log().includes('chatgate stopped') &&
          gw.log().split('chatgate stopped').length === 3, 'both processes stopped cleanly');
  }
  // The harness's rule: chatgate ends with status 0, no sanitizer report.
  const { code, signal } = await Promise.race([
    gw.exited, new Promise((r) => setTimeout(() => r({ code: null, signal: 'timeout' }), 30000))]);
  if (code !== 0 || /ERROR: (Address|Leak)Sanitizer|runtime error:/.test(gw.log())) {
    console.error(`chatgate exited with ${code} (signal ${signal}):\n` + gw.log().slice(-4000));
    failed = true;
  } else {
    console.log('ok - chatgate stopped with status 0');
  }
  rmSync(dir, { recursive: true, force: true });
}
if (!gw.log().includes(TOKEN)) {
  console.log('ok - the token is not in chatgate\'s log');
} else {
  console.error('the token appeared in chatgate\'s log');
  failed = true;
}
process.exit(failed ? 1 : 0);
