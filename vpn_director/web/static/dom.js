// Building the page without innerHTML: every text is a text node, so no server data is ever parsed as HTML.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (key === 'value') el.value = value;
    else if (value === true) el.setAttribute(key, '');
    else if (value !== false && value != null) el.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function replace(target, ...children) {
  target.replaceChildren(...children.flat(Infinity).filter((c) => c != null && c !== false));
}

export function badge(text, kind) {
  return h('span', { class: 'badge ' + (kind || '') }, text);
}

let toastTimer = null;

// A short message at the bottom: what an edit changed, or why it failed.
export function toast(lines, isError) {
  const box = document.getElementById('toast');
  replace(box, [].concat(lines).filter(Boolean).map((l) => h('div', {}, l)));
  box.className = isError ? 'error' : '';
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, isError ? 12000 : 6000);
}

export function when(seconds) {
  if (!seconds) return 'never';
  return new Date(seconds * 1000).toLocaleString();
}
