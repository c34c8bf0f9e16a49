// The console in headless Chromium against a real server and a real signet-device: what a person
// sees, step by step. The tests share one browser and run in order (one person's afternoon).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import {
  BASE_URL,
  EVENT_TIMEOUT_MS,
  claimsFor,
  launchBrowser,
  newPage,
  post,
  required,
  screenshotPath,
  signToken,
} from './harness.mjs';

const USER = required('SIGNET_USER');
const USER_PASSWORD = required('SIGNET_USER_PASSWORD');
const USER_ID = required('SIGNET_USER_ID');
const ADMIN = required('SIGNET_ADMIN');
const ADMIN_PASSWORD = required('SIGNET_ADMIN_PASSWORD');
const DEVICE_NAME = required('SIGNET_DEVICE_NAME');

let browser;
let device;
let user;
let admin;

/** Runs the user's device, as its owner would: a real signet-device process. */
function startDevice() {
  const child = spawn(
    required('SIGNET_DEVICE_BIN'),
    [
      '--server', BASE_URL,
      '--device-id', required('SIGNET_DEVICE_ID'),
      '--device-key-file', required('SIGNET_DEVICE_KEY_FILE'),
      '--name', DEVICE_NAME,
      '--telemetry-interval', '1s',
      '--log-level', 'warn',
      // Over HTTPS the server's certificate comes from the test CA.
      ...(process.env.NODE_EXTRA_CA_CERTS ? ['--ca-file', process.env.NODE_EXTRA_CA_CERTS] : []),
    ],
    { stdio: ['ignore', 'inherit', 'inherit'] },
  );
  child.on('error', (error) => console.error(`signet-device: ${error.message}`));
  return child;
}

/**
 * Logs in through the form. Records what the page's own traffic shows: every negotiate answer
 * (connection tokens), as someone watching the page's network could.
 */
async function logIn(page, username, password) {
  const seen = { negotiations: [] };
  page.on('response', async (response) => {
    const url = new URL(response.url());
    if (url.pathname === '/hubs/home/negotiate' && response.status() === 200) {
      seen.negotiations.push(await response.json());
    }
  });
  await page.goto(`${BASE_URL}/`);
  await page.fill('#username', username);
  await page.fill('#password', password);
  await page.click('#login-submit');
  await page.waitForSelector('#connection-state[data-state="connected"]');
  return seen;
}

const deviceItem = (page) => page.locator('#devices li.device', { hasText: DEVICE_NAME });

