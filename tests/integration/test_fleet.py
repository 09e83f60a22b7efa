"""Several chatgate processes on one Redis lose nothing and answer each
message once (docs/fleet.md, issue 17): real processes on loopback, a real
redis-server (AOF on), Debian's HAProxy in front, the independent fake
Feishu (tests/fakes/fake_feishu.py) and fake model (fake_openai.py, a
steady 50-200 ms per answer; each instance calls it under its own path
prefix, so every model call names the instance that made it).

- test_kill_and_sigterm_lose_nothing: three instances behind HAProxy
  (`option httpchk GET /readyz`); a driver sends 2,000 signed webhook
  callbacks (200 conversations, "c17 m5") at a steady rate and retries any
  not answered 2xx, like Feishu. One instance is killed (SIGKILL) and a
  fresh one started, another stopped with SIGTERM (exit 0) and started
  again. Every callback answered 2xx gets exactly one reply, in order per
  conversation; the model is asked twice, and a reply sent twice (deduped
  by its uuid), only for messages the killed instance had started.
- test_redis_restart_with_aof: Redis stopped (SIGTERM) and started again on
  its socket and directory mid-run; /readyz is 503 meanwhile, refused
  callbacks are retried, and the same promises hold.
- test_long_connection_spread: three instances on Feishu's long
  connection; the fake hands each event to one of them at random; one is
  killed and the events never acked are pushed again, as Feishu does.
- test_poison_message_dead_letters: a message the model always fails is
  delivered maxDeliveries times, lands in chatgate:q:dead, and its user
  gets one short error reply, while the other conversations flow.

Each test ends with the fakes' protocol problems empty, every process's
exit status checked, and the durable queue drained (no entry left in a
stream or pending in its group). CHATGATE_FLEET_QUEUE=memory runs the same
tests against instances without the durable queue (docs: fleet_support.py);
CHATGATE_FLEET_RATE (callbacks per second, default 400) and
CHATGATE_FLEET_MESSAGES (default 2000) change the first test's load."""
import json
import os
import signal
import time
import unittest

from harness import DEADLINE, get, wait_for, wait_until
from fleet_support import (DEAD, DURABLE, GROUP, KEY_PREFIX, MAX_DELIVERIES, MODEL_ERROR,
                           PARTITIONS, SECRETS, DurableRedis, Driver, FakeFeishu, HAProxy,
                           Member, Message, Model, Outcome, Pusher, answered_all, conversations,
                           instance_config, owned)

RATE = float(os.environ.get("CHATGATE_FLEET_RATE", "400"))
MESSAGES = int(os.environ.get("CHATGATE_FLEET_MESSAGES", "2000"))
# The drain after the driver is done: every reply, a lease expiry and claims.
DRAIN = max(DEADLINE, 60)


