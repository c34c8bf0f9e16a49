// Token lifetime on live connections, over every transport: expiry closes the connection within
// a second and late calls never run; the official client reconnects by itself with a fresh
// token; in-band refresh (endpoint and hub method) keeps a connection open past its first
// token's expiry; a refresh with another user's token changes nothing; logout, refresh-token
// reuse, an admin's revoke and a device's deletion close the affected connections (only those)
// within a second.

import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { HubConnectionState } from "@microsoft/signalr";
import {
  COMBOS,
  CapturingHttpClient,
  claimsFor,
  closed,
  comboName,
  connect,
  delay,
  build,
  signToken,
  uniqueSub,
  userToken,
  within,
} from "./harness.mjs";
import {
  ADMIN,
  USERS,
  adminRevoke,
  createDevice,
  deleteDevice,
  deviceToken,
  login,
  logout,
  refresh,
  refreshConnection,
} from "./identity.mjs";

/** Milliseconds until `claims.exp` has passed by `marginMs`. */
const untilExpired = (claims, marginMs) => Math.max(0, claims.exp * 1000 - Date.now() + marginMs);

/** A connection whose token factory returns whatever `holder.token` is now. */
async function connectHolding(combo, holder, extra = {}) {
  const http = new CapturingHttpClient();
  const connection = await connect(combo, {
    tokenFactory: () => holder.token,
    options: { httpClient: http },
    ...extra,
  });
  connection.http = http;
  return connection;
}

/** Resolves with `{error, at}` when the connection closes. */
function closing(connection) {
  return closed(connection).then((error) => ({ error, at: Date.now() }));
}

const REVOKED = /Server returned an error on close: Authentication revoked/;

