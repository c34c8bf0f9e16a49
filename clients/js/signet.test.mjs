// The client's session and hub connection against a scripted server: a fake fetch for the REST
// and negotiate calls and a fake WebSocket, so every frame the client writes can be checked.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RECORD_SEPARATOR as RS } from './hub-protocol.js';
import { HubConnection, Session, SignetError, State, hubError } from './signet.js';

const BASE = 'http://signet.test';
// 32 bytes of zeros, base64url: a valid message key.
const MESSAGE_KEY = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';

/** A fake server: answers REST calls from `routes` and records each request. */
function fakeFetch(routes) {
  const requests = [];
  const fetchImpl = async (url, init = {}) => {
    const { pathname, searchParams } = new URL(url);
    const request = {
      method: init.method ?? 'GET',
      pathname,
      query: Object.fromEntries(searchParams),
      authorization: init.headers?.Authorization,
      body: init.body ? JSON.parse(init.body) : undefined,
    };
    requests.push(request);
    const route = routes[`${request.method} ${pathname}`];
    if (!route) return new Response('{"error":"not_found","message":"no route"}', { status: 404 });
    const [status, body, headers] = await route(request);
    return new Response(body === undefined ? null : JSON.stringify(body), { status, headers });
  };
  return { fetchImpl, requests };
}

/** A WebSocket double: `sockets` lists every one opened; tests play the server's part. */
function fakeWebSocketClass() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = new URL(url);
      this.readyState = 0;
      this.sent = [];
      this.listeners = { close: [] };
      sockets.push(this);
      queueMicrotask(() => {
        this.readyState = 1;
        this.onopen?.();
      });
    }
    send(text) {
      this.sent.push(text);
    }
    addEventListener(name, listener) {
      this.listeners[name]?.push(listener);
    }
    close(code = 1000) {
      if (this.readyState === 3) return;
      this.readyState = 3;
      queueMicrotask(() => {
        this.onclose?.({ code });
        for (const listener of this.listeners.close) listener({ code });
      });
    }
    /** The server sends `messages` (objects) in one frame. */
    serve(...messages) {
      this.onmessage?.({ data: messages.map((m) => (typeof m === 'string' ? m : JSON.stringify(m)) + RS).join('') });
    }
    /** Frames the client sent, parsed (the handshake included). */
    frames() {
      return this.sent.flatMap((text) => text.split(RS).filter(Boolean).map((part) => JSON.parse(part)));
    }
  }
  return { FakeWebSocket, sockets };
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

