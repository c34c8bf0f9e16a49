// Types of hub-protocol.js: the SignalR JSON hub protocol's framing and message shapes.

/** The record separator that ends every message. */
export declare const RECORD_SEPARATOR: '\u001e';

/** Message types of the hub protocol. */
export declare const MessageType: Readonly<{
  Invocation: 1;
  StreamItem: 2;
  Completion: 3;
  StreamInvocation: 4;
  CancelInvocation: 5;
  Ping: 6;
  Close: 7;
}>;

export type MessageTypeCode = (typeof MessageType)[keyof typeof MessageType];

/** Any hub message as received: an object with a numeric `type`. */
export interface HubMessage {
  type: number;
  [field: string]: unknown;
}

export interface InvocationMessage {
  type: 1;
  target: string;
  arguments: unknown[];
  invocationId?: string;
  streamIds?: string[];
}

export interface StreamInvocationMessage {
  type: 4;
  invocationId: string;
  target: string;
  arguments: unknown[];
}

export interface CancelInvocationMessage {
  type: 5;
  invocationId: string;
}

export interface PingMessage {
  type: 6;
}

export interface CloseMessage {
  type: 7;
  error?: string;
  allowReconnect?: boolean;
}

export type HandshakeResponse =
  | { complete: false }
  | { complete: true; error: string | null; rest: string };

/** The handshake request for the JSON protocol, framed. */
export declare function handshakeRequest(): string;

/** Reads the handshake response from the start of the first text the server sends. */
export declare function parseHandshakeResponse(text: string): HandshakeResponse;

/** Frames one message (JSON text and the record separator). */
export declare function encodeMessage(message: { readonly type: number }): string;

/** Splits received text into messages, keeping an incomplete tail for the next call. */
export declare class MessageReader {
  /** Every complete message in the text so far; throws on a message that is not a typed object. */
  push(text: string): HubMessage[];
  /** Characters waiting for their separator. */
  readonly pending: number;
}

/** An Invocation; without `invocationId` it expects no Completion (a "send"). */
export declare function invocation(
  target: string,
  args: unknown[],
  invocationId?: string,
  streamIds?: string[],
): InvocationMessage;

/** A StreamInvocation: the server answers with StreamItems and one Completion. */
export declare function streamInvocation(
  target: string,
  args: unknown[],
  invocationId: string,
): StreamInvocationMessage;

export declare function cancelInvocation(invocationId: string): CancelInvocationMessage;

export declare function ping(): PingMessage;

/** The Close a client sends when it stops on purpose. */
export declare function close(error?: string): CloseMessage;
