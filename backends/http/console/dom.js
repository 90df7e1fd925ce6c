// Small helpers to build elements without innerHTML (no markup from data, ever).

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key in el && typeof value !== 'string') el[key] = value;
    else el.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

const two = (n) => (n < 10 ? '0' : '') + n;

// By hand: toLocaleTimeString builds a formatter on every call, far too slow per row.
export function time(ts) {
  if (!ts) return '-';
  const d = new Date(ts * 1000);
  const milli = d.getMilliseconds();
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${milli < 10 ? '00' : milli < 100 ? '0' : ''}${milli}`;
}

export function when(ts) {
  if (!ts) return '-';
  return new Date(ts * 1000).toLocaleString([], { hour12: false });
}

export function short(value, limit = 140) {
  let text;
  try {
    text = typeof value === 'string' ? value : JSON.stringify(value);
  } catch {
    text = String(value);
  }
  if (text === undefined) text = '';
  return text.length > limit ? text.slice(0, limit - 1) + '…' : text;
}

export function pretty(value) {
  return JSON.stringify(value, null, 2);
}

export function ms(seconds) {
  if (seconds === null || seconds === undefined) return 'running';
  return seconds < 1 ? `${(seconds * 1000).toFixed(1)} ms` : `${seconds.toFixed(2)} s`;
}

export function duration(seconds) {
  const s = Math.floor(seconds || 0);
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600), mm = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${hh}h` : hh ? `${hh}h ${mm}m` : mm ? `${mm}m ${s % 60}s` : `${s}s`;
}

// A glob as the node matches action names (fnmatch: * and ?).
export function globMatch(pattern, name) {
  const re = new RegExp('^' + pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*').replace(/\?/g, '.') + '$');
  return re.test(name);
}
