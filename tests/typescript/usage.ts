// What a TypeScript user of clients/js writes, imported by package name through its `exports`.
// Type-checked only (tsc --noEmit, strict); never run. Each `@ts-expect-error` line is a misuse
// the declarations must refuse: tsc fails if one of them is accepted.

import {
  HubConnection,
  MessageType,
  Session,
  SignetError,
  State,
  hubError,
  importMessageKey,
  signEnvelope,
  verifyEnvelope,
} from 'signet-client';
import type { ConnectionState, Envelope, StateChange, TokenSource, VerifyResult } from 'signet-client';
import {
  DEFAULT_LIMITS,
  SIGNING_DOMAIN,
  base64urlDecode,
  base64urlEncode,
  signingInput,
} from 'signet-client/envelope';
import {
  MessageReader,
  RECORD_SEPARATOR,
  cancelInvocation,
  close,
  encodeMessage,
  handshakeRequest,
  invocation,
  parseHandshakeResponse,
  ping,
  streamInvocation,
} from 'signet-client/hub-protocol';

interface Device {
  deviceId: string;
  name: string;
  online: boolean;
}

export async function controlADevice(password: string): Promise<string> {
  const session = new Session({ baseUrl: 'http://127.0.0.1:8080' });
  await session.login('alice', password);
  const hub = new HubConnection({ url: 'http://127.0.0.1:8080/hubs/home', session });
  hub.on('SystemMessage', (text: string) => console.log(text));
  const unsubscribe = hub.onState(({ state, previous, error }: StateChange) => {
    const now: ConnectionState = state;
    console.log(previous, now, error?.code, error?.envelopeCode);
  });
  await hub.start();
  const devices = await hub.invoke<Device[]>('ListDevices');
  const { commandId } = await hub.invokeSigned<{ commandId: string }>('SendCommand', {
    deviceId: devices[0].deviceId,
    command: 'UNLOCK',
  });
  const counter = hub.stream<number>('Counter', 3, 10).subscribe({
    next: (item) => console.log(item.toFixed(0)),
    error: (error) => console.error(error.message),
    complete: () => console.log('done'),
  });
  counter.dispose();
  const expiresAt: number = await hub.refreshToken();
  console.log(expiresAt, hub.tokenExpiresAt, hub.hubPath, hub.state === State.Connected);
  unsubscribe();
  await hub.stop();
  await session.logout();
  return commandId;
}

export async function tokensFromElsewhere(accessToken: string, messageKey: string): Promise<void> {
  const session = await Session.fromTokens({
    accessToken,
    messageKey,
    expiresIn: 900,
    baseUrl: 'https://hub.example',
    renew: async () => ({ accessToken: 'next', expiresIn: 900 }),
  });
  const me = await session.api<{ sub: string; roles: string[] }>('/api/auth/me');
  console.log(me.sub, session.signedIn, session.expiresAt, session.accessToken?.length);
  const external = await Session.fromTokens({
    accessToken,
    baseUrl: 'https://hub.example',
    claimMessageKey: true,
    renew: async () => ({ accessToken: 'next', expiresIn: 900 }),
  });
  const claimed: CryptoKey = await external.claimMessageKey();
  console.log(claimed.extractable, external.messageKey === claimed);
  const source: TokenSource = { freshAccessToken: async () => accessToken };
  const hub = new HubConnection({ url: 'wss://hub.example/hubs/home', session: source, skipNegotiation: true });
  hub.off('SystemMessage');
  try {
    await hub.start();
  } catch (error) {
    if (error instanceof SignetError && error.code === 'unauthorized') console.log(error.status);
  }
}

export async function envelopes(messageKey: string): Promise<VerifyResult> {
  const key: CryptoKey = await importMessageKey(messageKey);
  const envelope: Envelope = await signEnvelope(key, {
    hubPath: '/hubs/home',
    target: 'SendCommand',
    message: { deviceId: 'lamp-1', command: 'ON' },
    lifetimeMs: 30_000,
  });
  const result = await verifyEnvelope(key, envelope, { hubPath: '/hubs/home', target: 'SendCommand' });
  if (result.ok) console.log(result.command, result.nonce);
  else console.log(result.code, result.reason);
  const input: string = signingInput({ hubPath: '/hubs/home', target: 'SendCommand', ...envelope });
  const bytes: Uint8Array = base64urlDecode(base64urlEncode(new Uint8Array([1, 2])));
  console.log(input.startsWith(SIGNING_DOMAIN), bytes.length, DEFAULT_LIMITS.maxLifetimeMs);
  console.log(hubError('envelope rejected (bad_signature)').envelopeCode);
  return result;
}

export function framing(text: string): number {
  const reader = new MessageReader();
  const messages = reader.push(text);
  const handshake = parseHandshakeResponse(handshakeRequest());
  if (handshake.complete && handshake.error === null) console.log(handshake.rest);
  const frames = [
    encodeMessage(invocation('Echo', ['hi'], '1')),
    encodeMessage(streamInvocation('Counter', [3, 10], '2')),
    encodeMessage(cancelInvocation('2')),
    encodeMessage(ping()),
    encodeMessage(close()),
  ];
  return messages.filter((m) => m.type === MessageType.Completion).length + frames.join(RECORD_SEPARATOR).length + reader.pending;
}

export async function misuses(key: CryptoKey, hub: HubConnection, result: VerifyResult): Promise<void> {
  // @ts-expect-error hubPath is required: an envelope is bound to its hub
  await signEnvelope(key, { target: 'SendCommand', message: '{}' });
  // @ts-expect-error the key is the imported CryptoKey, not the base64url text
  await signEnvelope('7l88xm_VuGwtP01MMssxtLcKMD_zWMy8gMLeeX-DGxI', { hubPath: '/hubs/home', target: 'X', message: '{}' });
  // @ts-expect-error the command exists only on an accepted envelope
  console.log(result.command);
  // @ts-expect-error states are the four names of State
  const state: ConnectionState = 'open';
  // @ts-expect-error a hub connection needs a session
  new HubConnection({ url: '/hubs/home' });
  // @ts-expect-error invoke takes the method name first
  await hub.invoke(42);
  // @ts-expect-error the connection's state is read-only
  hub.state = State.Connected;
  // @ts-expect-error stream observers receive the declared item type
  hub.stream<number>('Counter').subscribe({ next: (item: string) => console.log(item) });
  console.log(state);
}
