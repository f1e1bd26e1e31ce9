"""Contract: POST /v1/events in structured, binary and batch mode; delivery
to HTTP peers in binary (default) and structured mode; percent-encoded ce-
header values; duplicates; ingest token; metrics names."""

import json
import time
import urllib.parse

from ferrylib import (base_config, http_peer, http_request, make_event, metric_value,
                      post_batch, post_binary, post_structured, uid)


def _accepted(r, n):
    assert r.status == 202, f"expected 202, got {r.status} {r.body!r}"
    assert r.json() == {"accepted": n}, f"expected body {{'accepted': {n}}}, got {r.body!r}"


def _ce_ctype(req):
    return req.content_type.split(";")[0].strip().lower()


def test_structured_ingest_binary_delivery(ferry, peer):
    p = peer()
    f = ferry(base_config({"p": http_peer(p)}))
    ev = make_event(type="com.example.order", subject="order-1",
                    datacontenttype="application/json", data={"a": 1, "b": [1, 2]})
    _accepted(f.post(ev), 1)
    p.wait_ids([ev["id"]])
    req = p.requests_for(ev["id"])[0]
    assert req.method == "POST"
    assert req.path == "/events", f"delivered to {req.path}, expected the peer URL path /events"
    assert not req.is_structured, f"default peer mode must be binary, got Content-Type {req.content_type}"
    h = req.headers
    assert h.get("ce-id") == ev["id"]
    assert h.get("ce-source") == ev["source"]
    assert h.get("ce-type") == "com.example.order"
    assert h.get("ce-specversion") == "1.0"
    assert h.get("ce-subject") == "order-1"
    assert _ce_ctype(req) == "application/json", f"Content-Type {req.content_type!r}"
    assert json.loads(req.body) == {"a": 1, "b": [1, 2]}, f"body {req.body!r} is not the data"
    assert "ce-data" not in h and "ce-datacontenttype" not in h, \
        f"datacontenttype/data must not be ce- headers: {h}"


def test_binary_ingest_binary_delivery(ferry, peer):
    p = peer()
    f = ferry(base_config({"p": http_peer(p)}))
    eid = uid()
    r = post_binary(f.events_url, {"specversion": "1.0", "id": eid, "source": "/bin",
                                   "type": "com.example.bin", "myext": "v1"},
                    b"hello \x00\xffworld", content_type="application/octet-stream")
    _accepted(r, 1)
    p.wait_ids([eid])
    req = p.requests_for(eid)[0]
    assert not req.is_structured
    assert req.headers.get("ce-type") == "com.example.bin"
    assert req.headers.get("ce-source") == "/bin"
    assert req.headers.get("ce-specversion") == "1.0"
    assert req.headers.get("ce-myext") == "v1", f"extension not passed through: {req.headers}"
    assert _ce_ctype(req) == "application/octet-stream"
    assert req.body == b"hello \x00\xffworld", f"body not byte-identical: {req.body!r}"


def test_structured_peer_mode(ferry, peer):
    p = peer()
    f = ferry(base_config({"p": http_peer(p, mode="structured")}))
    ev = make_event(datacontenttype="application/json", data={"k": "v"}, myext=7)
    _accepted(f.post(ev), 1)
    eid2 = uid()
    _accepted(post_binary(f.events_url, {"specversion": "1.0", "id": eid2, "source": "/b",
                                         "type": "t.bin"}, b"hello", content_type="text/plain"), 1)
    p.wait_ids([ev["id"], eid2])
    req = p.requests_for(ev["id"])[0]
    assert _ce_ctype(req) == "application/cloudevents+json", f"Content-Type {req.content_type!r}"
    assert not any(k.startswith("ce-") for k in req.headers), f"structured mode with ce- headers: {req.headers}"
    got = json.loads(req.body)
    for k in ("specversion", "id", "source", "type", "datacontenttype", "data", "myext"):
        assert got.get(k) == ev[k], f"attribute {k}: sent {ev[k]!r}, delivered {got.get(k)!r}"

    got2 = p.requests_for(eid2)[0].event()
    assert got2["type"] == "t.bin" and got2["source"] == "/b" and got2["specversion"] == "1.0"
    assert got2.get("datacontenttype", "").startswith("text/plain")
    if "data" in got2:
        assert got2["data"] == "hello", f"binary text/plain body as structured data: {got2}"
    else:
        import base64
        assert base64.b64decode(got2["data_base64"]) == b"hello", got2


