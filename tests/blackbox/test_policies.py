"""Delivery policies against the real binary: per-peer circuit breakers,
Standard Webhooks signatures (verified here with Python's hmac, hashlib and
base64, independently of Ferry's code), and reply events (a peer's 2xx
answer that is itself a CloudEvent is routed like a new event)."""

import base64
import hashlib
import hmac
import json
import time

import pytest

from ferrylib import (base_config, http_peer, make_event, metric_value, post_binary, scaled,
                      uid, wait_for)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CE_JSON = "application/cloudevents+json"


def _logs(f, msg=None):
    """The JSON log records on f's stderr (this run), optionally by msg."""
    out = []
    for line in f.stderr_tail(100000).splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and (msg is None or rec.get("msg") == msg):
            out.append(rec)
    return out


def _metric(f, name, **labels):
    return metric_value(f.metrics(), name, **labels)


# ---------------------------------------------------------------------------
# circuit breaker


def test_breaker_opens_probes_and_recovers(ferry, peer):
    open_ms = 1500
    p = peer()
    p.push(503, times=3)
    p.push(200, delay=0.7)  # the probe: slow, so we can see it goes alone
    f = ferry(base_config({"x": http_peer(p, breaker={"failure_threshold": 3, "open_ms": open_ms})},
                          retry={"max_attempts": 50}))
    assert _metric(f, "ferry_breaker_open", peer="x") == 0
    first = make_event()
    f.post_ok(first)
    p.wait_requests(3)
    wait_for(lambda: _metric(f, "ferry_breaker_open", peer="x") == 1, 5,
             msg=lambda: f"ferry_breaker_open{{peer=\"x\"}} != 1 after 3 failures:\n{f.metrics()}")
    rest = [make_event(data={"i": i}) for i in range(4)]
    for e in rest:
        f.post_ok(e)
    # Nothing goes while it is open: not the retry (backoff <= 500 ms), not the new events.
    time.sleep(open_ms / 1000 * 0.6)
    reqs = p.snapshot()
    assert len(reqs) == 3, f"requests while the breaker was open: {reqs[3:]}"
    wait_for(lambda: len(p.snapshot()) >= 4, 10, msg="no probe after open_ms")
    everything = [first["id"]] + [e["id"] for e in rest]
    p.wait_ids(everything, timeout=15)
    reqs = p.snapshot()
    assert len(reqs) == 8, f"expected 3 failures, 1 probe, 4 more deliveries: {reqs}"
    gap = reqs[3].time - reqs[2].time
    assert gap >= open_ms / 1000 - 0.1, f"probe {gap:.3f}s after the failure that opened it"
    for r in reqs[4:]:  # the rest went only after the probe's answer
        assert r.time >= reqs[3].time + 0.6, "a delivery went while the probe was out"
    wait_for(lambda: _metric(f, "ferry_breaker_open", peer="x") == 0, 5,
             msg=lambda: f"breaker still open after recovery:\n{f.metrics()}")
    assert not f.query("SELECT * FROM dead_letters")
    opened = _logs(f, "circuit breaker opened")
    assert opened and opened[0]["level"] == "warn" and opened[0]["peer"] == "x", opened
    assert opened[0]["failures"] == 3 and opened[0]["open_ms"] == open_ms, opened
    closed = _logs(f, "circuit breaker closed")
    assert closed and closed[0]["level"] == "info" and closed[0]["peer"] == "x", closed


def test_breaker_failed_probe_opens_again(ferry, peer):
    p = peer()
    p.push(500, times=3)  # 2 to open, then a failing probe
    f = ferry(base_config({"x": http_peer(p, breaker={"failure_threshold": 2, "open_ms": 800})},
                          retry={"max_attempts": 50}))
    ev = make_event()
    f.post_ok(ev)
    p.wait_ids([ev["id"]], timeout=15)
    reqs = p.snapshot()
    assert [r.status for r in reqs] == [500, 500, 500, 200], reqs
    assert reqs[2].time - reqs[1].time >= 0.7, "first probe came before open_ms"
    assert reqs[3].time - reqs[2].time >= 0.7, "a failed probe must open the breaker again"
    wait_for(lambda: _metric(f, "ferry_breaker_open", peer="x") == 0, 5, msg=f.metrics)


