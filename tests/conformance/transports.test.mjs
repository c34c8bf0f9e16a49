// Transports: the server offers all three with their transfer formats (so every other test file
// runs over each of them), and stateful reconnect: with `withStatefulReconnect()`, a WebSocket
// the server cuts mid-stream is reopened with the same connection and no message is lost or
// repeated, in either direction.

import assert from "node:assert/strict";
import net from "node:net";
import { test } from "node:test";
import {
  HttpTransportType,
  HubConnectionBuilder,
  HubConnectionState,
  JsonHubProtocol,
  LogLevel,
  Subject,
} from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";
import {
  COMBOS,
  HUB_URL,
  MessageType,
  adminToken,
  comboName,
  delay,
  negotiate,
  uniqueSub,
  userToken,
  within,
} from "./harness.mjs";

test("the server offers WebSockets and long polling with both protocols, SSE with JSON", () => {
  if (process.env.SIGNET_COMBOS) return; // restricted on purpose
  assert.deepEqual(COMBOS.map(comboName).sort(), [
    "LongPolling/json",
    "LongPolling/msgpack",
    "ServerSentEvents/json",
    "WebSockets/json",
    "WebSockets/msgpack",
  ]);
});

test("negotiate grants stateful reconnect only to a client that asks", async () => {
  const asked = await negotiate({ token: userToken(), query: "&useStatefulReconnect=true" });
  assert.equal(asked.status, 200);
  assert.equal(asked.body.useStatefulReconnect, true);
  const plain = await negotiate({ token: userToken() });
  assert.equal(plain.body.useStatefulReconnect, undefined);
});

/** A stateful-reconnect WebSocket connection whose decoded messages are recorded in `wire`. */
function statefulConnection(protocolName, token, url = HUB_URL) {
  const protocol = protocolName === "json" ? new JsonHubProtocol() : new MessagePackHubProtocol();
  const wire = [];
  const parse = protocol.parseMessages.bind(protocol);
  protocol.parseMessages = (input, log) => {
    const messages = parse(input, log);
    wire.push(...messages);
    return messages;
  };
  const connection = new HubConnectionBuilder()
    .withUrl(url, { transport: HttpTransportType.WebSockets, accessTokenFactory: () => token })
    .withHubProtocol(protocol)
    .withStatefulReconnect()
    .configureLogging(logLevel)
    .build();
  connection.wire = wire;
  return connection;
}

const logLevel = LogLevel[process.env.SIGNET_CONFORMANCE_LOG] ?? LogLevel.None;

const range = (n, from = 0) => Array.from({ length: n }, (_, i) => from + i);

for (const protocol of ["json", "msgpack"]) {
  test(`stateful reconnect over WebSockets/${protocol}: the server cuts the socket twice mid-stream, every message arrives once and in order`, { timeout: 30000 }, async () => {
    // DropTransport (admin only) ends the caller's socket without a close frame, as a network
    // failure would; its completion arrives once the client is back.
    const connection = statefulConnection(protocol, adminToken(uniqueSub("stateful")));
    let pump;
    try {
      await within(connection.start(), "the connection to start");

      // Server to client: a stream of 300 items, one every 5 ms.
      const items = [];
      const streamed = new Promise((resolve, reject) =>
        connection.stream("Counter", 300, 5).subscribe({
          next: (item) => items.push(item),
          complete: resolve,
          error: reject,
        }),
      );
      // Client to server: 1..200 streamed into UploadSum, one every 5 ms; a repeated or lost
      // item changes the sum.
      const uploads = new Subject();
      const sum = connection.invoke("UploadSum", uploads);
      let sent = 0;
      const uploaded = new Promise((resolve) => {
        pump = setInterval(() => {
          if (sent === 200) return resolve();
          uploads.next(++sent);
        }, 5);
      });

      await delay(400);
      const firstCut = connection.invoke("DropTransport");
      // Invocations sent while the socket is going down are buffered and delivered after.
      const echoes = Promise.all(range(20).map((i) => connection.invoke("Echo", i)));
      await within(firstCut, "the first cut to complete after the reconnect");
      await delay(300);
      await within(connection.invoke("DropTransport"), "the second cut to complete");

      await within(streamed, "the stream to complete", 15000);
      await within(uploaded, "the uploads to be sent");
      uploads.complete();

      assert.deepEqual(items, range(300), "every stream item once, in order");
      assert.equal(await within(sum, "UploadSum"), (200 * 201) / 2, "every uploaded item once");
      assert.deepEqual(await within(echoes, "the echoes"), range(20));
      assert.equal(connection.state, HubConnectionState.Connected, "never disconnected");

      const sequences = connection.wire.filter((m) => m.type === MessageType.Sequence);
      assert.equal(sequences.length, 2, "the server resumed twice, each time with a Sequence message");
      // No Ack had been sent before the first cut, so the server replayed items the client had
      // already seen; the client dropped those copies (items above holds each once).
      const itemsOnWire = connection.wire.filter((m) => m.type === MessageType.StreamItem).length;
      assert.ok(itemsOnWire > 300, `replayed copies reached the client (${itemsOnWire} items on the wire)`);
    } finally {
      clearInterval(pump);
      await connection.stop();
    }
  });
}

