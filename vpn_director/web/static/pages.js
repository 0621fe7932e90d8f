// Status, Exclusions, Logs and History.

import { get, post, del, outcome, problem } from './api.js';
import { h, replace, badge, toast, when } from './dom.js';

const STATE_KIND = { OK: 'ok', UP: 'ok', MISSING: 'bad', MISMATCH: 'bad', BLOCKED: 'warn', LEAKING: 'bad' };

export async function statusPage(main) {
  const rep = await get('/status');
  const problems = rep.objects.filter((o) => o.status !== 'OK');
  const tunnels = (rep.tunnels || []).map((t) => h('li', { class: 'row' },
    h('span', {}, t.tunnel, h('span', { class: 'muted small' }, ' table ', String(t.table))),
    badge(t.state, STATE_KIND[t.state] || 'warn')));
  const objects = rep.objects.map((o) => h('li', { class: 'row' },
    h('span', { class: 'wrap' }, o.kind, ' ', h('code', {}, o.name),
      o.entries != null ? h('span', { class: 'muted small' }, ' ', String(o.entries), ' entries') : null,
      o.note ? h('span', { class: 'muted small' }, ' — ', o.note) : null),
    badge(o.status, STATE_KIND[o.status] || 'warn')));
  replace(main,
    h('h1', {}, 'Status'),
    h('div', { class: 'card ' + (rep.ok ? 'good' : 'bad'), id: 'status-summary' },
      h('strong', {}, rep.ok ? 'The kernel matches the config.' : problems.length + ' difference(s) from the config.'),
      rep.xray ? h('p', { class: 'small' }, rep.xray) : null,
      rep.xray_health ? h('p', { class: 'small' }, rep.xray_health) : null,
      (rep.warnings || []).map((w) => h('p', { class: 'small warn' }, 'warning: ', w))),
    h('h2', {}, 'Tunnels'),
    h('ul', { class: 'plain card', id: 'tunnels' }, tunnels.length ? tunnels : h('li', { class: 'muted' }, 'No tunnel has clients.')),
    (rep.dns || []).length ? [h('h2', {}, 'DNS'), h('ul', { class: 'plain card' },
      rep.dns.map((d) => h('li', {}, h('strong', {}, d.who), ': ', d.dns, h('div', { class: 'muted small' }, d.note || ''))))] : null,
    h('h2', {}, 'Everything vpn-director owns'),
    h('ul', { class: 'plain card', id: 'objects' }, objects));
}

export async function exclusionsPage(main) {
  async function reload() {
    const ex = await get('/exclusions');
    const groups = [Object.assign({ name: 'xray' }, ex.xray)].concat(ex.tunnels);
    replace(list, groups.map((g) => h('li', { class: 'card', 'data-via': g.name },
      h('h2', {}, g.name === 'xray' ? 'Xray' : 'Tunnel ' + g.name),
      h('div', { class: 'chips' },
        g.countries.map((cc) => chip(cc, g.name)),
        (g.addresses || []).map((a) => chip(a, g.name)),
        (g.sets || []).map((s) => badge(s + ' (set)', 'direct')),
        g.countries.length + (g.addresses || []).length + (g.sets || []).length ? null
          : h('span', { class: 'muted small' }, 'nothing excluded')))));
    replace(via, groups.map((g) => h('option', { value: g.name }, g.name)));
  }
  function chip(value, where) {
    return h('span', { class: 'chip' }, value, h('button', { type: 'button', class: 'x', 'aria-label': 'remove ' + value,
      onclick: () => change(() => del('/exclusions', { target: value, via: where })) }, '×'));
  }
  async function change(action) {
    try { toast(outcome(await action())); } catch (err) { toast(problem(err), true); }
    await reload();
  }
  const list = h('ul', { class: 'plain', id: 'exclusions' });
  const target = h('input', { name: 'target', placeholder: 'de, 203.0.113.0/24', required: true, autocapitalize: 'none' });
  target.addEventListener('input', () => { target.value = target.value.toLowerCase(); });
  const via = h('select', { name: 'via', 'aria-label': 'for' });
  const form = h('form', { class: 'card inline', id: 'add-exclusion' }, h('h2', {}, 'Exclude'),
    target, via, h('button', { type: 'submit', class: 'primary' }, 'Add'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    change(() => post('/exclusions', { target: target.value.trim().toLowerCase(), via: via.value }));
  });
  await reload();
  replace(main, h('h1', {}, 'Exclusions'),
    h('p', { class: 'muted' }, 'Destinations that skip Xray or a tunnel and go direct: a two-letter country code, or an address or CIDR (Xray only).'),
    list, form);
}

export async function logsPage(main) {
  const lines = h('select', { 'aria-label': 'lines' }, [100, 500, 2000].map((n) => h('option', { value: n }, n + ' lines')));
  const box = h('pre', { class: 'log', id: 'log' });
  async function reload() {
    const data = await get('/logs?lines=' + lines.value);
    replace(box, data.lines.length ? data.lines.join('\n') : (data.note || 'The log is empty.'));
    box.scrollTop = box.scrollHeight;
  }
  lines.addEventListener('change', reload);
  await reload();
  replace(main, h('h1', {}, 'Logs'), h('div', { class: 'actions' }, lines,
    h('button', { type: 'button', onclick: reload }, 'Refresh')), box);
}

export async function historyPage(main) {
  const data = await get('/config/history');
  const rows = data.versions.map((v) => h('li', { class: 'card' },
    h('div', { class: 'row' }, h('strong', {}, '#' + v.version), v.version === data.current ? badge('current', 'ok') : null),
    h('div', { class: 'wrap' }, v.summary), h('div', { class: 'muted small' }, when(v.time)),
    v.version === data.current ? null : h('div', { class: 'actions' }, h('button', { type: 'button', onclick: async () => {
      if (!window.confirm('Put version ' + v.version + ' back and apply it?')) return;
      try { toast(outcome(await post('/config/rollback', { version: v.version }))); } catch (err) { toast(problem(err), true); }
      historyPage(main);
    } }, 'Roll back to this'))));
  replace(main, h('h1', {}, 'History'),
    h('p', { class: 'muted' }, 'Every change keeps a version; a rollback is a new version.'),
    h('ul', { class: 'plain', id: 'history' }, rows.length ? rows : h('li', { class: 'muted' }, 'No history yet.')));
}
