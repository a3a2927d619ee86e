// The Insights page: scope bar -> one request per section -> rendered numbers and charts.
// Everything the view depends on lives in the URL, so a view can be shared and reloaded.
import { post, ApiError } from './api.js';
import { chart, sparkline } from './chart.js';
import { el, count, num, pct, ms, usd, metric, timeLabel } from './format.js';

const WINDOWS = { '24h': 24 * 3600e3, '7d': 7 * 86400e3, '30d': 30 * 86400e3 };
const DEFAULT_BUCKET = { '24h': 'hour', '7d': 'day', '30d': 'day', custom: 'day' };
const ERRORS_SLICE = "status = 'ERROR'";
const BROWSER_TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ state <-> URL
function readState() {
  const q = new URLSearchParams(location.search);
  const win = q.get('window') in WINDOWS || q.get('window') === 'custom' ? q.get('window') : '7d';
  return {
    experiment: q.get('experiment') || '',
    window: win,
    from: Number(q.get('from')) || null,
    to: Number(q.get('to')) || null,
    bucket: ['hour', 'day', 'week'].includes(q.get('bucket')) ? q.get('bucket') : DEFAULT_BUCKET[win],
    timezone: q.get('timezone') || BROWSER_TZ,
    filter: q.get('filter') || '',
    slice: q.get('slice') || ERRORS_SLICE,
    tag: q.get('tag') || '',
    sort: q.get('sort') || 'invocation_count',
    dir: q.get('dir') === 'asc' ? 'asc' : 'desc',
    mlflow: q.get('mlflow') || '/',
  };
}

function writeState(state, push) {
  const q = new URLSearchParams();
  const defaults = { window: '7d', bucket: DEFAULT_BUCKET[state.window], timezone: BROWSER_TZ, slice: ERRORS_SLICE, sort: 'invocation_count', dir: 'desc', mlflow: '/' };
  for (const [k, v] of Object.entries(state)) {
    if (v === null || v === '' || v === undefined || defaults[k] === v) continue;
    if ((k === 'from' || k === 'to') && state.window !== 'custom') continue;
    q.set(k, String(v));
  }
  const url = `${location.pathname}${q.toString() ? `?${q}` : ''}`;
  if (url !== `${location.pathname}${location.search}`) history[push ? 'pushState' : 'replaceState'](null, '', url);
}

let state = readState();

// The window in epoch ms: the last N hours/days up to now (to the next whole hour: every hour
// bucket is whole, and the service's rollups per hour answer it), or custom.
function windowOf(st) {
  if (st.window === 'custom' && st.from && st.to && st.from < st.to) return { start: st.from, end: st.to };
  const end = Math.ceil(Date.now() / 3600e3) * 3600e3;
  return { start: end - (WINDOWS[st.window] || WINDOWS['7d']), end };
}

// ------------------------------------------------------------------ section states
function setState(section, kind, message) {
  const box = $(section).querySelector('.state');
  box.dataset.state = kind;
  box.textContent = message || (kind === 'loading' ? 'Loading…' : '');
  $(section).setAttribute('aria-busy', kind === 'loading' ? 'true' : 'false');
}

function failed(section, err) {
  if (err.name === 'AbortError') return;
  // Numbers of an earlier scope must not stay on screen beside an error.
  for (const box of $(section).querySelectorAll('.cards, .charts, .table-wrap, #cost-by-model, #tag-values, #npmi-detail')) box.replaceChildren();
  if (err instanceof ApiError && err.status === 400) {
    showScopeError(err.message);
    setState(section, 'error', 'The scope above was refused; see the message under the filter.');
    return;
  }
  setState(section, 'error', err instanceof ApiError ? `${err.code || 'Error'}: ${err.message}` : String(err));
}

function showScopeError(message) {
  const box = $('filter-error');
  box.textContent = message;
  box.hidden = false;
  if (state.filter) $('filter').setAttribute('aria-invalid', 'true');
}

function clearScopeError() {
  $('filter-error').hidden = true;
  $('filter-error').textContent = '';
  $('filter').removeAttribute('aria-invalid');
}

