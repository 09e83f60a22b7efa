"""A handover (issue 18) of one chatgate on the durable queue (docs/fleet.md,
issue 17) under a steady webhook load: the real chatgate with router.queue
on redis.so, a real redis-server (AOF on, fleet_support.DurableRedis),
feishu.so in webhook mode against the independent fake Feishu
(tests/fakes/fake_feishu.py), echo.so as the model with a short delayMs, so
that answers are in flight at each handover.

- test_sigusr2_then_reload_hand_over_the_queue: test_fleet's driver sends
  500 signed callbacks (50 conversations of 10) at 150/s straight to the
  chatgate's API port, no load balancer between: the listening socket is
  inherited by each new process, so not one connection may be refused and
  not one callback answered other than 2xx (the driver would retry it, as
  Feishu does, and the test fails on the first retry). Midway SIGUSR2
  hands over to a new process; once that one is ready a reload that
  changes echo's prefix hands over to a third. Each old process exits 0
  after it finished what it held and released its partitions. At the end:
  every callback answered exactly once at the fake (one reply request
  each: none even deduped by its uuid), in order per conversation, each
  reply the echo of its message with the turn count the context in Redis
  gives it (the processes share it), the new prefix on everything first
  sent after the reload's old process had exited; each old process
  answered some of what it held after it was taken over from; nothing in
  the dead letters, the streams drained (none left or pending), every
  partition's lease held by the last process, which is the only live member
  of the queue (the old ones left), and its metrics agree.

Run alone (RUN_SERIAL in CMakeLists.txt): the driver gives a callback 5 s
before it counts as unanswered, and a machine loaded by other suites could
also stretch an old process's drain towards the queue's lease (2 s)."""
import json
import signal
import time
import unittest

from harness import DEADLINE, HANDOVER_FAILED, wait_for, wait_until
from fleet_support import (DURABLE, PARTITIONS, Driver, Member, Outcome, conversations,
                           instance_config, owned)
from test_admin import request
from test_fleet import DRAIN, FleetCase

CONVS = 50
PER_CONV = 10        # contextTurns is 10: message k is the (k+1)th turn
RATE = 150.0         # callbacks per second: about 3.3 s in all
ECHO_DELAY_MS = 100  # a dozen answers in flight at each handover
TOKEN = "hd-adm1n-T0ken-4471-plover"
BEARER = {"Authorization": "Bearer " + TOKEN}


