// Signet's small browser client: the REST session (login, refresh, logout) and a hub connection
// speaking the SignalR JSON protocol over WebSockets, with the token in the `access_token` query
// parameter (browsers cannot set headers on a WebSocket), automatic reconnection with a fresh
// token, in-band token refresh before expiry, and signed envelopes.
//
// No dependencies and no build step: an ES module for browsers and Node 20+ (pass `WebSocket` in
// Node 20, which has none built in). Tokens live in private fields of these objects and nowhere
// else: nothing is written to localStorage, sessionStorage or cookies.

import { importMessageKey, signEnvelope } from './envelope.js';
import {
  MessageReader,
  MessageType,
  cancelInvocation,
  close as closeMessage,
  encodeMessage,
  handshakeRequest,
  invocation,
  parseHandshakeResponse,
  ping,
  streamInvocation,
} from './hub-protocol.js';

export { importMessageKey, signEnvelope, verifyEnvelope } from './envelope.js';
export { MessageType } from './hub-protocol.js';

/** Connection states, in the order a connection usually goes through them. */
export const State = Object.freeze({
  Disconnected: 'disconnected',
  Connecting: 'connecting',
  Connected: 'connected',
  Reconnecting: 'reconnecting',
});

/**
 * Every error this module raises. `code` is machine-readable: the server's REST error code
 * (`invalid_credentials`, `rate_limited`, `invalid_refresh_token`, ...), or one of
 * `unauthorized` (401 on the hub), `forbidden` (a role-gated hub method), `envelope_rejected`
 * (with `envelopeCode`: `bad_signature`, `replayed_nonce`, ...), `hub_error` (any other failed
 * invocation), `closed` (the connection ended; `allowReconnect` tells whether the server allows
 * a new one), `network`, `protocol`.
 */
export class SignetError extends Error {
  constructor(message, { code, status, envelopeCode, allowReconnect, retryAfterSecs, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'SignetError';
    this.code = code ?? 'error';
    if (status !== undefined) this.status = status;
    if (envelopeCode !== undefined) this.envelopeCode = envelopeCode;
    if (allowReconnect !== undefined) this.allowReconnect = allowReconnect;
    if (retryAfterSecs !== undefined) this.retryAfterSecs = retryAfterSecs;
  }
}

/** Turns a Completion's error text into a {@link SignetError} with a code. */
export function hubError(text) {
  const envelope = /envelope rejected \(([a-z_]+)\)/.exec(text);
  if (envelope) return new SignetError(text, { code: 'envelope_rejected', envelopeCode: envelope[1] });
  if (/because user is unauthorized/.test(text)) return new SignetError(text, { code: 'forbidden' });
  return new SignetError(text, { code: 'hub_error' });
}

function resolveUrl(url, base) {
  const origin = base ?? globalThis.location?.href;
  try {
    return origin === undefined ? new URL(url) : new URL(url, origin);
  } catch {
    throw new TypeError(`cannot resolve the URL ${url}: give an absolute URL outside a browser`);
  }
}

/** A JSON request; answers `{status, body, headers}`, or throws `network`. */
async function requestJson(fetchImpl, url, { method = 'GET', token, body } = {}) {
  const headers = { Accept: 'application/json' };
  if (token !== undefined) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetchImpl(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      // Tokens go in the Authorization header only; no cookies are involved.
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch (cause) {
    throw new SignetError(`cannot reach the server (${cause?.message ?? cause})`, { code: 'network', cause });
  }
  const text = await response.text();
  let parsed = null;
  if (text.length > 0) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = null;
    }
  }
  return { status: response.status, body: parsed, headers: response.headers };
}

/** The server's `{error, message}` answer as a {@link SignetError}. */
function apiError(answer, fallback) {
  const code = answer.body?.error ?? (answer.status === 401 ? 'unauthorized' : 'http_error');
  const message = answer.body?.message ?? `${fallback} (HTTP ${answer.status})`;
  const retry = Number(answer.headers?.get?.('Retry-After'));
  return new SignetError(message, {
    code,
    status: answer.status,
    retryAfterSecs: Number.isFinite(retry) && retry > 0 ? retry : undefined,
  });
}

