// Types of signet.js: the REST session and the hub connection (SignalR JSON over WebSockets).
// Uses the DOM library's CryptoKey and fetch types (lib "DOM"), which browsers and Node 20+
// both implement.

import type { EnvelopeMessage } from './envelope.js';

export { importMessageKey, signEnvelope, verifyEnvelope } from './envelope.js';
export type {
  Envelope,
  EnvelopeMessage,
  EnvelopeRejectionCode,
  SignOptions,
  VerifiedEnvelope,
  VerifyOptions,
  VerifyResult,
} from './envelope.js';
export { MessageType } from './hub-protocol.js';

/** Connection states, in the order a connection usually goes through them. */
export declare const State: Readonly<{
  Disconnected: 'disconnected';
  Connecting: 'connecting';
  Connected: 'connected';
  Reconnecting: 'reconnecting';
}>;

export type ConnectionState = (typeof State)[keyof typeof State];

/**
 * `code` of a {@link SignetError}: the server's REST error code (`invalid_credentials`,
 * `rate_limited`, `invalid_refresh_token`, `refresh_token_reused`, ...) or one of the client's
 * own. Other server codes pass through as strings.
 */
export type SignetErrorCode =
  | 'invalid_credentials'
  | 'rate_limited'
  | 'invalid_refresh_token'
  | 'refresh_token_reused'
  | 'unauthorized'
  | 'forbidden'
  | 'envelope_rejected'
  | 'hub_error'
  | 'closed'
  | 'network'
  | 'protocol'
  | 'http_error'
  | 'error'
  | (string & {});

export interface SignetErrorOptions {
  code?: SignetErrorCode;
  status?: number;
  envelopeCode?: string;
  allowReconnect?: boolean;
  retryAfterSecs?: number;
  cause?: unknown;
}

/** Every error this module raises, with a machine-readable `code`. */
export declare class SignetError extends Error {
  constructor(message: string, options?: SignetErrorOptions);
  code: SignetErrorCode;
  /** The HTTP status of a failed REST call. */
  status?: number;
  /** With `envelope_rejected`: `malformed`, `bad_signature`, `replayed_nonce`, `expired`, ... */
  envelopeCode?: string;
  /** With `closed`: whether the server allows a new connection. */
  allowReconnect?: boolean;
  /** With `rate_limited`: the server's `Retry-After`. */
  retryAfterSecs?: number;
}

/** Turns a Completion's error text into a {@link SignetError} with a code. */
export declare function hubError(text: string): SignetError;

export interface SessionOptions {
  /** The server, e.g. `http://127.0.0.1:8080`; the page's own origin in a browser when omitted. */
  baseUrl?: string;
  fetch?: typeof fetch;
}

/** What a login, refresh or device-token exchange answers. */
export interface IssuedTokens {
  accessToken: string;
  /** Seconds. */
  expiresIn?: number;
  refreshToken?: string;
  /** base64url; imported as a non-extractable CryptoKey. */
  messageKey?: string;
}

export interface SessionTokens extends IssuedTokens, SessionOptions {
  /** Asked for a new access token when the session has no refresh token. */
  renew?: () => Promise<IssuedTokens>;
  /**
   * For an external identity provider's tokens: claim the message key from
   * `GET /api/auth/message-key` (once per message session; do it right after sign-in), now and
   * after each `renew` that brings no key. Signet's own tokens never yield it there.
   */
  claimMessageKey?: boolean;
}

export interface TokenEvent {
  accessToken: string;
  /** Unix ms. */
  expiresAt: number;
}

export interface FreshTokenOptions {
  /** Refresh when the token expires sooner than this; default 30000. */
  minValidityMs?: number;
  /** Refresh whatever the token's validity. */
  force?: boolean;
}

/**
 * A login session against Signet's REST API. Tokens and the message key stay in memory (private
 * fields); refresh is single-flight.
 */
