"""Chaos peers (issue 7, item 2): peers that fail in every way a real one
does, on a seeded random schedule (see chaospeer.py), checked from the
outside against Ferry's documented policy:

  * no loss: every acknowledged event is answered 2xx by every peer its
    routes name, and nothing is dead-lettered;
  * every retry gap is within the policy: at least Retry-After (capped by
    max_delay_ms) when the peer sent one, at least cap/2 with equal jitter,
    and at most min(max_delay_ms, initial*multiplier^(n-1)) -- raised to
    Retry-After -- after the n-th failed attempt, plus a tolerance for
    scheduling (FERRY_REL_TOL_MS, default 250) and for the time Ferry's
    threads demonstrably waited for a CPU meanwhile (their run-queue wait
    from /proc, which only a loaded machine makes non-zero);
  * ordering: on a partitionkey route, no attempt of an event starts before
    the previous event of its key was answered;
  * breakers (sequential HTTPS test): they open after failure_threshold
    consecutive failures, stay open for open_ms, send one probe, and close
    on its success -- exactly as often as the attempt log predicts, as
    Ferry's logs and /v1/peers report.

Knobs: FERRY_REL_EVENTS (240 events in the concurrent test),
FERRY_REL_TLS_EVENTS (25 events, one at a time, over HTTPS),
FERRY_REL_TOL_MS, FERRY_REL_SEED.
"""

import collections
import json
import random
import threading
import time

from chaospeer import ChaosPeer, Policy, Schedule, check_gaps
from ferrylib import TestPKI, base_config, make_event, metric_value, post_structured, uid, \
    wait_for
from rellib import RunQueueSampler, scaled

TIMEOUT_MS = 500
NO_BREAKER = {"failure_threshold": 1000000, "open_ms": 100}

# The concurrent schedule: weights of each behaviour (chaospeer.py).
HTTP_WEIGHTS = {"ok": 40, "e500": 8, "e503": 8, "ra429": 8, "ra503": 5, "hang": 5,
                "reset": 8, "slow_ok": 6, "slow_fail": 4, "garbage": 4}


def _pending(f):
    return f.query("SELECT count(*) AS n FROM deliveries")[0]["n"]


def _logs(f, msg):
    out = []
    for line in f.stderr_path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("msg") == msg:
            out.append(rec)
    return out


def test_chaos_concurrent(ferry, rel):
    """Many events at once through two chaos peers with different policies
    (full jitter, binary mode; equal jitter with a max_delay above
    Retry-After, structured mode), half of them on an ordered route."""
    n_events = rel.int("FERRY_REL_EVENTS", 240)
    tol_hi = rel.int("FERRY_REL_TOL_MS", 250) / 1000.0
    tol_lo = 0.002  # Ferry keeps its retry times in whole ms
    policies = {"full": Policy(20, 400, 2.0, "full"), "equal": Policy(50, 1500, 3.0, "equal")}
    peers = {n: ChaosPeer(Schedule(rel.seed + i, HTTP_WEIGHTS, retry_after=(0, 1, 2)),
                          timeout_s=TIMEOUT_MS / 1000.0, name=n)
             for i, n in enumerate(policies)}
    try:
        _concurrent(ferry, rel, peers, policies, n_events, tol_lo, tol_hi)
    finally:
        for p in peers.values():
            p.stop()


