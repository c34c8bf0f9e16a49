// Official clients through the balancer while a node is killed (driven by
// tests/api/cluster_faults.rs): six clients with automatic reconnect connect through nginx's
// round robin (two land on each of three nodes), as one user, the test kills one node, and the clients it
// held reconnect through the balancer to the others and answer again.
//
// Not named *.test.mjs: the conformance suite must not pick it up. Environment, beyond
// harness.mjs's (SIGNET_URL is the balancer; SIGNET_COMBOS names one combination):
//   SIGNET_READY_FILE         created once the clients are connected
//   SIGNET_KILLED_FILE        created by the test once the node is dead
//   SIGNET_SKIP_NEGOTIATION   "1": WebSockets straight to the socket, no negotiate

import assert from "node:assert/strict";
import { existsSync, writeFileSync } from "node:fs";
import { test } from "node:test";
import { HubConnectionState } from "@microsoft/signalr";
import { COMBOS, build, delay, userToken, within } from "../harness.mjs";

const CLIENTS = 6;
/** One user for all six, so the cluster-wide user count changes only by the test's own users. */
const SUB = "official-clients";

async function untilFile(path, what, ms) {
  const deadline = Date.now() + ms;
  while (!existsSync(path)) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await delay(50); // paces a poll for the file, not a fixed wait
  }
}

test("the clients of a killed node reconnect through the balancer to the others", { timeout: 90000 }, async () => {
  const [combo] = COMBOS;
  const clients = [];
  const reconnecting = [];
  const reconnected = [];
  for (let i = 0; i < CLIENTS; i++) {
    const connection = build(combo, {
      token: userToken(SUB),
      skipNegotiation: process.env.SIGNET_SKIP_NEGOTIATION === "1",
      reconnectDelays: [0, 200, 500, 1000, 2000, 2000],
    });
    connection.onreconnecting(() => reconnecting.push(i));
    connection.onreconnected(() => reconnected.push(i));
    await within(connection.start(), "a client to start");
    clients.push(connection);
  }
  writeFileSync(process.env.SIGNET_READY_FILE, "");
  await untilFile(process.env.SIGNET_KILLED_FILE, "the test to kill a node", 60000);

  // The killed node's clients notice at once (their sockets end) and come back elsewhere.
  const deadline = Date.now() + 15000;
  while (reconnecting.length === 0 || reconnected.length < reconnecting.length) {
    assert.ok(
      Date.now() < deadline,
      `reconnecting ${JSON.stringify(reconnecting)}, reconnected ${JSON.stringify(reconnected)}`,
    );
    await delay(50); // paces a poll for the reconnects, not a fixed wait
  }
  assert.equal(reconnecting.length, CLIENTS / 3, "round robin put two clients on the killed node");
  for (const [i, connection] of clients.entries()) {
    assert.equal(connection.state, HubConnectionState.Connected, `client ${i}`);
    assert.equal(await within(connection.invoke("Echo", i), "Echo"), i);
  }
});
