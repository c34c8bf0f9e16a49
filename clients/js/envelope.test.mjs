// Run with `node --test clients/js/` (Node 20+, no install needed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';

import {
  base64urlDecode,
  base64urlEncode,
  importMessageKey,
  signEnvelope,
  signingInput,
  verifyEnvelope,
} from './envelope.js';

const vectors = JSON.parse(
  await readFile(new URL('../../tests/vectors/envelope.json', import.meta.url), 'utf8'),
);

const fromHex = (hex) => Uint8Array.from(hex.match(/../g) ?? [], (pair) => parseInt(pair, 16));

test('message keys derive as recorded (HMAC-SHA256 of "signet-msgkey-v1:" + session id)', async () => {
  for (const vector of vectors.messageKeys) {
    const master = await crypto.subtle.importKey(
      'raw',
      fromHex(vector.masterKeyHex),
      { name: 'HMAC', hash: 'SHA-256' },
      false,
      ['sign'],
    );
    const label = new TextEncoder().encode(`signet-msgkey-v1:${vector.sessionId}`);
    const derived = new Uint8Array(await crypto.subtle.sign('HMAC', master, label));
    assert.equal(base64urlEncode(derived), vector.messageKey, vector.name);
  }
});

test('signing inputs and signatures match the vectors', async () => {
  for (const vector of vectors.envelopes) {
    const { envelope } = vector;
    assert.equal(signingInput({ ...envelope, hubPath: vector.hubPath, target: vector.target }), vector.signingInput);
    const key = await importMessageKey(vector.messageKey);
    const signed = await signEnvelope(key, {
      hubPath: vector.hubPath,
      target: vector.target,
      message: envelope.message,
      now: envelope.issuedAt,
      lifetimeMs: envelope.expiry - envelope.issuedAt,
      nonce: envelope.nonce,
    });
    assert.deepEqual(signed, envelope, vector.name);
  }
});

test('verifications return the recorded codes', async () => {
  for (const vector of vectors.verifications) {
    const key = await importMessageKey(vector.messageKey);
    const result = await verifyEnvelope(key, vector.envelope, {
      hubPath: vector.hubPath,
      target: vector.target,
      now: vector.now,
    });
    assert.equal(result.ok ? 'ok' : result.code, vector.expect, vector.name);
  }
});

test('sign then verify round-trips an object message', async () => {
  const key = await importMessageKey(vectors.messageKeys[0].messageKey);
  const command = { device: 'lamp-1', action: 'on', level: 0.5 };
  const envelope = await signEnvelope(key, { hubPath: '/hubs/home', target: 'SendCommand', message: command });
  assert.equal(envelope.message, JSON.stringify(command));
  assert.equal(envelope.expiry - envelope.issuedAt, 30_000);
  assert.equal(base64urlDecode(envelope.nonce).length, 24);
  const result = await verifyEnvelope(key, JSON.parse(JSON.stringify(envelope)), {
    hubPath: '/hubs/home',
    target: 'SendCommand',
  });
  assert.equal(result.ok, true);
  assert.deepEqual(result.command, command);
  assert.equal(result.message, envelope.message);
});

test('tampering with any signed part is rejected', async () => {
  const key = await importMessageKey(vectors.messageKeys[0].messageKey);
  const binding = { hubPath: '/hubs/home', target: 'SendCommand' };
  const envelope = await signEnvelope(key, { ...binding, message: '{"device":"lamp-1"}' });
  const now = envelope.issuedAt;
  const tampered = [
    { ...envelope, message: '{"device":"lock-1"}' },
    { ...envelope, issuedAt: envelope.issuedAt - 1 },
    { ...envelope, expiry: envelope.expiry + 1 },
    { ...envelope, nonce: base64urlEncode(new Uint8Array(24)) },
  ];
  for (const candidate of tampered) {
    const result = await verifyEnvelope(key, candidate, { ...binding, now });
    assert.equal(result.code, 'bad_signature', JSON.stringify(candidate));
  }
  const otherTarget = await verifyEnvelope(key, envelope, { ...binding, target: 'CommandResult', now });
  assert.equal(otherTarget.code, 'bad_signature');
  const otherKey = await importMessageKey(vectors.messageKeys[1].messageKey);
  assert.equal((await verifyEnvelope(otherKey, envelope, { ...binding, now })).code, 'bad_signature');
});

test('base64url is strict and round-trips every length', () => {
  for (let length = 0; length < 70; length += 1) {
    const bytes = Uint8Array.from({ length }, (_, i) => (i * 37 + length) & 0xff);
    const text = base64urlEncode(bytes);
    assert.ok(!/[=+/]/.test(text));
    assert.deepEqual(base64urlDecode(text), bytes);
  }
  assert.throws(() => base64urlDecode('AAAA='));
  assert.throws(() => base64urlDecode('AB+/'));
  assert.throws(() => base64urlDecode('A'));
  assert.throws(() => base64urlDecode('AB'), /trailing bits/);
});

test('programmer errors throw instead of signing something the server refuses', async () => {
  const key = await importMessageKey(vectors.messageKeys[0].messageKey);
  const base = { hubPath: '/hubs/home', target: 'SendCommand', message: '{}' };
  await assert.rejects(signEnvelope(key, { ...base, target: 'Send\nCommand' }), TypeError);
  await assert.rejects(signEnvelope(key, { ...base, lifetimeMs: 0 }), RangeError);
  await assert.rejects(signEnvelope(key, { ...base, now: 1.5 }), RangeError);
  await assert.rejects(signEnvelope(key, { ...base, message: '"\ud800"' }), TypeError);
  await assert.rejects(importMessageKey(base64urlEncode(new Uint8Array(31))), TypeError);
});
