// Small SVG charts: no library, so nothing to vendor. Each bucket is a focusable hit area with a
// tooltip (<title>); an optional onPick(point) makes buckets clickable (Enter/Space too).
import { el } from './format.js';

const NS = 'http://www.w3.org/2000/svg';
function s(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

const COLORS = ['var(--c1)', 'var(--c2)', 'var(--c3)', 'var(--err)'];

// series: [{key, label, color?}]; kind 'line' or 'stack' (stacked bars).
export function chart(points, series, { title, kind = 'line', fmt = String, label = String, onPick } = {}) {
  const W = 600, H = 140, L = 44, R = 6, T = 8, B = 18;
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': title });
  const n = points.length;
  const values = points.map((p) => kind === 'stack'
    ? series.reduce((a, x) => a + (p[x.key] || 0), 0)
    : Math.max(...series.map((x) => (p[x.key] ?? -Infinity))));
  const max = Math.max(0, ...values.filter(Number.isFinite)) || 1;
  const x = (i) => L + ((W - L - R) * (i + 0.5)) / Math.max(n, 1);
  const y = (v) => T + (H - T - B) * (1 - v / max);
  svg.append(s('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }));
  svg.append(s('text', { x: L - 4, y: T + 8, 'text-anchor': 'end' }, fmt(max)));
  svg.append(s('text', { x: L - 4, y: H - B, 'text-anchor': 'end' }, fmt(0)));
  if (n) {
    svg.append(s('text', { x: L, y: H - 4 }, label(points[0].time_bucket)));
    if (n > 1) svg.append(s('text', { x: W - R, y: H - 4, 'text-anchor': 'end' }, label(points[n - 1].time_bucket)));
  }
  const band = (W - L - R) / Math.max(n, 1);
  if (kind === 'stack') {
    points.forEach((p, i) => {
      let base = 0;
      series.forEach((x2, j) => {
        const v = p[x2.key] || 0;
        if (v > 0) svg.append(s('rect', { x: x(i) - band * 0.4, width: band * 0.8, y: y(base + v), height: y(base) - y(base + v), fill: x2.color || COLORS[j] }));
        base += v;
      });
    });
  } else {
    series.forEach((x2, j) => {
      let d = '';
      let pen = false;
      points.forEach((p, i) => {
        const v = p[x2.key];
        if (v === null || v === undefined) { pen = false; return; }
        d += `${pen ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
        pen = true;
      });
      svg.append(s('path', { d, fill: 'none', stroke: x2.color || COLORS[j], 'stroke-width': 2, 'vector-effect': 'non-scaling-stroke' }));
      if (n === 1 && points[0][x2.key] != null) svg.append(s('circle', { cx: x(0), cy: y(points[0][x2.key]), r: 3, fill: x2.color || COLORS[j] }));
    });
  }
  points.forEach((p, i) => {
    const tip = `${label(p.time_bucket)}\n${series.map((x2) => `${x2.label}: ${fmt(p[x2.key])}`).join('\n')}`;
    const hit = s('rect', { class: 'hit', x: x(i) - band / 2, width: band, y: T, height: H - T - B, fill: 'transparent' });
    hit.append(s('title', {}, tip));
    if (onPick) {
      hit.setAttribute('tabindex', '0');
      hit.setAttribute('role', 'button');
      hit.setAttribute('aria-label', tip.replace(/\n/g, ', '));
      hit.style.cursor = 'pointer';
      hit.addEventListener('click', () => onPick(p, i));
      hit.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); onPick(p, i); } });
    }
    svg.append(hit);
  });
  const legend = el('div', { class: 'legend' }, series.map((x2, j) => el('span', {}, el('i', { style: `background:${x2.color || COLORS[j]}` }), x2.label)));
  const buckets = JSON.stringify(points.map((p) => p.time_bucket));
  return el('figure', { dataset: { buckets } }, el('figcaption', { text: title }), svg, legend);
}

export function sparkline(values, { title } = {}) {
  const W = 120, H = 28;
  const svg = s('svg', { class: 'spark', viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': title });
  const max = Math.max(1, ...values.filter((v) => v !== null));
  let d = '';
  values.forEach((v, i) => {
    const px = values.length > 1 ? (W * i) / (values.length - 1) : W / 2;
    d += `${i ? 'L' : 'M'}${px.toFixed(1)},${(H - 2 - ((H - 4) * (v || 0)) / max).toFixed(1)}`;
  });
  svg.append(s('path', { d, fill: 'none', stroke: 'var(--c1)', 'stroke-width': 1.5, 'vector-effect': 'non-scaling-stroke' }));
  if (title) svg.append(s('title', {}, title));
  return svg;
}