def test_data_base64_delivered_as_bytes(ferry, peer):
    import base64
    pb, ps = peer(name="bin"), peer(name="struct")
    f = ferry(base_config({"bin": http_peer(pb), "struct": http_peer(ps, mode="structured")}))
    raw = bytes(range(256))
    ev = make_event(datacontenttype="application/octet-stream",
                    data_base64=base64.b64encode(raw).decode())
    _accepted(f.post(ev), 1)
    pb.wait_ids([ev["id"]])
    ps.wait_ids([ev["id"]])
    req = pb.requests_for(ev["id"])[0]
    assert req.body == raw, f"binary delivery of data_base64 must be the decoded bytes, got {req.body[:40]!r}"
    assert _ce_ctype(req) == "application/octet-stream", req.content_type
    got = json.loads(ps.requests_for(ev["id"])[0].body)
    assert base64.b64decode(got["data_base64"]) == raw and "data" not in got, got


def test_batch_ingest(ferry, peer):
    p = peer()
    f = ferry(base_config({"p": http_peer(p)}))
    evs = [make_event(data={"n": i}, datacontenttype="application/json") for i in range(3)]
    _accepted(post_batch(f.events_url, evs), 3)
    p.wait_ids([e["id"] for e in evs])
    for e in evs:
        req = p.requests_for(e["id"])[0]
        assert json.loads(req.body) == e["data"]


def test_percent_encoded_header_round_trip(ferry, peer):
    pb, ps = peer(name="bin"), peer(name="struct")
    f = ferry(base_config({"bin": http_peer(pb), "struct": http_peer(ps, mode="structured")}))
    eid = uid()
    r = post_binary(f.events_url, {"specversion": "1.0", "id": eid, "source": "/enc",
                                   "type": "t", "subject": "caf%C3%A9 au lait%20x"},
                    b"{}", content_type="application/json", encode=False)
    _accepted(r, 1)
    ps.wait_ids([eid])
    pb.wait_ids([eid])
    s = json.loads(ps.requests_for(eid)[0].body)
    assert s["subject"] == "café au lait x", f"decoded subject in structured delivery: {s.get('subject')!r}"
    raw = pb.requests_for(eid)[0].headers.get("ce-subject")
    assert raw is not None
    assert all(32 < ord(c) < 127 for c in raw), f"ce-subject must be percent-encoded ASCII, got {raw!r}"
    assert urllib.parse.unquote(raw) == "café au lait x", f"ce-subject {raw!r} does not decode back"

    # And the other way: structured in with non-ASCII, binary out encoded.
    ev = make_event(subject="naïve \"quoted\" 100%")
    _accepted(f.post(ev), 1)
    pb.wait_ids([ev["id"]])
    raw = pb.requests_for(ev["id"])[0].headers.get("ce-subject")
    assert all(32 < ord(c) < 127 for c in raw), f"ce-subject must be percent-encoded ASCII, got {raw!r}"
    assert urllib.parse.unquote(raw) == ev["subject"], f"{raw!r} does not decode to {ev['subject']!r}"


def test_duplicate_delivered_once(ferry, peer):
    p = peer()
    f = ferry(base_config({"p": http_peer(p)}))
    ev = make_event(source="/dup")
    r1 = f.post(ev)
    r2 = f.post(ev)
    assert r1.status == 202, r1
    assert r2.status == 202, f"a duplicate must still answer 202, got {r2}"
    # Same id from another source is a different event.
    other = dict(ev, source="/dup-other")
    assert f.post(other).status == 202
    p.wait_ids([ev["id"]])
    wait = [make_event()]
    f.post_ok(wait[0])
    p.wait_ids([wait[0]["id"]])
    time.sleep(0.5)
    reqs = [r for r in p.snapshot() if r.event_id == ev["id"]]
    sources = sorted(r.event()["source"] for r in reqs)
    assert sources == ["/dup", "/dup-other"], \
        f"expected one delivery per (source, id), got sources {sources}"
    m = f.metrics()
    v = metric_value(m, "ferry_events_duplicate_total")
    assert v is not None and v >= 1, f"ferry_events_duplicate_total missing or 0: {v}"