async function until(condition, what, timeoutMs = 2000) {
  const started = Date.now();
  while (!condition()) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** A hub whose negotiate answers with connection tokens `ct-1`, `ct-2`, ... */
function scriptedHub({ lifetimeSeconds = 900, negotiate } = {}) {
  let negotiations = 0;
  let logins = 0;
  let refreshes = 0;
  const routes = {
    'POST /api/auth/login': async ({ body }) =>
      body.password === 'right'
        ? [200, { accessToken: `access-${++logins}`, refreshToken: 'refresh-1', expiresIn: 900, messageKey: MESSAGE_KEY }]
        : [401, { error: 'invalid_credentials', message: 'wrong username or password' }],
    'POST /api/auth/refresh': async ({ body }) => {
      refreshes += 1;
      await tick();
      return [200, {
        accessToken: `refreshed-${refreshes}`,
        refreshToken: `${body.refreshToken}+`,
        expiresIn: 900,
        messageKey: MESSAGE_KEY,
      }];
    },
    'POST /hubs/home/negotiate': async (request) => {
      if (negotiate) {
        const answer = await negotiate(request);
        if (answer) return answer;
      }
      negotiations += 1;
      return [200, {
        negotiateVersion: 1,
        connectionId: `cid-${negotiations}`,
        connectionToken: `ct-${negotiations}`,
        tokenLifetimeSeconds: lifetimeSeconds,
        availableTransports: [{ transport: 'WebSockets', transferFormats: ['Text', 'Binary'] }],
      }];
    },
    'POST /hubs/home/refresh': async () => [200, { tokenLifetimeSeconds: 900 }],
  };
  return { routes, refreshCount: () => refreshes };
}

async function connected(options = {}) {
  const hub = scriptedHub(options);
  const { fetchImpl, requests } = fakeFetch(hub.routes);
  const { FakeWebSocket, sockets } = fakeWebSocketClass();
  const session = new Session({ baseUrl: BASE, fetch: fetchImpl });
  await session.login('alice', 'right');
  const connection = new HubConnection({
    url: `${BASE}/hubs/home`,
    session,
    fetch: fetchImpl,
    WebSocket: FakeWebSocket,
    reconnectDelaysMs: [0, 10],
    ...options.connection,
  });
  const started = connection.start();
  await until(() => sockets.length === 1 && sockets[0].sent.length === 1, 'the handshake');
  sockets[0].serve('{}');
  await started;
  return { connection, session, sockets, requests, hub };
}

test('login keeps the tokens in memory and maps a refusal to its code', async () => {
  const { fetchImpl } = fakeFetch(scriptedHub().routes);
  const session = new Session({ baseUrl: BASE, fetch: fetchImpl });
  await assert.rejects(session.login('alice', 'wrong'), (error) => {
    assert.ok(error instanceof SignetError);
    assert.equal(error.code, 'invalid_credentials');
    assert.equal(error.status, 401);
    assert.equal(error.message, 'wrong username or password');
    return true;
  });
  assert.equal(session.signedIn, false);
  await session.login('alice', 'right');
  assert.equal(session.accessToken, 'access-1');
  assert.ok(session.expiresAt > Date.now() + 890_000);
  assert.equal(session.messageKey.extractable, false);
});

test('concurrent refreshes share one request: a refresh token is presented once', async () => {
  const hub = scriptedHub();
  const { fetchImpl, requests } = fakeFetch(hub.routes);
  const session = new Session({ baseUrl: BASE, fetch: fetchImpl });
  await session.login('alice', 'right');
  const tokens = await Promise.all([session.refresh(), session.refresh(), session.freshAccessToken({ force: true })]);
  assert.deepEqual(tokens, ['refreshed-1', 'refreshed-1', 'refreshed-1']);
  assert.equal(requests.filter((r) => r.pathname === '/api/auth/refresh').length, 1);
  await session.refresh();
  const presented = requests.filter((r) => r.pathname === '/api/auth/refresh').map((r) => r.body.refreshToken);
  assert.deepEqual(presented, ['refresh-1', 'refresh-1+']);
});

test('start negotiates with the bearer token and opens the socket with id and access_token', async () => {
  const { connection, sockets, requests } = await connected();
  const negotiate = requests.find((r) => r.pathname === '/hubs/home/negotiate');
  assert.equal(negotiate.authorization, 'Bearer access-1');
  assert.equal(negotiate.query.negotiateVersion, '1');
  const url = sockets[0].url;
  assert.equal(url.protocol, 'ws:');
  assert.equal(url.pathname, '/hubs/home');
  assert.equal(url.searchParams.get('id'), 'ct-1');
  assert.equal(url.searchParams.get('access_token'), 'access-1');
  assert.deepEqual(sockets[0].frames()[0], { protocol: 'json', version: 1 });
  assert.equal(connection.state, State.Connected);
  assert.ok(connection.tokenExpiresAt > Date.now() + 890_000);
  await connection.stop();
  assert.equal(connection.state, State.Disconnected);
});

test('invoke pairs completions by invocation id; errors carry codes', async () => {
  const { connection, sockets } = await connected();
  const socket = sockets[0];
  const echo = connection.invoke('Echo', 'hi');
  const admin = connection.invoke('BroadcastMessage', 'x');
  const signed = connection.invokeSigned('SendCommand', { deviceId: 'd', command: 'LOCK' });
  await until(() => socket.frames().length === 4, 'three invocations');
  const [, first, second, third] = socket.frames();
  assert.deepEqual(first, { type: 1, target: 'Echo', arguments: ['hi'], invocationId: first.invocationId });
  assert.notEqual(first.invocationId, second.invocationId);
  const envelope = third.arguments[0];
  assert.deepEqual(Object.keys(envelope).sort(), ['expiry', 'issuedAt', 'message', 'nonce', 'signature']);
  assert.equal(envelope.message, '{"deviceId":"d","command":"LOCK"}');
  socket.serve(
    { type: 3, invocationId: second.invocationId, error: "Failed to invoke 'BroadcastMessage' because user is unauthorized" },
    { type: 3, invocationId: first.invocationId, result: 'hi' },
    { type: 3, invocationId: third.invocationId, error: "Failed to invoke 'SendCommand': envelope rejected (replayed_nonce)" },
  );
  assert.equal(await echo, 'hi');
  await assert.rejects(admin, { code: 'forbidden' });
  await assert.rejects(signed, { code: 'envelope_rejected', envelopeCode: 'replayed_nonce' });
  await connection.stop();
});

test('on and off route server invocations by target, case-insensitively', async () => {
  const { connection, sockets } = await connected();
  const seen = [];
  const handler = (text) => seen.push(text);
  connection.on('SystemMessage', handler);
  sockets[0].serve({ type: 1, target: 'systemmessage', arguments: ['one'] }, { type: 6 });
  connection.off('SystemMessage', handler);
  sockets[0].serve({ type: 1, target: 'SystemMessage', arguments: ['two'] });
  assert.deepEqual(seen, ['one']);
  await connection.stop();
});

test('a stream delivers items until its completion, and dispose sends CancelInvocation', async () => {
  const { connection, sockets } = await connected();
  const socket = sockets[0];
  const items = [];
  let completed = false;
  connection.stream('Counter', 3, 0).subscribe({ next: (i) => items.push(i), complete: () => { completed = true; } });
  const [, request] = socket.frames();
  assert.deepEqual(request, { type: 4, invocationId: request.invocationId, target: 'Counter', arguments: [3, 0] });
  socket.serve(
    { type: 2, invocationId: request.invocationId, item: 0 },
    { type: 2, invocationId: request.invocationId, item: 1 },
    { type: 3, invocationId: request.invocationId },
  );
  assert.deepEqual(items, [0, 1]);
  assert.ok(completed);

  const subscription = connection.stream('StreamTelemetry').subscribe({ next: () => assert.fail('cancelled') });
  const telemetry = socket.frames().at(-1);
  subscription.dispose();
  assert.deepEqual(socket.frames().at(-1), { type: 5, invocationId: telemetry.invocationId });
  socket.serve({ type: 2, invocationId: telemetry.invocationId, item: 'late' });
  await connection.stop();
});

test('a Close without allowReconnect ends the connection and says why', async () => {
  const { connection, sockets } = await connected();
  const states = [];
  connection.onState((event) => states.push(event));
  const pending = connection.invoke('Whoami');
  sockets[0].serve({ type: 7, error: 'Disconnected by an administrator', allowReconnect: false });
  await assert.rejects(pending, { code: 'closed', allowReconnect: false });
  await until(() => connection.state === State.Disconnected, 'the end');
  const last = states.at(-1);
  assert.equal(last.error.message, 'Disconnected by an administrator');
  assert.equal(sockets.length, 1, 'no reconnection');
});

test('Authentication expired reconnects with a refreshed token', async () => {
  const { connection, sockets, requests } = await connected();
  const states = [];
  connection.onState((event) => states.push(event.state));
  sockets[0].serve({ type: 7, error: 'Authentication expired', allowReconnect: true });
  await until(() => sockets.length === 2 && sockets[1].sent.length === 1, 'a second handshake');
  assert.equal(sockets[1].url.searchParams.get('access_token'), 'refreshed-1');
  assert.equal(sockets[1].url.searchParams.get('id'), 'ct-2');
  assert.equal(requests.filter((r) => r.pathname === '/hubs/home/negotiate').at(-1).authorization, 'Bearer refreshed-1');
  sockets[1].serve('{}');
  await until(() => connection.state === State.Connected, 'reconnected');
  assert.deepEqual(states, [State.Reconnecting, State.Connected]);
  await connection.stop();
});

test('a lost socket reconnects; a refused negotiate then ends it', async () => {
  let refuse = false;
  const { connection, sockets } = await connected({
    negotiate: async () => (refuse ? [403, { error: 'origin_not_allowed', message: 'this origin may not connect' }] : null),
  });
  sockets[0].close(1006);
  await until(() => sockets.length === 2 && sockets[1].sent.length === 1, 'a reconnection');
  sockets[1].serve('{}');
  await until(() => connection.state === State.Connected, 'reconnected');
  const ended = new Promise((resolve) => connection.onState((e) => e.state === State.Disconnected && resolve(e)));
  refuse = true;
  sockets[1].close(1006);
  const { error } = await ended;
  assert.equal(error.code, 'origin_not_allowed');
});

test('the token is refreshed in band before the connection expires', async () => {
  const { connection, requests } = await connected({
    lifetimeSeconds: 0.2,
    connection: { minRefreshAheadMs: 50 },
  });
  await until(() => requests.some((r) => r.pathname === '/hubs/home/refresh'), 'an in-band refresh');
  const refresh = requests.find((r) => r.pathname === '/hubs/home/refresh');
  assert.equal(refresh.query.id, 'ct-1');
  // The session's own token outlives the connection's by more than a minute: no REST refresh.
  assert.equal(refresh.authorization, 'Bearer access-1');
  await until(() => connection.tokenExpiresAt > Date.now() + 890_000, 'the new expiry');
  await connection.stop();
});

test('a failed handshake rejects start with the server error', async () => {
  const { fetchImpl } = fakeFetch(scriptedHub().routes);
  const { FakeWebSocket, sockets } = fakeWebSocketClass();
  const session = new Session({ baseUrl: BASE, fetch: fetchImpl });
  await session.login('alice', 'right');
  const connection = new HubConnection({ url: `${BASE}/hubs/home`, session, fetch: fetchImpl, WebSocket: FakeWebSocket });
  const started = connection.start();
  await until(() => sockets.length === 1 && sockets[0].sent.length === 1, 'the handshake');
  sockets[0].serve({ error: 'Requested protocol json is not available.' });
  await assert.rejects(started, { code: 'protocol', message: 'Requested protocol json is not available.' });
  assert.equal(connection.state, State.Disconnected);
});

test('hub error texts map to codes', () => {
  assert.equal(hubError("Failed to invoke 'X': envelope rejected (bad_signature)").envelopeCode, 'bad_signature');
  assert.equal(hubError("Failed to invoke 'X' because user is unauthorized").code, 'forbidden');
  assert.equal(hubError('An unexpected error occurred invoking ...').code, 'hub_error');
});

test('fromTokens with claimMessageKey claims an external token\'s key once, in the header', async () => {
  const claimed = new Set();
  const routes = {
    // The server's rule: one claim per message session (here: per token).
    'GET /api/auth/message-key': async ({ authorization, query }) => {
      assert.equal(query.access_token, undefined);
      const token = authorization?.replace('Bearer ', '');
      if (token === 'signet-token') return [403, { error: 'message_key_not_claimable', message: 'no' }];
      if (claimed.has(token)) return [409, { error: 'message_key_claimed', message: 'claimed' }];
      claimed.add(token);
      return [200, { messageKey: MESSAGE_KEY }];
    },
  };
  const { fetchImpl, requests } = fakeFetch(routes);
  let renewals = 0;
  const session = await Session.fromTokens({
    accessToken: 'idp-1',
    expiresIn: 900,
    baseUrl: BASE,
    fetch: fetchImpl,
    claimMessageKey: true,
    renew: async () => ({ accessToken: renewals++ === 0 ? 'idp-1' : 'idp-2', expiresIn: 900 }),
  });
  assert.equal(session.messageKey.extractable, false);
  // A renewed token of the same session: the claim is refused, the key kept.
  const held = session.messageKey;
  await session.refresh();
  assert.equal(session.messageKey, held);
  // A new session: claimed again.
  await session.refresh();
  assert.equal(requests.filter((r) => r.pathname === '/api/auth/message-key').length, 3);
  assert.ok(requests.every((r) => r.authorization?.startsWith('Bearer idp-')));

  // Without the option nothing is claimed; Signet's own tokens are refused with a clear code.
  const plain = await Session.fromTokens({ accessToken: 'signet-token', expiresIn: 900, baseUrl: BASE, fetch: fetchImpl });
  assert.equal(plain.messageKey, null);
  await assert.rejects(plain.claimMessageKey(), (error) => error.code === 'message_key_not_claimable' && error.status === 403);
  await assert.rejects(
    Session.fromTokens({ accessToken: 'idp-1', baseUrl: BASE, fetch: fetchImpl, claimMessageKey: true }),
    (error) => error.code === 'message_key_claimed' && error.status === 409,
  );
});
