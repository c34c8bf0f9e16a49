// The SignalR JSON hub protocol, pure: framing, the handshake and message shapes, no I/O.
//
// Every message is JSON text followed by the record separator U+001E. Several messages may
// arrive in one WebSocket frame (Signet coalesces queued messages), so the reader splits on the
// separator and keeps an unfinished tail for the next frame.
// Specification: ASP.NET Core's HubProtocol.md; Signet's README lists the extensions.

/** The record separator that ends every message. */
export const RECORD_SEPARATOR = '\u001e';

/** Message types of the hub protocol. */
export const MessageType = Object.freeze({
  Invocation: 1,
  StreamItem: 2,
  Completion: 3,
  StreamInvocation: 4,
  CancelInvocation: 5,
  Ping: 6,
  Close: 7,
});

/** The handshake request for the JSON protocol, framed. */
export function handshakeRequest() {
  return JSON.stringify({ protocol: 'json', version: 1 }) + RECORD_SEPARATOR;
}

/**
 * Reads the handshake response from the start of the first text the server sends.
 * @param {string} text
 * @returns {{complete: false} | {complete: true, error: string|null, rest: string}}
 *   `rest` is whatever followed the response in the same frame (messages to parse next).
 * @throws {Error} when the response is not a JSON object
 */
export function parseHandshakeResponse(text) {
  const end = text.indexOf(RECORD_SEPARATOR);
  if (end < 0) return { complete: false };
  let response;
  try {
    response = JSON.parse(text.slice(0, end));
  } catch {
    throw new Error('the handshake response is not JSON');
  }
  if (response === null || typeof response !== 'object' || Array.isArray(response)) {
    throw new Error('the handshake response is not a JSON object');
  }
  const error = typeof response.error === 'string' ? response.error : null;
  return { complete: true, error, rest: text.slice(end + 1) };
}

/**
 * Frames one message.
 * @param {object} message a hub protocol message with a numeric `type`
 * @returns {string}
 */
export function encodeMessage(message) {
  if (message === null || typeof message !== 'object' || !Number.isInteger(message.type)) {
    throw new TypeError('a hub message is an object with an integer type');
  }
  return JSON.stringify(message) + RECORD_SEPARATOR;
}

/**
 * Splits text received from the server into messages, keeping an incomplete tail for the next
 * call (a message is only complete once its separator has arrived).
 */
export class MessageReader {
  #tail = '';

  /**
   * @param {string} text the next frame's text
   * @returns {object[]} every complete message, parsed
   * @throws {Error} on a message that is not a JSON object with a numeric type; the reader is
   *   then unusable and the connection should be closed
   */
  push(text) {
    const parts = (this.#tail + text).split(RECORD_SEPARATOR);
    this.#tail = parts.pop();
    const messages = [];
    for (const part of parts) {
      let message;
      try {
        message = JSON.parse(part);
      } catch {
        throw new Error('the server sent a message that is not JSON');
      }
      if (message === null || typeof message !== 'object' || !Number.isInteger(message.type)) {
        throw new Error('the server sent a message without a type');
      }
      messages.push(message);
    }
    return messages;
  }

  /** Characters waiting for their separator. */
  get pending() {
    return this.#tail.length;
  }
}

/** An Invocation; without `invocationId` it expects no Completion (a "send"). */
export function invocation(target, args, invocationId, streamIds) {
  const message = { type: MessageType.Invocation, target, arguments: args };
  if (invocationId !== undefined) message.invocationId = invocationId;
  if (streamIds !== undefined && streamIds.length > 0) message.streamIds = streamIds;
  return message;
}

/** A StreamInvocation: the server answers with StreamItems and one Completion. */
export function streamInvocation(target, args, invocationId) {
  return { type: MessageType.StreamInvocation, invocationId, target, arguments: args };
}

export function cancelInvocation(invocationId) {
  return { type: MessageType.CancelInvocation, invocationId };
}

export function ping() {
  return { type: MessageType.Ping };
}

/** The Close a client sends when it stops on purpose. */
export function close(error) {
  return error === undefined ? { type: MessageType.Close } : { type: MessageType.Close, error };
}
