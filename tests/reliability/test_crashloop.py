"""Crash loop (issue 7, item 1): under steady load, kill -9 Ferry at random
moments and restart it, again and again. Invariant: every event that got a
202 is delivered at least once to every peer whose route matches it, and
ordered events still reach their peer in order. Duplicates (delivery is at
least once) are counted and reported, not forbidden.

Knobs: FERRY_REL_KILLS (20), FERRY_REL_CLIENTS (4 unordered + 2 ordered
client threads), FERRY_REL_KILL_MAX_MS (700: the longest run between two
kills; each run lasts a seeded uniform 100..max ms), FERRY_REL_SEED.
"""

import collections
import random
import time

from rellib import Loader, make_event, scaled, uid
from ferrylib import Peer, Reply, base_config, http_peer, wait_for


class JitteryPeer(Peer):
    """A healthy peer that answers 200 after a short random delay, so that
    deliveries are in flight when Ferry dies."""

    def __init__(self, rng, name):
        self.rng = rng
        super().__init__(200, name=name)

    def reply_for(self, req):
        with self.lock:
            d = self.rng.choice((0, 0, 0, 0.002, 0.01, 0.03))
        return Reply(200, delay=d)

    def answered_ok(self):
        """{event id: number of 2xx answers actually written}."""
        c = collections.Counter()
        for r in self.snapshot():
            if r.answered and r.status and 200 <= r.status < 300:
                c[r.event_id] += 1
        return c

    def in_flight(self):
        return sum(1 for r in self.snapshot() if not r.answered and not r.client_gone)


TYPE_A = "com.example.crash.a"
TYPE_B = "com.example.crash.a.b"
TYPE_O = "com.example.ordered"


def matching_peers(ev_type):
    if ev_type == TYPE_O:
        return ("o",)
    return ("a", "b") if ev_type.endswith(".b") else ("a",)


def test_crash_loop(ferry, rel):
    kills = rel.int("FERRY_REL_KILLS", 20)
    clients = rel.int("FERRY_REL_CLIENTS", 4)
    kill_max = rel.int("FERRY_REL_KILL_MAX_MS", 700) / 1000.0
    rng = rel.rng
    peers = {n: JitteryPeer(random.Random(rel.seed + i), n)
             for i, n in enumerate("abo")}
    try:
        _crash_loop(ferry, rel, peers, kills, clients, kill_max, rng)
    finally:
        for p in peers.values():
            p.stop()


