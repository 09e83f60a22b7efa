// The admin page's texts, one dictionary per language with the same keys,
// and the helpers that put them on the page. Data is never translated:
// instance, plugin and channel names, config keys and values, ids, log
// lines, and what chatgate's API says as operator-facing detail (a config
// error, a plugin's health reason), which stays English inside a translated
// frame, as the logs and --check-config do.
//
// In a text: {name} is a parameter (a number is formatted for the language,
// a list joined with its separator, {key, params} is another text), and
// {detail} one that is shown as it came, marked lang="en"; `code` is shown
// as code.
'use strict';

const MESSAGES = {
  en: {
    'page.title': 'chatgate admin',
    'lang.label': 'Language',
    'list.separator': ', ',
    'nav.overview': 'Overview',
    'nav.chat': 'Chat',
    'nav.conversations': 'Conversations',
    'nav.config': 'Config',
    'nav.logs': 'Logs',
    'nav.logout': 'Log out',

    'login.heading': 'Log in',
    'login.token': 'Admin token',
    'login.submit': 'Log in',
    'login.wrongToken': 'wrong admin token',
    'login.lockedOut': 'too many failed logins; try again later',
    'login.failed': 'login failed: {detail}',

    'status.line': 'chatgate {version} (plugin ABI {abi}), up {uptime} s; {listeners}; ' +
                   '{running}/{instances} instances running, {inFlight} requests in flight',
    'status.unreachable': 'cannot reach chatgate: {detail}',
    'queue.heading': 'Durable queue',
    'queue.line': "on '{instance}' ({health}): {length} unanswered, {pending} being answered, " +
                  'oldest pending {oldest} s, {deadLetters} dead letters; this instance reads ' +
                  '{owned} of {partitions} partitions, {members} instances live',
    'queue.reachable': 'reachable',
    'queue.unreachable': 'UNREACHABLE: platforms are told to retry',

    'plugins.heading': 'Plugin instances',
    'plugins.instance': 'Instance',
    'plugins.plugin': 'Plugin',
    'plugins.kind': 'Kind',
    'plugins.version': 'Version',
    'plugins.abi': 'ABI',
    'plugins.state': 'State',
    'plugins.stateWithReason': '{state}: {detail}',
    'kind.channel': 'channel',
    'kind.model': 'model',
    'kind.cache': 'cache',
    'kind.unknown': 'unknown',
    'state.starting': 'starting',
    'state.running': 'running',
    'state.degraded': 'degraded',
    'state.failed': 'failed',

    'charts.heading': 'Last hour',
    'charts.messages': 'Messages in and out',
    'charts.success': 'Success rate',
    'charts.reply': 'Reply latency (s)',
    'charts.model': 'Model latency (s)',
    'charts.cache': 'Cache hit ratio',
    'charts.errors': 'Error log lines',
    'series.in': '{channel} in',
    'series.answered': '{channel} answered',
    'series.failed': '{channel} failed',
    'series.success': 'answered / (answered + failed)',
    'series.cache': 'hits / context loads',
    'series.errors': 'error lines',

    'chat.heading': 'Chat with the bot',
    'chat.hint': 'Messages go through the real router as the `web` channel.',
    'chat.placeholder': 'Say something',
    'chat.send': 'Send',
    'chat.serverError': '{detail}',
    'chat.httpStatus': 'HTTP {status}',
    'chat.error': 'error: {detail}',
    'chat.loggedOut': 'error: not logged in',

    'conv.heading': 'Recent conversations',
    'conv.hint': 'Message text shows only when `admin.showContent` is `true`.',
    'conv.channel': 'Channel',
    'conv.conversation': 'Conversation',
    'conv.messages': 'Messages',
    'conv.failed': 'Failed',
    'conv.turns': 'Context turns',
    'conv.lastReply': 'Last reply',
    'conv.lastAt': 'Last at',
    'conv.lastExchange': 'Last exchange',
    'conv.hidden': '(hidden)',
    'conv.reset': 'Reset',
    'unit.ms': '{n} ms',

    'config.heading': 'Effective config',
    'config.hint': 'Secrets show as ******** when set; their values never leave chatgate.',
    'config.reload': 'Reload from file',
    'reload.running': 'reloading...',
    'reload.failed': 'not reloaded: {detail}',
    'reload.handover': 'handed over to a new process (pid {pid}) for {keys}',
    'reload.handoverAlso':
      'handed over to a new process (pid {pid}) for {keys}; it also applied {applied}',
    'reload.applied': 'applied live: {keys}',
    'reload.nothing': 'nothing to apply',

    'logs.heading': 'Log',
    'logs.level': 'Level',
    'level.debug': 'debug',
    'level.info': 'info',
    'level.warn': 'warn',
    'level.error': 'error',
  },
  'zh-CN': {
    'page.title': 'chatgate 管理',
    'lang.label': '语言',
    'list.separator': '、',
    'nav.overview': '概览',
    'nav.chat': '对话',
    'nav.conversations': '会话',
    'nav.config': '配置',
    'nav.logs': '日志',
    'nav.logout': '退出登录',

    'login.heading': '登录',
    'login.token': '管理令牌',
    'login.submit': '登录',
    'login.wrongToken': '管理令牌不正确',
    'login.lockedOut': '登录失败次数过多，请稍后再试',
    'login.failed': '登录失败：{detail}',

    'status.line': 'chatgate {version}（插件 ABI {abi}），已运行 {uptime} 秒；' +
                   '{listeners}；{running}/{instances} 个实例运行中，{inFlight} 个请求处理中',
    'status.unreachable': '无法连接 chatgate：{detail}',
    'queue.heading': '持久队列',
    'queue.line': '队列实例 {instance}（{health}）：{length} 条未回答，' +
                  '{pending} 条正在回答，最早一条已等待 {oldest} 秒，{deadLetters} 条死信；' +
                  '本实例读取 {partitions} 个分区中的 {owned} 个，{members} 个实例在线',
    'queue.reachable': '可达',
    'queue.unreachable': '不可达：已让平台稍后重试',

    'plugins.heading': '插件实例',
    'plugins.instance': '实例',
    'plugins.plugin': '插件',
    'plugins.kind': '类型',
    'plugins.version': '版本',
    'plugins.abi': 'ABI',
    'plugins.state': '状态',
    'plugins.stateWithReason': '{state}：{detail}',
    'kind.channel': '渠道',
    'kind.model': '模型',
    'kind.cache': '缓存',
    'kind.unknown': '未知',
    'state.starting': '启动中',
    'state.running': '运行中',
    'state.degraded': '降级',
    'state.failed': '失败',

    'charts.heading': '最近一小时',
    'charts.messages': '收发消息',
    'charts.success': '成功率',
    'charts.reply': '回复延迟（秒）',
    'charts.model': '模型延迟（秒）',
    'charts.cache': '缓存命中率',
    'charts.errors': '错误日志行数',
    'series.in': '{channel} 收到',
    'series.answered': '{channel} 已回答',
    'series.failed': '{channel} 失败',
    'series.success': '已回答 /（已回答 + 失败）',
    'series.cache': '命中 / 上下文读取',
    'series.errors': '错误日志行',

    'chat.heading': '与机器人对话',
    'chat.hint': '消息作为 `web` 渠道经过真实的路由器。',
    'chat.placeholder': '说点什么',
    'chat.send': '发送',
    'chat.serverError': '出错：{detail}',
    'chat.httpStatus': '请求失败（状态码 {status}）',
    'chat.error': '出错：{detail}',
    'chat.loggedOut': '出错：未登录，请重新登录',

    'conv.heading': '最近的会话',
    'conv.hint': '只有 `admin.showContent` 为 `true` 时才显示消息文本。',
    'conv.channel': '渠道',
    'conv.conversation': '会话',
    'conv.messages': '消息数',
    'conv.failed': '失败数',
    'conv.turns': '上下文轮数',
    'conv.lastReply': '最近回复耗时',
    'conv.lastAt': '最近时间',
    'conv.lastExchange': '最近一次问答',
    'conv.hidden': '（已隐藏）',
    'conv.reset': '重置',
    'unit.ms': '{n} 毫秒',

    'config.heading': '生效的配置',
    'config.hint': '已设置的密钥显示为 ********；它们的值不会离开 chatgate。',
    'config.reload': '从文件重新加载',
    'reload.running': '正在重新加载…',
    'reload.failed': '重新加载失败：{detail}',
    'reload.handover': '已交接给新进程（进程号 {pid}）以应用 {keys}',
    'reload.handoverAlso':
      '已交接给新进程（进程号 {pid}）以应用 {keys}；它还应用了 {applied}',
    'reload.applied': '已实时应用：{keys}',
    'reload.nothing': '没有需要应用的更改',

    'logs.heading': '日志',
    'logs.level': '级别',
    'level.debug': '调试',
    'level.info': '信息',
    'level.warn': '警告',
    'level.error': '错误',
  },
};

