// examples/signed.rs driven by an official client over every transport and protocol: `Pay`
// runs with an envelope signed by the caller's session key, and is refused, before the handler
// runs, when the envelope is replayed, tampered with, signed for another method or hub, or
// missing; callers without a payer role are refused.
//
// Environment besides clients.mjs': SIGNET_ACCESS_TOKEN, SIGNET_MESSAGE_KEY and SIGNET_SUB of a
// logged-in user (the login answer carries the session's message key).

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { importMessageKey, signEnvelope } from "../../../clients/js/envelope.js";
import { COMBOS, comboName, connect, tokenFor, uniqueSub } from "./clients.mjs";

const { SIGNET_ACCESS_TOKEN, SIGNET_MESSAGE_KEY, SIGNET_SUB } = process.env;
const HUB_PATH = "/hubs/payments";
const key = await importMessageKey(SIGNET_MESSAGE_KEY);

const sign = (message, { target = "Pay", hubPath = HUB_PATH } = {}) =>
  signEnvelope(key, { hubPath, target, message });
const rejected = (code) => new RegExp(`Failed to invoke 'Pay': envelope rejected \\(${code}\\)`);

for (const combo of COMBOS) {
  describe(comboName(combo), () => {
    test("a signed payment runs once; replayed, tampered or misdirected envelopes never do", async () => {
      const payer = await connect("payments", combo, SIGNET_ACCESS_TOKEN, []);
      const payeeSub = uniqueSub("payee");
      const payee = await connect("payments", combo, tokenFor(payeeSub), ["Paid"]);

      const good = await sign({ to: payeeSub, amountCents: 1250 });
      assert.deepEqual(await payer.invoke("Pay", good), { paid: 1250, to: payeeSub, by: SIGNET_SUB });
      assert.deepEqual(await payee.next("Paid"), { from: SIGNET_SUB, amountCents: 1250 });

      await assert.rejects(payer.invoke("Pay", good), rejected("replayed_nonce"));
      const fresh = await sign({ to: payeeSub, amountCents: 5 });
      const tampered = { ...fresh, message: fresh.message.replace('"amountCents":5', '"amountCents":500000') };
      await assert.rejects(payer.invoke("Pay", tampered), rejected("bad_signature"));
      const otherMethod = await sign({ to: payeeSub, amountCents: 7 }, { target: "Refund" });
      await assert.rejects(payer.invoke("Pay", otherMethod), rejected("bad_signature"));
      const otherHub = await sign({ to: payeeSub, amountCents: 8 }, { hubPath: "/hubs/home" });
      await assert.rejects(payer.invoke("Pay", otherHub), rejected("bad_signature"));
      await assert.rejects(payer.invoke("Pay", { to: payeeSub, amountCents: 9 }), rejected("malformed"));

      // The handler's own rules run on the verified command.
      await assert.rejects(payer.invoke("Pay", await sign({ to: payeeSub, amountCents: 0 })), /HubException: amountCents must be 1 to 1000000/);

      // The forged one did not burn its nonce; and the payee's next payment is this one, so
      // none of the refused envelopes paid.
      assert.deepEqual(await payer.invoke("Pay", fresh), { paid: 5, to: payeeSub, by: SIGNET_SUB });
      assert.deepEqual(await payee.next("Paid"), { from: SIGNET_SUB, amountCents: 5 });
    });

    test("a caller without a payer role is refused before its envelope is looked at", async () => {
      const device = await connect("payments", combo, tokenFor(uniqueSub("device"), ["device"]), []);
      const envelope = await sign({ to: "anyone", amountCents: 1 });
      await assert.rejects(device.invoke("Pay", envelope), /Failed to invoke 'Pay' because user is unauthorized/);
    });
  });
}
