// clients/js/signet.js outside a browser: the same module in Node against the real server (the
// runner enables Node 20's WebSocket with --experimental-websocket; Node 22 has it built in).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HubConnection, Session, State } from '../../clients/js/signet.js';
import { BASE_URL, required } from './harness.mjs';

test('signet.js logs in, connects, invokes, signs, streams and refreshes in band from Node', async (t) => {
  assert.equal(typeof globalThis.WebSocket, 'function', 'Node needs --experimental-websocket before 22');
  const session = new Session({ baseUrl: BASE_URL });
  await session.login(required('SIGNET_USER'), required('SIGNET_USER_PASSWORD'));
  const hub = new HubConnection({ url: `${BASE_URL}/hubs/home`, session });
  t.after(() => hub.stop());
  await hub.start();
  assert.equal(hub.state, State.Connected);

  const whoami = await hub.invoke('Whoami');
  assert.equal(whoami.sub, required('SIGNET_USER_ID'));
  assert.deepEqual(await hub.invoke('Echo', { n: 1, text: 'ü' }), { n: 1, text: 'ü' });
  assert.deepEqual(await hub.invokeSigned('EchoSigned', { hello: 'world' }), { hello: 'world' });
  await assert.rejects(hub.invoke('BroadcastMessage', 'x'), { code: 'forbidden' });

  const items = await new Promise((resolve, reject) => {
    const seen = [];
    hub.stream('Counter', 3, 5).subscribe({ next: (i) => seen.push(i), complete: () => resolve(seen), error: reject });
  });
  assert.deepEqual(items, [0, 1, 2]);

  const before = hub.tokenExpiresAt;
  const renewed = await hub.refreshToken();
  assert.ok(renewed >= before - 1000, 'the connection moved onto a token at least as long-lived');
  assert.deepEqual(await hub.invoke('Echo', 'still open'), 'still open');

  await hub.stop();
  assert.equal(hub.state, State.Disconnected);
  await session.logout();
  assert.equal(session.signedIn, false);
});
