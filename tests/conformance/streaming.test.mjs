// Streaming both ways: `stream()` from the server (to its end, and cancelled mid-way with
// `dispose()`), and a client-to-server stream fed by a `Subject`.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { HubConnectionState, Subject } from "@microsoft/signalr";
import {
  COMBOS,
  MessageType,
  comboName,
  connect,
  delay,
  received,
  userToken,
  within,
} from "./harness.mjs";

/** Subscribes to `stream` and collects its items; `done` settles when it completes or errors. */
function collect(stream, onItem = () => {}) {
  const items = [];
  let subscription;
  const done = new Promise((resolve, reject) => {
    subscription = stream.subscribe({
      next: (item) => {
        items.push(item);
        onItem(item, items);
      },
      complete: resolve,
      error: reject,
    });
  });
  return { items, done, subscription };
}

for (const combo of COMBOS) {
  describe(`streams over ${comboName(combo)}`, () => {
    test("a server-to-client stream delivers every item, then completes", async () => {
      const connection = await connect(combo, { token: userToken() });
      const { items, done } = collect(connection.stream("Counter", 5, 1));
      await within(done, "the stream to complete");
      assert.deepEqual(items, [0, 1, 2, 3, 4]);
    });

    test("dispose() cancels a server-to-client stream: the server stops sending", async () => {
      const connection = await connect(combo, { token: userToken() });
      const intervalMs = 20;
      const count = 1000; // 20 s of items if the server ignored the cancellation
      let third;
      const reachedThird = new Promise((resolve) => (third = resolve));
      const { items, subscription } = collect(connection.stream("Counter", count, intervalMs), (_, all) => {
        if (all.length === 3) third();
      });
      await within(reachedThird, "three stream items");
      subscription.dispose();

      // The server handles messages in order, so once this Echo is answered it has processed the
      // CancelInvocation. An item its stream was already sending may trail the answer (one at
      // most); a stream that was not stopped sends ten more in the wait below.
      assert.equal(await within(connection.invoke("Echo", "after cancel"), "Echo"), "after cancel");
      const settled = received(connection, MessageType.StreamItem).length;
      await delay(10 * intervalMs);
      const onWire = received(connection, MessageType.StreamItem).length;
      assert.ok(
        onWire - settled <= 1,
        `${onWire - settled} stream items arrived after the server took the cancellation`,
      );
      assert.ok(onWire < 50, `the server sent ${onWire} of ${count} items before it stopped`);
      assert.ok(items.length >= 3 && items.length <= onWire);
      assert.deepEqual(items, [...items.keys()], "items arrive in order from 0");

      assert.equal(connection.state, HubConnectionState.Connected);
      const again = collect(connection.stream("Counter", 3, 0));
      await within(again.done, "a second stream to complete");
      assert.deepEqual(again.items, [0, 1, 2]);
    });

    test("a client-to-server stream from a Subject reaches the hub method", async () => {
      const connection = await connect(combo, { token: userToken() });
      const subject = new Subject();
      const sum = connection.invoke("UploadSum", subject);
      for (const n of [1, 2, 3.5, 10]) subject.next(n);
      subject.complete();
      assert.equal(await within(sum, "UploadSum's result"), 16.5);

      // A second upload on the same connection, items sent while the method is already running.
      const second = new Subject();
      const total = connection.invoke("UploadSum", second);
      await within(connection.invoke("Echo", "in between"), "Echo");
      for (let n = 1; n <= 100; n += 1) second.next(n);
      second.complete();
      assert.equal(await within(total, "the second UploadSum's result"), 5050);
    });

    test("a client-to-server stream's bad item fails only that invocation", async () => {
      const connection = await connect(combo, { token: userToken() });
      const subject = new Subject();
      const sum = connection.invoke("UploadSum", subject);
      subject.next(1);
      subject.next("not a number");
      subject.complete();
      await assert.rejects(within(sum, "UploadSum's result"), /UploadSum/);
      assert.equal(await within(connection.invoke("Echo", "ok"), "Echo"), "ok");
    });
  });
}
