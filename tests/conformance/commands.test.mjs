// Signed commands on the home hub, over every transport: a user's OPEN_DOOR reaches their device
// as a server-signed Command, the device's signed result reaches the user, telemetry and
// presence flow to the owner; and every bad envelope is refused with its code, before any hub
// method runs (the device receives nothing) and without closing the connection.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { importMessageKey, signEnvelope, verifyEnvelope } from "../../clients/js/envelope.js";
import { COMBOS, HUB_PATH, comboName, connect, delay, nextCall, uniqueSub, within } from "./harness.mjs";
import { USERS, createDevice, deleteDevice, deviceToken, login } from "./identity.mjs";

const [, , CAROL, DAVE] = USERS;

/** Signs `message` for `target` with a session's message key. */
const sign = (key, target, message, options = {}) =>
  signEnvelope(key, { hubPath: HUB_PATH, target, message, ...options });

/**
 * A user with one device: the owner's session and connection, and a device connection that
 * verifies every Command it receives with its own key and answers OPEN_DOOR, LOCK and UNLOCK
 * with a signed result.
 */
async function household(t, combo, username = CAROL) {
  const owner = await login(username);
  const created = await createDevice(owner.accessToken, `door-${uniqueSub("d")}`);
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const { deviceId, deviceKey } = created.body;
  t.after(() => deleteDevice(owner.accessToken, deviceId));
  const exchanged = await deviceToken(deviceId, deviceKey);
  assert.equal(exchanged.status, 200, JSON.stringify(exchanged.body));

  const deviceSigningKey = await importMessageKey(exchanged.body.messageKey);
  const device = await connect(combo, { token: exchanged.body.accessToken });
  const received = [];
  device.on("Command", async (envelope) => {
    const verified = await verifyEnvelope(deviceSigningKey, envelope, { hubPath: HUB_PATH, target: "Command" });
    received.push(verified);
    if (!verified.ok) return;
    const { commandId, command } = verified.command;
    const result = await sign(deviceSigningKey, "CommandResult", {
      commandId,
      status: "ok",
      result: { executed: command },
    });
    await device.invoke("CommandResult", result);
  });
  const user = await connect(combo, { token: owner.accessToken });
  return {
    owner,
    deviceId,
    device,
    deviceSigningKey,
    received,
    user,
    key: await importMessageKey(owner.messageKey),
  };
}

const rejected = (code, target = "SendCommand") =>
  new RegExp(`Failed to invoke '${target}': envelope rejected \\(${code}\\)`);