// ------------------------------------------------------------------ scope bar
async function loadExperiments() {
  const select = $('experiment');
  select.replaceChildren(el('option', { value: '', text: 'Loading experiments…' }));
  const { data } = await post('experiments', {});
  select.replaceChildren(...data.map((e) => el('option', { value: e.experiment_id, text: `${e.name} (${count(e.trace_count)} traces)` })));
  if (!data.length) {
    select.replaceChildren(el('option', { value: '', text: 'No experiments' }));
    return false;
  }
  if (!data.some((e) => e.experiment_id === state.experiment)) state.experiment = data[0].experiment_id;
  return true;
}

function toLocalInput(msValue) {
  if (!msValue) return '';
  const d = new Date(msValue);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60e3).toISOString().slice(0, 16);
}

function showScope() {
  $('experiment').value = state.experiment;
  $('window').value = state.window;
  $('bucket').value = state.bucket;
  $('timezone').value = state.timezone;
  $('filter').value = state.filter;
  $('slice').value = state.slice;
  $('custom-range').hidden = state.window !== 'custom';
  const { start, end } = windowOf(state);
  $('from').value = toLocalInput(start);
  $('to').value = toLocalInput(end);
}

function scopeFromForm() {
  const win = $('window').value;
  const next = {
    ...state,
    experiment: $('experiment').value,
    window: win,
    bucket: $('bucket').value,
    timezone: $('timezone').value.trim() || BROWSER_TZ,
    filter: $('filter').value.trim(),
  };
  if (win === 'custom') {
    next.from = $('from').value ? new Date($('from').value).getTime() : null;
    next.to = $('to').value ? new Date($('to').value).getTime() : null;
  }
  return next;
}

// ------------------------------------------------------------------ requests
let controller = null;

function bodies() {
  const { start, end } = windowOf(state);
  const base = { experiment_ids: [state.experiment], start_time: start, end_time: end };
  if (state.filter) base.filter_string = state.filter;
  const series = { ...base, time_bucket: state.bucket, timezone: state.timezone };
  return { base, series };
}

// ``checked``: a promise the page waits for before it says it is ready (the list of experiments,
// asked for beside the first view's requests).
async function refresh(checked = null) {
  if (controller) controller.abort();
  controller = new AbortController();
  const { signal } = controller;
  clearScopeError();
  const { base, series } = bodies();
  document.body.dataset.state = 'loading';
  document.body.dataset.request = JSON.stringify(series);
  const label = `${timeLabel(series.start_time, state.timezone, 'hour')} – ${timeLabel(series.end_time, state.timezone, 'hour')} (${state.timezone}), ${state.bucket} buckets`;
  $('window-label').textContent = label;
  // The slowest requests are sent first: a browser opens at most six connections per origin
  // over HTTP/1.1, and a long request queued behind short ones would end the page last.
  const jobs = [
    correlations(base, signal).catch((e) => failed('correlations', e)),
    tools(series, signal).catch((e) => failed('tools', e)),
    quality(series, signal).catch((e) => failed('quality', e)),
    overview(series, signal).catch((e) => failed('overview', e)),
    tags(base, signal).catch((e) => failed('tags', e)),
  ];
  await Promise.all(jobs);
  if (checked) await checked.catch(() => false);
  if (!signal.aborted) document.body.dataset.state = 'ready';
}

// ------------------------------------------------------------------ overview
function delta(current, previous, { rate = false, bad = false } = {}) {
  if (current === null || current === undefined || previous === null || previous === undefined) {
    return el('span', { class: 'delta same', text: 'no previous value' });
  }
  let text;
  let diff;
  if (rate) {
    diff = current - previous;
    text = `${diff >= 0 ? '+' : '−'}${num(Math.abs(diff))} pts`;
  } else if (previous === 0) {
    diff = current;
    text = current === 0 ? '±0' : 'new';
  } else {
    diff = current - previous;
    text = `${diff >= 0 ? '+' : '−'}${num(Math.abs((100 * diff) / previous))} %`;
  }
  const dir = diff > 0 ? 'up' : diff < 0 ? 'down' : 'same';
  return el('span', { class: `delta ${dir}${bad ? ' bad' : ''}`, title: `previous window: ${num(previous)}` }, text);
}