export declare class Session {
  constructor(options?: SessionOptions);
  /** A session over tokens obtained elsewhere. */
  static fromTokens(tokens: SessionTokens): Promise<Session>;
  renew?: () => Promise<IssuedTokens>;
  /** `path` resolved against the session's base URL. */
  url(path: string): string;
  readonly signedIn: boolean;
  readonly accessToken: string | null;
  /** Unix ms. */
  readonly expiresAt: number;
  readonly messageKey: CryptoKey | null;
  /** Called after every login and refresh; returns an unsubscribe function. */
  onTokens(listener: (event: TokenEvent) => void): () => void;
  /** `POST /api/auth/login`. */
  login(username: string, password: string): Promise<this>;
  /** A new access token now, rotating the refresh token. */
  refresh(): Promise<string>;
  /**
   * Claims the current external token's message key (`GET /api/auth/message-key`). Rejects with
   * `message_key_claimed` (409) or `message_key_not_claimable` (403, Signet's own tokens).
   */
  claimMessageKey(): Promise<CryptoKey>;
  freshAccessToken(options?: FreshTokenOptions): Promise<string>;
  /** `POST /api/auth/logout`, then forgets the tokens. */
  logout(): Promise<void>;
  /** An authenticated REST call; answers the JSON body. */
  api<T = unknown>(path: string, options?: { method?: string; body?: unknown }): Promise<T>;
}

/** Where a {@link HubConnection} gets its tokens: a {@link Session} or anything shaped like one. */
export interface TokenSource {
  freshAccessToken(options?: FreshTokenOptions): Promise<string>;
  readonly messageKey?: CryptoKey | null;
}

/** A WebSocket class with the browser's interface (Node 22's global, or the `ws` package). */
export type WebSocketClass = new (url: string) => unknown;

export interface HubConnectionOptions {
  /** The hub, e.g. `/hubs/home` (absolute outside a browser). */
  url: string;
  session: Session | TokenSource;
  /** Required where there is no global WebSocket (Node 20). */
  WebSocket?: WebSocketClass;
  fetch?: typeof fetch;
  /** Open the WebSocket directly (no in-band refresh then). */
  skipNegotiation?: boolean;
  /** Waits before each reconnection attempt; the last repeats. Default 0, 1, 2, 5, 10, 30 s. */
  reconnectDelaysMs?: number[];
  /** Default 15000. */
  keepAliveIntervalMs?: number;
  /** The connection counts as lost when nothing arrives for this long; default 30000. */
  serverTimeoutMs?: number;
  /** Default 15000. */
  handshakeTimeoutMs?: number;
}

export interface StateChange {
  state: ConnectionState;
  previous: ConnectionState;
  /** Why a connection was lost or ended. */
  error?: SignetError;
}

export interface StreamObserver<T> {
  next?(item: T): void;
  error?(error: Error): void;
  complete?(): void;
}

export interface StreamSubscription {
  /** Sends CancelInvocation. */
  dispose(): void;
}

export interface HubStream<T> {
  /** Nothing is sent until subscribing. */
  subscribe(observer: StreamObserver<T>): StreamSubscription;
}

/**
 * One hub connection: reconnects by itself, moves onto a fresh token before expiry, and signs
 * envelopes with the session's message key.
 */
export declare class HubConnection {
  constructor(options: HubConnectionOptions);
  /** The hub's URL path, which signed envelopes are bound to. */
  readonly hubPath: string;
  readonly state: ConnectionState;
  /** When the open connection's token expires (Unix ms), or null if unknown. */
  readonly tokenExpiresAt: number | null;
  /** Called on every state change; returns an unsubscribe function. */
  onState(listener: (change: StateChange) => void): () => void;
  /** `handler(...args)` runs when the server invokes `target`; its return value answers a client result. */
  on(target: string, handler: (...args: any[]) => unknown): this;
  /** Removes one handler of `target`, or all of them without `handler`. */
  off(target: string, handler?: (...args: any[]) => unknown): this;
  start(): Promise<void>;
  stop(): Promise<void>;
  invoke<T = unknown>(target: string, ...args: unknown[]): Promise<T>;
  send(target: string, ...args: unknown[]): Promise<void>;
  /** Signs `message` for this hub and `target`, then invokes `target` with the envelope. */
  invokeSigned<T = unknown>(
    target: string,
    message: EnvelopeMessage,
    options?: { lifetimeMs?: number; key?: CryptoKey },
  ): Promise<T>;
  stream<T = unknown>(target: string, ...args: unknown[]): HubStream<T>;
  /** Moves the open connection onto a fresh token now; resolves with the new expiry (Unix ms). */
  refreshToken(): Promise<number>;
}
