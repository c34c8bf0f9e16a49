// Types of envelope.js: signing and checking Signet command envelopes (docs/envelope.md).
// CryptoKey is the WebCrypto type of the DOM library (lib "DOM"), which browsers and Node 20+
// both implement.

/** First line of every signing input. */
export declare const SIGNING_DOMAIN: 'signet-envelope-v1';

/** What a verifier accepts. */
export interface EnvelopeLimits {
  readonly maxLifetimeMs: number;
  readonly skewMs: number;
  readonly maxMessageBytes: number;
}

/** The server's default limits: 60 s lifetime, 5 s skew, 16 KiB message. */
export declare const DEFAULT_LIMITS: Readonly<EnvelopeLimits>;

/** The envelope sent as a signed hub method's only argument. */
export interface Envelope {
  /** Unix ms. */
  issuedAt: number;
  /** Unix ms, after `issuedAt`. */
  expiry: number;
  /** base64url (no padding) of 16 to 64 random bytes. */
  nonce: string;
  /** The command as JSON text, exactly as signed. */
  message: string;
  /** base64url (no padding) HMAC-SHA256. */
  signature: string;
}

/** JSON text (signed as given) or a value that is stringified once and signed as that text. */
export type EnvelopeMessage = string | number | boolean | null | object;

export interface SignOptions {
  /** The hub's URL path, e.g. `/hubs/home`. */
  hubPath: string;
  /** The hub method, e.g. `SendCommand`. */
  target: string;
  message: EnvelopeMessage;
  /** Time until expiry; default 30000 (the server allows at most 60000). */
  lifetimeMs?: number;
  /** Issue time in Unix ms; default `Date.now()`. */
  now?: number;
  /** base64url nonce; 24 random bytes unless given (give one only to reproduce test vectors). */
  nonce?: string;
}

export interface SigningFields {
  hubPath: string;
  target: string;
  issuedAt: number;
  expiry: number;
  nonce: string;
  message: string;
}

/** Codes `verifyEnvelope` answers; the server adds `replayed_nonce`, `nonce_quota_exceeded` and `nonce_store_unavailable`. */
export type EnvelopeRejectionCode =
  | 'malformed'
  | 'lifetime_too_long'
  | 'not_yet_valid'
  | 'expired'
  | 'bad_signature';

export interface VerifiedEnvelope {
  ok: true;
  /** The message text exactly as signed. */
  message: string;
  /** The message parsed as JSON. */
  command: unknown;
  issuedAt: number;
  expiry: number;
  nonce: string;
}

export interface RejectedEnvelope {
  ok: false;
  code: EnvelopeRejectionCode;
  reason: string;
}

export type VerifyResult = VerifiedEnvelope | RejectedEnvelope;

export interface VerifyOptions {
  hubPath: string;
  target: string;
  /** Default 5000. */
  skewMs?: number;
  /** Default 60000. */
  maxLifetimeMs?: number;
  /** Default 16384. */
  maxMessageBytes?: number;
  /** Unix ms; default `Date.now()`. */
  now?: number;
}

/** Encodes bytes as base64url without padding. */
export declare function base64urlEncode(bytes: Uint8Array): string;

/**
 * Decodes unpadded base64url strictly (padding, other alphabets and non-zero trailing bits
 * throw a `TypeError`).
 */
export declare function base64urlDecode(text: string): Uint8Array;

/** Imports the `messageKey` the server returned (base64url, 32 bytes) as a non-extractable HMAC key. */
export declare function importMessageKey(base64url: string): Promise<CryptoKey>;

/** The text a signature covers, joined with newlines. */
export declare function signingInput(fields: SigningFields): string;

/** Signs a command for hub method `target` on `hubPath`. */
export declare function signEnvelope(key: CryptoKey, options: SignOptions): Promise<Envelope>;

/**
 * Checks an envelope as the server does, in the same order and with the same codes, except the
 * nonce: remembering used nonces until `expiry + skewMs` is the caller's job.
 */
export declare function verifyEnvelope(
  key: CryptoKey,
  envelope: unknown,
  options: VerifyOptions,
): Promise<VerifyResult>;
