// Official `@microsoft/signalr` clients for the example servers (examples/*.rs), which serve
// their own hubs rather than `/hubs/home`: tokens signed with the server's secret, connections
// over every transport and protocol, and mailboxes to await what the server sends.
//
// Environment: SIGNET_URL, SIGNET_JWT_SECRET (set by tests/api/examples.rs).

import { createHmac, randomBytes, randomUUID } from "node:crypto";
import { after } from "node:test";
import { HttpTransportType, HubConnectionBuilder, JsonHubProtocol, LogLevel } from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

const BASE_URL = process.env.SIGNET_URL.replace(/\/+$/, "");
const SECRET = process.env.SIGNET_JWT_SECRET;
/** How long any single expected message may take. */
const TIMEOUT_MS = 5000;

/** An HS256 token for `sub` with `roles`, as Signet's own tokens look. */
export function tokenFor(sub, roles = ["user"]) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub, roles, jti: randomUUID(), iat: now, nbf: now, exp: now + 600, iss: "signet", aud: "signet" };
  const input = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${input}.${createHmac("sha256", SECRET).update(input).digest("base64url")}`;
}

export const uniqueSub = (prefix) => `${prefix}-${randomBytes(4).toString("hex")}`;

/** Every transport with each protocol it carries. */
export const COMBOS = [
  { transport: "WebSockets", protocol: "json" },
  { transport: "WebSockets", protocol: "msgpack" },
  { transport: "ServerSentEvents", protocol: "json" },
  { transport: "LongPolling", protocol: "msgpack" },
];
export const comboName = ({ transport, protocol }) => `${transport}/${protocol}`;

/** `promise`, or a rejection naming `what` after the timeout. */
export function within(promise, what, ms = TIMEOUT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const open = new Set();
after(() => Promise.all([...open].map((c) => c.stop().catch(() => {}))));

/**
 * A started connection to `/hubs/{hub}` for `combo` with `token`; `targets` are the client
 * methods whose calls land in mailboxes: `client.next("Message")` is the oldest unread one.
 */
export async function connect(hub, combo, token, targets) {
  const protocol = combo.protocol === "json" ? new JsonHubProtocol() : new MessagePackHubProtocol();
  const connection = new HubConnectionBuilder()
    .withUrl(`${BASE_URL}/hubs/${hub}`, {
      transport: HttpTransportType[combo.transport],
      accessTokenFactory: () => token,
    })
    .withHubProtocol(protocol)
    .configureLogging(LogLevel.None)
    .build();
  const boxes = new Map(targets.map((target) => [target, { items: [], waiters: [] }]));
  for (const [target, box] of boxes) {
    connection.on(target, (...args) => {
      const item = args.length === 1 ? args[0] : args;
      const waiter = box.waiters.shift();
      if (waiter) waiter(item);
      else box.items.push(item);
    });
  }
  open.add(connection);
  await within(connection.start(), `${comboName(combo)} connection to /hubs/${hub}`);
  return {
    connection,
    invoke: (...args) => connection.invoke(...args),
    /** The oldest call of `target` not yet read, waiting for it if none arrived. */
    next(target) {
      const box = boxes.get(target);
      if (box.items.length > 0) return Promise.resolve(box.items.shift());
      return within(new Promise((resolve) => box.waiters.push(resolve)), `${target} on ${comboName(combo)}`);
    },
    async stop() {
      open.delete(connection);
      await connection.stop();
    },
  };
}