def _concurrent(ferry, rel, peers, policies, n_events, tol_lo, tol_hi):
    t0 = time.monotonic()
    max_in_flight = 512
    cfg = base_config(
        {n: {"url": p.url(), "timeout_ms": TIMEOUT_MS, "max_in_flight": max_in_flight,
             "mode": "binary" if n == "full" else "structured", "breaker": NO_BREAKER,
             "retry": policies[n].config(max_attempts=1000, max_age_s=3600)}
         for n, p in peers.items()},
        routes=[{"name": "u", "filter": {"exact": {"type": "com.example.chaos"}},
                 "to": list(peers)},
                {"name": "o", "filter": {"exact": {"type": "com.example.chaos.ordered"}},
                 "to": list(peers), "ordering": "partitionkey"}])
    f = ferry(cfg)
    runq = RunQueueSampler(f.proc.pid)
    n_keys = 4
    n_ordered = n_events // 3
    per_key = max(2, n_ordered // n_keys)
    n_unordered = max(0, n_events - per_key * n_keys)
    acked, order, refused = [], collections.defaultdict(list), []
    lock = threading.Lock()

    def post(ev):
        r = post_structured(f.events_url, ev)
        with lock:
            if r.status == 202:
                acked.append(ev["id"])
            else:
                refused.append(r)
        return r.status == 202

    def unordered(k, count, rng):
        for i in range(count):
            post(make_event(id=uid(f"u{k}"), type="com.example.chaos", data={"i": i}))
            time.sleep(rng.uniform(0, 0.03))

    def ordered(key, rng):
        for i in range(per_key):
            ev = make_event(id=uid(key), type="com.example.chaos.ordered", partitionkey=key,
                            data={"i": i})
            if post(ev):
                order[key].append(ev["id"])
            time.sleep(rng.uniform(0, 0.06))

    threads = [threading.Thread(target=unordered, args=(k, n_unordered // 3 + (k < n_unordered % 3),
                                                        random.Random(rel.seed + 10 + k)))
               for k in range(3)]
    threads += [threading.Thread(target=ordered, args=(f"key{k}", random.Random(rel.seed + 20 + k)))
                for k in range(n_keys)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(scaled(120))
    assert not refused, f"valid events refused: {refused[:3]}"

    def missing():
        return [(n, e) for n, p in peers.items() for e in set(acked) - p.delivered()]
    try:
        wait_for(lambda: not missing() and _pending(f) == 0, scaled(180), interval=0.2)
    except AssertionError:
        pass
    lost = missing()
    runq.stop()
    dead = f.query("SELECT peer, reason, last_status, last_error FROM dead_letters")
    pending = _pending(f)

    result = {"events": len(acked), "peers": len(peers), "deliveries_expected":
              len(acked) * len(peers), "lost": len(lost), "dead_letters": len(dead),
              "faults": {}, "attempts": 0, "duplicates": 0, "gaps_checked": 0,
              "gap_violations": 0, "worst_over_upper_ms": None, "tolerance_ms": tol_hi * 1000, "tolerance_lower_ms": tol_lo * 1000,
              "min_margin_over_lower_ms": None, "ordered_keys": len(order),
              "order_checks": 0, "order_violations": 0, "anomalies": 0,
              "starved_credit_ms": 0.0, "ferry_runqueue_wait_s": round(
                  runq.samples[-1][1] - runq.samples[0][1], 2) if runq.samples else None,
              "peer_max_concurrency": max(p.max_in_flight for p in peers.values())}
    problems = []
    for n, p in peers.items():
        att = p.snapshot()
        result["attempts"] += len(att)
        for k, v in p.counts().items():
            if k != "ok":
                result["faults"][k] = result["faults"].get(k, 0) + v
        anomalies = [a for a in att if a.anomaly or a.event_id is None]
        result["anomalies"] += len(anomalies)
        problems += [f"{n}: anomaly {a.anomaly} in {a}" for a in anomalies[:5]]
        by = p.by_owner()
        for e in acked:
            seq = by.get(e, [])
            oks = sum(1 for a in seq if a.ok)
            result["duplicates"] += max(0, oks - 1)
            if seq and not seq[-1].ok and e not in {x for _, x in lost}:
                problems.append(f"{n}: Ferry stopped after an attempt the peer did not "
                                f"answer 2xx: {seq[-1]}")
            bad, st = check_gaps(seq, policies[n], tol_lo, tol_hi,
                                 starved=runq.wait_between if runq.available else None)
            result["gaps_checked"] += st["gaps"]
            result["starved_credit_ms"] = round(max(result["starved_credit_ms"],
                                                    st["starved_credit_ms"]), 1)
            if st["gaps"]:
                w = result["worst_over_upper_ms"]
                if w is None or st["worst_over_upper_ms"] > w:
                    result["worst_gap"] = {"peer": n, **st["worst"]}
                result["worst_over_upper_ms"] = round(max(w if w is not None else -1e9,
                                                          st["worst_over_upper_ms"]), 1)
                m = result["min_margin_over_lower_ms"]
                if m is None or st["worst_over_lower_ms"] < m:
                    result["closest_gap"] = {"peer": n, **st["closest"]}
                result["min_margin_over_lower_ms"] = round(min(m if m is not None else 1e9,
                                                               st["worst_over_lower_ms"]), 1)
            result["gap_violations"] += len(bad)
            problems += [f"{n} {e}: {b}" for b in bad[:3]]
        for key, ids in order.items():
            for prev, nxt in zip(ids, ids[1:]):
                a, b = by.get(prev, []), by.get(nxt, [])
                if not a or not b:
                    continue
                result["order_checks"] += 1
                if b[0].t_accept < a[-1].end_lo or not a[-1].ok:
                    result["order_violations"] += 1
                    problems.append(f"{n} {key}: {nxt} started at {b[0].t_accept:.3f} before "
                                    f"{prev} was answered ({a[-1]})")
    result["seconds"] = round(time.monotonic() - t0, 1)
    path = rel.record("chaos_concurrent", result)
    if problems or lost:  # the whole attempt log, to see what happened
        dump = path.with_suffix(".attempts.json")
        dump.write_text(json.dumps({"wall_minus_monotonic": time.time() - time.monotonic(),
                                    "ferry_stderr": str(f.stderr_path),
                                    **{n: [a.as_dict() for a in p.snapshot()]
                                       for n, p in peers.items()}}))
        problems.insert(0, f"attempt log: {dump}")
    assert not lost, f"{len(lost)} acknowledged deliveries never answered 2xx: {lost[:5]}; " \
                     f"dead letters {dead[:3]}; pending {pending}"
    assert not dead, f"dead letters: {dead[:5]}"
    assert result["peer_max_concurrency"] < max_in_flight, \
        "max_in_flight was reached, so retry gaps may include waits for a free slot"
    assert not problems, "\n".join(problems[:20])
    assert result["gaps_checked"] > n_events // 4, result
    assert result["order_checks"] > 0, result


class BreakerModel:
    """The breaker as README states it, replayed over a sequential attempt
    log: failure_threshold consecutive failures open it; the next attempt
    is the probe; a failed probe opens it again; a successful one closes it."""

    def __init__(self, threshold):
        self.threshold = threshold
        self.state = "closed"
        self.failures = 0
        self.opened_after = set()  # indexes of attempts whose end (re)opened it
        self.opens = self.reopens = self.closes = 0

    def feed(self, i, success):
        if self.state == "closed":
            if success:
                self.failures = 0
                return
            self.failures += 1
            if self.failures >= self.threshold:
                self.state = "open"
                self.opens += 1
                self.opened_after.add(i)
        else:  # open: this attempt is the probe
            if success:
                self.state = "closed"
                self.failures = 0
                self.closes += 1
            else:
                self.reopens += 1
                self.opened_after.add(i)


def test_chaos_tls_and_breaker(ferry, rel, tmp_path):
    """One event at a time through an HTTPS chaos peer that also fails the
    connection itself (an untrusted certificate, plain TCP garbage instead
    of TLS, a reset before the handshake). With max_in_flight 1 and one
    event pending, every connection belongs to the current event, so each
    attempt is numbered exactly -- including those that never reached
    HTTP -- and the breaker can be replayed from the log."""
    n_events = rel.int("FERRY_REL_TLS_EVENTS", 25)
    tol_hi = rel.int("FERRY_REL_TOL_MS", 250) / 1000.0
    tol_lo = 0.002  # Ferry keeps its retry times in whole ms
    threshold, open_ms = 3, 300
    policy = Policy(20, 400, 2.0, "full")
    pki = TestPKI(tmp_path / "pki")
    other = TestPKI(tmp_path / "other", name="Untrusted CA")
    good = pki.issue("peer", dns=["localhost"], ips=["127.0.0.1"])
    bad = other.issue("peer", dns=["localhost"], ips=["127.0.0.1"])
    sched = Schedule(rel.seed,
                     {"ok": 10, "e500": 1.5, "e503": 1.5, "ra429": 1.5, "ra503": 1, "hang": 1,
                      "reset": 1.5, "slow_ok": 1.5, "slow_fail": 1, "garbage": 1},
                     tls_weights={"tls_ok": 8, "tls_untrusted": 1.5, "tls_plain": 1.5,
                                  "tls_reset": 1.5},
                     retry_after=(0, 1))
    p = ChaosPeer(sched, timeout_s=0.4, name="tls",
                  tls=(pki.server_context(good), other.server_context(bad)))
    try:
        _tls_breaker(ferry, rel, p, pki, policy, n_events, threshold, open_ms, tol_lo, tol_hi)
    finally:
        p.stop()


def _tls_breaker(ferry, rel, p, pki, policy, n_events, threshold, open_ms, tol_lo, tol_hi):
    t0 = time.monotonic()
    cfg = base_config({"tls": {"url": p.url(), "timeout_ms": 400, "max_in_flight": 1,
                               "tls": {"ca_file": pki.ca},
                               "breaker": {"failure_threshold": threshold, "open_ms": open_ms},
                               "retry": policy.config(max_attempts=1000, max_age_s=3600)}})
    f = ferry(cfg)
    runq = RunQueueSampler(f.proc.pid)
    states = collections.Counter()
    stop = threading.Event()

    def watch():  # what /v1/peers says, as often as is cheap
        while not stop.is_set():
            try:
                r = f.admin("GET", "/v1/peers", timeout=5)
                for peer in r.json().get("peers", r.json()) if r.status == 200 else []:
                    if isinstance(peer, dict) and peer.get("name") == "tls":
                        states[peer.get("breaker")] += 1
            except (OSError, AssertionError, ValueError):
                pass
            stop.wait(0.02)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ids = []
    try:
        for i in range(n_events):
            ev = make_event(id=uid("tls"), data={"i": i})
            p.tag = ev["id"]
            f.post_ok(ev)
            ids.append(ev["id"])
            wait_for(lambda: ev["id"] in p.delivered() and _pending(f) == 0, scaled(60),
                     interval=0.01, msg=lambda: f"event {i} not delivered: {p.by_owner().get(ev['id'])}")
    finally:
        stop.set()
        watcher.join(5)
        runq.stop()
    att = sorted(p.snapshot(), key=lambda a: a.t_accept)
    problems = [f"anomaly: {a.anomaly} in {a}" for a in att if a.anomaly]
    problems += [f"attempt of {a.event_id} tagged {a.tag}" for a in att
                 if a.event_id is not None and a.event_id != a.tag]
    index = {id(a): i for i, a in enumerate(att)}
    by = collections.defaultdict(list)
    for a in att:
        by[a.tag].append(a)
    model = BreakerModel(threshold)
    last = {id(v[-1]) for v in by.values()}
    for i, a in enumerate(att):
        model.feed(i, id(a) in last)
    result = {"events": len(ids), "attempts": len(att), "faults": {}, "gaps_checked": 0,
              "gap_violations": 0, "worst_over_upper_ms": None, "tolerance_ms": tol_hi * 1000, "tolerance_lower_ms": tol_lo * 1000,
              "min_margin_over_lower_ms": None, "breaker_opened": model.opens,
              "breaker_reopened": model.reopens, "breaker_closed": model.closes,
              "lost": len(set(ids) - p.delivered()), "duplicates": 0,
              "states_seen": dict(states), "starved_credit_ms": 0.0,
              "ferry_runqueue_wait_s": round(runq.samples[-1][1] - runq.samples[0][1], 2)
              if runq.samples else None}
    for k, v in p.counts().items():
        if k != "ok":
            result["faults"][k] = v
    for e in ids:
        seq = by[e]
        result["duplicates"] += max(0, sum(1 for a in seq if a.ok) - 1)
        bad, st = check_gaps(seq, policy, tol_lo, tol_hi,
                             breaker_open_after=lambda j, s=seq: index[id(s[j])] in model.opened_after,
                             open_s=open_ms / 1000.0,
                             starved=runq.wait_between if runq.available else None)
        result["gaps_checked"] += st["gaps"]
        result["starved_credit_ms"] = round(max(result["starved_credit_ms"],
                                                st["starved_credit_ms"]), 1)
        result["gap_violations"] += len(bad)
        problems += [f"{e}: {b}" for b in bad[:3]]
        if st["gaps"]:
            w, m = result["worst_over_upper_ms"], result["min_margin_over_lower_ms"]
            result["worst_over_upper_ms"] = round(max(-1e9 if w is None else w,
                                                      st["worst_over_upper_ms"]), 1)
            result["min_margin_over_lower_ms"] = round(min(1e9 if m is None else m,
                                                           st["worst_over_lower_ms"]), 1)
    logged = {"opened": len(_logs(f, "circuit breaker opened")),
              "reopened": len(_logs(f, "circuit breaker probe failed: open again")),
              "closed": len(_logs(f, "circuit breaker closed"))}
    result["breaker_logged"] = logged
    result["seconds"] = round(time.monotonic() - t0, 1)
    rel.record("chaos_tls_breaker", result)
    assert not result["lost"], result
    assert not f.query("SELECT * FROM dead_letters"), "nothing may be dead-lettered"
    assert not problems, "\n".join(problems[:20])
    assert (logged["opened"], logged["reopened"], logged["closed"]) == \
        (model.opens, model.reopens, model.closes), \
        f"Ferry's breaker log {logged} differs from the replayed attempt log " \
        f"(opened {model.opens}, reopened {model.reopens}, closed {model.closes})"
    tls_faults = sum(v for k, v in result["faults"].items() if k.startswith("tls_"))
    assert tls_faults > 0, f"the schedule injected no TLS fault: {result['faults']}"
    if model.opens:
        assert states.get("open") or states.get("half-open"), \
            f"/v1/peers never showed the breaker open: {dict(states)}"
    assert metric_value(f.metrics(), "ferry_breaker_open", peer="tls") == 0


def test_non_http_reply_is_retried(ferry, rel):
    """A peer that answers bytes that are not HTTP at all (no status line:
    a proxy or another service on the port, say) gave no verdict on the
    event: the README says only a *status* other than 408/429/5xx
    dead-letters, and no status means try again. The retry must come, and
    the event must be delivered. (Regression: curl reports such an answer
    as CURLE_UNSUPPORTED_PROTOCOL, which dead-lettered at once.)"""
    sched = Schedule(rel.seed, {"ok": 1})
    sched.forced.append(("garbage", None))
    p = ChaosPeer(sched, timeout_s=2.0, name="garbage")
    try:
        f = ferry(base_config({"g": {"url": p.url(), "timeout_ms": 2000,
                                     "breaker": NO_BREAKER}}))
        ev = make_event()
        f.post_ok(ev)
        wait_for(lambda: ev["id"] in p.delivered() or f.query("SELECT * FROM dead_letters"),
                 scaled(10))
        dead = f.query("SELECT reason FROM dead_letters")
        assert not dead, f"a non-HTTP answer dead-lettered the event at once: {dead}"
        kinds = [a.kind for a in p.by_owner()[ev["id"]]]
        assert kinds == ["garbage", "ok"], kinds
    finally:
        p.stop()
