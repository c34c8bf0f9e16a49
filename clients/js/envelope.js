// Signet signed command envelopes, for browsers and Node 20+.
//
// No dependencies: HMAC-SHA256 comes from WebCrypto (globalThis.crypto.subtle), and the key is
// imported as non-extractable so page scripts cannot read it back. The protocol is described in
// docs/envelope.md; tests/vectors/envelope.json holds vectors shared with the Rust server.

/** First line of every signing input. */
export const SIGNING_DOMAIN = 'signet-envelope-v1';

/** The server's default limits; pass your own to {@link verifyEnvelope} if it is configured otherwise. */
export const DEFAULT_LIMITS = Object.freeze({
  maxLifetimeMs: 60_000,
  skewMs: 5_000,
  maxMessageBytes: 16 * 1024,
});

const NONCE_MIN_BYTES = 16;
const NONCE_MAX_BYTES = 64;
const SIGNATURE_BYTES = 32;
const MESSAGE_KEY_BYTES = 32;
const DEFAULT_NONCE_BYTES = 24;
const ENVELOPE_FIELDS = ['issuedAt', 'expiry', 'nonce', 'message', 'signature'];

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const DECODE_TABLE = (() => {
  const table = new Int16Array(128).fill(-1);
  for (let i = 0; i < ALPHABET.length; i += 1) table[ALPHABET.charCodeAt(i)] = i;
  return table;
})();

const utf8 = new TextEncoder();

/**
 * Encodes bytes as base64url without padding.
 * @param {Uint8Array} bytes
 * @returns {string}
 */
export function base64urlEncode(bytes) {
  let out = '';
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += ALPHABET[n >> 18] + ALPHABET[(n >> 12) & 63] + ALPHABET[(n >> 6) & 63] + ALPHABET[n & 63];
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = bytes[i] << 16;
    out += ALPHABET[n >> 18] + ALPHABET[(n >> 12) & 63];
  } else if (rest === 2) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8);
    out += ALPHABET[n >> 18] + ALPHABET[(n >> 12) & 63] + ALPHABET[(n >> 6) & 63];
  }
  return out;
}

/**
 * Decodes base64url without padding, strictly: padding, other alphabets and non-zero trailing
 * bits are refused, as the server refuses them, so each byte string has one accepted spelling.
 * @param {string} text
 * @returns {Uint8Array}
 * @throws {TypeError} if `text` is not canonical unpadded base64url
 */
export function base64urlDecode(text) {
  if (typeof text !== 'string' || text.length % 4 === 1) {
    throw new TypeError('not base64url without padding');
  }
  const out = new Uint8Array(Math.floor((text.length * 3) / 4));
  let buffer = 0;
  let bits = 0;
  let written = 0;
  for (let i = 0; i < text.length; i += 1) {
    const code = text.charCodeAt(i);
    const value = code < 128 ? DECODE_TABLE[code] : -1;
    if (value < 0) throw new TypeError('not base64url without padding');
    buffer = ((buffer << 6) | value) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[written] = (buffer >> bits) & 0xff;
      written += 1;
    }
  }
  if ((buffer & ((1 << bits) - 1)) !== 0) {
    throw new TypeError('base64url has non-zero trailing bits');
  }
  return out;
}

/**
 * Imports the message key the server handed out at login (base64url, 32 bytes) as a
 * non-extractable HMAC-SHA256 key.
 * @param {string} base64url
 * @returns {Promise<CryptoKey>}
 */
export async function importMessageKey(base64url) {
  const raw = base64urlDecode(base64url);
  if (raw.length !== MESSAGE_KEY_BYTES) {
    throw new TypeError(`message key must be ${MESSAGE_KEY_BYTES} bytes`);
  }
  return globalThis.crypto.subtle.importKey('raw', raw, { name: 'HMAC', hash: 'SHA-256' }, false, [
    'sign',
    'verify',
  ]);
}

/**
 * The text a signature covers, joined with newlines.
 * @param {{hubPath: string, target: string, issuedAt: number, expiry: number, nonce: string, message: string}} fields
 * @returns {string}
 */
export function signingInput({ hubPath, target, issuedAt, expiry, nonce, message }) {
  return [SIGNING_DOMAIN, hubPath, target, String(issuedAt), String(expiry), nonce, message].join('\n');
}

/**
 * @typedef {object} Envelope
 * @property {number} issuedAt Unix ms
 * @property {number} expiry Unix ms
 * @property {string} nonce base64url, 16 to 64 random bytes
 * @property {string} message the command as JSON text, exactly as signed
 * @property {string} signature base64url HMAC-SHA256, no padding
 */

/**
 * Signs a command for hub method `target` on `hubPath`. Send the result as the method's only
 * argument.
 * @param {CryptoKey} key from {@link importMessageKey}
 * @param {object} options
 * @param {string} options.hubPath e.g. `/hubs/home`
 * @param {string} options.target the hub method's declared name, e.g. `SendCommand` (the server
 *   verifies this spelling whatever case the method is invoked in)
 * @param {string|object} options.message JSON text, or a value that is stringified once and
 *   signed as that exact text
 * @param {number} [options.lifetimeMs=30000] time until expiry; the server allows at most 60 s
 * @param {number} [options.now=Date.now()] issue time in Unix ms
 * @param {string} [options.nonce] base64url nonce; random 24 bytes unless given (give one only
 *   to reproduce test vectors)
 * @returns {Promise<Envelope>}
 */
