// Number formatting and small DOM helpers.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const int = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const dec = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });

export function count(v) { return v === null || v === undefined ? '–' : int.format(v); }
export function num(v) { return v === null || v === undefined ? '–' : dec.format(v); }
export function pct(v) { return v === null || v === undefined ? '–' : `${dec.format(v)} %`; }
export function ms(v) {
  if (v === null || v === undefined) return '–';
  return v >= 1000 ? `${dec.format(v / 1000)} s` : `${dec.format(v)} ms`;
}
export function usd(v) {
  if (v === null || v === undefined) return '–';
  return `$${v < 1 ? v.toPrecision(3) : dec.format(v)}`;
}

// The value a metric element carries for machines (tests, copy): JSON, exact as the API sent it.
export function metric(name, value, shown) {
  return el('span', { class: 'metric', dataset: { metric: name, value: JSON.stringify(value) } }, shown);
}

// One formatter per (time zone, bucket): making one costs far more than formatting with it (a
// page over 30 days spent 40 ms of its main thread making them, one per label).
const timeFormats = new Map();

export function timeLabel(ms, tz, bucket) {
  const key = `${tz}|${bucket === 'hour'}`;
  let format = timeFormats.get(key);
  if (!format) {
    const opts = bucket === 'hour'
      ? { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', timeZone: tz }
      : { year: 'numeric', month: 'short', day: 'numeric', timeZone: tz };
    format = new Intl.DateTimeFormat(undefined, opts);
    timeFormats.set(key, format);
  }
  return format.format(new Date(ms));
}