/**
 * A login session against Signet's REST API. Keeps the access token, the refresh token and the
 * message key in memory only. Refresh is single-flight: concurrent callers share one request,
 * because a refresh token is single use and presenting it twice revokes the whole session.
 */
export class Session {
  #base;
  #fetch;
  #accessToken = null;
  #refreshToken = null;
  #expiresAt = 0;
  #messageKey = null;
  #refreshing = null;
  #listeners = new Set();
  #claimMessageKey = false;

  /**
   * @param {object} [options]
   * @param {string} [options.baseUrl] the server, e.g. `http://127.0.0.1:8080`; the page's own
   *   origin in a browser when omitted
   * @param {typeof fetch} [options.fetch]
   */
  constructor({ baseUrl, fetch: fetchImpl } = {}) {
    this.#base = baseUrl;
    this.#fetch = fetchImpl ?? globalThis.fetch.bind(globalThis);
  }

  /**
   * A session over tokens obtained elsewhere (another login flow, tests). Without a refresh
   * token, `refresh` asks `renew` (if given) for a new access token.
   *
   * `claimMessageKey: true` is for an external identity provider's tokens, which come without a
   * message key: the session claims it once from `GET /api/auth/message-key` (token in the
   * Authorization header), now and after each `renew` that starts a new message session. The
   * server hands a session's key out once, so claim it right after sign-in. Signet's own tokens
   * never yield their key there (403 `message_key_not_claimable`): it comes with login, refresh
   * and the device-token exchange.
   * @param {{accessToken: string, expiresIn?: number, refreshToken?: string, messageKey?: string,
   *   claimMessageKey?: boolean, baseUrl?: string, fetch?: typeof fetch,
   *   renew?: () => Promise<{accessToken: string, expiresIn?: number}>}} tokens
   */
  static async fromTokens({ renew, claimMessageKey = false, ...tokens }) {
    const session = new Session(tokens);
    session.#claimMessageKey = claimMessageKey === true;
    await session.#accept(tokens);
    session.renew = renew;
    return session;
  }

  /**
   * `GET /api/auth/message-key` for the current (external) access token; imports and keeps the
   * key. Throws `message_key_claimed` when the key of this token's session was claimed before
   * (unless this session already holds it), `message_key_not_claimable` for Signet's own tokens.
   */
  async claimMessageKey() {
    if (this.#accessToken === null) {
      throw new SignetError('not logged in', { code: 'unauthorized' });
    }
    const answer = await requestJson(this.#fetch, this.url('/api/auth/message-key'), { token: this.#accessToken });
    if (answer.status === 409 && this.#messageKey !== null) {
      // A renewed token of the same session: the key this session holds is still its key.
      return this.#messageKey;
    }
    if (answer.status !== 200 || typeof answer.body?.messageKey !== 'string') {
      throw apiError(answer, 'claiming the message key failed');
    }
    this.#messageKey = await importMessageKey(answer.body.messageKey);
    return this.#messageKey;
  }

  url(path) {
    return resolveUrl(path, this.#base).href;
  }

  /** Whether the session holds an access token. */
  get signedIn() {
    return this.#accessToken !== null;
  }

  /** The current access token (use {@link freshAccessToken} to be sure it is still valid). */
  get accessToken() {
    return this.#accessToken;
  }

  /** When the current access token expires, Unix ms (as announced by the server at issue). */
  get expiresAt() {
    return this.#expiresAt;
  }

  /** The session's message key as a non-extractable CryptoKey, for signing envelopes. */
  get messageKey() {
    return this.#messageKey;
  }

  /** Calls `listener({accessToken, expiresAt})` after every login and refresh; returns an unsubscribe function. */
  onTokens(listener) {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * `POST /api/auth/login`. Throws a {@link SignetError}: `invalid_credentials`,
   * `rate_limited` (with `retryAfterSecs`), `network`, ...
   */
  async login(username, password) {
    const answer = await requestJson(this.#fetch, this.url('/api/auth/login'), {
      method: 'POST',
      body: { username, password },
    });
    if (answer.status !== 200) throw apiError(answer, 'login failed');
    await this.#accept(answer.body);
    return this;
  }

  /**
   * A new access token now, rotating the refresh token. Concurrent calls share one request.
   * Throws `invalid_refresh_token` or `refresh_token_reused` when the session has ended (log in
   * again), `network` when the server cannot be reached.
   */
  refresh() {
    this.#refreshing ??= this.#doRefresh().finally(() => {
      this.#refreshing = null;
    });
    return this.#refreshing;
  }

