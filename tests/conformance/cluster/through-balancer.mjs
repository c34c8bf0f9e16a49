// The official client through a round-robin balancer in front of several Signet nodes (the
// cluster harness of tests/api/cluster_harness.rs, driven by tests/api/balanced_clients.rs):
// echo and streams, a broadcast reaching clients on every node, a group spanning nodes (through
// the publish API), token refresh, an admin's kick and a logout closing connections on every
// node, and stateful reconnect landing on another node.
//
// Not named *.test.mjs: the conformance suite (`node --test tests/conformance`) must not pick it
// up; it runs against a cluster only. Environment, beyond harness.mjs's (SIGNET_URL is the
// balancer):
//   SIGNET_NODE_URLS          each node's own base URL, comma-separated
//   SIGNET_SKIP_NEGOTIATION   "1": WebSockets straight to the socket, no negotiate (what works
//                             behind round robin without cross-node handover of negotiated
//                             connections)

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { HubConnectionState, Subject } from "@microsoft/signalr";
import {
  BASE_URL,
  COMBOS,
  CapturingHttpClient,
  HUB_PATH,
  MessageType,
  adminToken,
  claimsFor,
  closed,
  comboName,
  connect,
  delay,
  nextCall,
  received,
  signToken,
  uniqueSub,
  userToken,
  within,
} from "../harness.mjs";
import { USERS, login, logout, refreshConnection } from "../identity.mjs";

const NODES = (process.env.SIGNET_NODE_URLS || "").split(",").filter(Boolean);
const SKIP_NEGOTIATION = process.env.SIGNET_SKIP_NEGOTIATION === "1";
const REVOKED = /Server returned an error on close: Authentication revoked/;
const KICKED = /Disconnected by an administrator/;

/** A started connection through the balancer. */
const viaBalancer = (combo, settings) =>
  connect(combo, { skipNegotiation: SKIP_NEGOTIATION, ...settings });

/** One started connection straight to each node, so every node holds one. */
function onEveryNode(combo, settings) {
  assert.ok(NODES.length > 0, "SIGNET_NODE_URLS names the nodes");
  return Promise.all(
    NODES.map((node) =>
      connect(combo, { url: node + HUB_PATH, skipNegotiation: SKIP_NEGOTIATION, ...settings }),
    ),
  );
}

/** Collects a stream's items; resolves when it completes. */
function collect(stream) {
  const items = [];
  const done = new Promise((resolve, reject) =>
    stream.subscribe({ next: (item) => items.push(item), complete: resolve, error: reject }),
  );
  return within(done, "the stream to complete", 10000).then(() => items);
}