function card(label, name, summary, previous, key, fmt, opts = {}, sub = null) {
  const value = summary[key];
  const prev = previous ? previous[key] : null;
  return el('div', { class: 'card', dataset: { card: name } },
    el('div', { class: 'label', text: label }),
    el('div', { class: 'value' }, metric(name, value, fmt(value))),
    el('div', { class: 'sub' }, el('span', { class: 'metric', dataset: { metric: `${name}.previous`, value: JSON.stringify(prev) } }, delta(value, prev, opts))),
    sub ? el('div', { class: 'sub' }, sub) : null);
}

function bucketLabel(t) { return timeLabel(t, state.timezone, state.bucket); }

async function overview(series, signal) {
  setState('overview', 'loading');
  const body = { ...series, compare_previous: true };
  const [vol, lat, err, tok, cost] = await Promise.all(
    ['volume', 'latency', 'errors', 'tokens', 'cost'].map((e) => post(`traffic-cost/${e}`, body, { signal })));
  const v = vol.summary;
  $('overview-cards').replaceChildren(
    card('Traces', 'volume.count', v, vol.previous_summary, 'count', count, {},
      el('span', {}, metric('volume.ok_count', v.ok_count, `${count(v.ok_count)} OK`), ' · ', metric('volume.error_count', v.error_count, `${count(v.error_count)} errors`))),
    card('Error rate', 'errors.error_rate', err.summary, err.previous_summary, 'error_rate', pct, { rate: true, bad: true }),
    card('Latency p50', 'latency.p50_latency', lat.summary, lat.previous_summary, 'p50_latency', ms, { bad: true }),
    card('Latency p90', 'latency.p90_latency', lat.summary, lat.previous_summary, 'p90_latency', ms, { bad: true }),
    card('Latency p99', 'latency.p99_latency', lat.summary, lat.previous_summary, 'p99_latency', ms, { bad: true }),
    card('Tokens', 'tokens.total_tokens', tok.summary, tok.previous_summary, 'total_tokens', count, {},
      el('span', {}, metric('tokens.input_tokens', tok.summary.input_tokens, `${count(tok.summary.input_tokens)} in`), ' · ', metric('tokens.output_tokens', tok.summary.output_tokens, `${count(tok.summary.output_tokens)} out`))),
    card('Cost', 'cost.total_cost', cost.summary, cost.previous_summary, 'total_cost', usd, { bad: true }),
  );
  const points = vol.time_series.map((p) => ({ ...p, other: p.count - p.ok_count - p.error_count }));
  const pick = (p, i) => {
    const next = i + 1 < vol.time_series.length ? vol.time_series[i + 1].time_bucket : series.end_time;
    const start = Math.max(p.time_bucket, series.start_time);
    state.slice = `timestamp_ms >= ${start} AND timestamp_ms < ${next}`;
    writeState(state, true);
    $('slice').value = state.slice;
    correlations(bodies().base, controller.signal).catch((e) => failed('correlations', e));
    $('correlations').scrollIntoView({ block: 'start' });
  };
  $('overview-charts').replaceChildren(
    chart(points, [{ key: 'ok_count', label: 'OK', color: 'var(--ok)' }, { key: 'error_count', label: 'Error', color: 'var(--err)' }, { key: 'other', label: 'Other', color: '#9aa5b1' }],
      { title: 'Traces per bucket (click a bar to explain it)', kind: 'stack', fmt: count, label: bucketLabel, onPick: pick }),
    chart(lat.time_series, [{ key: 'p50_latency', label: 'p50' }, { key: 'p90_latency', label: 'p90' }, { key: 'p99_latency', label: 'p99' }],
      { title: 'Latency', fmt: ms, label: bucketLabel }),
    chart(err.time_series, [{ key: 'error_rate', label: 'Error rate', color: 'var(--err)' }], { title: 'Error rate', fmt: pct, label: bucketLabel }),
    chart(tok.time_series, [{ key: 'input_tokens', label: 'Input' }, { key: 'output_tokens', label: 'Output' }], { title: 'Tokens', kind: 'stack', fmt: count, label: bucketLabel }),
  );
  $('cost-by-model').replaceChildren(cost.by_model.length ? el('div', { class: 'table-wrap' }, el('h3', { text: 'Cost by model' }), el('table', { id: 'cost-table' },
    el('thead', {}, el('tr', {}, ['Model', 'Provider', 'Spans', 'Input', 'Output', 'Total'].map((h, i) => el('th', { class: i < 2 ? 'text' : null, scope: 'col', text: h })))),
    el('tbody', {}, cost.by_model.map((m) => el('tr', { dataset: { model: m.model_name ?? '' } },
      el('td', { text: m.model_name ?? '(none)' }), el('td', { class: 'text', text: m.model_provider ?? '' }),
      el('td', {}, metric('span_count', m.span_count, count(m.span_count))), el('td', {}, metric('input_cost', m.input_cost, usd(m.input_cost))),
      el('td', {}, metric('output_cost', m.output_cost, usd(m.output_cost))), el('td', {}, metric('total_cost', m.total_cost, usd(m.total_cost)))))))) : '');
  setState('overview', v.count ? 'ready' : 'empty', v.count ? '' : 'No traces in this window. Try a longer window or another experiment.');
}

