// The JSON API: every change carries the session's CSRF token; errors become exceptions with the server's message.

let csrf = '';

export function setToken(token) { csrf = token || ''; }

export class ApiError extends Error {
  constructor(status, data) {
    super((data && data.error) || ('HTTP ' + status));
    this.status = status;
    this.data = data || {};
  }
}

export async function call(method, path, body) {
  const options = { method, headers: {}, credentials: 'same-origin', cache: 'no-store' };
  if (method !== 'GET') {
    options.headers['Content-Type'] = 'application/json';
    options.headers['X-CSRF-Token'] = csrf;
    options.body = JSON.stringify(body || {});
  }
  const response = await fetch('/api/v1' + path, options);
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const get = (path) => call('GET', path);
export const post = (path, body) => call('POST', path, body);
export const del = (path, body) => call('DELETE', path, body);

// A long operation: start it, then poll its job until it ends.
export async function job(path, body, onProgress) {
  return follow(await post(path, body), onProgress);
}

// Poll a job (as an answer names it) until it ends; its result, or an ApiError if it failed.
export async function follow(j, onProgress) {
  while (j.state === 'running') {
    if (onProgress) onProgress(j);
    await new Promise((r) => setTimeout(r, 1000));
    j = await get('/jobs/' + j.id);
  }
  if (j.state === 'failed') throw new ApiError(500, j.result);
  return j.result;
}

// The lines an edit's answer is shown as.
export function outcome(res) {
  const lines = [res.summary || 'nothing changed'];
  if (res.route) lines.push(res.address + ' now goes ' + (res.route === 'direct' ? 'direct' : 'via ' + res.route));
  if (res.applied) lines.push('applied (' + res.applied + '): ' + res.changes.length + ' change(s)');
  return lines.concat(res.notes || [], (res.warnings || []).map((w) => 'warning: ' + w));
}

export function problem(err) {
  const lines = [err.message];
  if (err.data && err.data.problems) lines.push(...err.data.problems);
  return lines;
}