  async #doRefresh() {
    if (this.#refreshToken === null) {
      if (typeof this.renew === 'function') {
        await this.#accept(await this.renew());
        return this.#accessToken;
      }
      throw new SignetError('the session cannot be refreshed: log in again', { code: 'invalid_refresh_token' });
    }
    const answer = await requestJson(this.#fetch, this.url('/api/auth/refresh'), {
      method: 'POST',
      body: { refreshToken: this.#refreshToken },
    });
    if (answer.status !== 200) {
      if (answer.status === 401) this.#clear();
      throw apiError(answer, 'refresh failed');
    }
    await this.#accept(answer.body);
    return this.#accessToken;
  }

  /**
   * An access token valid for at least `minValidityMs` more (refreshing when needed), or a new
   * one whatever the old one's validity with `force`.
   */
  async freshAccessToken({ minValidityMs = 30_000, force = false } = {}) {
    if (this.#accessToken === null) {
      throw new SignetError('not logged in', { code: 'unauthorized' });
    }
    if (!force && this.#expiresAt - Date.now() > minValidityMs) return this.#accessToken;
    return this.refresh();
  }

  /** `POST /api/auth/logout`: ends the session on the server, then forgets the tokens here. */
  async logout() {
    const token = this.#accessToken;
    const refreshToken = this.#refreshToken;
    this.#clear();
    if (token === null) return;
    const answer = await requestJson(this.#fetch, this.url('/api/auth/logout'), {
      method: 'POST',
      token,
      body: refreshToken === null ? {} : { refreshToken },
    });
    if (answer.status !== 204 && answer.status !== 401) throw apiError(answer, 'logout failed');
  }

  /** An authenticated REST call (`GET /api/auth/me`, `/api/devices`, ...); answers the JSON body. */
  async api(path, { method = 'GET', body } = {}) {
    const token = await this.freshAccessToken();
    const answer = await requestJson(this.#fetch, this.url(path), { method, token, body });
    if (answer.status < 200 || answer.status > 299) throw apiError(answer, `${method} ${path} failed`);
    return answer.body;
  }

  async #accept({ accessToken, refreshToken, expiresIn, messageKey }) {
    if (typeof accessToken !== 'string' || accessToken.length === 0) {
      throw new SignetError('the server answered without an access token', { code: 'protocol' });
    }
    if (typeof messageKey === 'string') this.#messageKey = await importMessageKey(messageKey);
    this.#accessToken = accessToken;
    if (typeof refreshToken === 'string') this.#refreshToken = refreshToken;
    this.#expiresAt = Date.now() + (Number.isFinite(expiresIn) ? expiresIn * 1000 : jwtLifetimeMs(accessToken));
    if (this.#claimMessageKey && typeof messageKey !== 'string') await this.claimMessageKey();
    for (const listener of this.#listeners) listener({ accessToken, expiresAt: this.#expiresAt });
  }

  #clear() {
    this.#accessToken = null;
    this.#refreshToken = null;
    this.#messageKey = null;
    this.#expiresAt = 0;
  }
}

/** Milliseconds until a JWT's `exp`, read without verifying (only to schedule a refresh). */
function jwtLifetimeMs(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const exp = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '='))).exp;
    return Number.isFinite(exp) ? exp * 1000 - Date.now() : 0;
  } catch {
    return 0;
  }
}

const DEFAULTS = Object.freeze({
  reconnectDelaysMs: [0, 1000, 2000, 5000, 10000, 30000],
  keepAliveIntervalMs: 15_000,
  serverTimeoutMs: 30_000,
  handshakeTimeoutMs: 15_000,
  // In-band refresh this long before the connection's token expires: a fifth of the token's
  // lifetime, kept between these bounds.
  minRefreshAheadMs: 5_000,
  maxRefreshAheadMs: 60_000,
});