// ------------------------------------------------------------------ quality
function qualityCard(m) {
  const s = m.summary;
  const name = m.assessment_name;
  const head = el('h3', {}, name, ' ', el('small', { text: `${m.assessment_type} · ${m.sources.join(', ')}` }));
  const judge = el('div', { class: 'sub' }, metric('error_count', s.error_count, `${count(s.error_count)} judge failures`));
  let body;
  if (m.assessment_type === 'boolean') {
    body = [
      el('div', { class: 'value' }, metric('failure_rate', s.failure_rate, pct(s.failure_rate)), el('small', { text: ' failing' })),
      el('div', { class: 'sub' }, metric('pass_count', s.pass_count, `${count(s.pass_count)} pass`), ' · ', metric('failure_count', s.failure_count, `${count(s.failure_count)} fail`), ' · ', metric('total_count', s.total_count, `${count(s.total_count)} values`)),
      chart(m.time_series, [{ key: 'failure_rate', label: 'Failure rate', color: 'var(--err)' }], { title: 'Failure rate', fmt: pct, label: bucketLabel }),
    ];
  } else if (m.assessment_type === 'numeric') {
    body = [
      el('div', { class: 'value' }, metric('avg_value', s.avg_value, num(s.avg_value)), el('small', { text: ' average' })),
      el('div', { class: 'sub' }, ['p50_value', 'p90_value', 'p99_value'].map((k, i) => [i ? ' · ' : '', metric(k, s[k], `${k.slice(0, 3)} ${num(s[k])}`)]), ' · ', metric('total_count', s.total_count, `${count(s.total_count)} values`)),
      chart(m.time_series, [{ key: 'p50_value', label: 'p50' }, { key: 'avg_value', label: 'avg' }], { title: 'Values', fmt: num, label: bucketLabel }),
    ];
  } else {
    body = [el('div', { class: 'sub' }, metric('total_count', s.total_count, `${count(s.total_count)} values`), ' · ', metric('unique_values', s.unique_values, `${count(s.unique_values)} distinct`)),
      topBars(s.top_values, s.other_count, s.total_count)];
  }
  return el('div', { class: 'card', dataset: { assessment: name } }, head, body, judge);
}

function topBars(top, other, total) {
  const rows = top.map((t) => el('div', { class: 'bar', dataset: { value: t.value } },
    el('span', { class: 'name', title: t.value, text: t.value }),
    el('span', { class: 'track' }, el('span', { class: 'fill', style: `width:${t.percentage ?? 0}%` })),
    el('span', {}, metric('count', t.count, count(t.count)), ' ', el('small', { text: pct(t.percentage) }))));
  if (other > 0) {
    const share = total ? (100 * other) / total : 0;
    rows.push(el('div', { class: 'bar other', dataset: { value: '(other)' } }, el('span', { class: 'name', text: 'other' }),
      el('span', { class: 'track' }, el('span', { class: 'fill', style: `width:${share}%` })),
      el('span', {}, metric('other_count', other, count(other)), ' ', el('small', { text: pct(share) }))));
  }
  return el('div', { class: 'bars' }, rows);
}

