// Devices (every client, DHCP lease and named address, with its route) and the trace of one device's traffic.

import { get, post, del, outcome, problem } from './api.js';
import { h, replace, badge, toast } from './dom.js';

function routeBadge(d) {
  if (d.paused) return badge('paused · direct', 'paused');
  if (d.via === 'direct') return badge('direct', 'direct');
  return badge(d.via, d.via === 'xray' ? 'xray' : 'tunnel');
}

async function run(action, reload) {
  try {
    const res = await action();
    toast(outcome(res));
  } catch (err) {
    toast(problem(err), true);
  }
  await reload();
}

function deviceCard(d, vias, reload) {
  const path = '/clients/' + encodeURIComponent(d.address);
  const listed = d.listed_in.length > 0;
  const choose = h('select', { 'aria-label': 'route via', class: 'via', 'data-address': d.address },
    vias.concat(['direct']).map((v) => h('option', { value: v, selected: v === d.via && !d.paused }, v)));
  const move = h('button', { type: 'button', class: 'move' }, 'Route');
  // the server decides what "route via" means for this device (move, add, or a pause for direct)
  move.addEventListener('click', () => run(() => post('/devices/' + encodeURIComponent(d.address) + '/route',
    { via: choose.value }), reload));
  const actions = [h('span', { class: 'via-pick' }, choose, move)];
  if (d.client && !d.paused && listed) {
    actions.push(h('button', { type: 'button', onclick: () => run(() => post(path + '/pause'), reload) }, 'Pause'));
  }
  if (d.client && d.paused) {
    actions.push(h('button', { type: 'button', onclick: () => run(() => post(path + '/resume'), reload) }, 'Resume'));
  }
  if (d.client) {
    actions.push(h('button', { type: 'button', class: 'danger', onclick: () => run(() => del(path), reload) }, 'Remove'));
  }
  actions.push(h('a', { class: 'button', href: '#/trace?src=' + encodeURIComponent(d.address.split('/')[0]) }, 'Trace'));
  return h('li', { class: 'card device', 'data-address': d.address },
    h('div', { class: 'row' },
      h('strong', { class: 'name' }, d.name || d.address),
      routeBadge(d)),
    h('div', { class: 'muted small' }, [d.address, d.mac].filter(Boolean).join(' · '),
      d.inside.length ? ' · inside ' + d.inside.join(', ') : ''),
    h('div', { class: 'actions' }, actions));
}

export async function devicesPage(main) {
  const list = h('ul', { class: 'plain', id: 'devices' });
  const via = h('select', { name: 'via', 'aria-label': 'via' });
  async function reload() {
    const data = await get('/devices');
    const chosen = via.value;
    replace(via, data.vias.map((v) => h('option', { value: v, selected: v === chosen }, v)));
    replace(list, data.devices.length ? data.devices.map((d) => deviceCard(d, data.vias, reload))
      : h('li', { class: 'muted' }, 'No devices yet: no clients, DHCP leases or names.'));
  }
  const address = h('input', { name: 'address', placeholder: 'address, CIDR, name or MAC', required: true });
  const add = h('form', { class: 'card inline', id: 'add-client' },
    h('h2', {}, 'Add a client'), address, via, h('button', { type: 'submit', class: 'primary' }, 'Add'));
  add.addEventListener('submit', (ev) => {
    ev.preventDefault();
    run(() => post('/clients', { address: address.value, via: via.value }), reload);
  });
  await reload();
  replace(main, h('h1', {}, 'Devices'), list, add);
}

export async function tracePage(main, query) {
  const src = h('input', { name: 'source', id: 'trace-source', value: query.get('src') || '', required: true,
    autocapitalize: 'none', placeholder: 'address, device name or MAC' });
  const dst = h('input', { name: 'destination', id: 'trace-destination', value: query.get('dst') || '8.8.8.8',
    required: true, inputmode: 'decimal' });
  const proto = h('select', { name: 'proto' }, ['tcp', 'udp', 'icmp'].map((p) => h('option', { value: p }, p)));
  const live = h('input', { type: 'checkbox', name: 'live', id: 'trace-live' });
  const result = h('div', { id: 'trace-result' });
  const form = h('form', { class: 'card', id: 'trace' },
    h('label', { for: 'trace-source' }, 'From (a LAN device)'), src,
    h('label', { for: 'trace-destination' }, 'To'), dst,
    h('label', {}, 'Protocol'), proto,
    h('label', { class: 'check' }, live, ' the kernel\'s current state (live)'),
    h('button', { type: 'submit', class: 'primary' }, 'Trace'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    replace(result, h('p', { class: 'muted' }, 'Tracing…'));
    try {
      const r = await post('/trace', { source: src.value.trim(), destination: dst.value.trim(), proto: proto.value,
        live: live.checked });
      const shown = r.route === 'tunnel' ? r.tunnel : r.route;
      replace(result, h('div', { class: 'card' },
        h('p', { class: 'verdict' }, (r.src_name ? r.src_name + ' (' + r.source + ')' : r.source),
          ' → ', dst.value, ': ', badge(shown, r.route === 'xray' ? 'xray' : r.route === 'tunnel' ? 'tunnel' : 'direct')),
        h('p', { class: 'muted small' }, 'table ', String(r.table), ' · mark ', r.mark,
          r.live ? ' · live kernel state' : ' · desired state'),
        h('ol', { class: 'steps' }, r.steps.map((s) => h('li', {}, s))),
        r.live ? h('p', { class: 'small' }, 'kernel: ', r.kernel) : null,
        r.live ? h('p', { class: 'small' }, 'desired state: ', r.differs || 'agrees') : null));
    } catch (err) {
      replace(result, h('p', { class: 'error' }, problem(err)));
    }
  });
  replace(main, h('h1', {}, 'Trace'), h('p', { class: 'muted' }, 'Where does this device\'s traffic go, and why?'),
    form, result);
  if (src.value) form.requestSubmit();
}
