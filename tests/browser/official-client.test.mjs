// The official @microsoft/signalr browser bundle in Chromium, connecting to Signet with the token
// in the query string as browsers must. The page is one the server serves without a policy of
// its own (`/healthz`), so it has the server's origin and address; this test adds the bundle to
// it from node_modules. The server itself never serves the bundle.
//
// (A page made up by request interception would be treated by Chromium as coming from the
// public internet, and its connections to 127.0.0.1 refused by Local Network Access checks.)

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { BASE_URL, claimsFor, launchBrowser, newPage, required, signToken } from './harness.mjs';

let browser;
let session;
let offered = [];

async function negotiatedTransports() {
  const response = await fetch(`${BASE_URL}/hubs/home/negotiate?negotiateVersion=1`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${signToken(claimsFor('negotiate-probe'))}` },
  });
  assert.equal(response.status, 200);
  const body = await response.json();
  return body.availableTransports.map((t) => t.transport);
}

describe('the official SignalR browser client', () => {
  before(async () => {
    offered = await negotiatedTransports();
    browser = await launchBrowser();
    session = await newPage(browser);
    // The server has no favicon outside the console; the browser asks for one anyway.
    await session.page.route(`${BASE_URL}/favicon.ico`, (route) => route.fulfill({ status: 204 }));
    await session.page.goto(`${BASE_URL}/healthz`);
    await session.page.addScriptTag({ content: readFileSync(required('SIGNET_SIGNALR_BUNDLE'), 'utf8') });
    assert.equal(await session.page.evaluate(() => typeof signalR.HubConnectionBuilder), 'function');
  });

  after(async () => {
    await browser?.close();
  });

  for (const transport of ['WebSockets', 'ServerSentEvents']) {
    test(`connects over ${transport} with the token in the query string`, async (t) => {
      if (!offered.includes(transport)) {
        t.skip(`the server's negotiate does not offer ${transport} yet (offers: ${offered.join(', ')})`);
        return;
      }
      const sub = `browser-${transport.toLowerCase()}`;
      const token = signToken(claimsFor(sub));
      const urls = [];
      const record = (url) => {
        const { pathname, searchParams } = new URL(url);
        if (pathname === '/hubs/home') urls.push(searchParams);
      };
      const onSocket = (socket) => record(socket.url());
      // The event stream is a GET whose token must travel in the query (EventSource sends no
      // headers); the client's sends (POST) carry it in the Authorization header instead.
      const onRequest = (request) => request.method() === 'GET' && record(request.url());
      session.page.on('websocket', onSocket);
      session.page.on('request', onRequest);
      try {
        const result = await session.page.evaluate(
          async ({ token, transport }) => {
            const connection = new signalR.HubConnectionBuilder()
              .withUrl('/hubs/home', {
                accessTokenFactory: () => token,
                transport: signalR.HttpTransportType[transport],
              })
              .configureLogging(signalR.LogLevel.Warning)
              .build();
            await connection.start();
            const whoami = await connection.invoke('Whoami');
            const echo = await connection.invoke('Echo', { text: 'héllo', n: [1, 2] });
            const items = [];
            await new Promise((resolve, reject) => {
              connection.stream('Counter', 3, 10).subscribe({ next: (i) => items.push(i), complete: resolve, error: reject });
            });
            await connection.stop();
            return { whoami, echo, items };
          },
          { token, transport },
        );
        assert.equal(result.whoami.sub, sub);
        assert.deepEqual(result.echo, { text: 'héllo', n: [1, 2] });
        assert.deepEqual(result.items, [0, 1, 2]);
        assert.ok(urls.length > 0, `the ${transport} transport request was seen`);
        for (const params of urls) assert.equal(params.get('access_token'), token);
      } finally {
        session.page.off('websocket', onSocket);
        session.page.off('request', onRequest);
      }
    });
  }

  test('nothing went wrong in the page unnoticed', () => {
    assert.deepEqual(session?.problems ?? [], []);
  });
});