def test_breaker_ignores_4xx(ferry, peer):
    p = peer(status=404)
    f = ferry(base_config({"x": http_peer(p, breaker={"failure_threshold": 1, "open_ms": 60000})}))
    evs = [make_event() for _ in range(3)]
    for e in evs:
        f.post_ok(e)
    wait_for(lambda: len(f.query("SELECT * FROM dead_letters")) == 3, 10,
             msg="404s must dead-letter at once")
    assert len(p.snapshot()) == 3
    assert _metric(f, "ferry_breaker_open", peer="x") == 0, f.metrics()


def test_breaker_is_per_peer(ferry, peer):
    bad, good = peer(status=503, name="bad"), peer(name="good")
    f = ferry(base_config({
        "bad": http_peer(bad, breaker={"failure_threshold": 1, "open_ms": 60000}),
        "good": http_peer(good, breaker={"failure_threshold": 1, "open_ms": 60000}),
    }))
    first = make_event()
    f.post_ok(first)
    wait_for(lambda: _metric(f, "ferry_breaker_open", peer="bad") == 1, 5, msg=f.metrics)
    more = [make_event() for _ in range(3)]
    for e in more:
        f.post_ok(e)
    good.wait_ids([first["id"]] + [e["id"] for e in more])
    assert len(bad.snapshot()) == 1
    assert _metric(f, "ferry_breaker_open", peer="good") == 0


# ---------------------------------------------------------------------------
# signing


def _start_signed(ferry, cfg):
    """Start Ferry with signing peers; skip while serve refuses them."""
    f = ferry(cfg, start=False)
    f.start(wait_ready=False)

    def up_or_exited():
        if f.proc.poll() is not None:
            return "exited"
        try:
            from ferrylib import http_request
            return http_request("GET", f.url("/readyz"), timeout=2).status == 200 and "up"
        except OSError:
            return False
    state = wait_for(up_or_exited, 10, msg=lambda: f.stderr_tail())
    if state == "exited":
        f.expected_rcs = (2,)
        if "signing_secret" in f.stderr_tail() and "not supported" in f.stderr_tail():
            pytest.skip("this ferry serve still refuses peers.*.signing_secret")
        raise AssertionError(f"ferry exited {f.proc.returncode}:\n{f.stderr_tail()}")
    return f


def _verify(req, secret=SECRET):
    """Standard Webhooks verification, written from the spec."""
    h = req.headers
    msg_id, ts, sigs = h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
    assert msg_id and ts and sigs, f"missing webhook-* headers: {h}"
    assert msg_id.startswith("msg_"), msg_id
    key = base64.b64decode(secret[len("whsec_"):])
    content = msg_id.encode() + b"." + ts.encode() + b"." + req.body
    want = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    got = [s.split(",", 1)[1] for s in sigs.split(" ") if s.startswith("v1,")]
    assert any(hmac.compare_digest(want, g) for g in got), \
        f"signature {sigs} does not verify (want v1,{want})"
    return msg_id, int(ts), sigs


def test_signatures_verify_binary_and_structured(ferry, peer):
    pb, ps = peer(name="bin"), peer(name="st")
    cfg = base_config({"bin": http_peer(pb, signing_secret=SECRET),
                       "st": http_peer(ps, mode="structured", signing_secret=SECRET)})
    t0 = int(time.time())
    f = _start_signed(ferry, cfg)
    ev = make_event(data={"amount": 42, "note": "caf\u00e9"})
    f.post_ok(ev)
    raw_id = uid("raw")
    r = post_binary(f.events_url, {"specversion": "1.0", "id": raw_id, "source": "/raw", "type": "t"},
                    bytes(range(256)), content_type="application/octet-stream")
    assert r.status == 202, r
    pb.wait_ids([ev["id"], raw_id])
    ps.wait_ids([ev["id"], raw_id])
    t1 = int(time.time())
    ids = set()
    for p in (pb, ps):
        for req in p.snapshot():
            msg_id, ts, _ = _verify(req)
            assert t0 <= ts <= t1, f"webhook-timestamp {ts} not in [{t0}, {t1}]"
            ids.add(msg_id)
    assert len(ids) == 4, f"each delivery (event x peer) needs its own webhook-id: {ids}"
    raw = pb.requests_for(raw_id)[0]
    assert raw.body == bytes(range(256)), "binary data must be signed and sent byte for byte"