async function quality(series, signal) {
  setState('quality', 'loading');
  const { time_bucket: _b, timezone: _z, ...scope } = series;
  const { data } = await post('assessments/discovery', scope, { signal });
  const metrics = await Promise.all(data.map((a) => post('assessments/metrics', { ...series, assessment_name: a.assessment_name, limit: 5 }, { signal })));
  $('quality-cards').replaceChildren(...metrics.map(qualityCard));
  setState('quality', data.length ? 'ready' : 'empty', data.length ? '' : 'No feedback on the traces in this window.');
}

// ------------------------------------------------------------------ tools
const TOOL_COLUMNS = [
  ['tool_name', 'Tool', String], ['invocation_count', 'Calls', count], ['trace_count', 'Traces', count],
  ['error_rate', 'Error rate', pct], ['p50_latency', 'p50', ms], ['p90_latency', 'p90', ms], ['p99_latency', 'p99', ms],
];
let toolRows = [];

function renderTools() {
  const { sort, dir } = state;
  const sign = dir === 'asc' ? 1 : -1;
  const rows = [...toolRows].sort((a, b) => {
    const x = a[sort], y = b[sort];
    if (x === y) return a.tool_name < b.tool_name ? -1 : 1;
    if (x === null) return 1;
    if (y === null) return -1;
    return (x < y ? -1 : 1) * sign;
  });
  const head = TOOL_COLUMNS.map(([key, label], i) => el('th', { scope: 'col', class: i ? null : 'text', 'aria-sort': key === sort ? (dir === 'asc' ? 'ascending' : 'descending') : null },
    el('button', { type: 'button', dataset: { sort: key }, onclick: () => {
      state = { ...state, sort: key, dir: key === sort && dir === 'desc' ? 'asc' : 'desc' };
      writeState(state, true);
      renderTools();
      document.querySelector(`#tools-table th button[data-sort="${key}"]`).focus();
    } }, label)));
  head.push(el('th', { scope: 'col', class: 'text', text: 'Calls per bucket' }));
  $('tools-table').replaceChildren(el('table', {}, el('thead', {}, el('tr', {}, head)),
    el('tbody', {}, rows.map((t) => el('tr', { dataset: { tool: t.tool_name } },
      TOOL_COLUMNS.map(([key, , fmt], i) => el('td', { class: i ? null : 'text' }, i ? metric(key, t[key], fmt(t[key])) : t.tool_name)),
      el('td', { class: 'text' }, sparkline(t.time_series.volume.map((p) => p.invocation_count), { title: `${t.tool_name}: calls per ${state.bucket}` })))))));
}

async function tools(series, signal) {
  setState('tools', 'loading');
  // The table shows each tool's overall latencies and its calls per bucket: the latency per
  // bucket, the costliest part over long windows, is not asked for.
  const { data } = await post('tools/discovery', { ...series, include_latency_series: false }, { signal });
  toolRows = data;
  renderTools();
  setState('tools', data.length ? 'ready' : 'empty', data.length ? '' : 'No tool calls in this window.');
}

