// The Signet console: the hub as its users see it, and the reference browser client.
//
// Everything it shows goes into the page as text (textContent, cloned templates), never as HTML;
// the Content-Security-Policy enforces that with Trusted Types. Tokens live in the Session
// object's memory only: nothing goes to localStorage, sessionStorage or cookies, so a reload
// logs out. The message key that signs commands comes with the login (and refresh) answer only:
// the access token, which goes into WebSocket URLs, never yields it on its own.

import { HubConnection, Session, SignetError, State } from '/js/signet.js';
import { startAdmin, stopAdmin } from '/console/admin.js';

const HUB_URL = '/hubs/home';
const COMMAND_LABELS = {
  LOCK: 'Lock',
  UNLOCK: 'Unlock',
  OPEN_DOOR: 'Open door',
  LIGHT_ON: 'Light on',
  LIGHT_OFF: 'Light off',
};
const MAX_LOG_ENTRIES = 100;
const ADMIN_REFRESH_MS = 10_000;

const $ = (id) => {
  const element = document.getElementById(id);
  if (element === null) throw new Error(`the page has no #${id}`);
  return element;
};

/** What the console knows; one login at a time. */
const app = {
  session: null,
  connection: null,
  me: null,
  isAdmin: false,
  devices: new Map(),
  /** The last `state` telemetry per device, kept across reconnections. */
  lastState: new Map(),
  pendingCommands: new Map(),
  telemetrySubscription: null,
  timers: [],
  adminTimer: null,
};

// ---- words for errors ---------------------------------------------------------------------

const ENVELOPE_WORDS = {
  malformed: 'the signed command was malformed',
  lifetime_too_long: 'the signed command was valid for too long',
  not_yet_valid: "the signed command was dated in the future (is this computer's clock right?)",
  expired: "the signed command had expired (is this computer's clock right?)",
  bad_signature: 'its signature did not match (the session key may have changed: log in again)',
  replayed_nonce: 'the same signed command was already used once',
  nonce_store_unavailable: 'the server cannot take more signed commands right now',
  replay_check_unavailable: 'the server cannot check signed commands for replays right now (its cluster store is unreachable); try again shortly',
  nonce_quota_exceeded: 'this session sent too many signed commands in the last minute; wait a little',
};

/** A sentence for a person, from any error this console meets. */
export function describeError(error) {
  if (!(error instanceof SignetError)) return `Something went wrong: ${error?.message ?? error}`;
  switch (error.code) {
    case 'invalid_credentials':
      return 'Wrong username or password.';
    case 'rate_limited':
      return `Too many failed logins. Try again in ${error.retryAfterSecs ?? 60} seconds.`;
    case 'network':
      return 'Cannot reach the server. Check your connection; the console keeps trying.';
    case 'invalid_refresh_token':
    case 'refresh_token_reused':
      return 'Your session has ended. Please log in again.';
    case 'unauthorized':
    case 'invalid_token':
      return 'The server no longer accepts your login (expired or revoked). Please log in again.';
    case 'forbidden':
      return 'You are not allowed to do this.';
    case 'envelope_rejected':
      return `The server refused the signed command: ${ENVELOPE_WORDS[error.envelopeCode] ?? error.envelopeCode}.`;
    case 'closed':
      return describeClose(error.message);
    case 'hub_error': {
      const detail = /HubException: (.*)$/.exec(error.message)?.[1] ?? error.message;
      if (detail === 'device offline') return 'The device is offline.';
      if (detail === 'device not found') return 'No such device among yours.';
      return `The server refused: ${detail}`;
    }
    default:
      return error.message;
  }
}

function describeClose(reason) {
  if (/Disconnected by an administrator/i.test(reason)) {
    return 'An administrator disconnected you. Log in again to continue.';
  }
  if (/^Authentication revoked: (.*)$/i.test(reason)) {
    const why = /^Authentication revoked: (.*)$/i.exec(reason)[1];
    return `Your access was revoked (${why}). Log in again to continue.`;
  }
  if (/Authentication expired/i.test(reason)) return 'Your token expired; reconnecting with a fresh one…';
  if (/shutting down/i.test(reason)) return 'The server is restarting; reconnecting…';
  return `The connection ended: ${reason}`;
}

// ---- small view helpers -------------------------------------------------------------------

function clock(date = new Date()) {
  return date.toLocaleTimeString([], { hour12: false });
}