@unittest.skipUnless(DURABLE, "needs the durable queue (CHATGATE_FLEET_QUEUE=memory)")
class DurableHandoverTest(FleetCase):
    # FleetCase's setUp also starts the fake model (fake_openai): unused
    # here (echo.so answers), it only has to see no protocol problem.

    def partitions_taken(self, member, since):
        """Waits until the process now behind `member` owns every partition
        (the old one released them); how long after `since` that was seen."""
        wait_for(lambda: owned([member]) == PARTITIONS,
                 "the new process to own all %d partitions" % PARTITIONS)
        return time.monotonic() - since

    def test_sigusr2_then_reload_hand_over_the_queue(self):
        member = Member(self, instance_config(
            self.redis.socket, self.fake.port, self.model, "a",
            echo={"prefix": "before", "delayMs": ECHO_DELAY_MS},
            top_extra="admin:\n  token: %s\n" % TOKEN), "a")
        member.start()
        cg = member.cg
        wait_for(lambda: owned([member]) == PARTITIONS, "all %d partitions owned" % PARTITIONS)
        pids = [cg.proc.pid]
        driver = Driver(member.port, conversations(CONVS, PER_CONV), RATE)
        messages = driver.messages
        n = len(messages)
        self.fake.known(m.message_id for m in messages)
        driver.start()

        def progress(fraction):
            wait_for(lambda: driver.accepted >= n * fraction or driver.done.is_set(),
                     "%d%% of the callbacks accepted (%s)" % (fraction * 100, driver.summary()),
                     timeout=DRAIN)

        # Each handover: when it began, when the old process had exited.
        began, gone, at = [], [], []
        progress(0.25)
        at.append(driver.accepted)
        began.append(time.monotonic())
        cg.proc.send_signal(signal.SIGUSR2)
        pids.append(cg.follow_handover())
        gone.append(time.monotonic())
        took = [self.partitions_taken(member, gone[0])]
        self.assertIn("upgrade (SIGUSR2): pid %d took over; this process (pid %d) stops "
                      "accepting and drains" % (pids[1], pids[0]), cg.log())
        # The second, once the new process has answered for a while: a
        # reload whose change (echo's prefix) needs a new process.
        progress(0.6)
        cg.rewrite_config('prefix: "before"', 'prefix: "after"', count=1)
        at.append(driver.accepted)
        began.append(time.monotonic())
        status, body, _ = request(cg.admin_port, "/admin/api/reload", BEARER, method="POST",
                                  body="{}")
        doc = json.loads(body)
        self.assertEqual(status, 200, doc)
        self.assertEqual((doc["reloaded"], doc["handover"]),
                         (True, ["plugins.instances[model].config"]), doc)
        pids.append(cg.follow_handover(count=2))
        gone.append(time.monotonic())
        took.append(self.partitions_taken(member, gone[1]))
        self.assertEqual(doc["pid"], pids[2])
        self.assertEqual(len(set(pids)), 3, pids)
        with self.subTest("the load went on across both handovers"):
            sent_after = [m for m in messages if m.first_t is None or m.first_t > gone[1]]
            self.assertGreaterEqual(len(sent_after), 20, "the driver was done too soon")
            during = [sum(1 for m in messages if m.first_t and b <= m.first_t <= g)
                      for b, g in zip(began, gone)]
            self.assertTrue(all(d > 0 for d in during), during)

        unaccepted = driver.wait(DRAIN)
        with self.subTest("every callback answered 2xx at its first try"):
            # Not just in the end: a refused connection, a 5xx or a timeout
            # during a handover is a failure even though the retry got in.
            self.assertEqual((len(unaccepted), driver.refusals), (0, 0), driver.summary())
            retried = [(m.message_id, m.statuses) for m in messages if m.attempts != 1]
            self.assertEqual(retried[:10], [])
        self.wait_answered(messages)
        outcome = Outcome(self.fake, self.model, messages)

        def echo_of(m):
            tail = "%s (turn %d)" % (m.text, m.k + 1)
            if m.first_t is not None and m.first_t > gone[1]:
                return lambda text: text == "after: " + tail
            return lambda text: text in ("before: " + tail, "after: " + tail)
        # No message may have had its reply sent twice (allowed: none).
        summary = self.check_outcome(driver, outcome, set(),
                                  special={m.message_id: echo_of(m) for m in messages})

        # Who answered: each process fetched its own tenant token.
        issued = {"Bearer " + t["token"]: t["issued_at"] for t in self.fake.tokens()}

        def process_of(reply):
            t = issued.get(reply["authorization"])
            return None if t is None else sum(t > b for b in began)
        by_process = [[], [], []]
        for r in outcome.replies:
            who = process_of(r)
            self.assertIsNotNone(who, r)
            by_process[who].append(r["message_id"])
        # Each old process's replies first sent after its handover began
        # (its successor was ready a few tens of ms later): what it held.
        drained = [sum(outcome.first_sent[mid] > began[i] for mid in by_process[i])
                   for i in (0, 1)]
        with self.subTest("each old process answered what it held after the handover began"):
            self.assertTrue(all(drained), drained)
        with self.subTest("the new prefix from the reload's new process on"):
            self.assertTrue(all(outcome.replies_per[mid][0]["content"]["text"]
                                .startswith("after: ") for mid in by_process[2]))
            self.assertGreater(len(by_process[2]), 0)

        self.check_drained([member])
        with self.subTest("the partitions an old process hands over are taken at once"):
            # The new process is a member before the old one leaves, and
            # ticks fast while the members change: well under one lease
            # (2 s), not the next regular tick (leaseMs / 3, 0.67 s: before
            # the fast ticks it took 0.44-0.50 s here) or a lease's end.
            self.assertLess(max(took), 0.35, took)
        mine = "-%d-" % pids[2]  # in its queue name, "<host>-<pid>-<random>"
        with self.subTest("every partition held by the last process"):
            holders = self.redis.owners()
            self.assertEqual({p: o for p, o in holders.items() if o is None or mine not in o}, {})
        with self.subTest("the old processes left the members"):
            ok = wait_until(lambda: len(self.redis.live_members()) == 1, timeout=DEADLINE)
            live = self.redis.live_members()
            self.assertTrue(ok and mine in live[0], live)
            ok = wait_until(lambda: member.metric("chatgate_queue_members") == 1, timeout=DEADLINE)
            self.assertTrue(ok, member.metric("chatgate_queue_members"))
        log = cg.log()
        with self.subTest("the log: two handovers, nothing claimed or lost"):
            self.assertEqual(log.count("stops accepting and drains"), 2)
            # Each old process acknowledged all it had read before it let
            # its partitions go: its successor found nothing to claim.
            self.assertEqual([line for line in log.splitlines() if HANDOVER_FAILED in line or
                              "queue: claimed" in line or "lost partition" in line or
                              " error " in line or " warning " in line][:10], [])
        with self.subTest("no connection of the old processes lives on in the new one"):
            # hiredis opens its sockets without close-on-exec: had they been
            # passed on, the last process would hold the old ones' Redis
            # connections (two per redis.so instance and process) for ever.
            clients = self.redis.command("CLIENT", "LIST")
            if isinstance(clients, bytes):
                clients = clients.decode()
            self.assertLessEqual(clients.count("\n"), 3, clients)
        self.finish_member(member)
        self.assertNotIn(TOKEN, cg.log(), "the admin token in chatgate's log")
        wait = max((outcome.first_sent[m.message_id] - m.accepted_t, m.message_id)
                   for m in messages)
        print("\n  " + summary)
        print("  handovers began at %d and %d of %d accepted; old processes gone %.2f s and "
              "%.2f s after, all partitions owned by the new one %.2f s and %.2f s after that; "
              "replies by process %s, by the old ones after their handover began %s; longest "
              "wait for a reply %.2f s (%s)"
              % (at[0], at[1], n, gone[0] - began[0], gone[1] - began[1], took[0], took[1],
                 [len(b) for b in by_process], drained, wait[0], wait[1]))


if __name__ == "__main__":
    unittest.main()
