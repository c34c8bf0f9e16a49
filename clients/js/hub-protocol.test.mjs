// The JSON hub protocol's framing, without a server.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  MessageReader,
  MessageType,
  RECORD_SEPARATOR,
  cancelInvocation,
  close,
  encodeMessage,
  handshakeRequest,
  invocation,
  parseHandshakeResponse,
  ping,
  streamInvocation,
} from './hub-protocol.js';

const RS = RECORD_SEPARATOR;

test('the handshake request names the JSON protocol, version 1, and ends with the separator', () => {
  assert.equal(handshakeRequest(), `{"protocol":"json","version":1}${RS}`);
});

test('a handshake response is complete only with its separator, and keeps what follows it', () => {
  assert.deepEqual(parseHandshakeResponse('{}'), { complete: false });
  assert.deepEqual(parseHandshakeResponse(`{}${RS}`), { complete: true, error: null, rest: '' });
  assert.deepEqual(parseHandshakeResponse(`{}${RS}{"type":6}${RS}`), {
    complete: true,
    error: null,
    rest: `{"type":6}${RS}`,
  });
  assert.equal(parseHandshakeResponse(`{"error":"Requested protocol 'x' is not available."}${RS}`).error,
    "Requested protocol 'x' is not available.");
  assert.throws(() => parseHandshakeResponse(`nope${RS}`), /not JSON/);
  assert.throws(() => parseHandshakeResponse(`[1]${RS}`), /not a JSON object/);
});

test('messages are encoded as JSON followed by the separator', () => {
  assert.equal(encodeMessage(ping()), `{"type":6}${RS}`);
  assert.equal(
    encodeMessage(invocation('Echo', ['hi'], '1')),
    `{"type":1,"target":"Echo","arguments":["hi"],"invocationId":"1"}${RS}`,
  );
  assert.throws(() => encodeMessage({ target: 'x' }), TypeError);
});

test('a send has no invocation id; a stream invocation and its cancel carry one', () => {
  assert.deepEqual(invocation('Notify', [1, 2]), { type: MessageType.Invocation, target: 'Notify', arguments: [1, 2] });
  assert.deepEqual(streamInvocation('Counter', [3, 0], '7'), {
    type: MessageType.StreamInvocation,
    invocationId: '7',
    target: 'Counter',
    arguments: [3, 0],
  });
  assert.deepEqual(cancelInvocation('7'), { type: MessageType.CancelInvocation, invocationId: '7' });
  assert.deepEqual(close(), { type: MessageType.Close });
});

test('the reader splits coalesced messages and keeps a partial one for the next frame', () => {
  const reader = new MessageReader();
  assert.deepEqual(reader.push(`{"type":6}${RS}{"type":3,"invocationId":"1","result":2}${RS}{"type":1,`), [
    { type: 6 },
    { type: 3, invocationId: '1', result: 2 },
  ]);
  assert.ok(reader.pending > 0);
  assert.deepEqual(reader.push(`"target":"SystemMessage","arguments":["a\\u001eb"]}${RS}`), [
    { type: 1, target: 'SystemMessage', arguments: ['a\u001eb'] },
  ]);
  assert.equal(reader.pending, 0);
  assert.deepEqual(reader.push(''), []);
});

test('the reader refuses text that is not a typed JSON object', () => {
  assert.throws(() => new MessageReader().push(`{oops}${RS}`), /not JSON/);
  assert.throws(() => new MessageReader().push(`{"kind":1}${RS}`), /without a type/);
  assert.throws(() => new MessageReader().push(`null${RS}`), /without a type/);
});