/** Adds a line to one of the logs (newest first), trimming old ones. */
function logLine(listId, text, tone) {
  const list = $(listId);
  const item = document.createElement('li');
  if (tone) item.dataset.tone = tone;
  const time = document.createElement('time');
  time.textContent = clock();
  const body = document.createElement('span');
  body.textContent = text;
  item.append(time, body);
  list.prepend(item);
  while (list.children.length > MAX_LOG_ENTRIES) list.lastElementChild.remove();
  const empty = document.getElementById(`${listId}-empty`);
  if (empty) empty.hidden = true;
}

const activity = (text, tone) => logLine('activity', text, tone);

function showNotice(text, { error = true } = {}) {
  $('notice-text').textContent = text;
  $('notice').classList.toggle('error', error);
  $('notice').hidden = false;
}

function hideNotice() {
  $('notice').hidden = true;
}

function setResult(element, text, tone) {
  element.textContent = text;
  element.dataset.tone = tone;
}

/** `{lock: "unlocked", doorOpenings: 2}` as `lock unlocked, doorOpenings 2`. */
function describeValues(value) {
  if (value === null || value === undefined) return '';
  if (typeof value !== 'object') return String(value);
  return Object.entries(value)
    .map(([key, v]) => `${key} ${typeof v === 'object' && v !== null ? JSON.stringify(v) : v}`)
    .join(', ');
}

// ---- logging in and out -------------------------------------------------------------------

async function onLogin(event) {
  event.preventDefault();
  const username = $('username').value.trim();
  const password = $('password').value;
  const error = $('login-error');
  error.hidden = true;
  $('login-submit').disabled = true;
  const session = new Session();
  try {
    await session.login(username, password);
    $('password').value = '';
    await enter(session);
  } catch (err) {
    error.textContent = describeError(err);
    error.hidden = false;
  } finally {
    $('login-submit').disabled = false;
  }
}

async function enter(session) {
  app.session = session;
  app.me = await session.api('/api/auth/me');
  app.isAdmin = app.me.roles.includes('admin');
  $('who').textContent = `${app.me.username}${app.isAdmin ? ' (admin)' : ''}`;
  $('admin-panel').hidden = !app.isAdmin;
  if (app.isAdmin) startAdmin(session, describeError);
  $('login-view').hidden = true;
  $('app-view').hidden = false;
  $('status').hidden = false;
  hideNotice();

  const connection = new HubConnection({ url: HUB_URL, session });
  app.connection = connection;
  connection.on('SystemMessage', (text) => {
    logLine('messages', String(text));
    activity(`System message: ${text}`);
  });
  connection.on('DeviceStatus', onDeviceStatus);
  connection.on('CommandResult', onCommandResult);
  // Telemetry also arrives through StreamTelemetry, which admins get for every device.
  connection.on('Telemetry', () => {});
  connection.onState(onConnectionState);
  app.timers.push(setInterval(updateCountdown, 1000));
  try {
    await connection.start();
  } catch (err) {
    showNotice(describeError(err));
    activity(`Cannot connect: ${describeError(err)}`, 'error');
  }
}

async function onLogout() {
  const { session, connection } = app;
  leave();
  $('login-view').hidden = false;
  hideNotice();
  try {
    await connection?.stop();
    await session?.logout();
  } catch (err) {
    showNotice(`Logged out here, but the server did not confirm: ${describeError(err)}`);
  }
}

/** Forgets everything about the current login and clears the page. */
function leave() {
  for (const timer of app.timers) clearInterval(timer);
  app.timers = [];
  clearInterval(app.adminTimer);
  app.adminTimer = null;
  stopAdmin();
  app.telemetrySubscription?.dispose();
  app.telemetrySubscription = null;
  app.session = null;
  app.connection = null;
  app.me = null;
  app.devices.clear();
  app.lastState.clear();
  app.pendingCommands.clear();
  $('app-view').hidden = true;
  $('status').hidden = true;
  for (const id of ['devices', 'telemetry', 'messages', 'activity', 'users']) $(id).replaceChildren();
  for (const id of ['devices-empty', 'telemetry-empty', 'messages-empty']) $(id).hidden = false;
  $('users-count').textContent = '–';
}

// ---- the connection -----------------------------------------------------------------------

const STATE_WORDS = {
  [State.Connecting]: 'Connecting…',
  [State.Connected]: 'Connected',
  [State.Reconnecting]: 'Reconnecting…',
  [State.Disconnected]: 'Disconnected',
};

