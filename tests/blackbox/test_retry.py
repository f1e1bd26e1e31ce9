"""Contract: retries on 5xx/429/408/connection errors with backoff and
Retry-After; no retry on other statuses; max_attempts then dead letter with
attempt history; a peer that is down for a while gets everything later."""

import time

from ferrylib import base_config, http_peer, make_event, metric_value, scaled, wait_for


def _assert_no_more(p, event_id, n, wait=1.5):
    """Wait a few backoff periods (max_delay_ms is 500) and check the peer
    still saw exactly n attempts."""
    time.sleep(scaled(wait))
    got = p.requests_for(event_id)
    assert len(got) == n, f"expected exactly {n} attempts, got {len(got)}: {[r.status for r in got]}"


def test_retry_503_twice_then_success(ferry, peer):
    p = peer()
    p.push(503, times=2)
    f = ferry(base_config({"p": http_peer(p)}))
    ev = make_event()
    f.post_ok(ev)
    p.wait_ids([ev["id"]])
    _assert_no_more(p, ev["id"], 3)
    statuses = [r.status for r in p.requests_for(ev["id"])]
    assert statuses == [503, 503, 200], f"attempt statuses {statuses}"
    wait_for(lambda: metric_value(f.metrics(), "ferry_deliveries_total", peer="p", outcome="success") == 1,
             5, msg=lambda: f"success counter != 1:\n{f.metrics()}")
    m = f.metrics()
    assert metric_value(m, "ferry_deliveries_total", peer="p", outcome="retry") == 2, m
    assert (metric_value(m, "ferry_deliveries_total", peer="p", outcome="dead") or 0) == 0, m


def test_retry_408_500_502_are_retried(ferry, peer):
    p = peer()
    p.push(408)
    p.push(500)
    p.push(502)
    f = ferry(base_config({"p": http_peer(p)}))
    ev = make_event()
    f.post_ok(ev)
    p.wait_ids([ev["id"]])
    statuses = [r.status for r in p.requests_for(ev["id"])]
    assert statuses == [408, 500, 502, 200], f"attempt statuses {statuses}"


def test_retry_after_honoured(ferry, peer):
    p = peer()
    p.push(429, headers={"Retry-After": "1"})
    # max_delay_ms must be >= 1000, or the cap would shorten Retry-After.
    f = ferry(base_config({"p": http_peer(p)},
                          retry={"initial_delay_ms": 50, "max_delay_ms": 3000}))
    ev = make_event()
    f.post_ok(ev)
    p.wait_ids([ev["id"]], timeout=10)
    reqs = p.requests_for(ev["id"])
    assert [r.status for r in reqs] == [429, 200], f"attempt statuses {[r.status for r in reqs]}"
    gap = reqs[1].time - reqs[0].time
    assert gap >= 0.9, f"second attempt came {gap:.3f}s after a 429 with Retry-After: 1 (must be >= 1s)"


def test_404_is_not_retried(ferry, peer):
    p = peer(status=404)
    f = ferry(base_config({"p": http_peer(p)}))
    ev = make_event()
    f.post_ok(ev)
    p.wait_requests(1)
    _assert_no_more(p, ev["id"], 1, wait=2.0)
    # It is dead-lettered at once.
    wait_for(lambda: f.query("SELECT * FROM dead_letters"), 5, msg="no dead letter for the 404")
    dl = f.query("SELECT * FROM dead_letters")
    assert len(dl) == 1 and dl[0]["last_status"] == 404 and dl[0]["attempts"] == 1, dl


def test_max_attempts_then_dead_letter(ferry, peer):
    p = peer(status=500)
    f = ferry(base_config({"x": http_peer(p, retry={"max_attempts": 3})}))
    ev = make_event()
    f.post_ok(ev)
    p.wait_requests(3)
    _assert_no_more(p, ev["id"], 3, wait=2.0)

    def dead():
        return f.query("SELECT * FROM dead_letters")
    wait_for(dead, 5, msg="no dead_letters row after max_attempts")
    dl = dead()
    assert len(dl) == 1, f"expected one dead letter, got {dl}"
    d = dl[0]
    assert d["peer"] == "x", d
    assert d["attempts"] == 3, f"dead letter attempts {d['attempts']}, expected 3"
    assert d["last_status"] == 500, d
    assert d["reason"], f"dead letter without a reason: {d}"
    assert d["dead_ms"] > 0, d
    ev_rows = f.query("SELECT * FROM attempts WHERE delivery_id = ? ORDER BY n", (d["id"],))
    assert [r["n"] for r in ev_rows] == [1, 2, 3], \
        f"attempt history for dead letter {d['id']}: {ev_rows}\nall attempts: " \
        f"{f.query('SELECT * FROM attempts')}"
    assert all(r["status"] == 500 for r in ev_rows), ev_rows
    ats = [r["at_ms"] for r in ev_rows]
    assert ats == sorted(ats), f"attempt times not increasing: {ats}"

    def dead_metric():
        return metric_value(f.metrics(), "ferry_deliveries_total", peer="x", outcome="dead") == 1
    wait_for(dead_metric, 5, msg=lambda: "ferry_deliveries_total{peer=\"x\",outcome=\"dead\"} != 1:\n"
                                         + f.metrics())
    assert metric_value(f.metrics(), "ferry_dead_letters", peer="x") == 1, f.metrics()


def test_peer_down_then_back(ferry, peer):
    p = peer()
    p.stop()
    f = ferry(base_config({"p": http_peer(p)}, retry={"max_attempts": 1000}))
    evs = [make_event(data={"i": i}) for i in range(10)]
    for e in evs:
        f.post_ok(e)
    time.sleep(scaled(1.5))  # a few retry periods (max_delay_ms 500)
    assert not p.snapshot()
    p.start()
    p.wait_ids([e["id"] for e in evs], timeout=15)
    assert not f.query("SELECT * FROM dead_letters"), "nothing may be dead-lettered"
