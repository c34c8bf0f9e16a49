// Shared harness for the conformance suite: the server under test, token minting, and official
// `@microsoft/signalr` connections for one `{transport, protocol}` combination.
//
// Environment:
//   SIGNET_URL                 base URL of a running Signet server (required)
//   SIGNET_JWT_SECRET          the server's JWT signing secret, to mint test tokens (required)
//   SIGNET_MAX_MESSAGE_BYTES   the server's `hub.max_message_bytes` (default 32768)
//   SIGNET_COMBOS              restrict the combinations, e.g. "WebSockets/json,WebSockets/msgpack"
//   SIGNET_LOGIN_USERNAME, SIGNET_LOGIN_PASSWORD
//                              a user that can log in, for the revocation test (once the identity
//                              service serves POST /api/auth/login)
//   NODE_EXTRA_CA_CERTS        the CA of an https SIGNET_URL's certificate (Node's own variable)
//   SIGNET_CONFORMANCE_LOG     a client log level (Trace, Debug, Information, ...); silent by default

import { createHmac, randomBytes, randomUUID } from "node:crypto";
import http from "node:http";
import https from "node:https";
import { after, afterEach } from "node:test";
import {
  DefaultHttpClient,
  HttpTransportType,
  HubConnectionBuilder,
  JsonHubProtocol,
  LogLevel,
  MessageType,
  NullLogger,
} from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(
      `${name} is not set: run the suite through \`cargo test --test api conformance\`, ` +
        "or point SIGNET_URL and SIGNET_JWT_SECRET at a running server",
    );
  }
  return value;
}

export const BASE_URL = required("SIGNET_URL").replace(/\/+$/, "");
const SECRET = required("SIGNET_JWT_SECRET");
export const HUB_PATH = "/hubs/home";
export const HUB_URL = BASE_URL + HUB_PATH;
export const MAX_MESSAGE_BYTES = Number(process.env.SIGNET_MAX_MESSAGE_BYTES || 32768);
/** How long any single expected event may take before a test fails. */
export const EVENT_TIMEOUT_MS = 5000;

// ---------------------------------------------------------------------------------------------
// Tokens: HS256 JWTs signed with the server's secret, the way Signet issues them.

const b64url = (data) => Buffer.from(data).toString("base64url");
const now = () => Math.floor(Date.now() / 1000);

