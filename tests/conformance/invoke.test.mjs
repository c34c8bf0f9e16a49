// Calling hub methods: invoke with a result, send without one, `on` handlers for server calls,
// role gates and the SignalR error texts, and an admin broadcast reaching other clients.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, test } from "node:test";
import { HubConnectionState } from "@microsoft/signalr";
import {
  COMBOS,
  MessageType,
  adminToken,
  comboName,
  connect,
  nextCall,
  received,
  userToken,
  within,
} from "./harness.mjs";

for (const combo of COMBOS) {
  describe(`hub methods over ${comboName(combo)}`, () => {
    test("invoke returns the method's result", async () => {
      const connection = await connect(combo, { token: userToken() });
      const value = { text: "héllo ✓", n: 42, flag: true, list: [1, "two", null], nested: { a: [] } };
      assert.deepEqual(await within(connection.invoke("Echo", value), "Echo"), value);
      assert.equal(await within(connection.invoke("Echo", "plain"), "Echo"), "plain");
      assert.equal(await within(connection.invoke("Echo", null), "Echo"), null);
    });

    test("binary and dates keep their type over MessagePack and map to base64 and ISO over JSON", async () => {
      const connection = await connect(combo, { token: userToken() });
      const bytes = new Uint8Array([0, 1, 2, 254, 255]);
      const when = new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678));
      const echoed = await within(connection.invoke("Echo", { bytes, when, list: [bytes] }), "Echo");
      if (combo.protocol === "msgpack") {
        // A Uint8Array comes back as one (not a base64 string), a Date as a Date.
        assert.ok(echoed.bytes instanceof Uint8Array, `bytes came back as ${typeof echoed.bytes}`);
        assert.deepEqual([...echoed.bytes], [...bytes]);
        assert.ok(echoed.when instanceof Date, `when came back as ${typeof echoed.when}`);
        assert.equal(echoed.when.getTime(), when.getTime());
        assert.deepEqual([...echoed.list[0]], [...bytes]);
      } else {
        // JSON has neither: the client itself sends a Date as its ISO text, and a Uint8Array as
        // an object of indices, which stays that object.
        assert.equal(echoed.when, when.toISOString());
        assert.deepEqual(echoed.bytes, { 0: 0, 1: 1, 2: 2, 3: 254, 4: 255 });
      }
    });

    test("send delivers without a result: an admin's BroadcastMessage reaches its own handler", async () => {
      const admin = await connect(combo, { token: adminToken() });
      const text = `sent ${randomUUID()}`;
      const arrival = nextCall(admin, "SystemMessage", (t) => t === text);
      assert.equal(await within(admin.send("BroadcastMessage", text), "send"), undefined);
      assert.deepEqual(await arrival, [text]);
    });

    test("send gets no completion back, while invoke does", async () => {
      const connection = await connect(combo, { token: userToken() });
      await within(connection.send("Echo", "fire and forget"), "send");
      assert.equal(await within(connection.invoke("Echo", "answered"), "Echo"), "answered");
      // The server handles messages in order: the invoke's completion arrived after anything the
      // send could have caused, and it is the only completion.
      assert.equal(received(connection, MessageType.Completion).length, 1);
    });

    test("on handlers receive server calls, and off stops them", async () => {
      const admin = await connect(combo, { token: adminToken() });
      const seen = [];
      const handler = (text) => seen.push(text);
      admin.on("SystemMessage", handler);
      const first = `first ${randomUUID()}`;
      await within(admin.invoke("BroadcastMessage", first), "BroadcastMessage");
      // The broadcast is queued before the invocation's completion, so it has already arrived.
      assert.deepEqual(seen, [first]);
      admin.off("SystemMessage", handler);
      const second = `second ${randomUUID()}`;
      await within(admin.invoke("BroadcastMessage", second), "BroadcastMessage");
      assert.deepEqual(seen, [first]);
      assert.equal(received(admin, MessageType.Invocation, "SystemMessage").length, 2);
    });

    test("a non-admin calling BroadcastMessage is unauthorized and keeps working", async () => {
      const user = await connect(combo, { token: userToken() });
      await assert.rejects(within(user.invoke("BroadcastMessage", "nope"), "BroadcastMessage"), {
        message: "Failed to invoke 'BroadcastMessage' because user is unauthorized",
      });
      await assert.rejects(within(user.invoke("GetConnectedUsersCount"), "GetConnectedUsersCount"), {
        message: "Failed to invoke 'GetConnectedUsersCount' because user is unauthorized",
      });
      assert.equal(user.state, HubConnectionState.Connected);
      assert.equal(await within(user.invoke("Echo", "still here"), "Echo"), "still here");
      // Nothing was broadcast: a broadcast reaches its caller too, before the completion.
      assert.equal(received(user, MessageType.Invocation, "SystemMessage").length, 0);
    });

    test("an admin's broadcast reaches two other clients", async () => {
      const admin = await connect(combo, { token: adminToken() });
      const alice = await connect(combo, { token: userToken() });
      const bob = await connect(combo, { token: userToken() });
      const text = `broadcast ${randomUUID()}`;
      const arrivals = [alice, bob].map((c) => nextCall(c, "SystemMessage", (t) => t === text));
      await within(admin.invoke("BroadcastMessage", text), "BroadcastMessage");
      assert.deepEqual(await Promise.all(arrivals), [[text], [text]]);
    });

    test("an admin counts distinct connected users", async () => {
      const admin = await connect(combo, { token: adminToken() });
      const token = userToken();
      await connect(combo, { token });
      await connect(combo, { token });
      // Users left over from earlier tests may still be leaving, so compare with a lower bound:
      // the admin plus one user with two connections count as (at least) two.
      const count = await within(admin.invoke("GetConnectedUsersCount"), "GetConnectedUsersCount");
      assert.equal(typeof count, "number");
      assert.ok(count >= 2, `count was ${count}`);
    });

    test("unknown methods and bad arguments get the SignalR error texts", async () => {
      const admin = await connect(combo, { token: adminToken() });
      await assert.rejects(within(admin.invoke("NoSuchMethod"), "NoSuchMethod"), {
        message: "Failed to invoke 'NoSuchMethod' due to an error on the server. HubException: Method does not exist.",
      });
      await assert.rejects(within(admin.invoke("BroadcastMessage", 42), "BroadcastMessage"), {
        message: "Failed to invoke 'BroadcastMessage' due to an error on the server.",
      });
      await assert.rejects(within(admin.invoke("Echo"), "Echo"), {
        message: "Failed to invoke 'Echo' due to an error on the server.",
      });
      assert.equal(await within(admin.invoke("Echo", 1), "Echo"), 1);
    });
  });
}
