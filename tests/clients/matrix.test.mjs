// The core scenarios with older official clients, against a running Signet server:
// `@microsoft/signalr` 6 (negotiate v1; JSON on every transport, MessagePack on WebSockets and
// long polling) and `@aspnet/signalr` 1.1.4 (negotiate v0; JSON on every transport).
// Run by tests/api/client_matrix.rs; SIGNET_URL and SIGNET_JWT_SECRET as in tests/conformance.

import assert from "node:assert/strict";
import { createHmac, randomBytes, randomUUID } from "node:crypto";
import { createRequire } from "node:module";
import { describe, test } from "node:test";

const require = createRequire(import.meta.url);
const CLIENTS = [
  {
    name: "@microsoft/signalr 6",
    signalr: require("@microsoft/signalr"),
    protocols: { json: null, msgpack: require("@microsoft/signalr-protocol-msgpack") },
  },
  {
    name: "@aspnet/signalr 1.1.4",
    signalr: require("@aspnet/signalr"),
    protocols: { json: null },
    httpClient: tolerantDelete,
  },
];
const TRANSPORTS = ["WebSockets", "ServerSentEvents", "LongPolling"];
// Transports that carry binary frames, which MessagePack needs.
const BINARY_TRANSPORTS = ["WebSockets", "LongPolling"];

const HUB_URL = `${process.env.SIGNET_URL.replace(/\/+$/, "")}/hubs/home`;
const SECRET = process.env.SIGNET_JWT_SECRET;
const WAIT_MS = 10000;
const UNKNOWN_METHOD =
  "Failed to invoke 'Nope' due to an error on the server. HubException: Method does not exist.";

const b64url = (data) => Buffer.from(data).toString("base64url");

/**
 * Works around a bug of @aspnet/signalr 1.1.4 (docs/clients.md): when the server closes a
 * long-polling connection (here at token expiry) the client stops itself without awaiting it,
 * and the DELETE it then sends for the connection the server already ended gets 404, a
 * rejection nobody handles. This HTTP client treats that 404 as done.
 */
function tolerantDelete(signalr) {
  return class extends signalr.DefaultHttpClient {
    async delete(url, options) {
      try {
        return await super.delete(url, options);
      } catch (error) {
        if (error?.statusCode === 404) return new signalr.HttpResponse(404);
        throw error;
      }
    }
  };
}

/** An HS256 JWT signed with the server's secret, the way Signet issues them. */
function token({ roles = ["user"], ttlSecs = 600 } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    sub: `matrix-${randomBytes(4).toString("hex")}`,
    roles,
    jti: randomUUID(),
    iat: now,
    nbf: now,
    exp: now + ttlSecs,
    iss: "signet",
    aud: "signet",
  };
  const unsigned = `${b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }))}.${b64url(JSON.stringify(claims))}`;
  const signature = createHmac("sha256", SECRET).update(unsigned).digest("base64url");
  return { token: `${unsigned}.${signature}`, claims };
}

function within(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took over ${WAIT_MS} ms`)), WAIT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

for (const client of CLIENTS) {
  const { signalr } = client;
  for (const transport of TRANSPORTS) {
    for (const [protocolName, protocolModule] of Object.entries(client.protocols)) {
      if (protocolName === "msgpack" && !BINARY_TRANSPORTS.includes(transport)) continue;
      const connect = async (tokenText) => {
        let builder = new signalr.HubConnectionBuilder()
          .withUrl(HUB_URL, {
            transport: signalr.HttpTransportType[transport],
            accessTokenFactory: () => tokenText,
            ...(client.httpClient && {
              httpClient: new (client.httpClient(signalr))(signalr.NullLogger.instance),
            }),
          })
          .configureLogging(process.env.MATRIX_LOG ? signalr.LogLevel.Debug : signalr.LogLevel.None);
        if (protocolModule) builder = builder.withHubProtocol(new protocolModule.MessagePackHubProtocol());
        const connection = builder.build();
        const closed = new Promise((resolve) => connection.onclose(resolve));
        await within(connection.start(), "start");
        return { connection, closed };
      };

      describe(`${client.name} over ${transport}/${protocolName}`, () => {
        test("connect with a token, echo, broadcast, stream, error, close on expiry", async () => {
          // The expiring connection runs alongside the other steps, so its wait costs nothing.
          const expiring = await connect(token({ ttlSecs: 2 }).token);
          const user = token();
          const { connection } = await connect(user.token);
          const admin = await connect(token({ roles: ["admin"] }).token);
          try {
            const who = await within(connection.invoke("Whoami"), "Whoami");
            assert.equal(who.sub, user.claims.sub);

            const value = { text: "héllo ✓", n: 42, list: [1, "two", null] };
            assert.deepEqual(await within(connection.invoke("Echo", value), "Echo"), value);

            const text = `broadcast ${randomUUID()}`;
            const arrival = new Promise((resolve) => connection.on("SystemMessage", resolve));
            await within(admin.connection.invoke("BroadcastMessage", text), "BroadcastMessage");
            assert.equal(await within(arrival, "the broadcast"), text);

            const items = await within(
              new Promise((resolve, reject) => {
                const seen = [];
                connection.stream("Counter", 3, 10).subscribe({
                  next: (item) => seen.push(item),
                  complete: () => resolve(seen),
                  error: reject,
                });
              }),
              "the Counter stream",
            );
            assert.deepEqual(items, [0, 1, 2]);

            await assert.rejects(within(connection.invoke("Nope"), "Nope"), { message: UNKNOWN_METHOD });

            const error = await within(expiring.closed, "the close at expiry");
            assert.match(String(error?.message), /Authentication expired/);
          } finally {
            await Promise.allSettled([connection.stop(), admin.connection.stop(), expiring.connection.stop()]);
          }
        });
      });
    }
  }
}