/** Signs `claims` (HS256, no `kid`: the server tries the keys pinned to the algorithm). */
export function signToken(claims, secret = SECRET) {
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify(claims));
  const signature = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${signature}`;
}

export function claimsFor(sub, { roles = ["user"], ttlSecs = 600 } = {}) {
  const issuedAt = now();
  return {
    sub,
    roles,
    jti: randomUUID(),
    iat: issuedAt,
    nbf: issuedAt,
    exp: issuedAt + ttlSecs,
    iss: "signet",
    aud: "signet",
  };
}

/** A unique subject, so tests never see each other's users. */
export const uniqueSub = (prefix = "user") => `${prefix}-${randomBytes(4).toString("hex")}`;

export const userToken = (sub = uniqueSub("user")) => signToken(claimsFor(sub));
export const adminToken = (sub = uniqueSub("admin")) =>
  signToken(claimsFor(sub, { roles: ["admin"] }));

/** Expired two minutes ago (the server's default leeway is 0). */
export function expiredToken(sub = uniqueSub("expired")) {
  const claims = claimsFor(sub);
  return signToken({ ...claims, iat: claims.iat - 720, nbf: claims.nbf - 720, exp: claims.iat - 120 });
}

/** A valid user token whose payload was then changed to claim the admin role. */
export function tamperedToken(sub = uniqueSub("tampered")) {
  const [head, , signature] = userToken(sub).split(".");
  const forged = b64url(JSON.stringify(claimsFor(sub, { roles: ["admin"] })));
  return `${head}.${forged}.${signature}`;
}

/** A well-formed token signed with a secret the server does not know. */
export const foreignToken = (sub = uniqueSub("foreign")) =>
  signToken(claimsFor(sub), "not-the-server-secret-0123456789-abcdefghijklmnop");

// ---------------------------------------------------------------------------------------------
// Combinations of transport and protocol.

const TRANSPORTS = {
  WebSockets: HttpTransportType.WebSockets,
  ServerSentEvents: HttpTransportType.ServerSentEvents,
  LongPolling: HttpTransportType.LongPolling,
};
const PROTOCOLS = {
  json: { format: "Text", create: () => new JsonHubProtocol() },
  msgpack: { format: "Binary", create: () => new MessagePackHubProtocol() },
};

/** POST negotiate with raw fetch; returns `{status, headers, body}` (body parsed when JSON). */
export async function negotiate({ token, query = "" } = {}) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const response = await fetch(`${HUB_URL}/negotiate?negotiateVersion=1${query}`, {
    method: "POST",
    headers,
  });
  const text = await response.text();
  let body = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: response.status, headers: response.headers, body };
}

/**
 * Every `{transport, protocol}` the server offers, from its own negotiate answer: a transport
 * listing "Text" runs the JSON protocol, one listing "Binary" runs MessagePack. Transports
 * that land later (Server-Sent Events, long polling) join the suite without edits.
 */
async function discoverCombos() {
  const { status, body } = await negotiate({ token: userToken(uniqueSub("discover")) });
  if (status !== 200) {
    throw new Error(`negotiate answered ${status} while discovering transports: ${JSON.stringify(body)}`);
  }
  const combos = [];
  for (const { transport, transferFormats } of body.availableTransports) {
    if (!(transport in TRANSPORTS)) continue;
    for (const [protocol, { format }] of Object.entries(PROTOCOLS)) {
      if (transferFormats.includes(format)) combos.push({ transport, protocol });
    }
  }
  const only = process.env.SIGNET_COMBOS?.split(",").map((s) => s.trim());
  return only ? combos.filter((c) => only.includes(`${c.transport}/${c.protocol}`)) : combos;
}

export const COMBOS = await discoverCombos();
export const comboName = ({ transport, protocol }) => `${transport}/${protocol}`;

// ---------------------------------------------------------------------------------------------
// Connections.

const open = new Set();

/** Stops every connection a test opened, so each test starts with a clean server. */
export async function stopAll() {
  const connections = [...open];
  open.clear();
  await Promise.all(connections.map((c) => c.stop().catch(() => {})));
}
afterEach(stopAll);
after(stopAll);

function logger() {
  const level = process.env.SIGNET_CONFORMANCE_LOG;
  return level ? LogLevel[level] ?? LogLevel.Information : LogLevel.None;
}

/** Remembers the secret connection token negotiate returned, for the refresh endpoint. */
export class CapturingHttpClient extends DefaultHttpClient {
  constructor() {
    super(NullLogger.instance);
    this.connectionToken = undefined;
  }

  async send(request) {
    const response = await super.send(request);
    if (request.url.includes("/negotiate")) {
      try {
        this.connectionToken = JSON.parse(response.content).connectionToken;
      } catch {
        // not the negotiate answer
      }
    }
    return response;
  }
}

/**
 * An official client connection for `combo` (to the server under test, or to another `url`),
 * not yet started. `wire` records every hub message
 * the client decodes (the protocol's own parser, wrapped), so tests can see what the server sent
 * even where the client API hides it (completions of cancelled streams, items after dispose).
 */
export function build(
  combo,
  {
    url = HUB_URL,
    token,
    tokenFactory,
    skipNegotiation = false,
    options = {},
    reconnectDelays,
    stateful = false,
  } = {},
) {
  const protocol = PROTOCOLS[combo.protocol].create();
  const wire = [];
  const parse = protocol.parseMessages.bind(protocol);
  protocol.parseMessages = (input, log) => {
    const messages = parse(input, log);
    wire.push(...messages);
    return messages;
  };
  const factory = tokenFactory ?? (token === undefined ? undefined : () => token);
  let builder = new HubConnectionBuilder()
    .withUrl(url, {
      transport: TRANSPORTS[combo.transport],
      skipNegotiation,
      ...(factory ? { accessTokenFactory: factory } : {}),
      ...options,
    })
    .withHubProtocol(protocol)
    .configureLogging(logger());
  if (reconnectDelays) builder = builder.withAutomaticReconnect(reconnectDelays);
  if (stateful) builder = builder.withStatefulReconnect();
  const connection = builder.build();
  connection.wire = wire;
  open.add(connection);
  return connection;
}

/** Builds and starts a connection; see {@link build}. */
export async function connect(combo, settings = {}) {
  const connection = build(combo, settings);
  await within(connection.start(), `${comboName(combo)} connection to start`);
  return connection;
}

/** Messages of `type` (a `MessageType`) the connection received, optionally for one target. */
export function received(connection, type, target) {
  return connection.wire.filter((m) => m.type === type && (target === undefined || m.target === target));
}
export { MessageType };

// ---------------------------------------------------------------------------------------------
// Waiting without sleeping.

/** `promise`, or a rejection naming `what` after `ms`. */
export function within(promise, what, ms = EVENT_TIMEOUT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolves with the arguments of the next server call of `method` whose first argument matches. */
export function nextCall(connection, method, matches = () => true) {
  return within(
    new Promise((resolve) => {
      const handler = (...args) => {
        if (!matches(...args)) return;
        connection.off(method, handler);
        resolve(args);
      };
      connection.on(method, handler);
    }),
    `the server to call '${method}'`,
  );
}

/** Resolves with the error `onclose` reports. */
export function closed(connection) {
  return within(
    new Promise((resolve) => connection.onclose((error) => resolve(error))),
    "the connection to close",
  );
}

export const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// Raw transport requests, to see the HTTP status the client hides.

/**
 * A raw request to the transport endpoint (`GET /hubs/home?id=...`) as `transport` makes it:
 * an upgrade for WebSockets, `Accept: text/event-stream` for SSE, a plain GET for long polling.
 * Resolves with the status; the socket is destroyed straight away.
 */
export function transportRequest(transport, { id, token }) {
  const url = new URL(HUB_URL);
  if (id) url.searchParams.set("id", id);
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (transport === "WebSockets") {
    Object.assign(headers, {
      Connection: "Upgrade",
      Upgrade: "websocket",
      "Sec-WebSocket-Version": "13",
      "Sec-WebSocket-Key": randomBytes(16).toString("base64"),
    });
  } else if (transport === "ServerSentEvents") {
    headers.Accept = "text/event-stream";
  }
  return within(
    new Promise((resolve, reject) => {
      const client = url.protocol === "https:" ? https : http;
      const request = client.request(url, { method: "GET", headers });
      request.on("response", (response) => {
        resolve(response.statusCode);
        response.destroy();
      });
      request.on("upgrade", (response, socket) => {
        resolve(response.statusCode);
        socket.destroy();
      });
      request.on("error", reject);
      request.end();
    }),
    `the ${transport} transport request to be answered`,
  );
}