def _crash_loop(ferry, rel, peers, kills, clients, kill_max, rng):
    t0 = time.monotonic()
    cfg = base_config(
        {n: http_peer(p, max_in_flight=16, timeout_ms=5000) for n, p in peers.items()},
        routes=[{"name": "a", "filter": {"prefix": {"type": "com.example.crash."}}, "to": ["a"]},
                {"name": "b", "filter": {"suffix": {"type": ".b"}}, "to": ["b"]},
                {"name": "o", "filter": {"exact": {"type": TYPE_O}}, "to": ["o"],
                 "ordering": "partitionkey"}],
        retry={"max_attempts": 100000, "initial_delay_ms": 20, "max_delay_ms": 200,
               "max_age_s": 3600})
    f = ferry(cfg)
    types = {}       # event id -> type
    order = collections.defaultdict(list)  # partition key -> ids in post order
    ordered_threads = 2

    def make(pos, r):
        n, i = pos
        if n >= clients:  # an ordered client: one key, strictly sequential
            key = f"key-{n}"
            ev = make_event(id=uid(f"o{n}"), type=TYPE_O, partitionkey=key, data={"i": i})
            types[ev["id"]] = TYPE_O
            order[key].append(ev["id"])
            return "structured", ev, [ev["id"]]
        x = r.random()
        evs = [make_event(id=uid(f"c{n}"), type=TYPE_B if r.random() < 0.5 else TYPE_A,
                          data={"n": n, "i": i})
               for _ in range(r.randint(2, 5) if x < 0.2 else 1)]
        for e in evs:
            types[e["id"]] = e["type"]
        if x < 0.2:
            return "batch", evs, [e["id"] for e in evs]
        if x < 0.4:
            evs[0]["data"] = b"binary payload %d" % i
            return "binary", evs[0], [evs[0]["id"]]
        return "structured", evs[0], [evs[0]["id"]]

    load = Loader(f, clients + ordered_threads, make, rel.seed)
    moments = []
    try:
        for k in range(kills):
            time.sleep(rng.uniform(0.1, kill_max))
            moments.append({"posts_in_progress": load.outstanding,
                            "deliveries_in_flight": sum(p.in_flight() for p in peers.values())})
            f.kill9()
            f.start(timeout=30)
        time.sleep(rng.uniform(0.1, kill_max))
    finally:
        load.stop()
    acked = load.acked_ids()
    assert len(acked) > 20 * max(1, kills // 10), \
        f"the load was too thin to mean anything: {len(acked)} acknowledged; " \
        f"statuses {load.statuses}, errors {load.errors}"
    assert not load.statuses or set(load.statuses) <= {503}, \
        f"unexpected answers to valid events: {load.statuses}"

    want = {(p, e) for e in acked for p in matching_peers(types[e])}

    def missing():
        got = {(n, e) for n, p in peers.items() for e in p.answered_ok()}
        return want - got
    try:
        wait_for(lambda: not missing(), scaled(120), interval=0.25)
    except AssertionError:
        pass
    lost = missing()
    # Everything settles: the spool holds no pending delivery and no dead letter.
    wait_for(lambda: f.query("SELECT count(*) AS n FROM deliveries")[0]["n"] == 0, 30,
             msg=lambda: f"deliveries still pending: "
                         f"{f.query('SELECT peer, count(*) AS n FROM deliveries GROUP BY peer')}")
    dead = f.query("SELECT peer, reason FROM dead_letters")

    # Duplicates: 2xx answers beyond the first, per (peer, acknowledged event).
    counts = {n: p.answered_ok() for n, p in peers.items()}
    acked_set = set(acked)
    dups = sum(max(0, c - 1) for n in counts for e, c in counts[n].items() if e in acked_set)
    unacked_delivered = len({e for n in counts for e in counts[n]} - acked_set)

    # Order per partition key, among acknowledged events: no request for
    # the next event before the previous one was answered 2xx.
    order_violations = []
    o = peers["o"].snapshot()
    first_req = {}
    first_ok = {}
    for r in o:
        first_req.setdefault(r.event_id, r.time)
        if r.answered and 200 <= (r.status or 0) < 300:
            first_ok.setdefault(r.event_id, r.time)
    for key, ids in order.items():
        seq = [e for e in ids if e in acked_set]
        for prev, nxt in zip(seq, seq[1:]):
            if nxt in first_req and (prev not in first_ok or first_req[nxt] < first_ok[prev]):
                order_violations.append((key, prev, nxt))

    seconds = time.monotonic() - t0
    pairs = len(want)
    result = {
        "kills": kills,
        "kills_with_posts_in_progress": sum(1 for m in moments if m["posts_in_progress"]),
        "kills_with_deliveries_in_flight": sum(1 for m in moments if m["deliveries_in_flight"]),
        "acknowledged": len(acked),
        "deliveries_expected": pairs,
        "delivered_unique": pairs - len(lost),
        "lost": len(lost),
        "duplicates": dups,
        "duplicate_rate": round(dups / pairs, 6) if pairs else 0.0,
        "delivered_without_202": unacked_delivered,
        "dead_letters": len(dead),
        "order_violations": len(order_violations),
        "client_transport_errors": sum(load.errors.values()),
        "client_non_202": load.statuses,
        "seconds": round(seconds, 1),
    }
    rel.record("crashloop", result)
    assert not lost, f"{len(lost)} acknowledged deliveries never arrived after {kills} kills, " \
                     f"e.g. {sorted(lost)[:5]}"
    assert not dead, f"nothing may be dead-lettered: {dead[:5]}"
    assert not order_violations, f"ordered deliveries out of order: {order_violations[:5]}"