const LANGUAGES = Object.keys(MESSAGES);
const LANGUAGE_KEY = 'chatgate.admin.language';
let language = 'en';

// The remembered choice, else the first of the browser's preferred
// languages (navigator.languages, the list it sends as Accept-Language)
// that the page speaks: any zh is zh-CN; else English.
function chooseLanguage() {
  let saved = null;
  try { saved = localStorage.getItem(LANGUAGE_KEY); } catch (e) { /* storage blocked */ }
  if (LANGUAGES.includes(saved)) return saved;
  for (const tag of navigator.languages || [navigator.language]) {
    const lower = String(tag).toLowerCase();
    if (lower.startsWith('zh')) return 'zh-CN';
    if (lower === 'en' || lower.startsWith('en-')) return 'en';
  }
  return 'en';
}

// Switches the page's language (remembered when the user chose it) and
// translates every element that says where its text comes from.
function useLanguage(next, remember) {
  language = LANGUAGES.includes(next) ? next : 'en';
  if (remember) {
    try { localStorage.setItem(LANGUAGE_KEY, language); } catch (e) { /* storage blocked */ }
  }
  document.documentElement.lang = language;
  translatePage();
}

const numberFormats = {};
const num = (n) => (numberFormats[language] ||= new Intl.NumberFormat(language)).format(n);
const clock = (t) => new Date(t).toLocaleTimeString(language);

