// Official-client connections that print what the publish API sends them, for
// `tests/api/publish_api.rs`: one JSON line per event on standard output, read by the test.
//
//   {"ready": label, "connectionId": id}      a connection started (its id for the publish API)
//   {"label": label, "target": t, "arguments": [...]}   an invocation arrived
//   {"closed": label, "error": text|null}     a connection ended
//
// Environment:
//   SIGNET_URL          base URL of the server
//   SIGNET_CONNECTIONS  JSON array of {label, token, transport, protocol}: transport one of
//                       WebSockets, ServerSentEvents, LongPolling; protocol json or msgpack
//   SIGNET_TARGETS      comma-separated client methods to listen for (default Notify)
// Runs until standard input closes.

import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

const { SIGNET_URL, SIGNET_CONNECTIONS, SIGNET_TARGETS = "Notify" } = process.env;
const print = (event) => process.stdout.write(JSON.stringify(event) + "\n");

const connections = [];
for (const { label, token, transport, protocol } of JSON.parse(SIGNET_CONNECTIONS)) {
  let builder = new signalR.HubConnectionBuilder()
    .withUrl(`${SIGNET_URL}/hubs/home`, {
      accessTokenFactory: () => token,
      transport: signalR.HttpTransportType[transport],
    })
    .configureLogging(signalR.LogLevel.Warning);
  if (protocol === "msgpack") builder = builder.withHubProtocol(new MessagePackHubProtocol());
  const connection = builder.build();
  for (const target of SIGNET_TARGETS.split(",")) {
    connection.on(target, (...args) => {
      // MessagePack hands binary as Uint8Array and maps as objects: JSON shows both plainly.
      const plain = args.map((a) => (a instanceof Uint8Array ? Array.from(a) : a));
      print({ label, target, arguments: plain });
    });
  }
  connection.onclose((error) => print({ closed: label, error: error ? String(error) : null }));
  await connection.start();
  connections.push(connection);
  print({ ready: label, connectionId: connection.connectionId });
}

process.stdin.resume();
process.stdin.on("end", async () => {
  await Promise.allSettled(connections.map((c) => c.stop()));
  process.exit(0);
});