export async function signEnvelope(
  key,
  { hubPath, target, message, lifetimeMs = 30_000, now = Date.now(), nonce },
) {
  requireBindable(hubPath, 'hubPath');
  requireBindable(target, 'target');
  const text = typeof message === 'string' ? message : JSON.stringify(message);
  if (typeof text !== 'string') throw new TypeError('message must be JSON text or a JSON value');
  // TextEncoder would sign U+FFFD for a lone surrogate while JSON carries the surrogate itself.
  if (typeof text.isWellFormed === 'function' && !text.isWellFormed()) {
    throw new TypeError('message contains a lone surrogate');
  }
  const issuedAt = requireTimestamp(now, 'now');
  if (!Number.isSafeInteger(lifetimeMs) || lifetimeMs <= 0) {
    throw new RangeError('lifetimeMs must be a positive integer');
  }
  const expiry = requireTimestamp(issuedAt + lifetimeMs, 'now + lifetimeMs');
  const nonceText = nonce ?? base64urlEncode(globalThis.crypto.getRandomValues(new Uint8Array(DEFAULT_NONCE_BYTES)));
  const input = signingInput({ hubPath, target, issuedAt, expiry, nonce: nonceText, message: text });
  const mac = await globalThis.crypto.subtle.sign('HMAC', key, utf8.encode(input));
  return {
    issuedAt,
    expiry,
    nonce: nonceText,
    message: text,
    signature: base64urlEncode(new Uint8Array(mac)),
  };
}

/**
 * @typedef {{ok: true, message: string, command: unknown, issuedAt: number, expiry: number, nonce: string}
 *   | {ok: false, code: 'malformed'|'lifetime_too_long'|'not_yet_valid'|'expired'|'bad_signature', reason: string}} VerifyResult
 */

/**
 * Checks an envelope the way the server does, in the same order and with the same codes, except
 * the nonce: remembering used nonces until `expiry + skewMs` is the caller's job
 * (`replayed_nonce`). The signature is checked with `crypto.subtle.verify`, which compares in
 * constant time.
 * @param {CryptoKey} key
 * @param {unknown} envelope parsed JSON
 * @param {object} options
 * @param {string} options.hubPath
 * @param {string} options.target
 * @param {number} [options.skewMs=5000]
 * @param {number} [options.maxLifetimeMs=60000]
 * @param {number} [options.maxMessageBytes=16384]
 * @param {number} [options.now=Date.now()]
 * @returns {Promise<VerifyResult>}
 */
export async function verifyEnvelope(
  key,
  envelope,
  {
    hubPath,
    target,
    skewMs = DEFAULT_LIMITS.skewMs,
    maxLifetimeMs = DEFAULT_LIMITS.maxLifetimeMs,
    maxMessageBytes = DEFAULT_LIMITS.maxMessageBytes,
    now = Date.now(),
  },
) {
  const refuse = (code, reason) => ({ ok: false, code, reason });

  // 1. Shape and sizes.
  if (envelope === null || typeof envelope !== 'object' || Array.isArray(envelope)) {
    return refuse('malformed', 'envelope is not a JSON object');
  }
  const names = Object.keys(envelope);
  if (names.length !== ENVELOPE_FIELDS.length || !ENVELOPE_FIELDS.every((f) => names.includes(f))) {
    return refuse('malformed', 'envelope must have exactly the five fields');
  }
  const { issuedAt, expiry, nonce, message, signature } = envelope;
  for (const [name, value] of [['issuedAt', issuedAt], ['expiry', expiry]]) {
    if (!Number.isSafeInteger(value) || value < 0) {
      return refuse('malformed', `${name} is not a non-negative integer below 2^53`);
    }
  }
  if (typeof nonce !== 'string' || typeof message !== 'string' || typeof signature !== 'string') {
    return refuse('malformed', 'nonce, message and signature must be strings');
  }
  const nonceBytes = tryDecode(nonce);
  if (!nonceBytes || nonceBytes.length < NONCE_MIN_BYTES || nonceBytes.length > NONCE_MAX_BYTES) {
    return refuse('malformed', 'nonce must be base64url of 16 to 64 bytes');
  }
  const signatureBytes = tryDecode(signature);
  if (!signatureBytes || signatureBytes.length !== SIGNATURE_BYTES) {
    return refuse('malformed', 'signature must be base64url of 32 bytes');
  }
  const messageBytes = utf8.encode(message);
  if (messageBytes.length > maxMessageBytes) {
    return refuse('malformed', 'message is longer than the maximum');
  }
  if (expiry <= issuedAt) return refuse('malformed', 'expiry is not after issuedAt');
  let command;
  try {
    command = JSON.parse(message);
  } catch {
    return refuse('malformed', 'message is not JSON text');
  }
  if (hubPath.includes('\n') || target.includes('\n')) {
    return refuse('malformed', 'hub path or target contains a newline');
  }

  // 2. Lifetime.
  if (expiry - issuedAt > maxLifetimeMs) return refuse('lifetime_too_long', 'lifetime exceeds the maximum');

  // 3. Time window.
  if (issuedAt > now + skewMs) return refuse('not_yet_valid', 'issued in the future');
  if (now > expiry + skewMs) return refuse('expired', 'expired');

  // 4. Signature.
  const input = utf8.encode(signingInput({ hubPath, target, issuedAt, expiry, nonce, message }));
  const valid = await globalThis.crypto.subtle.verify('HMAC', key, signatureBytes, input);
  if (!valid) return refuse('bad_signature', 'signature does not match');

  return { ok: true, message, command, issuedAt, expiry, nonce };
}

function tryDecode(text) {
  try {
    return base64urlDecode(text);
  } catch {
    return null;
  }
}

function requireBindable(value, name) {
  if (typeof value !== 'string' || value.includes('\n')) {
    throw new TypeError(`${name} must be a string without newlines`);
  }
}

function requireTimestamp(value, name) {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`${name} must be a non-negative integer of milliseconds below 2^53`);
  }
  return value;
}