/**
 * One hub connection. Reconnects by itself after a lost connection or a server Close with
 * `allowReconnect: true` (refreshing the token first after `Authentication expired`), and
 * moves an open connection onto a new token before the old one expires
 * (`POST /hubs/{hub}/refresh`), so a healthy connection is never closed for expiry.
 */
export class HubConnection {
  #url;
  #session;
  #WebSocket;
  #fetch;
  #options;
  #handlers = new Map();
  #stateListeners = new Set();
  #state = State.Disconnected;
  #socket = null;
  #reader = null;
  #pending = new Map();
  #streams = new Map();
  #nextId = 1;
  #timers = new Set();
  #keepAlive = null;
  #serverTimeout = null;
  #refreshTimer = null;
  #lastSent = 0;
  #closeInfo = null;
  #stopped = true;
  #connectionToken = null;
  #tokenExpiresAt = null;
  #cycle = 0;

  /**
   * @param {object} options
   * @param {string} options.url the hub, e.g. `/hubs/home` (absolute outside a browser)
   * @param {Session|{freshAccessToken: Function, refresh: Function, messageKey?: CryptoKey}} options.session
   *   where tokens come from
   * @param {typeof WebSocket} [options.WebSocket] the WebSocket class (Node 20 has none built in)
   * @param {typeof fetch} [options.fetch]
   * @param {boolean} [options.skipNegotiation=false] open the WebSocket directly (no in-band refresh
   *   then: its connection token comes from negotiate)
   * @param {number[]} [options.reconnectDelaysMs] waits before each reconnection attempt; the last
   *   repeats for as long as the server allows reconnecting
   * @param {number} [options.keepAliveIntervalMs=15000]
   * @param {number} [options.serverTimeoutMs=30000] treat the connection as lost when nothing
   *   arrives for this long (the server pings every 15 s)
   */
  constructor({ url, session, WebSocket: WebSocketImpl, fetch: fetchImpl, ...options }) {
    if (!session) throw new TypeError('a session (token source) is required');
    this.#url = resolveUrl(url);
    this.#session = session;
    this.#WebSocket = WebSocketImpl ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== 'function') {
      throw new TypeError('no WebSocket implementation: pass one as the WebSocket option');
    }
    this.#fetch = fetchImpl ?? globalThis.fetch.bind(globalThis);
    this.#options = { ...DEFAULTS, skipNegotiation: false, ...options };
  }

  /** The hub's URL path, which signed envelopes are bound to (e.g. `/hubs/home`). */
  get hubPath() {
    return this.#url.pathname;
  }

  get state() {
    return this.#state;
  }

  /** When the token behind the open connection expires (Unix ms), or null if unknown. */
  get tokenExpiresAt() {
    return this.#tokenExpiresAt;
  }

  /**
   * Calls `listener({state, previous, error})` on every state change; `error` (a
   * {@link SignetError}) says why a connection was lost or ended. Returns an unsubscribe function.
   */
  onState(listener) {
    this.#stateListeners.add(listener);
    return () => this.#stateListeners.delete(listener);
  }

  /** Calls `handler(...args)` when the server invokes `target`. */
  on(target, handler) {
    const key = target.toLowerCase();
    if (!this.#handlers.has(key)) this.#handlers.set(key, new Set());
    this.#handlers.get(key).add(handler);
    return this;
  }

  /** Removes one handler of `target`, or all of them without `handler`. */
  off(target, handler) {
    const key = target.toLowerCase();
    if (handler === undefined) this.#handlers.delete(key);
    else this.#handlers.get(key)?.delete(handler);
    return this;
  }

  /**
   * Connects (negotiate, WebSocket, handshake). Rejects with a {@link SignetError} if the first
   * connection fails (`unauthorized`, `network`, `protocol`, `closed`); later losses reconnect.
   */
  async start() {
    if (!this.#stopped) throw new Error('the connection is already started');
    this.#stopped = false;
    this.#cycle += 1;
    this.#setState(State.Connecting);
    try {
      await this.#connect({ refreshed: false });
    } catch (error) {
      this.#stopped = true;
      this.#setState(State.Disconnected, error);
      throw error;
    }
  }

  /** Closes the connection on purpose: no reconnection; pending calls fail with `closed`. */
  async stop() {
    if (this.#stopped && this.#socket === null) return;
    this.#stopped = true;
    this.#cycle += 1;
    const socket = this.#socket;
    if (socket !== null && socket.readyState === 1) {
      try {
        socket.send(encodeMessage(closeMessage()));
      } catch {
        // The socket is going away anyway.
      }
    }
    this.#teardown(new SignetError('the connection was stopped', { code: 'closed', allowReconnect: false }));
    if (socket !== null) {
      await new Promise((resolve) => {
        if (socket.readyState === 3) return resolve();
        socket.addEventListener?.('close', () => resolve(), { once: true });
        try {
          socket.close(1000);
        } catch {
          resolve();
        }
        this.#later(resolve, 1000);
      });
    }
    this.#setState(State.Disconnected);
  }

  /** Calls a hub method and waits for its result. Rejects with a {@link SignetError}. */
  invoke(target, ...args) {
    const id = String(this.#nextId++);
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      try {
        this.#write(invocation(target, args, id));
      } catch (error) {
        this.#pending.delete(id);
        reject(error);
      }
    });
  }

  /** Calls a hub method without waiting for (or receiving) a result. */
  async send(target, ...args) {
    this.#write(invocation(target, args));
  }

  /**
   * Signs `message` with the session's message key for this hub and `target`, then invokes
   * `target` with the envelope. `target` must be the method's declared name (`SendCommand`):
   * the server matches method names in any case but verifies the signature over that spelling.
   */
  async invokeSigned(target, message, { lifetimeMs = 30_000, key } = {}) {
    const signingKey = key ?? this.#session.messageKey;
    if (!signingKey) throw new SignetError('no message key: log in first', { code: 'unauthorized' });
    const envelope = await signEnvelope(signingKey, { hubPath: this.hubPath, target, message, lifetimeMs });
    return this.invoke(target, envelope);
  }

  /**
   * A server-to-client stream. Nothing is sent until `subscribe({next, error, complete})`,
   * which returns `{dispose()}`: disposing cancels the stream on the server.
   */
  stream(target, ...args) {
    return {
      subscribe: (observer) => {
        const id = String(this.#nextId++);
        const entry = {
          next: (item) => observer.next?.(item),
          error: (err) => observer.error?.(err),
          complete: () => observer.complete?.(),
        };
        this.#streams.set(id, entry);
        try {
          this.#write(streamInvocation(target, args, id));
        } catch (error) {
          this.#streams.delete(id);
          queueMicrotask(() => entry.error(error));
        }
        return {
          dispose: () => {
            if (!this.#streams.delete(id)) return;
            try {
              this.#write(cancelInvocation(id));
            } catch {
              // Closed: the server ended the stream with the connection.
            }
          },
        };
      },
    };
  }

  // ---- connecting --------------------------------------------------------------------------

  async #connect({ refreshed }) {
    const cycle = this.#cycle;
    const token = await this.#session.freshAccessToken({ minValidityMs: 10_000, force: refreshed });
    let connectionToken = null;
    let lifetimeSeconds = null;
    if (!this.#options.skipNegotiation) {
      const negotiateUrl = new URL(this.#url);
      negotiateUrl.pathname += '/negotiate';
      negotiateUrl.searchParams.set('negotiateVersion', '1');
      const answer = await requestJson(this.#fetch, negotiateUrl.href, { method: 'POST', token });
      if (answer.status === 401 && !refreshed) {
        // A token the server no longer takes (expired in between, or a clock difference).
        return this.#connect({ refreshed: true });
      }
      if (answer.status !== 200) {
        const error = apiError(answer, 'negotiate failed');
        if (answer.status === 401) error.code = 'unauthorized';
        throw error;
      }
      const body = answer.body ?? {};
      if (typeof body.error === 'string') throw new SignetError(body.error, { code: 'protocol' });
      const offersWebSockets = (body.availableTransports ?? []).some((t) => t.transport === 'WebSockets');
      if (!offersWebSockets) {
        throw new SignetError('the server does not offer WebSockets', { code: 'protocol' });
      }
      connectionToken = body.connectionToken ?? body.connectionId;
      if (Number.isFinite(body.tokenLifetimeSeconds)) lifetimeSeconds = body.tokenLifetimeSeconds;
    }
    if (cycle !== this.#cycle) throw new SignetError('the connection was stopped', { code: 'closed' });

    const socketUrl = new URL(this.#url);
    socketUrl.protocol = socketUrl.protocol === 'https:' ? 'wss:' : 'ws:';
    if (connectionToken !== null) socketUrl.searchParams.set('id', connectionToken);
    socketUrl.searchParams.set('access_token', token);
    await this.#open(socketUrl.href, cycle);
    this.#connectionToken = connectionToken;
    this.#tokenExpiresAt = lifetimeSeconds === null ? null : Date.now() + lifetimeSeconds * 1000;
    this.#scheduleRefresh();
    this.#setState(State.Connected);
  }

  /** Opens the socket and completes the handshake; resolves once the server accepted it. */
  #open(url, cycle) {
    return new Promise((resolve, reject) => {
      let settled = false;
      let handshaking = true;
      const socket = new this.#WebSocket(url);
      this.#socket = socket;
      this.#reader = new MessageReader();
      this.#closeInfo = null;
      const fail = (error) => {
        if (settled) return;
        settled = true;
        clearTimeout(handshakeTimer);
        this.#socket = null;
        try {
          socket.close();
        } catch {
          // Already closed.
        }
        reject(error);
      };
      const handshakeTimer = setTimeout(
        () => fail(new SignetError('the server did not answer the handshake', { code: 'protocol' })),
        this.#options.handshakeTimeoutMs,
      );
      socket.onopen = () => {
        if (cycle !== this.#cycle) return fail(new SignetError('the connection was stopped', { code: 'closed' }));
        socket.send(handshakeRequest());
        this.#lastSent = Date.now();
      };
      socket.onmessage = (event) => {
        let text = typeof event.data === 'string' ? event.data : null;
        if (text === null) return fail(new SignetError('the server sent binary data to a JSON client', { code: 'protocol' }));
        if (handshaking) {
          let answer;
          try {
            answer = parseHandshakeResponse(text);
          } catch (error) {
            return fail(new SignetError(error.message, { code: 'protocol' }));
          }
          if (!answer.complete) return fail(new SignetError('incomplete handshake response', { code: 'protocol' }));
          if (answer.error !== null) return fail(new SignetError(answer.error, { code: 'protocol' }));
          handshaking = false;
          settled = true;
          clearTimeout(handshakeTimer);
          this.#startTimers();
          resolve();
          text = answer.rest;
          if (text.length === 0) return;
        }
        this.#received(text);
      };
      socket.onclose = (event) => {
        if (!settled) {
          const info = this.#closeInfo;
          const error = info
            ? new SignetError(info.error ?? 'the server closed the connection', {
                code: 'closed',
                allowReconnect: info.allowReconnect,
              })
            : new SignetError(`the connection closed during the handshake (code ${event?.code ?? 'unknown'})`, {
                code: 'network',
              });
          return fail(error);
        }
        if (this.#socket === socket) this.#lost(socket);
      };
      socket.onerror = () => {
        if (!settled) fail(new SignetError('the WebSocket could not be opened', { code: 'network' }));
      };
    });
  }

  // ---- receiving ---------------------------------------------------------------------------

  #received(text) {
    this.#armServerTimeout();
    let messages;
    try {
      messages = this.#reader.push(text);
    } catch (error) {
      this.#closeInfo = { error: `protocol error: ${error.message}`, allowReconnect: true };
      this.#socket?.close();
      return;
    }
    for (const message of messages) this.#dispatch(message);
  }

  #dispatch(message) {
    switch (message.type) {
      case MessageType.Invocation:
        this.#invoked(message);
        break;
      case MessageType.StreamItem:
        this.#streams.get(message.invocationId)?.next(message.item);
        break;
      case MessageType.Completion:
        this.#completed(message);
        break;
      case MessageType.Ping:
        break;
      case MessageType.Close:
        this.#closeInfo = {
          error: typeof message.error === 'string' ? message.error : null,
          allowReconnect: message.allowReconnect === true,
        };
        this.#socket?.close(1000);
        break;
      default:
        // Unknown types are ignored, as the protocol asks, so newer servers stay compatible.
        break;
    }
  }

  #invoked({ target, arguments: args = [], invocationId }) {
    const handlers = [...(this.#handlers.get(String(target).toLowerCase()) ?? [])];
    const results = [];
    for (const handler of handlers) {
      try {
        results.push(handler(...args));
      } catch (error) {
        results.push(Promise.reject(error));
      }
    }
    if (invocationId === undefined) return;
    // A client result: the first handler's answer.
    const reply = (completion) => {
      try {
        this.#write({ type: MessageType.Completion, invocationId, ...completion });
      } catch {
        // The connection is gone; the server fails the call itself.
      }
    };
    if (results.length === 0) {
      reply({ error: "Client didn't provide a result." });
      return;
    }
    Promise.resolve(results[0]).then(
      (result) => reply(result === undefined ? {} : { result }),
      (error) => reply({ error: String(error?.message ?? error) }),
    );
  }

  #completed({ invocationId, error, result }) {
    const call = this.#pending.get(invocationId);
    if (call) {
      this.#pending.delete(invocationId);
      if (typeof error === 'string') call.reject(hubError(error));
      else call.resolve(result);
      return;
    }
    const stream = this.#streams.get(invocationId);
    if (stream) {
      this.#streams.delete(invocationId);
      if (typeof error === 'string') stream.error(hubError(error));
      else stream.complete();
    }
  }

  // ---- sending and timers ------------------------------------------------------------------

  #write(message) {
    const socket = this.#socket;
    if (this.#state !== State.Connected || socket === null || socket.readyState !== 1) {
      throw new SignetError(`cannot send while ${this.#state}`, { code: 'closed', allowReconnect: true });
    }
    socket.send(encodeMessage(message));
    this.#lastSent = Date.now();
  }

  #startTimers() {
    this.#stopTimers();
    const interval = this.#options.keepAliveIntervalMs;
    this.#keepAlive = setInterval(() => {
      if (Date.now() - this.#lastSent < interval) return;
      try {
        this.#write(ping());
      } catch {
        // Not connected: the close handling takes over.
      }
    }, Math.max(250, Math.floor(interval / 2)));
    this.#armServerTimeout();
  }

  #armServerTimeout() {
    clearTimeout(this.#serverTimeout);
    this.#serverTimeout = setTimeout(() => {
      this.#closeInfo = { error: 'the server sent nothing for too long', allowReconnect: true };
      this.#socket?.close();
    }, this.#options.serverTimeoutMs);
  }

  #stopTimers() {
    clearInterval(this.#keepAlive);
    clearTimeout(this.#serverTimeout);
    clearTimeout(this.#refreshTimer);
    this.#keepAlive = null;
    this.#serverTimeout = null;
    this.#refreshTimer = null;
  }

  #later(fn, ms) {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      fn();
    }, ms);
    this.#timers.add(timer);
    return timer;
  }

  // ---- in-band refresh ---------------------------------------------------------------------

  #scheduleRefresh() {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
    if (this.#tokenExpiresAt === null || this.#connectionToken === null) return;
    const remaining = this.#tokenExpiresAt - Date.now();
    const ahead = Math.min(
      this.#options.maxRefreshAheadMs,
      Math.max(this.#options.minRefreshAheadMs, Math.floor(remaining / 5)),
    );
    const cycle = this.#cycle;
    this.#refreshTimer = setTimeout(() => {
      if (cycle === this.#cycle) this.refreshToken().catch(() => {});
    }, Math.max(0, remaining - ahead));
  }

  /**
   * Moves the open connection onto a fresh token now (`POST /hubs/{hub}/refresh?id=`); done by
   * itself before expiry. Resolves with the new expiry (Unix ms). When it fails the connection
   * stays on its old token and, once that expires, the server closes it and this client
   * reconnects with a new one.
   */
  async refreshToken() {
    const connectionToken = this.#connectionToken;
    if (connectionToken === null || this.#state !== State.Connected) {
      throw new SignetError('no negotiated connection to refresh', { code: 'closed' });
    }
    const remaining = (this.#tokenExpiresAt ?? Date.now()) - Date.now();
    const token = await this.#session.freshAccessToken({ minValidityMs: remaining + 60_000 });
    const refreshUrl = new URL(this.#url);
    refreshUrl.pathname += '/refresh';
    refreshUrl.searchParams.set('id', connectionToken);
    const answer = await requestJson(this.#fetch, refreshUrl.href, { method: 'POST', token });
    if (answer.status !== 200 || !Number.isFinite(answer.body?.tokenLifetimeSeconds)) {
      const error = apiError(answer, 'in-band token refresh failed');
      this.#emit(this.#state, error);
      throw error;
    }
    if (connectionToken !== this.#connectionToken) return this.#tokenExpiresAt;
    this.#tokenExpiresAt = Date.now() + answer.body.tokenLifetimeSeconds * 1000;
    this.#scheduleRefresh();
    this.#emit(this.#state);
    return this.#tokenExpiresAt;
  }

  // ---- losing and regaining the connection -------------------------------------------------

  /** The socket closed after the handshake: end, or reconnect if the server allows it. */
  #lost(socket) {
    if (this.#socket !== socket) return;
    const info = this.#closeInfo;
    const error = info
      ? new SignetError(info.error ?? 'the server closed the connection', {
          code: 'closed',
          allowReconnect: info.allowReconnect,
        })
      : new SignetError('the connection was lost', { code: 'network', allowReconnect: true });
    this.#teardown(error);
    if (this.#stopped) return;
    if (error.allowReconnect === false) {
      this.#stopped = true;
      this.#setState(State.Disconnected, error);
      return;
    }
    this.#reconnect(error);
  }

  /** Fails every pending call and stream with `error`, drops the socket and timers. */
  #teardown(error) {
    this.#stopTimers();
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    const socket = this.#socket;
    this.#socket = null;
    this.#connectionToken = null;
    if (socket !== null) {
      socket.onmessage = null;
      socket.onclose = null;
      socket.onerror = null;
    }
    const calls = [...this.#pending.values()];
    const streams = [...this.#streams.values()];
    this.#pending.clear();
    this.#streams.clear();
    for (const call of calls) call.reject(error);
    for (const stream of streams) stream.error(error);
  }

  async #reconnect(cause) {
    const cycle = this.#cycle;
    this.#setState(State.Reconnecting, cause);
    const expired = /authentication expired/i.test(cause.message);
    const delays = this.#options.reconnectDelaysMs;
    for (let attempt = 0; ; attempt += 1) {
      const delay = delays[Math.min(attempt, delays.length - 1)];
      if (delay > 0) await new Promise((resolve) => this.#later(resolve, delay));
      if (cycle !== this.#cycle || this.#stopped) return;
      try {
        await this.#connect({ refreshed: expired && attempt === 0 });
        return;
      } catch (error) {
        if (cycle !== this.#cycle || this.#stopped) return;
        const final =
          error.code === 'invalid_refresh_token' ||
          error.code === 'refresh_token_reused' ||
          (error.code === 'closed' && error.allowReconnect === false) ||
          (error.status !== undefined && error.status >= 400 && error.status < 500 && error.status !== 408 && error.status !== 429);
        if (final) {
          this.#stopped = true;
          this.#setState(State.Disconnected, error);
          return;
        }
        this.#emit(State.Reconnecting, error);
      }
    }
  }

  #setState(state, error) {
    const previous = this.#state;
    this.#state = state;
    if (state === State.Disconnected) this.#tokenExpiresAt = null;
    if (previous !== state || error !== undefined) this.#emit(state, error, previous);
  }

  #emit(state, error, previous = state) {
    for (const listener of this.#stateListeners) {
      try {
        listener({ state, previous, error });
      } catch {
        // A listener's failure is its own.
      }
    }
  }
}