/**
 * A TCP proxy in front of the server that can fail like a network: `fail()` makes every open
 * connection lose what it carries, both ways, for `lossMs`, then drops it without a close frame.
 */
async function lossyProxy(target) {
  const links = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port), target.hostname);
    const link = { client, upstream, losing: false };
    links.add(link);
    client.on("data", (data) => link.losing || upstream.write(data));
    upstream.on("data", (data) => link.losing || client.write(data));
    for (const socket of [client, upstream]) {
      socket.on("error", () => {});
      socket.on("close", () => {
        links.delete(link);
        client.destroy();
        upstream.destroy();
      });
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}${new URL(HUB_URL).pathname}`,
    async fail(lossMs) {
      const failing = [...links];
      for (const link of failing) link.losing = true;
      await delay(lossMs);
      for (const link of failing) {
        link.client.resetAndDestroy();
        link.upstream.resetAndDestroy();
      }
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

for (const protocol of ["json", "msgpack"]) {
  test(`stateful reconnect over WebSockets/${protocol}: a network failure loses messages both ways, and they still arrive once and in order`, { timeout: 30000 }, async () => {
    const proxy = await lossyProxy(new URL(HUB_URL));
    const connection = statefulConnection(protocol, userToken(uniqueSub("lossy")), proxy.url);
    let pump;
    try {
      await within(connection.start(), "the connection to start");
      const items = [];
      const streamed = new Promise((resolve, reject) =>
        connection.stream("Counter", 200, 5).subscribe({
          next: (item) => items.push(item),
          complete: resolve,
          error: reject,
        }),
      );
      const uploads = new Subject();
      const sum = connection.invoke("UploadSum", uploads);
      let sent = 0;
      const uploaded = new Promise((resolve) => {
        pump = setInterval(() => {
          if (sent === 150) return resolve();
          uploads.next(++sent);
        }, 5);
      });

      // Items and uploads sent during the loss never arrive over that socket: only replay (the
      // server's) and resend (the client's) after the reconnect deliver them.
      await delay(300);
      await proxy.fail(150);

      await within(streamed, "the stream to complete", 15000);
      await within(uploaded, "the uploads to be sent");
      uploads.complete();
      assert.deepEqual(items, range(200), "every stream item once, in order");
      assert.equal(await within(sum, "UploadSum"), (150 * 151) / 2, "every uploaded item once");
      assert.equal(connection.state, HubConnectionState.Connected, "never disconnected");
      const sequences = connection.wire.filter((m) => m.type === MessageType.Sequence);
      assert.equal(sequences.length, 1, "one resume");
    } finally {
      clearInterval(pump);
      await connection.stop();
      await proxy.close();
    }
  });
}

test("without stateful reconnect, a cut WebSocket ends the connection", async () => {
  const token = adminToken(uniqueSub("stateless"));
  const connection = new HubConnectionBuilder()
    .withUrl(HUB_URL, { transport: HttpTransportType.WebSockets, accessTokenFactory: () => token })
    .configureLogging(logLevel)
    .build();
  try {
    await within(connection.start(), "the connection to start");
    const closed = new Promise((resolve) => connection.onclose(resolve));
    connection.invoke("DropTransport").catch(() => {});
    await within(closed, "the connection to close");
    assert.equal(connection.state, HubConnectionState.Disconnected);
  } finally {
    await connection.stop();
  }
});