class FleetCase(unittest.TestCase):
    def setUp(self):
        self.t_start = time.monotonic()
        self.redis = DurableRedis().start()
        self.addCleanup(self.redis.close)
        self.fake = FakeFeishu()
        self.addCleanup(self.fake.close)
        self.model = Model()
        self.addCleanup(self.model.close)
        self.model.setup()
        # Checked after every chatgate the test starts has stopped (cleanups
        # run last-in first-out).
        self.addCleanup(self.check_fakes)
        self.members = []

    def tearDown(self):
        print("\n  %s: %.1f s" % (self.id().split(".")[-1], time.monotonic() - self.t_start))

    def check_fakes(self):
        self.assertEqual(self.fake.problems(), [], "the fake Feishu saw protocol problems")
        self.assertEqual(self.model.problems(), [], "the fake model saw protocol problems")

    def member(self, tag, mode="webhook", **feishu):
        m = Member(self, instance_config(self.redis.socket, self.fake.port, self.model, tag,
                                         mode=mode, feishu_extra=feishu), tag)
        self.members.append(m)
        return m

    def fleet(self, tags, mode="webhook"):
        members = [self.member(tag, mode).start() for tag in tags]
        if DURABLE:
            wait_for(lambda: owned(members) == PARTITIONS,
                     "the fleet to own all %d partitions" % PARTITIONS)
        return members

    def haproxy(self, members):
        proxy = HAProxy([m.port for m in members]).start()
        self.addCleanup(proxy.close)
        proxy.wait_up()
        return proxy

    def finish_member(self, m):
        """SIGTERM, exit 0, no secret in the log."""
        self.assertEqual(m.cg.stop(), 0, m.cg.log()[-3000:])
        log = m.cg.log()
        for secret in SECRETS:
            self.assertNotIn(secret, log, "a secret in chatgate's log")

    def wait_answered(self, messages):
        ok = wait_until(lambda: answered_all(self.fake, messages), timeout=DRAIN, interval=0.5)
        return ok

    def check_drained(self, members, dead_letters=0):
        """Nothing left in the partitions' streams or pending in their groups;
        the dead-letter stream holds `dead_letters` entries; the live members
        own every partition between them."""
        with self.subTest("the partitions' streams and their consumer group"):
            streams = self.redis.streams()
            self.assertTrue(streams, "no stream %sq:<p> in Redis" % KEY_PREFIX)
            self.assertEqual({p: g for p, g in streams.items() if g != [GROUP]}, {})
        with self.subTest("the durable queue drained"):
            state = wait_until(lambda: self.redis.queued() == (0, 0), timeout=DEADLINE)
            self.assertTrue(state, "left in the streams (length, pending): %s"
                            % (self.redis.queued(),))
        with self.subTest("dead letters"):
            self.assertEqual(self.redis.xlen(DEAD), dead_letters, self.redis.dead_letters())
        with self.subTest("partitions owned"):
            ok = wait_until(lambda: owned(members) == PARTITIONS, timeout=DEADLINE)
            self.assertTrue(ok, "the live members own %s of %d partitions"
                            % (owned(members), PARTITIONS))
        with self.subTest("queue metrics"):
            live = [m for m in members if m.alive()]
            self.assertEqual(sum(m.metric("chatgate_queue_dead_lettered_total") for m in live),
                             dead_letters)
            ok = wait_until(lambda: all(m.metric("chatgate_queue_length") == 0 and
                                        m.metric("chatgate_queue_pending") == 0 and
                                        m.metric("chatgate_queue_dead_letters") == dead_letters
                                        for m in live), timeout=DEADLINE)
            self.assertTrue(ok, [(m.tag, m.metric("chatgate_queue_length"),
                                  m.metric("chatgate_queue_pending"),
                                  m.metric("chatgate_queue_dead_letters")) for m in live])

    def check_outcome(self, sender, outcome, doubles_allowed, special=None):
        """The promises, each reported on its own (`sender` is the Driver or
        the Pusher): every message the platform had acknowledged (a 2xx, an
        ack with code 200) has one reply, the model's answer to it, in order
        per conversation; only the messages in `doubles_allowed` may have been
        asked of the model twice or have had their reply sent twice (which
        the fake deduped by uuid). Returns a line for the test's output."""
        messages = sender.messages
        with self.subTest("every message acknowledged"):
            never = [m.message_id for m in messages if m.accepted_t is None]
            self.assertEqual(never, [], sender.summary())
        with self.subTest("nothing lost"):
            lost = [mid for mid in outcome.lost() if outcome.by_id[mid].accepted_t is not None]
            self.assertEqual(lost, [], "%d of %d accepted messages never answered"
                             % (len(lost), len(messages)))
        with self.subTest("nothing answered twice"):
            self.assertEqual(outcome.doubled(), [])
            self.assertEqual(outcome.unknown(), [])
        with self.subTest("each reply is its message's answer"):
            self.assertEqual(outcome.wrong_text(special)[:20], [])
        with self.subTest("in order per conversation"):
            wrong = outcome.out_of_order()
            self.assertEqual(wrong, {}, "%d conversations out of order" % len(wrong))
        sent_twice = outcome.sent_twice()
        called_twice = outcome.called_twice()
        with self.subTest("replies sent twice only where allowed"):
            self.assertEqual(sorted(set(sent_twice) - doubles_allowed), [])
        with self.subTest("the model asked twice only where allowed"):
            self.assertEqual(sorted(set(called_twice) - doubles_allowed)[:20], [],
                             "%d messages" % len(set(called_twice) - doubles_allowed))
        return ("%s; replies %d (raw reply calls %d, sent twice and deduped by uuid %d), "
                "model calls %d, messages asked twice %d (%d allowed)"
                % (sender.summary(), len(outcome.replies), len(outcome.raw), len(sent_twice),
                   len(outcome.calls), len(called_twice), len(doubles_allowed)))


