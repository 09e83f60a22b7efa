// Browser test of the admin page: Debian's chromium, driven headless by
// playwright-core (no browser download), against the real chatgate binary
// on loopback. Logs in with the admin token, sees the plugin list and the
// charts, chats through the web channel and sees the streamed reply, checks
// that the token appears nowhere on the page, and saves a screenshot.
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
  const page = await browser.newPage({ viewport: { width: 1300, height: 1000 } });
  // Script exceptions and CSP refusals; the expected 401s of the session
  // probe and the wrong login are resource errors, not these.
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text());
  });
  page.on('response', (r) => {
    if (r.status() === 404) errors.push('404 for ' + r.url());
  });
  const base = `http://127.0.0.1:${gw.admin}`;

  await page.goto(base + '/');
  await page.waitForSelector('#login-form', { state: 'visible' });
  check(page.url() === base + '/admin/', 'the root redirects to the page, which asks to log in');

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

  await page.click('#logout');
  await page.waitForSelector('#login-form', { state: 'visible' });
  check(true, 'logging out returns to the login form');
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
