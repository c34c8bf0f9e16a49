// Shared harness of the browser tests: Debian's Chromium driven by playwright-core, the server
// under test, and test tokens.
//
// Environment (set by `cargo test --test api browser`, which starts the server):
//   SIGNET_URL                 base URL of the running server (required)
//   SIGNET_JWT_SECRET          its JWT secret, to mint short-lived test tokens (required)
//   SIGNET_USER, SIGNET_USER_PASSWORD, SIGNET_USER_ID      a user with role `user`
//   SIGNET_ADMIN, SIGNET_ADMIN_PASSWORD                    a user with role `admin`
//   SIGNET_DEVICE_BIN          the signet-device binary; SIGNET_DEVICE_ID, SIGNET_DEVICE_KEY_FILE,
//                              SIGNET_DEVICE_NAME: a device of SIGNET_USER, not yet running
//   SIGNET_CHROMIUM            Chromium's executable (default /usr/bin/chromium)
//   SIGNET_SCREENSHOT_DIR      where screenshots go (default: target/browser-screenshots)
//   SIGNET_SIGNALR_BUNDLE      the official @microsoft/signalr browser bundle (signalr.js)
//   NODE_EXTRA_CA_CERTS        with an https SIGNET_URL: the test CA (Node's own variable; the
//                              device gets it as --ca-file, Chromium accepts the test certificate)

import { createHmac, randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run the browser tests through \`cargo test --test api browser\``);
  }
  return value;
}

export const BASE_URL = required('SIGNET_URL').replace(/\/+$/, '');
export const EVENT_TIMEOUT_MS = 10_000;

/** Flags that keep Chromium quiet and offline: without the background-networking ones it
 * tries to reach Google's services, which this machine refuses. */
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

/** Chromium with a fresh temporary profile (playwright creates and removes it). */
export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.SIGNET_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: CHROMIUM_FLAGS,
    timeout: 30_000,
  });
}

/**
 * A page in its own browser context (its own storage, like another person's browser) that
 * records what would otherwise go unnoticed: script errors, console errors (CSP violations
 * among them) and requests that left the server's origin.
 */
export async function newPage(browser) {
  const context = await browser.newContext({
    viewport: { width: 1280, height: 860 },
    // The test certificate's CA is not in Chromium's store; everything else about TLS applies.
    ignoreHTTPSErrors: BASE_URL.startsWith('https:'),
  });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    // Failed requests are judged by their answers below, where expected refusals are known.
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
      problems.push(`console error: ${message.text()}`);
    }
  });
  page.on('response', (response) => {
    const { pathname } = new URL(response.url());
    const expected = pathname === '/api/auth/login' && response.status() === 401;
    if (response.status() >= 400 && !expected) problems.push(`${response.status()} for ${pathname}`);
  });
  page.on('request', (request) => {
    const url = new URL(request.url());
    if (url.origin !== BASE_URL && url.protocol !== 'data:') problems.push(`request outside the origin: ${url.href}`);
  });
  page.setDefaultTimeout(EVENT_TIMEOUT_MS);
  return { context, page, problems };
}

export function screenshotPath(name) {
  const dir = process.env.SIGNET_SCREENSHOT_DIR || path.join(ROOT, 'target/browser-screenshots');
  mkdirSync(dir, { recursive: true });
  return path.join(dir, name);
}

// ---- tokens -------------------------------------------------------------------------------

const b64url = (data) => Buffer.from(data).toString('base64url');

/** An HS256 JWT signed with the server's secret, the way Signet issues them. */
export function signToken(claims, secret = required('SIGNET_JWT_SECRET')) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const signature = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${signature}`;
}

export function claimsFor(sub, { roles = ['user'], ttlSecs = 600, ...extra } = {}) {
  const now = Math.floor(Date.now() / 1000);
  return { sub, roles, jti: randomUUID(), iat: now, nbf: now, exp: now + ttlSecs, iss: 'signet', aud: 'signet', ...extra };
}

export function jwtPayload(token) {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
}

/** POST with a bearer token; answers `{status, body}`. */
export async function post(pathAndQuery, token, body) {
  const response = await fetch(BASE_URL + pathAndQuery, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}
