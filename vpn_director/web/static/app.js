// The single page: login, the navigation, and one page per hash (#/devices, #/status, ...).

import { get, post, setToken, problem } from './api.js';
import { h, replace, toast } from './dom.js';
import { devicesPage, tracePage } from './devices.js';
import { statusPage, exclusionsPage, logsPage, historyPage } from './pages.js';
import { serversPage } from './servers.js';

const PAGES = {
  devices: devicesPage, status: statusPage, exclusions: exclusionsPage, servers: serversPage,
  logs: logsPage, history: historyPage, trace: tracePage,
};
const main = document.getElementById('main');
const nav = document.getElementById('nav');
let user = null;

function loginForm(message) {
  nav.hidden = true;
  const name = h('input', { id: 'username', name: 'username', autocomplete: 'username', required: true, value: 'admin' });
  const password = h('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const error = h('p', { class: 'error', id: 'login-error' }, message || '');
  const form = h('form', { class: 'card login', id: 'login' },
    h('h1', {}, 'Log in'),
    h('p', { class: 'muted' }, "The router's admin user and password."),
    h('label', { for: 'username' }, 'User'), name,
    h('label', { for: 'password' }, 'Password'), password,
    error,
    h('button', { type: 'submit', class: 'primary' }, 'Log in'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const s = await post('/login', { username: name.value, password: password.value });
      setToken(s.csrf);
      user = s.user;
      nav.hidden = false;
      if (!location.hash || location.hash === '#/login') location.hash = '#/devices';
      else show();
    } catch (err) {
      replace(error, err.status === 429 ? err.message : problem(err)[0]);
      password.value = '';
    }
  });
  replace(main, form);
  password.focus();
}

async function show() {
  if (!user) return;
  const [name, query] = (location.hash.replace(/^#\//, '') || 'devices').split('?');
  const page = PAGES[name] || devicesPage;
  for (const a of nav.querySelectorAll('a')) a.classList.toggle('current', a.dataset.page === name);
  replace(main, h('p', { class: 'muted' }, 'Loading…'));
  try {
    await page(main, new URLSearchParams(query || ''));
  } catch (err) {
    if (err.status === 401) { user = null; loginForm('Your session ended: log in again.'); return; }
    replace(main, h('div', { class: 'card' }, h('p', { class: 'error' }, problem(err))));
  }
}

async function start() {
  const s = await get('/session');
  if (!s.user) { loginForm(); return; }
  setToken(s.csrf);
  user = s.user;
  nav.hidden = false;
  show();
}

document.getElementById('logout').addEventListener('click', async () => {
  try { await post('/logout'); } catch (err) { /* the session is gone either way */ }
  user = null;
  setToken('');
  location.hash = '#/login';
  loginForm('Logged out.');
  toast('Logged out.');
});
window.addEventListener('hashchange', show);
start().catch((err) => replace(main, h('p', { class: 'error' }, problem(err))));