class FleetTest(FleetCase):
    def test_kill_and_sigterm_lose_nothing(self):
        a, b, c = self.fleet(["a", "b", "c"])
        proxy = self.haproxy([a, b, c])
        convs = conversations(max(1, MESSAGES // 10), 10)
        driver = Driver(proxy.port, convs, RATE)
        self.fake.known(m.message_id for m in driver.messages)
        n = len(driver.messages)
        driver.start()

        def progress(fraction):
            wait_for(lambda: driver.accepted >= n * fraction or driver.done.is_set(),
                     "%d%% of the callbacks accepted (%s)" % (fraction * 100, driver.summary()),
                     timeout=DRAIN)

        progress(0.25)
        t_kill = time.monotonic()
        self.assertEqual(b.cg.kill(), -signal.SIGKILL)
        progress(0.45)
        fresh = self.member("b2").start()
        proxy.move(1, fresh.port)
        progress(0.65)
        self.assertEqual(c.cg.stop(), 0, c.cg.log()[-3000:])  # SIGTERM: hands over, exit 0
        c.start()
        proxy.move(2, c.port)
        unaccepted = driver.wait(DRAIN)
        self.wait_answered(driver.messages)
        outcome = Outcome(self.fake, self.model, driver.messages)
        # What the killed instance had in flight (asked the model about,
        # reply not yet out) may be asked again and sent again by the
        # instance that claims it; nothing else.
        allowed = outcome.in_flight("b", t_kill)
        with self.subTest("allowed doubles bounded by what the killed one had started"):
            started = {m.message_id for m in driver.messages
                       if m.first_t is not None and m.first_t < t_kill}
            self.assertLessEqual(allowed, started)
        print("\n  " + self.check_outcome(driver, outcome, allowed))
        print("  unaccepted %d; the killed instance's model calls %d, in flight at the kill %d; "
              "claimed (metric) %s"
              % (len(unaccepted), len(outcome.touched_by("b")), len(allowed),
                 sum(m.metric("chatgate_queue_claimed_total") for m in (a, fresh, c))
                 if DURABLE else "-"))
        if DURABLE:
            self.check_drained([a, fresh, c])
        proxy.wait_up()
        for m in (a, fresh, c):
            self.finish_member(m)
        self.assertEqual(proxy.stop(), 0, proxy.log()[-2000:])

    def test_redis_restart_with_aof(self):
        members = self.fleet(["a", "b"])
        proxy = self.haproxy(members)
        convs = conversations(100, 10)
        driver = Driver(proxy.port, convs, min(RATE, 300))
        self.fake.known(m.message_id for m in driver.messages)
        n = len(driver.messages)
        driver.start()
        wait_for(lambda: driver.accepted >= n * 0.3, "30%% accepted (%s)" % driver.summary(),
                 timeout=DRAIN)
        self.assertEqual(self.redis.stop(), 0, self.redis.log()[-2000:])
        t_stop = time.monotonic()
        refusals, accepted = driver.refusals, driver.accepted
        with self.subTest("/readyz 503 while Redis is away"):
            ok = wait_until(lambda: all(m.readyz() == 503 for m in members),
                            timeout=DEADLINE if DURABLE else 3)
            self.assertTrue(ok, [m.readyz() for m in members])
        # HAProxy now answers 503 itself; an instance asked directly
        # refuses too, since the queue cannot take the message.
        probe = Message(100, 0, "probe while Redis is away")
        self.fake.known([probe.message_id])
        with self.subTest("a callback straight to an instance is refused with a 5xx"):
            status = driver.post(probe, port=members[0].port)
            self.assertTrue(status is not None and 500 <= status < 600, status)
        # The driver's callbacks are refused meanwhile (or, without the
        # durable queue, answered without Redis).
        wait_for(lambda: driver.refusals >= refusals + 20 or driver.accepted >= accepted + 150,
                 "callbacks refused while Redis is away (%s)" % driver.summary())
        refused_meanwhile = driver.refusals - refusals
        accepted_meanwhile = driver.accepted - accepted
        self.redis.start()  # the same socket and directory: the AOF is read back
        t_back = time.monotonic()
        with self.subTest("/readyz 200 once Redis is back"):
            ok = wait_until(lambda: all(m.readyz() == 200 for m in members), timeout=DEADLINE)
            self.assertTrue(ok, [m.readyz() for m in members])
        # The probe is delivered again, like any refused callback, until 2xx.
        wait_for(lambda: driver.post(probe) == 200, "the probe taken once Redis is back")
        probe.accepted_t = time.monotonic()
        driver.wait(DRAIN)
        self.wait_answered(driver.messages + [probe])
        outcome = Outcome(self.fake, self.model, driver.messages + [probe])
        with self.subTest("the probe answered once"):
            self.assertEqual(len(outcome.replies_per.get(probe.message_id, [])), 1)
        # A message in flight across the outage (its reply record or ack not
        # written) may be asked and sent again once Redis is back.
        allowed = {m.message_id for m in driver.messages
                   if any(t < t_back for _, t in outcome.model_calls(m))
                   and any(t >= t_stop for _, t in outcome.model_calls(m))}
        with self.subTest("accepted while Redis was away"):
            if DURABLE:
                self.assertEqual(accepted_meanwhile, 0, "2xx without the queue")
        print("\n  " + self.check_outcome(driver, outcome, allowed))
        print("  while Redis was away: %d refused, %d accepted; Redis down %.1f s"
              % (refused_meanwhile, accepted_meanwhile, t_back - t_stop))
        if DURABLE:
            self.check_drained(members)
        for m in members:
            self.finish_member(m)
        self.assertEqual(proxy.stop(), 0, proxy.log()[-2000:])
        self.assertEqual(self.redis.stop(), 0)

    def test_long_connection_spread(self):
        members = self.fleet(["a", "b", "c"], mode="longconn")
        wait_for(lambda: self.fake.get("/_control/ws")["connections"] == 3,
                 "three long connections")
        pusher = Pusher(self.fake, conversations(30, 10))
        messages = pusher.messages
        deadline = time.monotonic() + DRAIN
        stopped = t_kill = None
        while not pusher.step():
            self.assertLess(time.monotonic(), deadline, pusher.summary())
            # A third of the way in, one instance hangs (SIGSTOP) and the
            # events handed to it meanwhile stay unacked; once a few have,
            # it is killed (SIGKILL), and Feishu must push them again.
            if stopped is None and pusher.settled >= len(messages) // 3:
                stopped = time.monotonic()
                members[1].cg.proc.send_signal(signal.SIGSTOP)
            if stopped and t_kill is None and max(pusher.waiting.values(), default=0) >= 5:
                t_kill = time.monotonic()
                self.assertEqual(members[1].cg.kill(), -signal.SIGKILL)
            time.sleep(0.02)  # the next look at the fake's acks
        with self.subTest("events pushed again after the kill"):
            self.assertGreaterEqual(pusher.again["not acked, connection gone"], 5,
                                    pusher.summary())
        self.wait_answered(messages)
        outcome = Outcome(self.fake, self.model, messages)
        allowed = outcome.in_flight("b", stopped)  # frozen from then on
        print("\n  " + self.check_outcome(pusher, outcome, allowed))
        print("  the killed instance's model calls %d, in flight at the kill %d"
              % (len(outcome.touched_by("b")), len(allowed)))
        survivors = [members[0], members[2]]
        if DURABLE:
            self.check_drained(survivors)
        for m in survivors:
            self.finish_member(m)

    def test_poison_message_dead_letters(self):
        self.model.setup(rules=[{"contains": "poison", "behaviour": "status:500"}])
        [member] = self.fleet(["a"])
        poison = (0, 2)
        convs = conversations(20, 5, {poison: "c0 m2 poison"})
        driver = Driver(member.port, convs, 200)
        self.fake.known(m.message_id for m in driver.messages)
        driver.start()
        driver.wait(DRAIN)
        self.wait_answered(driver.messages)
        outcome = Outcome(self.fake, self.model, driver.messages)
        bad = convs[0][2]
        with self.subTest("delivered maxDeliveries times"):
            self.assertEqual(len(outcome.model_calls(bad)), MAX_DELIVERIES)
        print("\n  " + self.check_outcome(
            driver, outcome, {bad.message_id},
            special={bad.message_id: lambda text: MODEL_ERROR in text}))
        with self.subTest("the dead-letter stream"):
            dead = self.redis.dead_letters()
            self.assertEqual(len(dead), 1, dead)
            if dead:
                _, fields = dead[0]
                self.assertEqual(set(fields), {"m", "reason", "partition", "id"}, fields)
                self.assertIn(b"c0 m2 poison", fields["m"])
                self.assertIn(int(fields["partition"]), range(PARTITIONS))
                self.assertRegex(fields["id"].decode(), r"^\d+-\d+$")
        if DURABLE:
            self.check_drained([member], dead_letters=1)
            with self.subTest("the admin page's queue panel"):
                def panel():
                    status, body, _ = get(member.cg.admin_port, "/admin/api/status")
                    q = json.loads(body)["queue"] if status == 200 else None
                    return q if q and q["deadLetters"] == 1 and q["length"] == 0 else None
                q = wait_for(panel, "the admin status to show the dead letter")
                self.assertEqual((q["instance"], q["healthy"], q["partitions"], q["members"],
                                  q["partitionsOwned"], q["pending"]),
                                 ("redis", True, PARTITIONS, 1, PARTITIONS, 0), q)
        self.finish_member(member)

    @unittest.skipUnless(DURABLE, "needs the durable queue")
    def test_streaming_card_continued_after_kill(self):
        """An instance killed while its streaming card is typing: the
        instance that claims the message continues that card (its content
        becomes the whole answer, then it closes); no second card, no
        other message, nothing left typing."""
        self.model.setup(delay="trickle:150")
        members = [self.member(tag, replyStyle="streaming-card", streamUpdateMs=100).start()
                   for tag in ("a", "b")]
        wait_for(lambda: owned(members) == PARTITIONS, "the fleet to own every partition")
        m = Message(0, 0, "tell me a longer story please, one word after another, slowly")
        self.fake.known([m.message_id])
        self.assertEqual(Driver(members[0].port, [[m]], 10).post(m), 200)

        def typing():
            cards = self.fake.get("/_control/cards")["cards"]
            return [c for c in cards.values()
                    if c["streaming"] and any("element_id" in u for u in c["updates"])]
        wait_for(typing, "a streaming card with its first words")
        [(tag, _, _)] = [c for c in self.model.calls() if c[1] == m.text]
        victim = next(x for x in members if x.tag == tag)
        self.assertEqual(victim.cg.kill(), -signal.SIGKILL)
        survivor = next(x for x in members if x is not victim)

        def closed():
            cards = self.fake.get("/_control/cards")["cards"]
            return cards if cards and not any(c["streaming"] for c in cards.values()) else None
        cards = wait_for(closed, "the card closed by the surviving instance", timeout=DRAIN)
        answer = "reply to: %s (1 messages)" % m.text
        with self.subTest("one card, showing the whole answer"):
            self.assertEqual(len(cards), 1, cards)
            [card] = cards.values()
            self.assertTrue(card["elements"]["stream_md"].endswith(answer), card["elements"])
            sequences = [u["sequence"] for u in card["updates"]]
            self.assertEqual(sequences, sorted(set(sequences)), card["updates"])
        with self.subTest("one message to the user: the card"):
            replies = [r for r in self.fake.replies() if r["message_id"] == m.message_id]
            self.assertEqual(len(replies), 1, replies)
            self.assertEqual(replies[0]["msg_type"], "interactive")
        with self.subTest("asked once per instance"):
            tags = sorted(c[0] for c in self.model.calls() if c[1] == m.text)
            self.assertEqual(tags, sorted(["a", "b"]))
        self.assertIn("continuing streaming card", survivor.cg.log())
        self.check_drained([survivor])
        self.finish_member(survivor)


if __name__ == "__main__":
    unittest.main()