/** A publish API call with a `signet:server` token; resolves with the status. */
async function publish(method, path, body) {
  const token = signToken(claimsFor(uniqueSub("backend"), { roles: ["signet:server"] }));
  const response = await fetch(`${BASE_URL}/api/hubs/home${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  await response.text();
  return response.status;
}

const range = (n) => Array.from({ length: n }, (_, i) => i);

for (const combo of COMBOS) {
  describe(`through the balancer over ${comboName(combo)}`, () => {
    test("echo, and streams both ways", async () => {
      const connection = await viaBalancer(combo, { token: userToken() });
      assert.equal(await within(connection.invoke("Echo", "hello"), "Echo"), "hello");
      assert.deepEqual(await collect(connection.stream("Counter", 5, 1)), range(5));
      const uploads = new Subject();
      const sum = connection.invoke("UploadSum", uploads);
      for (let i = 1; i <= 10; i++) uploads.next(i);
      uploads.complete();
      assert.equal(await within(sum, "UploadSum"), 55);
    });

    test("a broadcast reaches clients on every node", async () => {
      const admin = await viaBalancer(combo, { token: adminToken() });
      const receivers = [
        ...(await onEveryNode(combo, { token: userToken() })),
        ...(await Promise.all(range(3).map(() => viaBalancer(combo, { token: userToken() })))),
      ];
      const text = `broadcast ${uniqueSub("b")}`;
      const arrivals = receivers.map((c) => nextCall(c, "SystemMessage", (t) => t === text));
      await within(admin.invoke("BroadcastMessage", text), "BroadcastMessage");
      assert.equal((await Promise.all(arrivals)).length, receivers.length);
    });

    test("a group spans the nodes (publish API)", async () => {
      const members = [
        ...(await onEveryNode(combo, { token: userToken() })),
        await viaBalancer(combo, { token: userToken() }),
      ];
      const outsider = await viaBalancer(combo, { token: userToken() });
      const group = uniqueSub("group");
      for (const member of members) {
        const status = await publish("PUT", `/groups/${group}/connections/${member.connectionId}`);
        assert.ok(status >= 200 && status < 300, `adding ${member.connectionId}: ${status}`);
      }
      const text = `to the group ${group}`;
      const arrivals = members.map((c) => nextCall(c, "GroupMessage", (t) => t === text));
      const sent = await publish("POST", `/groups/${group}/send`, { target: "GroupMessage", arguments: [text] });
      assert.ok(sent >= 200 && sent < 300, `send to the group: ${sent}`);
      await Promise.all(arrivals);
      // The outsider's node handled the send before this echo's answer.
      await within(outsider.invoke("Echo", "flush"), "Echo");
      assert.equal(received(outsider, MessageType.Invocation, "GroupMessage").length, 0);
    });

    test("token refresh through the balancer: the endpoint and RefreshToken", async () => {
      const sub = uniqueSub("refresh");
      const first = claimsFor(sub, { ttlSecs: 3 });
      const http = new CapturingHttpClient();
      const byEndpoint = await viaBalancer(combo, { token: signToken(first), options: { httpClient: http } });
      const byMethod = await viaBalancer(combo, { token: signToken(first) });
      const closings = [byEndpoint, byMethod].map((c) => closed(c).catch(() => "still open"));

      const next = claimsFor(sub, { ttlSecs: 60 });
      if (!SKIP_NEGOTIATION) {
        const answer = await refreshConnection(http.connectionToken, signToken(next));
        assert.equal(answer.status, 200, JSON.stringify(answer.body));
      }
      const result = await within(byMethod.invoke("RefreshToken", signToken(next)), "RefreshToken");
      assert.ok(result.tokenLifetimeSeconds > 50, JSON.stringify(result));

      await delay(Math.max(0, first.exp * 1000 - Date.now() + 1200));
      const refreshed = SKIP_NEGOTIATION ? [byMethod] : [byEndpoint, byMethod];
      for (const connection of refreshed) {
        assert.equal(connection.state, HubConnectionState.Connected, "closed at the first token's exp");
        assert.equal((await within(connection.invoke("Whoami"), "Whoami")).expiresAt, next.exp);
      }
      void closings;
    });

    test("an admin's kick closes the user's connections on every node", async () => {
      const sub = uniqueSub("kicked");
      const token = userToken(sub);
      const connections = [...(await onEveryNode(combo, { token })), await viaBalancer(combo, { token })];
      const ends = connections.map((c) => closed(c));
      const admin = await viaBalancer(combo, { token: adminToken() });
      const bystander = await viaBalancer(combo, { token: userToken() });
      const count = await within(admin.invoke("DisconnectUser", sub), "DisconnectUser");
      assert.equal(count, connections.length, "every node counted its connections");
      for (const error of await Promise.all(ends)) assert.match(String(error?.message), KICKED);
      assert.equal(await within(bystander.invoke("Echo", 1), "Echo"), 1);
    });

    test("logout closes the session's connections on every node within a second, and no others", async () => {
      const [alice] = USERS;
      assert.ok(alice, "SIGNET_TEST_USERS names a user");
      const loggedOut = await login(alice);
      const other = await login(alice);
      const gone = [
        ...(await onEveryNode(combo, { token: loggedOut.accessToken })),
        await viaBalancer(combo, { token: loggedOut.accessToken }),
      ];
      const stays = await viaBalancer(combo, { token: other.accessToken });
      const ends = gone.map((c) => closed(c).then((error) => ({ error, at: Date.now() })));
      const answer = await logout(loggedOut);
      assert.equal(answer.status, 204, JSON.stringify(answer.body));
      const sent = Date.now();
      for (const { error, at } of await Promise.all(ends)) {
        assert.match(String(error?.message), REVOKED);
        assert.ok(at - sent < 1000, `closed ${at - sent} ms after logout`);
      }
      assert.equal(await within(stays.invoke("Echo", "still here"), "Echo"), "still here");
    });
  });
}

for (const protocol of ["json", "msgpack"]) {
  if (!COMBOS.some((c) => c.transport === "WebSockets" && c.protocol === protocol)) continue;
  test(`stateful reconnect over WebSockets/${protocol} through the balancer: cut twice, every item arrives once and in order`, { timeout: 30000 }, async () => {
    const combo = { transport: "WebSockets", protocol };
    const connection = await connect(combo, { token: adminToken(uniqueSub("stateful")), stateful: true });
    const streamed = collect(connection.stream("Counter", 200, 5));
    await delay(300);
    // Each reconnect goes through the balancer, which sends it to the next node in turn.
    await within(connection.invoke("DropTransport"), "the first cut to complete after the reconnect");
    await delay(200);
    await within(connection.invoke("DropTransport"), "the second cut to complete");
    assert.deepEqual(await streamed, range(200), "every stream item once, in order");
    assert.equal(connection.state, HubConnectionState.Connected, "never disconnected");
    const sequences = received(connection, MessageType.Sequence);
    assert.equal(sequences.length, 2, "resumed twice");
  });
}