function onConnectionState({ state, previous, error }) {
  const badge = $('connection-state');
  badge.textContent = STATE_WORDS[state] ?? state;
  badge.dataset.state = state;
  updateCountdown();
  if (state === State.Connected && previous !== State.Connected) {
    if (previous === State.Reconnecting) {
      activity('Reconnected.', 'ok');
      showNotice('Reconnected.', { error: false });
      setTimeout(hideNotice, 4000);
    } else {
      activity('Connected to the home hub.', 'ok');
    }
    loadHome();
  } else if (state === State.Connected && error === undefined) {
    activity(`Token renewed in band; valid until ${clock(new Date(app.connection.tokenExpiresAt))}.`);
  } else if (state === State.Connected && error) {
    activity(`Token renewal failed: ${describeError(error)}`, 'error');
  } else if (state === State.Reconnecting && error) {
    app.telemetrySubscription = null;
    const words = describeError(error);
    showNotice(words, { error: false });
    activity(words);
    markAllOffline();
  } else if (state === State.Disconnected && error) {
    // The server ended the connection for good (kicked, revoked) or the session cannot be
    // renewed: say so, and offer the login form again.
    app.telemetrySubscription = null;
    leave();
    $('login-view').hidden = false;
    showNotice(describeError(error));
  }
}

function updateCountdown() {
  const element = $('token-countdown');
  const expiresAt = app.connection?.tokenExpiresAt;
  if (!expiresAt || app.connection.state !== State.Connected) {
    element.textContent = '';
    return;
  }
  const seconds = Math.max(0, Math.round((expiresAt - Date.now()) / 1000));
  const minutes = Math.floor(seconds / 60);
  element.textContent = `token expires in ${minutes}:${String(seconds % 60).padStart(2, '0')}`;
}

/** After every (re)connection: devices, the telemetry stream, the admin figures. */
async function loadHome() {
  const connection = app.connection;
  disableCommands(false);
  try {
    const devices = await connection.invoke('ListDevices');
    renderDevices(devices);
  } catch (err) {
    activity(`Cannot list devices: ${describeError(err)}`, 'error');
  }
  app.telemetrySubscription?.dispose();
  app.telemetrySubscription = connection.stream('StreamTelemetry').subscribe({
    next: onTelemetry,
    error: (err) => {
      if (err.code !== 'closed' && err.code !== 'network') activity(`Telemetry stopped: ${describeError(err)}`, 'error');
    },
  });
  if (app.isAdmin) {
    refreshUsers();
    app.adminTimer ??= setInterval(() => {
      if (app.connection?.state === State.Connected) refreshUsers();
    }, ADMIN_REFRESH_MS);
  }
}

// ---- devices ------------------------------------------------------------------------------

function renderDevices(devices) {
  const list = $('devices');
  list.replaceChildren();
  app.devices.clear();
  $('devices-empty').hidden = devices.length > 0;
  const template = $('device-template');
  for (const device of devices) {
    const item = template.content.firstElementChild.cloneNode(true);
    item.dataset.deviceId = device.deviceId;
    item.querySelector('.device-name').textContent = device.name;
    item.querySelector('.device-state').textContent = app.lastState.get(device.deviceId) ?? '';
    for (const button of item.querySelectorAll('button[data-command]')) {
      button.addEventListener('click', () => sendCommand(device.deviceId, button.dataset.command));
    }
    list.append(item);
    app.devices.set(device.deviceId, { ...device, element: item });
    setOnline(device.deviceId, device.online);
  }
}

function setOnline(deviceId, online) {
  const device = app.devices.get(deviceId);
  if (!device) return false;
  device.online = online;
  const badge = device.element.querySelector('.presence');
  badge.dataset.online = String(online);
  badge.textContent = online ? 'online' : 'offline';
  for (const button of device.element.querySelectorAll('button[data-command]')) button.disabled = !online;
  return true;
}

function markAllOffline() {
  for (const id of app.devices.keys()) setOnline(id, false);
}

function disableCommands(disabled) {
  for (const button of document.querySelectorAll('#devices button[data-command]')) button.disabled = disabled;
}

function onDeviceStatus({ deviceId, online }) {
  const name = app.devices.get(deviceId)?.name ?? deviceId;
  if (!setOnline(deviceId, online)) {
    // A device this page has not listed yet (just created): list again.
    loadDevicesQuietly();
  }
  activity(`${name} is ${online ? 'online' : 'offline'}.`, online ? 'ok' : undefined);
}

async function loadDevicesQuietly() {
  try {
    renderDevices(await app.connection.invoke('ListDevices'));
  } catch {
    // The next reconnection lists them again.
  }
}

