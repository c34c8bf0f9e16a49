// Connecting and authentication: the official client starts with an `accessTokenFactory`, and a
// missing, expired, tampered or revoked token is refused with 401 before any connection exists.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { HubConnectionState } from "@microsoft/signalr";
import {
  BASE_URL,
  COMBOS,
  build,
  comboName,
  connect,
  expiredToken,
  foreignToken,
  negotiate,
  tamperedToken,
  transportRequest,
  uniqueSub,
  userToken,
  within,
} from "./harness.mjs";

test("the server offers WebSockets with the JSON and MessagePack protocols", () => {
  const names = COMBOS.map(comboName);
  if (process.env.SIGNET_COMBOS) return; // restricted on purpose
  assert.ok(names.includes("WebSockets/json"), `combinations found: ${names}`);
  assert.ok(names.includes("WebSockets/msgpack"), `combinations found: ${names}`);
});

const BAD_TOKENS = {
  "no token": () => undefined,
  "an expired token": () => expiredToken(),
  "a tampered token": () => tamperedToken(),
  "a token signed with another secret": () => foreignToken(),
};

for (const combo of COMBOS) {
  describe(`connecting over ${comboName(combo)}`, () => {
    test("connects with accessTokenFactory and the server sees the token's identity", async () => {
      const sub = uniqueSub("alice");
      const token = userToken(sub);
      let calls = 0;
      const connection = await connect(combo, {
        tokenFactory: () => {
          calls += 1;
          return token;
        },
      });
      assert.equal(connection.state, HubConnectionState.Connected);
      assert.ok(connection.connectionId, "negotiate gave the client a connection id");
      assert.ok(calls >= 1, "the client asked its accessTokenFactory for the token");
      const me = await within(connection.invoke("Whoami"), "Whoami");
      assert.equal(me.sub, sub);
      assert.deepEqual(me.roles, ["user"]);
      const { exp } = JSON.parse(Buffer.from(token.split(".")[1], "base64url"));
      assert.equal(Number(me.expiresAt), exp);
    });

    test("connects with skipNegotiation straight to the WebSocket", async (t) => {
      if (combo.transport !== "WebSockets") return t.skip("only WebSockets can skip negotiation");
      const sub = uniqueSub("skipper");
      const connection = await connect(combo, { token: userToken(sub), skipNegotiation: true });
      const me = await within(connection.invoke("Whoami"), "Whoami");
      assert.equal(me.sub, sub);
    });

    for (const [what, token] of Object.entries(BAD_TOKENS)) {
      test(`start() fails with 401 given ${what}`, async () => {
        const connection = build(combo, { token: token() });
        const error = await within(
          connection.start().then(
            () => assert.fail("start() succeeded"),
            (e) => e,
          ),
          "start() to fail",
        );
        assert.equal(error.errorType, "FailedToNegotiateWithServerError", String(error));
        assert.match(error.message, /Status code '401'/);
        assert.equal(connection.state, HubConnectionState.Disconnected);
      });

      test(`the ${combo.transport} transport request is refused with 401 given ${what}`, async () => {
        // A real connection token, so only the bad credentials can be the reason for the refusal.
        const ok = await negotiate({ token: userToken() });
        assert.equal(ok.status, 200);
        const status = await transportRequest(combo.transport, {
          id: ok.body.connectionToken,
          token: token(),
        });
        assert.equal(status, 401);
      });
    }
  });
}

describe("negotiate (raw HTTP)", () => {
  for (const [what, token] of Object.entries(BAD_TOKENS)) {
    test(`answers 401 with WWW-Authenticate given ${what}`, async () => {
      const { status, headers, body } = await negotiate({ token: token() });
      assert.equal(status, 401, JSON.stringify(body));
      assert.match(headers.get("www-authenticate") ?? "", /^Bearer/);
      assert.equal(typeof body.error, "string");
    });
  }

  test("accepts the token in the access_token query, as browsers send it", async () => {
    const ok = await negotiate({ query: `&access_token=${encodeURIComponent(userToken())}` });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.equal(ok.body.negotiateVersion, 1);
    assert.ok(ok.body.connectionId && ok.body.connectionToken);
    assert.notEqual(ok.body.connectionId, ok.body.connectionToken);
    const expired = await negotiate({ query: `&access_token=${encodeURIComponent(expiredToken())}` });
    assert.equal(expired.status, 401);
  });
});

describe("revoked tokens", () => {
  test("a logged-out access token cannot connect", async (t) => {
    const login = await fetch(`${BASE_URL}/api/auth/login`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        username: process.env.SIGNET_LOGIN_USERNAME ?? "",
        password: process.env.SIGNET_LOGIN_PASSWORD ?? "",
      }),
    });
    if (login.status === 404) {
      return t.skip("needs the identity service: POST /api/auth/login is 404 on this server");
    }
    assert.ok(
      process.env.SIGNET_LOGIN_USERNAME && process.env.SIGNET_LOGIN_PASSWORD,
      "the server has POST /api/auth/login: set SIGNET_LOGIN_USERNAME and SIGNET_LOGIN_PASSWORD " +
        "to a user that can log in (tests/api/conformance.rs passes the bootstrap admin)",
    );
    assert.equal(login.status, 200, await login.clone().text());
    const { accessToken, refreshToken } = await login.json();

    const combo = COMBOS[0];
    const before = await connect(combo, { token: accessToken });
    await within(before.invoke("Whoami"), "Whoami before logout");

    const logout = await fetch(`${BASE_URL}/api/auth/logout`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${accessToken}` },
      body: JSON.stringify({ refreshToken }),
    });
    assert.equal(logout.status, 204, await logout.text());

    assert.equal((await negotiate({ token: accessToken })).status, 401);
    const after = build(combo, { token: accessToken });
    await assert.rejects(within(after.start(), "start() after logout"), /Status code '401'/);
  });
});
