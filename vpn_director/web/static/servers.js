// Servers: the stored Xray servers (switch, test), importing share links, and subscriptions.
// Credentials and subscription addresses never come back from the server: the list shows names,
// kinds and hosts only.

import { get, post, del, job, follow, outcome, problem } from './api.js';
import { h, replace, badge, toast, when } from './dom.js';

function serverCard(s, long) {
  return h('li', { class: 'card', 'data-id': s.id },
    h('div', { class: 'row' }, h('strong', { class: 'wrap' }, s.active ? '● ' : '', s.name || s.id),
      s.latency_ms != null ? badge(s.latency_ms + ' ms', 'ok') : s.error ? badge('failed', 'bad') : badge('untested', 'direct')),
    h('div', { class: 'muted small wrap' }, s.label, ' · ', s.address, ':', String(s.port), s.error ? ' · ' + s.error : ''),
    h('div', { class: 'actions' },
      h('button', { type: 'button', disabled: s.active, onclick: () => long('use', { server: s.id }) }, s.active ? 'In use' : 'Use'),
      h('button', { type: 'button', onclick: () => long('test', { servers: [s.id] }) }, 'Test')));
}

function subCard(s, update, remove) {
  return h('li', { class: 'card', 'data-sub': s.id },
    h('div', { class: 'row' }, h('strong', { class: 'wrap' }, s.id),
      s.error ? badge('failed', 'bad') : badge(s.servers + ' server' + (s.servers === 1 ? '' : 's'), s.enabled ? 'ok' : 'direct')),
    h('div', { class: 'muted small wrap' }, s.url, ' · every ', String(s.interval_h), ' h · updated ', when(s.updated),
      s.enabled ? '' : ' · disabled', s.error ? ' · last error: ' + s.error : ''),
    h('div', { class: 'actions' },
      h('button', { type: 'button', onclick: () => update(s.id) }, 'Update'),
      h('button', { type: 'button', class: 'danger', onclick: () => remove(s.id) }, 'Remove')));
}

const fetched = (r) => 'Subscription ' + r.id + ': ' + r.counts + '; ' + r.added + ' new, ' + r.removed + ' gone';

export async function serversPage(main) {
  const list = h('ul', { class: 'plain', id: 'servers' });
  const subs = h('ul', { class: 'plain', id: 'subscriptions' });
  async function reload() {
    const [data, sd] = await Promise.all([get('/servers'), get('/subscriptions')]);
    replace(list, data.servers.length ? data.servers.map((s) => serverCard(s, long))
      : h('li', { class: 'muted' }, 'No servers yet: import share links or add a subscription below.'));
    replace(subs, sd.subscriptions.length ? sd.subscriptions.map((s) => subCard(s, update, remove))
      : h('li', { class: 'muted' }, 'No subscriptions.'));
  }
  async function settle(work) {
    try { toast(await work()); } catch (err) { toast(problem(err), true); }
    await reload();
  }
  function long(what, body) {
    toast(what === 'use' ? 'Switching… (test, restart, probe)' : 'Testing…');
    return settle(async () => {
      const r = await job('/servers/' + what, body);
      return what === 'use' ? 'Now using ' + (r.name || r.id) + ' (' + r.latency_ms + ' ms)'
        : r.results.map((x) => (x.name || x.id) + ': ' + (x.ok ? x.latency_ms + ' ms' : 'failed: ' + x.reason));
    });
  }
  function update(id) {
    toast('Fetching ' + id + '…');
    return settle(async () => fetched(await job('/subscriptions/' + encodeURIComponent(id) + '/update', {})));
  }
  function remove(id) {
    if (!window.confirm('Remove subscription ' + id + ' and its servers?')) return null;
    return settle(async () => {
      const r = await del('/subscriptions', { id });
      return outcome(r).concat([r.forgotten + ' server(s) forgotten']);
    });
  }

  const links = h('textarea', { name: 'links', id: 'import-text', rows: 3, required: true, autocapitalize: 'none',
    spellcheck: 'false', placeholder: 'vless://… trojan://… (one a line), or a subscription body' });
  const importForm = h('form', { class: 'card', id: 'import' }, h('h2', {}, 'Import share links'), links,
    h('button', { type: 'submit', class: 'primary' }, 'Import'));
  importForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    toast('Importing…');
    settle(async () => {
      const r = await job('/servers/import', { text: links.value });
      links.value = '';
      return 'Import: ' + r.counts + '; ' + r.added + ' new, ' + r.known + ' already stored';
    });
  });

  const subId = h('input', { name: 'id', id: 'sub-id', required: true, autocapitalize: 'none', placeholder: 'main',
    pattern: '[a-z0-9][a-z0-9_-]*', maxlength: 32 });
  const subUrl = h('input', { name: 'url', id: 'sub-url', type: 'url', required: true, autocomplete: 'off',
    placeholder: 'https://…' });
  const subHours = h('input', { name: 'interval_h', id: 'sub-interval', type: 'number', min: 1, max: 720, value: '12',
    required: true });
  const subForm = h('form', { class: 'card', id: 'add-subscription' }, h('h2', {}, 'Add a subscription'),
    h('label', { for: 'sub-id' }, 'Name (a-z 0-9 _ -)'), subId,
    h('label', { for: 'sub-url' }, 'Address (kept secret: never shown again)'), subUrl,
    h('label', { for: 'sub-interval' }, 'Refresh every (hours)'), subHours,
    h('button', { type: 'submit', class: 'primary' }, 'Add'));
  subForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    settle(async () => {
      const r = await post('/subscriptions', { id: subId.value.trim(), url: subUrl.value.trim(),
        interval_h: Number(subHours.value) });
      subUrl.value = '';
      const lines = outcome(r);
      toast(lines.concat(['Fetching…']));
      try { return lines.concat([fetched(await follow(r.job))]); } catch (err) { return lines.concat(problem(err)); }
    });
  });

  await reload();
  replace(main, h('h1', {}, 'Servers'), list,
    h('button', { type: 'button', onclick: () => long('test', { all: true }) }, 'Test all'),
    h('h2', {}, 'Subscriptions'), subs, subForm, importForm);
}
