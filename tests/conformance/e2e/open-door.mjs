// One user's side of the end-to-end scenario, with the official client: wait until the device
// is online, send it a signed OPEN_DOOR, and print the result the device signed and the server
// delivered. Run by `clients/device/tests/live_server.rs` against a real `signet-device`.
//
// Environment: SIGNET_URL, SIGNET_ACCESS_TOKEN, SIGNET_MESSAGE_KEY, SIGNET_DEVICE_ID.

import * as signalR from "@microsoft/signalr";
import { importMessageKey, signEnvelope } from "../../../clients/js/envelope.js";

const { SIGNET_URL, SIGNET_ACCESS_TOKEN, SIGNET_MESSAGE_KEY, SIGNET_DEVICE_ID } = process.env;
const deadline = Date.now() + 20_000;

const connection = new signalR.HubConnectionBuilder()
  .withUrl(`${SIGNET_URL}/hubs/home`, { accessTokenFactory: () => SIGNET_ACCESS_TOKEN })
  .configureLogging(signalR.LogLevel.Warning)
  .build();
await connection.start();

// The device may still be connecting: its owner sees it through ListDevices.
for (;;) {
  const devices = await connection.invoke("ListDevices");
  if (devices.some((d) => d.deviceId === SIGNET_DEVICE_ID && d.online)) break;
  if (Date.now() > deadline) throw new Error(`device never came online: ${JSON.stringify(devices)}`);
  await new Promise((resolve) => setTimeout(resolve, 100));
}

const key = await importMessageKey(SIGNET_MESSAGE_KEY);
const result = new Promise((resolve) => connection.on("CommandResult", resolve));
const envelope = await signEnvelope(key, {
  hubPath: "/hubs/home",
  target: "SendCommand",
  message: { deviceId: SIGNET_DEVICE_ID, command: "OPEN_DOOR" },
});
const { commandId } = await connection.invoke("SendCommand", envelope);
let timer;
const timeout = new Promise((_, reject) => {
  timer = setTimeout(() => reject(new Error("no CommandResult within 20 s")), Math.max(0, deadline - Date.now()));
});
const delivered = await Promise.race([result, timeout]).finally(() => clearTimeout(timer));
if (delivered.commandId !== commandId) throw new Error(`result for another command: ${JSON.stringify(delivered)}`);
console.log(JSON.stringify(delivered));
await connection.stop();