// ------------------------------------------------------------------ tags
async function tags(base, signal) {
  setState('tags', 'loading');
  const { data } = await post('tags/discovery', base, { signal });
  if (!data.some((t) => t.tag_key === state.tag)) state.tag = data.length ? data[0].tag_key : '';
  const showKey = async (key, push) => {
    state.tag = key;
    writeState(state, push);
    for (const row of $('tag-keys').querySelectorAll('tr[data-tag]')) row.classList.toggle('selected', row.dataset.tag === key);
    if (!key) { $('tag-values').replaceChildren(); return; }
    $('tag-values').replaceChildren(el('p', { class: 'state', text: 'Loading…' }));
    const m = (await post('tags/metrics', { ...base, tag_key: key, limit: 10 }, { signal })).data;
    $('tag-values').replaceChildren(el('h3', {}, 'Top values of ', el('code', { text: key }), ' ', el('small', {}, metric('trace_count', m.trace_count, `${count(m.trace_count)} traces`), ' · ', metric('unique_values', m.unique_values, `${count(m.unique_values)} values`))),
      topBars(m.top_values, m.other_count, m.trace_count));
  };
  $('tag-keys').replaceChildren(el('table', {}, el('thead', {}, el('tr', {}, el('th', { scope: 'col', text: 'Key' }), el('th', { scope: 'col', text: 'Traces' }), el('th', { scope: 'col', text: 'Values' }))),
    el('tbody', {}, data.map((t) => el('tr', { dataset: { tag: t.tag_key } },
      el('td', {}, el('button', { type: 'button', class: 'link', onclick: () => showKey(t.tag_key, true).catch((e) => failed('tags', e)) }, t.tag_key)),
      el('td', {}, metric('trace_count', t.trace_count, count(t.trace_count))), el('td', {}, metric('unique_values', t.unique_values, count(t.unique_values))))))));
  await showKey(state.tag, false);
  setState('tags', data.length ? 'ready' : 'empty', data.length ? '' : 'No tags on the traces in this window.');
}

// ------------------------------------------------------------------ correlations
// A correlation row as a dimension of dimensions/calculate-npmi (API.md §4.5).
function dimensionOf(row) {
  const [key, ...rest] = row.value.split('=');
  switch (row.dimension) {
    case 'status': return { name: 'status', parameters: { value: row.value } };
    case 'span_type': return { name: 'span.type', parameters: { value: row.value } };
    case 'tool': return { name: `tools.${row.value}`, parameters: { value: 'used' } };
    case 'tool_error': return { name: `tools.${row.value}`, parameters: { value: 'error' } };
    case 'tag': return { name: `tags.${key}`, parameters: { value: rest.join('=') } };
    default: return { name: `assessment.${key}`, parameters: { value: rest.join('=') } };
  }
}

