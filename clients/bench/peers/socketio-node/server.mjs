// Node's socket.io as a peer of Signet in signet-bench: the events the generator's scenarios
// send, on one Node.js process (socket.io's default deployment: several processes need sticky
// sessions and an adapter), WebSocket transport only, no per-message compression (Signet does
// not compress either), every other option at socket.io's default (ping every 25 s).
//
// - `echo`: acknowledges with its argument (Signet's `Echo`).
// - `broadcast`: re-emits its argument as `message` to every socket, the sender included, then
//   acknowledges (Signet's `BroadcastMessage` -> `SystemMessage`).
//
// `node server.mjs [HOST:PORT]` listens there (default 127.0.0.1:0) and prints
// `listening on IP:PORT` as its first line, which is how `signet-bench --peer` learns the port.
import { createServer } from "node:http";
import { Server } from "socket.io";

const [host, port] = (process.argv[2] ?? "127.0.0.1:0").split(":");
const http = createServer();
const io = new Server(http, {
  transports: ["websocket"],
  perMessageDeflate: false,
  serveClient: false,
});

io.on("connection", (socket) => {
  socket.on("echo", (data, ack) => {
    if (typeof ack === "function") ack(data);
  });
  socket.on("broadcast", (data, ack) => {
    io.emit("message", data);
    if (typeof ack === "function") ack();
  });
});

http.listen(Number(port), host, () => {
  const address = http.address();
  process.stdout.write(`listening on ${address.address}:${address.port}\n`);
});
