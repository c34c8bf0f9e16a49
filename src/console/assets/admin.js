// The console's administration parts, for admins only: the hub at a glance (charts drawn as SVG
// from the server's own samples, `GET /api/admin/stats`), device management (add, showing the
// key once; rotate a key; delete) and revoking a user, all through the public REST API.
//
// Like the rest of the console it writes text only (textContent, attributes), never HTML.

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 300;
const HEIGHT = 90;
const CHARTS = [
  { key: 'connections', title: 'Connections', digits: 0 },
  { key: 'messagesPerSec', title: 'Messages/s', digits: 1 },
  { key: 'invocationsPerSec', title: 'Invocations/s', digits: 1 },
  { key: 'envelopeRejectionsPerSec', title: 'Envelope rejections/s', digits: 2 },
];

const $ = (id) => {
  const element = document.getElementById(id);
  if (element === null) throw new Error(`the page has no #${id}`);
  return element;
};

const svg = (name, attributes = {}) => {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  return element;
};

/** The running admin parts; `null` when nobody is logged in as admin. */
let admin = null;

/**
 * Shows and starts the admin parts for `session` (a logged-in admin's `Session`); `describe`
 * turns an error into a sentence. Stop them with `stopAdmin` when the admin leaves.
 */
export function startAdmin(session, describe) {
  stopAdmin();
  admin = { session, describe, timer: null };
  $('overview-panel').hidden = false;
  $('device-admin').hidden = false;
  buildCharts();
  refreshStats();
  refreshDevices();
}

export function stopAdmin() {
  if (admin?.timer) clearTimeout(admin.timer);
  admin = null;
  for (const id of ['overview-panel', 'device-admin', 'device-key']) $(id).hidden = true;
  $('charts').replaceChildren();
  $('managed-devices').replaceChildren();
  for (const id of ['device-admin-result', 'revoke-result']) $(id).textContent = '';
}

// ---- charts -------------------------------------------------------------------------------

function buildCharts() {
  const template = $('chart-template');
  const charts = $('charts');
  charts.replaceChildren();
  for (const chart of CHARTS) {
    const figure = template.content.firstElementChild.cloneNode(true);
    figure.dataset.key = chart.key;
    figure.querySelector('.chart-title').textContent = chart.title;
    const drawing = svg('svg', {
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      preserveAspectRatio: 'none',
      role: 'img',
      'aria-label': chart.title,
    });
    drawing.append(
      svg('line', { class: 'axis', x1: 0, y1: HEIGHT - 1, x2: WIDTH, y2: HEIGHT - 1 }),
      svg('polygon', { class: 'area', points: '' }),
      svg('polyline', { class: 'line', points: '' }),
      svg('text', { class: 'scale', x: 2, y: 10 }),
    );
    figure.append(drawing);
    charts.append(figure);
  }
}

async function refreshStats() {
  const current = admin;
  if (!current) return;
  let interval = 5;
  try {
    const stats = await current.session.api('/api/admin/stats');
    if (admin !== current) return;
    interval = Math.max(1, stats.intervalSecs);
    drawCharts(stats.points, interval);
  } catch (err) {
    $('charts-hint').textContent = `Cannot load the hub's figures: ${current.describe(err)}`;
  }
  if (admin === current) current.timer = setTimeout(refreshStats, interval * 1000);
}