// The slice as a dimension when it is one status clause (the default: errors), else null.
function sliceDimension(slice) {
  const m = /^\s*(?:trace\.|attributes\.)?status\s*=\s*['"]([A-Z_]+)['"]\s*$/i.exec(slice);
  return m ? { name: 'status', parameters: { value: m[1] } } : null;
}

function tracesUrl(filterString) {
  const base = state.mlflow.endsWith('/') ? state.mlflow : `${state.mlflow}/`;
  return `${base}#/experiments/${encodeURIComponent(state.experiment)}/traces`;
}

// dimensions/calculate-npmi for a correlation row and the slice (a dimension: one status clause),
// or null when it fails.
async function pairOf(base, row, sliceDim, signal) {
  try {
    const pair = await post('dimensions/calculate-npmi', {
      experiment_ids: base.experiment_ids, start_time: base.start_time, end_time: base.end_time,
      ...(base.filter_string ? { filter_string: base.filter_string } : {}),
      dimension1: dimensionOf(row), dimension2: sliceDim,
    }, { signal });
    return pair;
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    return null;
  }
}

function npmiDetail(row, pair, link, scope, pending = false) {
  const n = scope.total_count;
  const n1 = scope.slice_count;
  // Traces with the value: percentage_of_total is 100 * n2 / n, so rounding gives n2 back.
  const n2 = Math.round((row.percentage_of_total * n) / 100);
  const n11 = row.trace_count;
  const cell = (v, label) => el('td', {}, metric(label, v, count(v)));
  const box = $('npmi-detail');
  box.replaceChildren(
    el('h3', {}, 'NPMI of the slice and ', el('code', { text: `${row.dimension}: ${row.value}` })),
    el('div', { class: 'table-wrap' }, el('table', { 'aria-label': 'Contingency table' },
      el('thead', {}, el('tr', {}, el('th', {}), el('th', { scope: 'col', text: 'has the value' }), el('th', { scope: 'col', text: 'does not' }), el('th', { scope: 'col', text: 'total' }))),
      el('tbody', {},
        el('tr', {}, el('th', { scope: 'row', text: 'in the slice' }), cell(n11, 'n11'), cell(n1 - n11, 'n10'), cell(n1, 'slice_count')),
        el('tr', {}, el('th', { scope: 'row', text: 'not in the slice' }), cell(n2 - n11, 'n01'), cell(n - n1 - n2 + n11, 'n00'), cell(n - n1, 'rest')),
        el('tr', {}, el('th', { scope: 'row', text: 'total' }), cell(n2, 'value_count'), cell(n - n2, 'without'), cell(n, 'total_count'))))),
    el('p', {}, 'NPMI ', metric('npmi_score', row.npmi_score, num(row.npmi_score)), ' · smoothed ', metric('npmi_smoothed', row.npmi_smoothed, num(row.npmi_smoothed)), ` · ${row.strength ?? 'no'} correlation`),
    pending ? el('p', { class: 'muted', dataset: { pair: 'pending' }, text: 'dimensions/calculate-npmi for the same pair: …' }) : null,
    pair ? el('p', { class: 'muted', dataset: { pair: 'done' } }, 'dimensions/calculate-npmi for the same pair: NPMI ', metric('pair_npmi', pair.correlation.npmi_score, num(pair.correlation.npmi_score)), `, ${count(pair.intersection.count)} traces in both.`) : null,
    link ? el('p', {}, 'Traces in the slice with this value: ', el('code', { class: 'filter', text: link }), ' ',
      el('button', { type: 'button', onclick: () => navigator.clipboard && navigator.clipboard.writeText(link) }, 'Copy filter')) : el('p', { class: 'muted', text: 'MLflow search syntax cannot express this value.' }));
  box.focus();
}

// Values seen in fewer slice traces are left out: NPMI of a value seen once or twice is noise
// (docs/API.md, min_count), and they are most of the rows to score.
const MIN_COUNT = 5;

async function correlations(base, signal) {
  setState('correlations', 'loading');
  $('slice-error').hidden = true;
  $('npmi-detail').replaceChildren();
  const slice = [state.filter, state.slice].filter(Boolean).join(' AND ');
  const body = { experiment_ids: base.experiment_ids, start_time: base.start_time, end_time: base.end_time, filter_string: slice, limit: 10, min_count: MIN_COUNT };
  let result;
  try {
    result = await post('correlations', body, { signal });
  } catch (err) {
    if (err instanceof ApiError && err.status === 400) {
      $('slice-error').textContent = err.message;
      $('slice-error').hidden = false;
      setState('correlations', 'error', 'Fix the slice to see its correlations.');
      return;
    }
    throw err;
  }
  const table = el('table', { dataset: { sliceCount: result.slice_count, totalCount: result.total_count } },
    el('caption', { class: 'muted' }, metric('slice_count', result.slice_count, `${count(result.slice_count)} traces in the slice`), ' of ', metric('total_count', result.total_count, `${count(result.total_count)}`), ` in the window; values seen in ${MIN_COUNT} or more slice traces`),
    el('thead', {}, el('tr', {}, ['Dimension', 'Value', 'Traces', '% of slice', '% of all', 'NPMI', 'Smoothed', 'Strength', ''].map((h, i) => el('th', { scope: 'col', class: i < 2 ? 'text' : null, text: h })))),
    el('tbody'));
  const tbody = table.querySelector('tbody');
  // The window is part of each link's filter: the link opens exactly the traces counted here.
  const inWindow = `timestamp_ms >= ${base.start_time} AND timestamp_ms < ${base.end_time}`;
  result.data.forEach((row) => {
    const link = row.filter_string ? [inWindow, slice, row.filter_string].join(' AND ') : null;
    // calculate-npmi for the pair only when its detail is opened: one call per row would
    // cost as much as the whole section.
    const openDetail = () => {
      const sliceDim = sliceDimension(state.slice);
      npmiDetail(row, null, link, result, Boolean(sliceDim));
      if (!sliceDim) return;
      pairOf(base, row, sliceDim, signal)
        .then((pair) => npmiDetail(row, pair, link, result))
        .catch(() => {});
    };
    tbody.append(el('tr', { dataset: { dimension: row.dimension, value: row.value } },
      el('td', { class: 'text', text: row.dimension }), el('td', { class: 'text', text: row.value }),
      el('td', {}, metric('trace_count', row.trace_count, count(row.trace_count))),
      el('td', {}, metric('percentage_of_slice', row.percentage_of_slice, pct(row.percentage_of_slice))),
      el('td', {}, metric('percentage_of_total', row.percentage_of_total, pct(row.percentage_of_total))),
      el('td', {}, metric('npmi_score', row.npmi_score, num(row.npmi_score))),
      el('td', {}, metric('npmi_smoothed', row.npmi_smoothed, num(row.npmi_smoothed))),
      el('td', { text: row.strength ?? '–' }),
      el('td', { class: 'text' },
        link ? el('a', { class: 'traces-link', href: tracesUrl(link), target: '_blank', rel: 'noopener', dataset: { filterString: link }, title: `MLflow's trace list; filter: ${link}` }, 'Traces') : '',
        ' ', el('button', { type: 'button', class: 'link npmi-link', onclick: openDetail }, 'NPMI detail'))));
  });
  $('correlation-table').replaceChildren(table);
  const empty = !result.data.length;
  setState('correlations', empty ? 'empty' : 'ready', empty ? (result.slice_count ? `Nothing seen in ${MIN_COUNT} or more of the slice's traces goes with it more than with the rest.` : 'No traces in this slice.') : '');
}

// ------------------------------------------------------------------ wiring
function fillTimezones() {
  const zones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];
  $('timezones').replaceChildren(...['UTC', ...zones].map((z) => el('option', { value: z })));
}