async function sendCommand(deviceId, command) {
  const device = app.devices.get(deviceId);
  if (!device) return;
  const result = device.element.querySelector('.result');
  const label = COMMAND_LABELS[command] ?? command;
  setResult(result, `${label}: signing and sending…`, 'pending');
  try {
    const { commandId } = await app.connection.invokeSigned('SendCommand', { deviceId, command });
    app.pendingCommands.set(commandId, { deviceId, command, label });
    setResult(result, `${label}: sent, waiting for the device…`, 'pending');
    activity(`${label} sent to ${device.name}.`);
  } catch (err) {
    const words = describeError(err);
    setResult(result, `${label}: ${words}`, 'error');
    activity(`${label} to ${device.name} failed: ${words}`, 'error');
  }
}

function onCommandResult({ commandId, deviceId, status, result }) {
  const pending = app.pendingCommands.get(commandId);
  app.pendingCommands.delete(commandId);
  const device = app.devices.get(deviceId);
  const label = pending?.label ?? 'Command';
  const details = describeValues(result);
  const ok = status === 'ok';
  const text = ok
    ? `${label}: done${details ? ` (${details})` : ''}`
    : `${label}: the device answered ${status}${details ? ` (${details})` : ''}`;
  if (device) setResult(device.element.querySelector('.result'), text, ok ? 'ok' : 'error');
  activity(`${device?.name ?? deviceId}: ${text}`, ok ? 'ok' : 'error');
}

function onTelemetry({ deviceId, kind, data, at }) {
  const device = app.devices.get(deviceId);
  const name = device?.name ?? deviceId;
  if (kind === 'state') {
    app.lastState.set(deviceId, describeValues(data));
    if (device) device.element.querySelector('.device-state').textContent = app.lastState.get(deviceId);
  }
  const line = `${name} · ${kind}: ${describeValues(data)}`;
  logLine('telemetry', line);
  const time = $('telemetry').firstElementChild?.querySelector('time');
  if (time && Number.isFinite(at)) time.textContent = clock(new Date(at));
}

// ---- administration -----------------------------------------------------------------------

async function onBroadcast(event) {
  event.preventDefault();
  const input = $('broadcast-text');
  const text = input.value.trim();
  if (!text) return;
  try {
    await app.connection.invoke('BroadcastMessage', text);
    input.value = '';
    $('admin-result').textContent = 'Broadcast sent.';
  } catch (err) {
    $('admin-result').textContent = `Broadcast failed: ${describeError(err)}`;
  }
}

async function refreshUsers() {
  const connection = app.connection;
  try {
    const [count, users] = await Promise.all([
      connection.invoke('GetConnectedUsersCount'),
      connection.invoke('ListConnectedUsers'),
    ]);
    $('users-count').textContent = String(count);
    renderUsers(users);
  } catch (err) {
    $('admin-result').textContent = `Cannot load connected users: ${describeError(err)}`;
  }
}

function renderUsers(users) {
  const list = $('users');
  list.replaceChildren();
  const template = $('user-template');
  for (const user of users) {
    const item = template.content.firstElementChild.cloneNode(true);
    item.dataset.sub = user.sub;
    item.querySelector('.user-name').textContent = user.name ?? user.sub;
    item.querySelector('.user-id').textContent = user.sub;
    item.querySelector('.user-connections').textContent =
      `${user.roles.join(', ')} · ${user.connections} connection${user.connections === 1 ? '' : 's'}`;
    const button = item.querySelector('button');
    if (user.sub === app.me?.sub) button.disabled = true;
    button.addEventListener('click', () => disconnectUser(user.sub, user.name ?? user.sub));
    list.append(item);
  }
}

async function disconnectUser(sub, label = sub) {
  try {
    const closed = await app.connection.invoke('DisconnectUser', sub);
    $('admin-result').textContent = `Disconnected ${label}: ${closed} connection${closed === 1 ? '' : 's'} closed.`;
    activity(`Disconnected ${label} (${closed} connection${closed === 1 ? '' : 's'}).`);
    refreshUsers();
  } catch (err) {
    $('admin-result').textContent = `Disconnect failed: ${describeError(err)}`;
  }
}

function onKick(event) {
  event.preventDefault();
  const id = $('kick-id').value.trim();
  if (id) disconnectUser(id);
}

// ---- wiring -------------------------------------------------------------------------------

function init() {
  $('login-form').addEventListener('submit', onLogin);
  $('logout').addEventListener('click', onLogout);
  $('notice-close').addEventListener('click', hideNotice);
  $('broadcast-form').addEventListener('submit', onBroadcast);
  $('users-refresh').addEventListener('click', refreshUsers);
  $('kick-form').addEventListener('submit', onKick);
  $('username').focus();
}

init();
