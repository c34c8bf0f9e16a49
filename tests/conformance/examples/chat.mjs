// examples/chat.rs driven by official clients over every transport and protocol: a room's
// messages reach its members and nobody else, a member who left stops getting them, messages
// to everyone and to one user arrive, presence is announced, the admin-only method refuses
// users, and bad input is a clear error that leaves the connection open.
//
// Each connection receives the server's messages in order, so "X did not arrive" is shown by a
// later message arriving first, never by waiting.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { COMBOS, comboName, connect, tokenFor, uniqueSub } from "./clients.mjs";

const TARGETS = ["Message", "Announcement", "UserJoined", "UserLeft"];

for (const combo of COMBOS) {
  describe(comboName(combo), () => {
    const join = async (prefix, roles) => {
      const sub = uniqueSub(prefix);
      return { sub, ...(await connect("chat", combo, tokenFor(sub, roles), TARGETS)) };
    };

    test("a room's messages reach its members only, until they leave", async () => {
      const alice = await join("alice");
      const bob = await join("bob");
      const carol = await join("carol");
      const room = uniqueSub("room");
      await alice.invoke("JoinRoom", room);
      await bob.invoke("JoinRoom", room);

      await alice.invoke("SendToRoom", room, "hello room");
      const inRoom = { room, from: alice.sub, text: "hello room" };
      assert.deepEqual(await alice.next("Message"), inRoom);
      assert.deepEqual(await bob.next("Message"), inRoom);

      await alice.invoke("SendToAll", "hello all");
      const toAll = { room: null, from: alice.sub, text: "hello all" };
      // Carol's first message is the one to everyone: the room's never reached her.
      assert.deepEqual(await carol.next("Message"), toAll);
      assert.deepEqual(await alice.next("Message"), toAll);
      assert.deepEqual(await bob.next("Message"), toAll);

      await bob.invoke("LeaveRoom", room);
      await alice.invoke("SendToRoom", room, "bob has gone");
      assert.deepEqual(await alice.next("Message"), { room, from: alice.sub, text: "bob has gone" });
      await alice.invoke("SendToUser", bob.sub, "psst");
      assert.deepEqual(await bob.next("Message"), { room: null, from: alice.sub, text: "psst", private: true });
      await alice.invoke("SendToUser", carol.sub, "carol?");
      assert.deepEqual(await carol.next("Message"), { room: null, from: alice.sub, text: "carol?", private: true });
    });

    test("others are told who joins and leaves", async () => {
      const alice = await join("alice");
      const dave = await join("dave");
      assert.equal(await alice.next("UserJoined"), dave.sub);
      await dave.stop();
      assert.equal(await alice.next("UserLeft"), dave.sub);
    });

    test("Announce is for admins only", async () => {
      const user = await join("user");
      await assert.rejects(user.invoke("Announce", "mine"), /Failed to invoke 'Announce' because user is unauthorized/);
      const admin = await join("admin", ["admin"]);
      await admin.invoke("Announce", "maintenance at noon");
      assert.equal(await user.next("Announcement"), "maintenance at noon");
    });

    test("bad input is refused with a clear error and the connection stays open", async () => {
      const user = await join("user");
      await assert.rejects(user.invoke("JoinRoom", ""), /HubException: a room name is 1 to 64 characters/);
      await assert.rejects(user.invoke("JoinRoom", "r".repeat(65)), /HubException: a room name is 1 to 64 characters/);
      await assert.rejects(user.invoke("SendToRoom", "lobby", 42), /Failed to invoke 'SendToRoom'/);
      await assert.rejects(user.invoke("NoSuchMethod"), /Unknown hub method|NoSuchMethod/);
      await user.invoke("SendToUser", user.sub, "still here");
      assert.equal((await user.next("Message")).text, "still here");
    });
  });
}