def test_signed_retry_keeps_webhook_id(ferry, peer):
    p = peer()
    p.push(503, headers={"Retry-After": "1"})
    cfg = base_config({"p": http_peer(p, signing_secret=SECRET)},
                      retry={"initial_delay_ms": 50, "max_delay_ms": 3000})
    f = _start_signed(ferry, cfg)
    ev = make_event()
    f.post_ok(ev)
    p.wait_ids([ev["id"]], timeout=10)
    a, b = p.requests_for(ev["id"])
    id_a, ts_a, sig_a = _verify(a)
    id_b, ts_b, sig_b = _verify(b)
    assert id_a == id_b, "webhook-id must stay the same across retries"
    # Retry-After: 1 puts the attempts >= 1 s apart: a new timestamp, a new signature.
    assert ts_b > ts_a and sig_b != sig_a, (ts_a, ts_b)


def test_unsigned_peer_gets_no_webhook_headers(ferry, peer):
    p = peer()
    f = ferry(base_config({"p": http_peer(p)}))
    ev = make_event()
    f.post_ok(ev)
    p.wait_ids([ev["id"]])
    h = p.requests_for(ev["id"])[0].headers
    assert not any(k.startswith("webhook-") for k in h), h


# ---------------------------------------------------------------------------
# replies

REPLY_TYPE = "com.example.reply"


def _reply_config(a, b):
    return base_config(
        {"a": http_peer(a), "b": http_peer(b)},
        routes=[{"name": "replies", "filter": {"exact": {"type": REPLY_TYPE}}, "to": ["b"]},
                {"name": "rest", "filter": {"not": {"exact": {"type": REPLY_TYPE}}}, "to": ["a"]}])


def test_structured_reply_is_routed(ferry, peer):
    a, b = peer(name="a"), peer(name="b")
    reply = make_event(type=REPLY_TYPE, source="/peer-a", data={"pong": True})
    a.push(200, headers={"Content-Type": CE_JSON + "; charset=utf-8"},
           body=json.dumps(reply).encode())
    f = ferry(_reply_config(a, b))
    ev = make_event()
    f.post_ok(ev)
    a.wait_ids([ev["id"]])
    b.wait_ids([reply["id"]])
    got = b.requests_for(reply["id"])[0].event()
    assert got["type"] == REPLY_TYPE and got["source"] == "/peer-a", got
    assert json.loads(got["data"]) == {"pong": True}, got
    assert len(a.snapshot()) == 1, "the reply must not go back to a"
    wait_for(lambda: _metric(f, "ferry_events_received_total", mode="reply") == 1, 5,
             msg=f.metrics)
    assert not f.query("SELECT * FROM dead_letters")


def test_binary_reply_is_routed(ferry, peer):
    a, b = peer(name="a"), peer(name="b")
    rid = uid("rep")
    a.push(201, headers={"ce-specversion": "1.0", "ce-id": rid, "ce-source": "/peer%20a",
                         "ce-type": REPLY_TYPE, "ce-subject": "caf%C3%A9",
                         "Content-Type": "text/plain"}, body=b"pong")
    f = ferry(_reply_config(a, b))
    ev = make_event()
    f.post_ok(ev)
    b.wait_ids([rid])
    got = b.requests_for(rid)[0].event()
    assert got["source"] == "/peer a" and got["subject"] == "caf\u00e9", got
    assert got["data"] == b"pong" and got["datacontenttype"] == "text/plain", got


def test_invalid_and_202_replies_are_ignored(ferry, peer):
    a, b = peer(name="a"), peer(name="b")
    valid = json.dumps(make_event(type=REPLY_TYPE)).encode()
    a.push(200, headers={"Content-Type": CE_JSON}, body=b'{"specversion":"1.0","id":"x"}')
    a.push(202, headers={"Content-Type": CE_JSON}, body=valid)
    a.push(200, headers={"Content-Type": "application/json"}, body=valid)  # not a CloudEvent
    f = ferry(_reply_config(a, b))
    evs = [make_event() for _ in range(3)]
    for e in evs:
        f.post_ok(e)
    a.wait_ids([e["id"] for e in evs])
    wait_for(lambda: _metric(f, "ferry_deliveries_total", peer="a", outcome="success") == 3, 5,
             msg=f.metrics)
    time.sleep(scaled(0.5))
    assert not b.snapshot(), f"nothing may reach b: {b.snapshot()}"
    assert (_metric(f, "ferry_events_received_total", mode="reply") or 0) == 0
    assert not f.query("SELECT * FROM dead_letters")
    warned = _logs(f, "reply ignored")
    assert len(warned) == 1 and warned[0]["level"] == "warn" and warned[0]["peer"] == "a", warned
    assert warned[0]["event_id"] in {e["id"] for e in evs} and warned[0]["reason"], warned
