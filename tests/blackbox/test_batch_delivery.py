"""Peer mode "batch": deliveries go out as application/cloudevents-batch+json
arrays of at most batch_size events; a failed request retries every event in
it; signing covers the whole array; ordering by partitionkey holds."""

import base64
import hashlib
import hmac
import json

from ferrylib import base_config, http_peer, make_event, post_batch, scaled, wait_for

SECRET = "whsec_" + base64.b64encode(b"batch-secret-key-0123456789").decode()


def batch_events(req) -> list:
    ctype = req.content_type.split(";")[0].strip().lower()
    assert ctype == "application/cloudevents-batch+json", req
    body = json.loads(req.body.decode("utf-8"))
    assert isinstance(body, list) and body, req
    return body


def post_all(f, events):
    r = post_batch(f.events_url, events)
    assert r.status == 202, r


def delivered(peer) -> list:
    """Event ids in every 2xx-answered batch, in arrival order."""
    out = []
    for r in peer.snapshot():
        if r.status and 200 <= r.status < 300:
            out.extend(e["id"] for e in batch_events(r))
    return out


def test_batch_mode_posts_arrays_within_batch_size(ferry, peer):
    p = peer()
    f = ferry(base_config({"p": http_peer(p, mode="batch", batch_size=10,
                                           max_in_flight=1)}))
    # Hold the peer so the queue builds up behind the first request.
    p.push(200, delay=0.5)
    events = [make_event(data={"n": i}) for i in range(45)]
    post_all(f, events)
    ids = [e["id"] for e in events]
    wait_for(lambda: sorted(delivered(p)) == sorted(ids), scaled(15),
             msg=lambda: f"delivered {len(delivered(p))} of {len(ids)}")
    reqs = p.snapshot()
    sizes = [len(batch_events(r)) for r in reqs]
    assert max(sizes) <= 10, sizes
    assert len(reqs) < len(ids), f"no batching happened: {sizes}"
    # Every event arrives whole, in structured form, with its data.
    by_id = {e["id"]: e for r in reqs for e in batch_events(r)}
    for e in events:
        got = by_id[e["id"]]
        assert got["type"] == e["type"] and got["source"] == e["source"]
        assert got["data"] == e["data"]
    # No reply is asked of a batch.
    assert all("prefer" not in r.headers for r in reqs), reqs[0].headers


def test_batch_retry_resends_every_event_then_counts_each(ferry, peer):
    p = peer()
    f = ferry(base_config({"p": http_peer(p, mode="batch", batch_size=50)},
                          retry={"initial_delay_ms": 50, "max_delay_ms": 200,
                                 "jitter": "none"}))
    p.push(503)
    events = [make_event() for _ in range(20)]
    post_all(f, events)
    ids = sorted(e["id"] for e in events)
    wait_for(lambda: sorted(delivered(p)) == ids, scaled(15),
             msg=lambda: f"delivered {len(delivered(p))} of {len(ids)}: {p.snapshot()}")
    first = p.snapshot()[0]
    assert first.status == 503
    assert sorted(e["id"] for e in batch_events(first)) == ids
    # Outcomes are per event: 20 retries and 20 successes. They are counted
    # once Ferry has read the answer, which is just after the peer saw it.
    want = ('ferry_deliveries_total{peer="p",outcome="retry"} 20',
            'ferry_deliveries_total{peer="p",outcome="success"} 20')
    wait_for(lambda: all(w in f.metrics() for w in want), 5, msg=lambda: f.metrics())


def test_batch_signature_covers_the_array(ferry, peer):
    p = peer()
    f = ferry(base_config({"p": http_peer(p, mode="batch", signing_secret=SECRET)}))
    events = [make_event() for _ in range(3)]
    post_all(f, events)
    wait_for(lambda: len(delivered(p)) == 3, scaled(10))
    key = base64.b64decode(SECRET[len("whsec_"):])
    for r in p.snapshot():
        msg_id, ts = r.headers["webhook-id"], r.headers["webhook-timestamp"]
        signed = msg_id.encode() + b"." + ts.encode() + b"." + r.body
        want = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        assert f"v1,{want}" in r.headers["webhook-signature"].split(" "), r.headers


def test_batch_keeps_partitionkey_order(ferry, peer):
    p = peer()
    route = {"name": "ordered", "to": ["p"], "ordering": "partitionkey"}
    f = ferry(base_config({"p": http_peer(p, mode="batch", batch_size=7)},
                          routes=[route],
                          retry={"initial_delay_ms": 20, "max_delay_ms": 100}))
    p.push(500)
    p.push(200, delay=0.2)
    keys = ["a", "b", "c"]
    events = [make_event(partitionkey=keys[i % 3], data={"seq": i}) for i in range(60)]
    for i in range(0, 60, 20):
        post_all(f, events[i:i + 20])
    wait_for(lambda: len(set(delivered(p))) == 60, scaled(20),
             msg=lambda: f"delivered {len(set(delivered(p)))} of 60")
    seen = {}
    for eid in delivered(p):
        seen.setdefault(eid, len(seen))
    for k in keys:
        want = [e["id"] for e in events if e["partitionkey"] == k]
        got = sorted(want, key=lambda i: seen[i])
        assert got == want, f"key {k} out of order"