def test_duplicate_accepted_again_after_the_window(ferry, peer):
    """ingest.dedupe_window_s bounds how long an id is remembered: within
    the window a repeat is not stored; after it (and the index's rounding,
    at most window/4096), the same id is a new event again."""
    p = peer()
    f = ferry(base_config({"p": http_peer(p)}, ingest={"dedupe_window_s": 1}))
    ev = make_event(source="/window")
    f.post_ok(ev)
    p.wait_ids([ev["id"]])
    assert f.post(ev).status == 202  # within the window: a duplicate
    time.sleep(1.3)
    f.post_ok(ev)  # past it: stored and delivered again
    marker = make_event()
    f.post_ok(marker)
    p.wait_ids([marker["id"]])
    time.sleep(0.3)
    n = p.ids().count(ev["id"])
    assert n == 2, f"expected 2 deliveries (before and after the window), got {n}"


def test_ingest_token(ferry, peer):
    p = peer()
    f = ferry(base_config({"p": http_peer(p)}, ingest={"token": "s3cret"}))
    ev = make_event()
    r = f.post(ev)
    assert r.status == 401, f"no Authorization: expected 401, got {r}"
    assert r.json().get("error") == "unauthorized", r.body
    r = f.post(ev, headers={"Authorization": "Bearer wrong"})
    assert r.status == 401, f"wrong token: expected 401, got {r}"
    r = f.post(ev, headers={"Authorization": "Bearer s3cret"})
    assert r.status == 202, f"right token: expected 202, got {r}"
    for path in ("/healthz", "/readyz", "/metrics"):
        assert http_request("GET", f.url(path)).status == 200, f"{path} must not need the token"
    p.wait_ids([ev["id"]])


def test_metrics_names(ferry, peer):
    p = peer()
    f = ferry(base_config({"p": http_peer(p)}))
    ev = make_event()
    f.post_ok(ev)
    eid = uid()
    assert post_binary(f.events_url, {"specversion": "1.0", "id": eid, "source": "/m", "type": "t"},
                       b"x", content_type="text/plain").status == 202
    bad = post_structured(f.events_url, "{nope")
    assert bad.status == 400
    p.wait_ids([ev["id"], eid])

    def check():
        m = f.metrics()
        return (metric_value(m, "ferry_deliveries_total", peer="p", outcome="success") or 0) >= 2
    from ferrylib import wait_for
    wait_for(check, 5, msg=lambda: "ferry_deliveries_total{peer=p,outcome=success} never reached 2:\n"
                                   + f.metrics())
    m = f.metrics()
    assert (metric_value(m, "ferry_events_received_total", mode="structured") or 0) >= 1, m
    assert (metric_value(m, "ferry_events_received_total", mode="binary") or 0) >= 1, m
    assert (metric_value(m, "ferry_events_rejected_total", reason="invalid_json") or 0) >= 1, m
    sb = metric_value(m, "ferry_spool_bytes")
    assert sb is not None and sb > 0, f"ferry_spool_bytes must report the spool size on disk, got {sb}"
    bi = [lab for n, lab, _ in __import__("ferrylib").parse_metrics(m) if n == "ferry_build_info"]
    assert bi and bi[0].get("version"), f"ferry_build_info{{version}} missing: {bi}"
    for name in ("ferry_build_info", "ferry_spool_bytes", "ferry_delivery_duration_seconds_count",
                 "ferry_spool_pending", "ferry_deliveries_in_flight", "ferry_dead_letters",
                 "ferry_breaker_open", "ferry_spool_oldest_age_seconds"):
        assert any(n == name for n, _, _ in __import__("ferrylib").parse_metrics(m)), \
            f"metric {name} missing from /metrics:\n{m}"