function apply(push = true) {
  const next = scopeFromForm();
  if (!$('bucket').dataset.touched) next.bucket = DEFAULT_BUCKET[next.window];
  // The same scope already loading (Enter commits a field and submits the form): once is enough.
  if (document.body.dataset.state === 'loading' && JSON.stringify(next) === JSON.stringify(state)) return;
  state = next;
  writeState(state, push);
  showScope();
  refresh();
}

async function start() {
  fillTimezones();
  showScope();
  // A view with its experiment in the URL (shared, reloaded, bookmarked) asks for its numbers at
  // once, beside the list of experiments, instead of one round trip after it. Should the list
  // not hold that experiment, the view is asked for again with the experiment the list picks.
  const requested = state.experiment;
  const listed = loadExperiments();
  const early = requested ? refresh(listed) : null;
  try {
    if (!(await listed)) {
      if (controller) controller.abort();
      for (const id of ['overview', 'quality', 'tools', 'tags', 'correlations']) setState(id, 'empty', 'No experiments in the tracking database yet.');
      document.body.dataset.state = 'ready';
      return;
    }
  } catch (err) {
    if (controller) controller.abort();
    for (const id of ['overview', 'quality', 'tools', 'tags', 'correlations']) failed(id, err);
    document.body.dataset.state = 'ready';
    return;
  }
  if (new URLSearchParams(location.search).has('bucket')) $('bucket').dataset.touched = '1';
  writeState(state, false);
  showScope();
  $('scope').addEventListener('submit', (e) => { e.preventDefault(); apply(); });
  for (const id of ['experiment', 'window', 'bucket']) {
    $(id).addEventListener('change', () => {
      if (id === 'bucket') $('bucket').dataset.touched = '1';
      $('custom-range').hidden = $('window').value !== 'custom';
      if ($('window').value !== 'custom' || id !== 'window') apply();
    });
  }
  $('timezone').addEventListener('change', () => apply());
  $('slice-form').addEventListener('submit', (e) => {
    e.preventDefault();
    state.slice = $('slice').value.trim() || ERRORS_SLICE;
    writeState(state, true);
    correlations(bodies().base, controller.signal).catch((err) => failed('correlations', err));
  });
  $('slice-errors').addEventListener('click', () => {
    state.slice = ERRORS_SLICE;
    $('slice').value = ERRORS_SLICE;
    writeState(state, true);
    correlations(bodies().base, controller.signal).catch((err) => failed('correlations', err));
  });
  window.addEventListener('popstate', () => { state = readState(); showScope(); refresh(); });
  await (early && state.experiment === requested ? early : refresh());
}

start();