for (const combo of COMBOS) {
  describe(`token lifetime over ${comboName(combo)}`, () => {
    test("expiry closes the connection within a second, and a call after exp never runs", async () => {
      const claims = claimsFor(uniqueSub("admin"), { roles: ["admin"], ttlSecs: 2 });
      const expiring = await connect(combo, { token: signToken(claims) });
      const observer = await connect(combo, { token: userToken() });
      const seen = [];
      observer.on("SystemMessage", (text) => seen.push(text));
      const end = closing(expiring);

      await delay(untilExpired(claims, 30));
      // Just after exp the admin tries to broadcast; it must never reach the hub method.
      expiring.send("BroadcastMessage", "sent-after-expiry").catch(() => {});
      const { error, at } = await end;
      assert.match(String(error?.message), /Server returned an error on close: Authentication expired/);
      assert.ok(at - claims.exp * 1000 < 1000, `closed ${at - claims.exp * 1000} ms after exp`);

      await observer.invoke("Echo", "flush"); // a broadcast would have arrived before this answer
      await delay(100);
      assert.deepEqual(seen, [], "a call sent after exp reached the hub method");
    });

    test("withAutomaticReconnect and a refreshing token factory carry on after expiry", async () => {
      const sub = uniqueSub("auto");
      let issued = 0;
      const connection = build(combo, {
        tokenFactory: () => {
          issued += 1;
          return signToken(claimsFor(sub, { ttlSecs: 2 }));
        },
        reconnectDelays: [0, 200, 500, 1000],
      });
      const reconnected = within(
        new Promise((resolve) => connection.onreconnected(resolve)),
        "the client to reconnect after expiry",
        8000,
      );
      await within(connection.start(), "the connection to start");
      const first = await connection.invoke("Whoami");
      await reconnected;
      const second = await connection.invoke("Whoami");
      assert.equal(second.sub, sub);
      assert.ok(second.expiresAt > first.expiresAt, "the reconnected connection runs on a newer token");
      assert.ok(issued >= 2, "the factory was asked for a fresh token");
    });

    test("POST /hubs/home/refresh keeps the connection open past the first token's exp", async () => {
      const sub = uniqueSub("refresh");
      const first = claimsFor(sub, { ttlSecs: 2 });
      const holder = { token: signToken(first) };
      const connection = await connectHolding(combo, holder);
      let closedWith = null;
      connection.onclose((error) => (closedWith = error ?? "closed"));

      const next = claimsFor(sub, { ttlSecs: 60 });
      holder.token = signToken(next);
      const answer = await refreshConnection(connection.http.connectionToken, holder.token);
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.ok(answer.body.tokenLifetimeSeconds > 50 && answer.body.tokenLifetimeSeconds <= 60);

      await delay(untilExpired(first, 1200));
      assert.equal(closedWith, null, "the connection closed at the first token's expiry");
      assert.equal(connection.state, HubConnectionState.Connected);
      const who = await connection.invoke("Whoami");
      assert.equal(who.expiresAt, next.exp);
    });

    test("RefreshToken(token) keeps the connection open past the first token's exp", async () => {
      const sub = uniqueSub("refresh-hub");
      const first = claimsFor(sub, { ttlSecs: 2, roles: ["user"] });
      const holder = { token: signToken(first) };
      const connection = await connectHolding(combo, holder);
      let closedWith = null;
      connection.onclose((error) => (closedWith = error ?? "closed"));

      const next = claimsFor(sub, { ttlSecs: 60, roles: ["user", "admin"] });
      holder.token = signToken(next);
      const result = await connection.invoke("RefreshToken", holder.token);
      assert.ok(result.tokenLifetimeSeconds > 50 && result.tokenLifetimeSeconds <= 60);
      // The roles are the new token's: an admin-only method now works.
      assert.equal(typeof (await connection.invoke("GetConnectedUsersCount")), "number");

      await delay(untilExpired(first, 1200));
      assert.equal(closedWith, null, "the connection closed at the first token's expiry");
      assert.equal((await connection.invoke("Whoami")).expiresAt, next.exp);
    });

    test("a refresh with another user's token is refused and changes nothing", async () => {
      const first = claimsFor(uniqueSub("victim"), { ttlSecs: 2 });
      const holder = { token: signToken(first) };
      const connection = await connectHolding(combo, holder);
      const end = closing(connection);
      const intruder = userToken(uniqueSub("intruder"));

      const answer = await refreshConnection(connection.http.connectionToken, intruder);
      assert.equal(answer.status, 403);
      assert.equal(answer.body.error, "user_mismatch");
      await assert.rejects(connection.invoke("RefreshToken", intruder), /user_mismatch/);
      const who = await connection.invoke("Whoami");
      assert.equal(who.sub, first.sub);
      assert.equal(who.expiresAt, first.exp);

      // Still bound to the first token: it expires on time.
      const { error, at } = await end;
      assert.match(String(error?.message), /Authentication expired/);
      assert.ok(at - first.exp * 1000 < 1000);
    });

    describe("revocation closes the affected connections within a second", () => {
      before(function () {
        if (USERS.length < 2 || !ADMIN.username) {
          throw new Error("SIGNET_TEST_USERS and the admin login are needed: run through cargo test");
        }
      });
      const [alice, bob] = USERS;

      test("logout closes that session's connections and no others", async () => {
        const loggedOut = await login(alice);
        const other = await login(alice);
        const gone = await connect(combo, { token: loggedOut.accessToken });
        const stays = await connect(combo, { token: other.accessToken });
        const end = closing(gone);
        const answer = await logout(loggedOut);
        assert.equal(answer.status, 204, JSON.stringify(answer.body));
        const sent = Date.now();
        const { error, at } = await end;
        assert.match(String(error?.message), REVOKED);
        assert.ok(at - sent < 1000, `closed ${at - sent} ms after logout`);
        assert.equal(await stays.invoke("Echo", "still here"), "still here");
      });

      test("refresh-token reuse closes every connection of the session", async () => {
        const session = await login(bob);
        const other = await login(bob);
        const gone = await connect(combo, { token: session.accessToken });
        const stays = await connect(combo, { token: other.accessToken });
        const end = closing(gone);
        assert.equal((await refresh(session.refreshToken)).status, 200);
        const reused = await refresh(session.refreshToken);
        assert.equal(reused.status, 401);
        assert.equal(reused.body.error, "refresh_token_reused");
        const sent = Date.now();
        const { error, at } = await end;
        assert.match(String(error?.message), REVOKED);
        assert.ok(at - sent < 1000, `closed ${at - sent} ms after the reuse`);
        assert.equal(await stays.invoke("Echo", 1), 1);
      });

      test("a device's deletion closes its connections and not its owner's", async () => {
        const owner = await login(alice);
        const created = await createDevice(owner.accessToken, `lamp-${uniqueSub("d")}`);
        assert.equal(created.status, 201, JSON.stringify(created.body));
        const exchanged = await deviceToken(created.body.deviceId, created.body.deviceKey);
        assert.equal(exchanged.status, 200, JSON.stringify(exchanged.body));
        const device = await connect(combo, { token: exchanged.body.accessToken });
        const ownerConnection = await connect(combo, { token: owner.accessToken });
        const end = closing(device);
        assert.equal((await deleteDevice(owner.accessToken, created.body.deviceId)).status, 204);
        const sent = Date.now();
        const { error, at } = await end;
        assert.match(String(error?.message), REVOKED);
        assert.ok(at - sent < 1000, `closed ${at - sent} ms after the deletion`);
        assert.equal(await ownerConnection.invoke("Echo", 2), 2);
      });

      test("an admin's revoke closes that user's connections and not others'", async () => {
        const admin = await login(ADMIN.username, ADMIN.password);
        const target = await login(bob);
        const bystander = await login(alice);
        const gone = await connect(combo, { token: target.accessToken });
        const stays = await connect(combo, { token: bystander.accessToken });
        const end = closing(gone);
        const answer = await adminRevoke(admin.accessToken, bob);
        assert.equal(answer.status, 204, JSON.stringify(answer.body));
        const sent = Date.now();
        const { error, at } = await end;
        assert.match(String(error?.message), REVOKED);
        assert.ok(at - sent < 1000, `closed ${at - sent} ms after the revoke`);
        assert.equal(await stays.invoke("Echo", 3), 3);
      });
    });
  });
}
