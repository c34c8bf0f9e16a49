// The maximum incoming message size: a message over `hub.max_message_bytes` closes the
// connection with the SignalR error text; one comfortably under it is served.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { HubConnectionState } from "@microsoft/signalr";
import { COMBOS, MAX_MESSAGE_BYTES, closed, comboName, connect, userToken, within } from "./harness.mjs";

const TOO_LARGE =
  "Server returned an error on close: Connection closed with an error. " +
  "The message exceeded the maximum message size.";

for (const combo of COMBOS) {
  describe(`message size over ${comboName(combo)}`, () => {
    test("a message under the size limit is served", async () => {
      const connection = await connect(combo, { token: userToken() });
      const text = "a".repeat(MAX_MESSAGE_BYTES - 1024);
      assert.equal(await within(connection.invoke("Echo", text), "Echo"), text);
    });

    test("a message over the size limit closes the connection with an error", async () => {
      const connection = await connect(combo, { token: userToken() });
      const onclose = closed(connection);
      const call = connection.invoke("Echo", "a".repeat(MAX_MESSAGE_BYTES + 1024));
      const error = await onclose;
      assert.ok(error, "onclose reported an error");
      assert.equal(error.message, TOO_LARGE);
      assert.equal(connection.state, HubConnectionState.Disconnected);
      await assert.rejects(within(call, "the pending invoke to fail"));
    });
  });
}