describe('the console', () => {
  before(async () => {
    browser = await launchBrowser();
  });

  after(async () => {
    device?.kill();
    await browser?.close();
  });

  test('serves the page with a strict policy and no third-party requests', async () => {
    const response = await fetch(`${BASE_URL}/`);
    assert.equal(response.status, 200);
    const csp = response.headers.get('content-security-policy');
    for (const directive of ["script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"]) {
      assert.ok(csp.includes(directive), `${directive} in ${csp}`);
    }
    assert.ok(!csp.includes('unsafe'), csp);
    assert.equal(response.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(response.headers.get('referrer-policy'), 'no-referrer');
    const html = await response.text();
    assert.ok(!/<script(?![^>]*\bsrc=)[^>]*>/i.test(html), 'no inline script');
    assert.ok(!/\sstyle=|\son[a-z]+=/i.test(html), 'no inline style or event handler attributes');
  });

  test('a wrong password is explained', async () => {
    user = await newPage(browser);
    await user.page.goto(`${BASE_URL}/`);
    await user.page.fill('#username', USER);
    await user.page.fill('#password', 'not the password');
    await user.page.click('#login-submit');
    await user.page.waitForSelector('#login-error:not([hidden])');
    assert.equal(await user.page.textContent('#login-error'), 'Wrong username or password.');
  });

  test('the user logs in, sees the device come online, unlocks it and sees the result and telemetry', async () => {
    const { page } = user;
    await logIn(page, USER, USER_PASSWORD);
    const item = deviceItem(page);
    await item.waitFor();
    assert.equal(await item.locator('.presence').textContent(), 'offline');
    assert.ok(await item.locator('button[data-command="UNLOCK"]').isDisabled(), 'commands wait for the device');

    device = startDevice();
    await item.locator('.presence[data-online="true"]').waitFor();
    await page.locator('#activity li', { hasText: `${DEVICE_NAME} is online.` }).waitFor();

    await item.locator('button[data-command="UNLOCK"]').click();
    await item.locator('.result[data-tone="ok"]', { hasText: 'Unlock: done (lock unlocked)' }).waitFor();

    await page.locator('#telemetry li', { hasText: `${DEVICE_NAME} · state` }).first().waitFor();
    await page.locator('#telemetry li', { hasText: `${DEVICE_NAME} · temperature` }).first().waitFor();
    await item.locator('.device-state', { hasText: 'lock unlocked' }).waitFor();

    // The tokens stayed in memory: nothing in web storage or cookies, nothing in the URL.
    const stored = await page.evaluate(() => ({
      local: localStorage.length,
      session: sessionStorage.length,
      cookies: document.cookie,
      href: location.href,
    }));
    assert.deepEqual(stored, { local: 0, session: 0, cookies: '', href: `${BASE_URL}/` });
    await page.screenshot({ path: screenshotPath('console-home.png') });
  });

  test("an admin's broadcast reaches the user's console", async () => {
    admin = await newPage(browser);
    await logIn(admin.page, ADMIN, ADMIN_PASSWORD);
    await admin.page.locator('#admin-panel').waitFor();
    const text = `Maintenance tonight at 22:00 <b>${Date.now()}</b>`;
    await admin.page.fill('#broadcast-text', text);
    await admin.page.click('#broadcast-form button[type="submit"]');
    await admin.page.locator('#admin-result', { hasText: 'Broadcast sent.' }).waitFor();
    // Shown as text, markup and all: nothing a message says becomes HTML.
    await user.page.locator('#messages li', { hasText: text }).waitFor();
    assert.equal(await user.page.locator('#messages b').count(), 0);
    await user.page.screenshot({ path: screenshotPath('console-message.png') });
  });

  test('the admin sees connected users and disconnects the user; the console says so', async () => {
    const { page } = admin;
    await page.click('#users-refresh');
    const row = page.locator(`#users li[data-sub="${USER_ID}"]`);
    await row.waitFor();
    assert.match(await row.textContent(), new RegExp(USER));
    assert.ok(Number(await page.textContent('#users-count')) >= 2);
    await page.screenshot({ path: screenshotPath('console-admin.png') });

    await row.locator('button').click();
    await page.locator('#admin-result', { hasText: `Disconnected ${USER}: 1 connection closed.` }).waitFor();
    await user.page.locator('#notice:not([hidden])', { hasText: 'An administrator disconnected you.' }).waitFor();
    assert.ok(await user.page.isVisible('#login-view'), 'the login form is offered again');
    await user.page.screenshot({ path: screenshotPath('console-disconnected.png') });
  });

  test('a refused signature is explained; a token that expires on the open connection is replaced and the console reconnects by itself', async () => {
    const { page } = user;
    await page.reload();
    const seen = await logIn(page, USER, USER_PASSWORD);
    await deviceItem(page).locator('.presence[data-online="true"]').waitFor();
    const [negotiated] = seen.negotiations;
    assert.ok(negotiated?.connectionToken, 'the page negotiated a connection');

    // Move the page's connection onto a token that expires in 4 seconds, through the public
    // in-band refresh route: only someone holding the connection token and a token of the same
    // user can do this, and the page's own in-band refresh does the same with a real token.
    // This token belongs to another login session, so until the connection is replaced the
    // server expects another message key: the page's signed commands are refused, and the page
    // must say so.
    const shortLived = signToken(claimsFor(USER_ID, { ttlSecs: 4, sid: 'another-login-session', name: USER }));
    const moved = await post(`/hubs/home/refresh?id=${encodeURIComponent(negotiated.connectionToken)}`, shortLived);
    assert.equal(moved.status, 200, JSON.stringify(moved.body));
    assert.ok(moved.body.tokenLifetimeSeconds <= 4);
    const stale = deviceItem(page);
    await stale.locator('button[data-command="UNLOCK"]').click();
    await stale
      .locator('.result[data-tone="error"]', {
        hasText: 'Unlock: The server refused the signed command: its signature did not match',
      })
      .waitFor();

    await page.locator('#activity li', { hasText: 'Your token expired; reconnecting with a fresh one' }).waitFor();
    await page.locator('#activity li', { hasText: 'Reconnected.' }).waitFor({ timeout: EVENT_TIMEOUT_MS });
    await page.waitForSelector('#connection-state[data-state="connected"]');
    await page.screenshot({ path: screenshotPath('console-reconnected.png') });
    assert.equal(seen.negotiations.length, 2, 'a new connection was negotiated');
    assert.match(await page.textContent('#token-countdown'), /token expires in 1[45]:\d\d/);

    // The new connection works: commands are still signed with the session's key.
    const item = deviceItem(page);
    await item.locator('.presence[data-online="true"]').waitFor();
    await item.locator('button[data-command="LOCK"]').click();
    await item.locator('.result[data-tone="ok"]', { hasText: 'Lock: done (lock locked)' }).waitFor();
  });

  test('the admin sees the hub at a glance: charts drawn from the server, as SVG', async () => {
    const { page } = admin;
    await page.locator('#overview-panel').waitFor();
    // At a one-second interval, a few samples arrive within seconds.
    await page.waitForFunction(
      () => Number(document.querySelector('.chart[data-key="connections"]')?.dataset.points) >= 3,
      null,
      { timeout: EVENT_TIMEOUT_MS },
    );
    for (const key of ['connections', 'messagesPerSec', 'invocationsPerSec', 'envelopeRejectionsPerSec']) {
      const chart = page.locator(`.chart[data-key="${key}"]`);
      assert.match(await chart.locator('polyline.line').getAttribute('points'), /^[\d.]+,[\d.]+( [\d.]+,[\d.]+)+$/);
      assert.match(await chart.locator('.chart-value').textContent(), /^\d+(\.\d+)?$/);
    }
    // The admin's and the user's connections are live now.
    const connections = Number(await page.locator('.chart[data-key="connections"]').getAttribute('data-latest'));
    assert.ok(connections >= 2, `connections: ${connections}`);
    await page.locator('#overview-panel').screenshot({ path: screenshotPath('console-overview.png') });
  });

  test('the admin adds a device and sees its key once, rotates the key, and deletes the device', async () => {
    const { page } = admin;
    const name = `Garage door ${Date.now()}`;
    await page.fill('#device-add-name', name);
    await page.click('#device-add-form button[type="submit"]');
    await page.locator('#device-key:not([hidden])').waitFor();
    const firstKey = await page.textContent('#device-key-value');
    assert.ok(firstKey.length >= 32, 'a device key is shown');
    assert.match(await page.textContent('#device-key'), /shown only once/);
    const row = page.locator('#managed-devices li', { hasText: name });
    await row.waitFor();
    await page.locator('#device-admin').screenshot({ path: screenshotPath('console-devices.png') });
    await page.click('#device-key-close');
    assert.ok(await page.isHidden('#device-key'), 'the key is gone once dismissed');
    assert.equal(await page.textContent('#device-key-value'), '');

    await row.locator('[data-action="rotate"]').click();
    await page.locator('#device-key:not([hidden])', { hasText: 'New key for' }).waitFor();
    const secondKey = await page.textContent('#device-key-value');
    assert.ok(secondKey.length >= 32 && secondKey !== firstKey, 'a new key replaces the old one');

    await row.locator('[data-action="delete"]').click();
    await page.locator('#device-admin-result', { hasText: `Deleted “${name}”.` }).waitFor();
    await row.waitFor({ state: 'detached' });
    // The user's own device is listed for the admin too, untouched.
    await page.locator('#managed-devices li', { hasText: DEVICE_NAME }).waitFor();
  });

  test("the admin revokes a user's tokens; the user's token stops working at once", async () => {
    const { page } = admin;
    const username = required('SIGNET_REVOKE_USER');
    const login = await fetch(`${BASE_URL}/api/auth/login`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username, password: USER_PASSWORD }),
    });
    assert.equal(login.status, 200);
    const { accessToken } = await login.json();
    const me = () => fetch(`${BASE_URL}/api/auth/me`, { headers: { Authorization: `Bearer ${accessToken}` } });
    assert.equal((await me()).status, 200);

    await page.fill('#revoke-username', username);
    await page.click('#revoke-form button[type="submit"]');
    await page.locator('#revoke-result', { hasText: `Revoked every token of ${username}` }).waitFor();
    assert.equal((await me()).status, 401, 'the revoked token is refused');
  });

  test('nothing went wrong in the pages unnoticed', () => {
    for (const person of [user, admin]) assert.deepEqual(person?.problems ?? [], []);
  });
});