function drawCharts(points, interval) {
  const minutes = Math.round((points.length * interval) / 60);
  $('charts-hint').textContent = points.length
    ? `The last ${minutes < 1 ? `${points.length * interval} s` : `${minutes} min`}, sampled every ${interval} s by the server.`
    : "Waiting for the server's first samples…";
  for (const chart of CHARTS) {
    const figure = document.querySelector(`.chart[data-key="${chart.key}"]`);
    if (!figure) continue;
    const values = points.map((p) => Number(p[chart.key]) || 0);
    const latest = values.length ? values[values.length - 1] : 0;
    const top = Math.max(1, ...values);
    const step = values.length > 1 ? WIDTH / (values.length - 1) : WIDTH;
    const coords = values.map((v, i) => {
      const x = values.length > 1 ? i * step : WIDTH;
      const y = HEIGHT - 2 - (v / top) * (HEIGHT - 14);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    figure.querySelector('.line').setAttribute('points', coords.join(' '));
    const area = coords.length ? [`0,${HEIGHT - 1}`, ...coords, `${WIDTH},${HEIGHT - 1}`] : [];
    figure.querySelector('.area').setAttribute('points', area.join(' '));
    figure.querySelector('.scale').textContent = `max ${top.toFixed(chart.digits)}`;
    figure.querySelector('.chart-value').textContent = latest.toFixed(chart.digits);
    figure.dataset.points = String(values.length);
    figure.dataset.latest = String(latest);
  }
}

// ---- devices ------------------------------------------------------------------------------

async function refreshDevices() {
  const current = admin;
  if (!current) return;
  try {
    const devices = await current.session.api('/api/devices');
    if (admin === current) renderDevices(devices);
  } catch (err) {
    $('device-admin-result').textContent = `Cannot list devices: ${current.describe(err)}`;
  }
}

function renderDevices(devices) {
  const list = $('managed-devices');
  list.replaceChildren();
  const template = $('managed-device-template');
  for (const device of devices) {
    const item = template.content.firstElementChild.cloneNode(true);
    item.dataset.deviceId = device.deviceId;
    item.querySelector('.managed-name').textContent = device.name;
    item.querySelector('.managed-id').textContent = device.deviceId;
    item.querySelector('[data-action="rotate"]').addEventListener('click', () => rotateKey(device));
    item.querySelector('[data-action="delete"]').addEventListener('click', () => deleteDevice(device));
    list.append(item);
  }
}

/** Shows a device key, which the server will never show again. */
function showKey(title, key) {
  $('device-key-title').textContent = title;
  $('device-key-value').textContent = key;
  $('device-key').hidden = false;
}

function hideKey() {
  $('device-key-value').textContent = '';
  $('device-key').hidden = true;
}

async function onAddDevice(event) {
  event.preventDefault();
  if (!admin) return;
  const name = $('device-add-name').value.trim();
  if (!name) return;
  try {
    const created = await admin.session.api('/api/devices', { method: 'POST', body: { name } });
    $('device-add-name').value = '';
    showKey(`Device “${name}” added (${created.deviceId}).`, created.deviceKey);
    $('device-admin-result').textContent = '';
    refreshDevices();
  } catch (err) {
    $('device-admin-result').textContent = `Cannot add the device: ${admin.describe(err)}`;
  }
}

async function rotateKey(device) {
  if (!admin) return;
  try {
    const rotated = await admin.session.api(`/api/devices/${encodeURIComponent(device.deviceId)}/rotate-key`, {
      method: 'POST',
    });
    showKey(`New key for “${device.name}”; the old one no longer works.`, rotated.deviceKey);
    $('device-admin-result').textContent = '';
  } catch (err) {
    $('device-admin-result').textContent = `Cannot rotate the key: ${admin.describe(err)}`;
  }
}

async function deleteDevice(device) {
  if (!admin) return;
  try {
    await admin.session.api(`/api/devices/${encodeURIComponent(device.deviceId)}`, { method: 'DELETE' });
    hideKey();
    $('device-admin-result').textContent = `Deleted “${device.name}”.`;
    refreshDevices();
  } catch (err) {
    $('device-admin-result').textContent = `Cannot delete the device: ${admin.describe(err)}`;
  }
}

// ---- users --------------------------------------------------------------------------------

async function onRevoke(event) {
  event.preventDefault();
  if (!admin) return;
  const username = $('revoke-username').value.trim();
  if (!username) return;
  try {
    await admin.session.api(`/api/admin/users/${encodeURIComponent(username)}/revoke`, { method: 'POST' });
    $('revoke-username').value = '';
    $('revoke-result').textContent = `Revoked every token of ${username}; their connections are closed.`;
  } catch (err) {
    $('revoke-result').textContent = `Cannot revoke ${username}: ${admin.describe(err)}`;
  }
}

$('device-add-form').addEventListener('submit', onAddDevice);
$('device-key-close').addEventListener('click', hideKey);
$('revoke-form').addEventListener('submit', onRevoke);