function template(key) {
  const own = MESSAGES[language][key];
  return own !== undefined ? own : MESSAGES.en[key] !== undefined ? MESSAGES.en[key] : key;
}

function formatParam(value) {
  if (typeof value === 'number') return num(value);
  if (Array.isArray(value)) return value.map(formatParam).join(template('list.separator'));
  if (value && typeof value === 'object') return t(value.key, value.params);
  return String(value);
}

// The text of `key` as a string, for attributes, chart labels and the like.
function t(key, params = {}) {
  return template(key).replace(/`/g, '').replace(/\{(\w+)\}/g,
    (whole, name) => (name in params ? formatParam(params[name]) : whole));
}

// Puts the text of `key` into `el` as nodes (never as HTML): `code` as
// <code>, {detail} as a <span lang="en">, the rest as text.
function fill(el, key, params = {}) {
  const nodes = [];
  for (const part of template(key).split(/(`[^`]*`|\{\w+\})/)) {
    if (!part) continue;
    const name = /^\{(\w+)\}$/.exec(part);
    if (part.startsWith('`')) {
      const code = document.createElement('code');
      code.textContent = part.slice(1, -1);
      nodes.push(code);
    } else if (name && name[1] === 'detail' && 'detail' in params) {
      const span = document.createElement('span');
      span.className = 'detail';
      span.lang = 'en';
      span.textContent = String(params.detail);
      nodes.push(span);
    } else if (name && name[1] in params) {
      nodes.push(document.createTextNode(formatParam(params[name[1]])));
    } else {
      nodes.push(document.createTextNode(part));
    }
  }
  el.replaceChildren(...nodes);
}

// Like fill, and remembers the key and parameters on the element, so that
// a switch of language translates it again.
function say(el, key, params) {
  el.dataset.i18n = key;
  if (params) el.dataset.i18nParams = JSON.stringify(params);
  else delete el.dataset.i18nParams;
  fill(el, key, params);
}

function unsay(el) {
  delete el.dataset.i18n;
  delete el.dataset.i18nParams;
  el.replaceChildren();
}

// data-i18n="key" (with data-i18n-params, JSON) sets an element's text;
// data-i18n-placeholder, -title and -aria-label set those attributes.
function translatePage() {
  for (const el of document.querySelectorAll('[data-i18n]')) {
    const params = el.dataset.i18nParams;
    fill(el, el.dataset.i18n, params ? JSON.parse(params) : {});
  }
  for (const attr of ['placeholder', 'title', 'aria-label']) {
    for (const el of document.querySelectorAll(`[data-i18n-${attr}]`)) {
      el.setAttribute(attr, t(el.getAttribute('data-i18n-' + attr)));
    }
  }
}