for (const combo of COMBOS) {
  describe(`signed commands over ${comboName(combo)}`, () => {
    test("OPEN_DOOR reaches the device signed by the server, and its result reaches the user", async (t) => {
      const home = await household(t, combo);
      const resultArrives = nextCall(home.user, "CommandResult");
      const envelope = await sign(home.key, "SendCommand", { deviceId: home.deviceId, command: "OPEN_DOOR" });
      const { commandId } = await home.user.invoke("SendCommand", envelope);
      assert.equal(typeof commandId, "string");

      const [result] = await resultArrives;
      assert.deepEqual(result, {
        commandId,
        deviceId: home.deviceId,
        status: "ok",
        result: { executed: "OPEN_DOOR" },
      });
      assert.equal(home.received.length, 1);
      assert.ok(home.received[0].ok, JSON.stringify(home.received[0]));
      assert.equal(home.received[0].command.command, "OPEN_DOOR");
      assert.equal(home.received[0].command.from, JSON.parse(Buffer.from(home.owner.accessToken.split(".")[1], "base64url")).sub);
    });

    test("the same envelope twice is a replay, also on a second connection of the session", async (t) => {
      const home = await household(t, combo);
      const envelope = await sign(home.key, "SendCommand", { deviceId: home.deviceId, command: "UNLOCK" });
      await home.user.invoke("SendCommand", envelope);
      await assert.rejects(home.user.invoke("SendCommand", envelope), rejected("replayed_nonce"));
      const second = await connect(combo, { token: home.owner.accessToken });
      await assert.rejects(second.invoke("SendCommand", envelope), rejected("replayed_nonce"));
      await home.user.invoke("Echo", "flush");
      await delay(50);
      assert.equal(home.received.length, 1, "a replayed command reached the device");
    });

    test("a changed message, target or key is a bad signature, and the device gets nothing", async (t) => {
      const home = await household(t, combo);
      const good = await sign(home.key, "SendCommand", { deviceId: home.deviceId, command: "LOCK" });
      const changed = { ...good, message: good.message.replace("LOCK", "UNLOCK") };
      await assert.rejects(home.user.invoke("SendCommand", changed), rejected("bad_signature"));

      const forOtherMethod = await sign(home.key, "EchoSigned", { deviceId: home.deviceId, command: "LOCK" });
      await assert.rejects(home.user.invoke("SendCommand", forOtherMethod), rejected("bad_signature"));

      const otherSession = await login(CAROL);
      const otherKey = await importMessageKey(otherSession.messageKey);
      const foreign = await sign(otherKey, "SendCommand", { deviceId: home.deviceId, command: "LOCK" });
      await assert.rejects(home.user.invoke("SendCommand", foreign), rejected("bad_signature"));

      // A forged envelope does not burn its nonce: the genuine one still goes through.
      await home.user.invoke("SendCommand", good);
      await home.user.invoke("Echo", "flush");
      await delay(50);
      assert.equal(home.received.length, 1);
      assert.equal(home.received[0].command.command, "LOCK");
    });

    test("expired, future, too long and malformed envelopes are refused with their codes", async (t) => {
      const home = await household(t, combo);
      const message = { deviceId: home.deviceId, command: "OPEN_DOOR" };
      const cases = [
        ["expired", await sign(home.key, "SendCommand", message, { now: Date.now() - 120_000 })],
        ["not_yet_valid", await sign(home.key, "SendCommand", message, { now: Date.now() + 60_000 })],
        ["lifetime_too_long", await sign(home.key, "SendCommand", message, { lifetimeMs: 120_000 })],
        ["malformed", { issuedAt: Date.now(), message: JSON.stringify(message) }],
        ["malformed", { ...(await sign(home.key, "SendCommand", message)), extra: true }],
      ];
      for (const [code, envelope] of cases) {
        await assert.rejects(home.user.invoke("SendCommand", envelope), rejected(code), code);
      }
      assert.equal(await home.user.invoke("Echo", "still open"), "still open");
      await delay(50);
      assert.equal(home.received.length, 0, "a refused envelope reached the device");
    });

    test("another user's device, existing or not, is 'device not found'", async (t) => {
      const home = await household(t, combo);
      const intruder = await login(DAVE);
      const intruderKey = await importMessageKey(intruder.messageKey);
      const connection = await connect(combo, { token: intruder.accessToken });
      for (const deviceId of [home.deviceId, "no-such-device"]) {
        const envelope = await sign(intruderKey, "SendCommand", { deviceId, command: "OPEN_DOOR" });
        await assert.rejects(connection.invoke("SendCommand", envelope), /HubException: device not found$/);
      }
      await delay(50);
      assert.equal(home.received.length, 0);
    });

    test("a device cannot answer a command it never received", async (t) => {
      const home = await household(t, combo);
      const other = await household(t, combo, DAVE);
      // A command to the other household's device...
      const envelope = await sign(other.key, "SendCommand", { deviceId: other.deviceId, command: "LOCK" });
      const resultArrives = nextCall(other.user, "CommandResult");
      const { commandId } = await other.user.invoke("SendCommand", envelope);
      await resultArrives;
      // ...answered again by its own device, and by this one: both refused.
      for (const [device, key] of [
        [other.device, other.deviceSigningKey],
        [home.device, home.deviceSigningKey],
      ]) {
        const forged = await sign(key, "CommandResult", { commandId, status: "ok" });
        await assert.rejects(device.invoke("CommandResult", forged), /HubException: unknown command$/);
      }
      const invented = await sign(home.deviceSigningKey, "CommandResult", { commandId: "invented", status: "ok" });
      await assert.rejects(home.device.invoke("CommandResult", invented), /HubException: unknown command$/);
    });

    test("telemetry reaches the owner and StreamTelemetry; presence is announced", async (t) => {
      const home = await household(t, combo);
      const devices = await home.user.invoke("ListDevices");
      assert.deepEqual(
        devices.filter((d) => d.deviceId === home.deviceId),
        [{ deviceId: home.deviceId, name: devices.find((d) => d.deviceId === home.deviceId).name, online: true }],
      );

      const streamed = [];
      const subscription = home.user.stream("StreamTelemetry").subscribe({
        next: (item) => streamed.push(item),
        error: () => {},
        complete: () => {},
      });
      await home.user.invoke("Echo", "subscribed");
      const pushed = nextCall(home.user, "Telemetry");
      const report = await sign(home.deviceSigningKey, "ReportTelemetry", { kind: "temperature", data: { celsius: 21.5 } });
      await home.device.invoke("ReportTelemetry", report);
      const [telemetry] = await pushed;
      assert.equal(telemetry.deviceId, home.deviceId);
      assert.equal(telemetry.kind, "temperature");
      assert.deepEqual(telemetry.data, { celsius: 21.5 });
      await within(
        (async () => {
          while (streamed.length === 0) await delay(10);
        })(),
        "the telemetry stream item",
      );
      assert.deepEqual(streamed[0], telemetry);
      subscription.dispose();

      // The owner hears the device go offline.
      const offline = nextCall(home.user, "DeviceStatus", (status) => status.deviceId === home.deviceId);
      await home.device.stop();
      const [status] = await offline;
      assert.deepEqual(status, { deviceId: home.deviceId, online: false });
    });
  });
}
