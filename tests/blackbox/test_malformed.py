"""Contract: malformed requests get the right status and error JSON
{"error": CODE, "message": ..., "attribute"/"index" where they apply}, and the
server keeps serving afterwards."""

import json
import socket
import time

import pytest

from ferrylib import (base_config, http_peer, http_request, make_event, post_batch,
                      post_binary, post_structured, scaled, uid)

MAX_BODY = 2048
MAX_BATCH = 3


def _cfg(p):
    return base_config({"p": http_peer(p)},
                       ingest={"max_body_bytes": MAX_BODY, "max_batch": MAX_BATCH})


def _still_serving(f, p):
    ev = make_event()
    r = f.post(ev)
    assert r.status == 202, f"after the bad request a good event got {r}"
    assert http_request("GET", f.url("/healthz")).status == 200
    p.wait_ids([ev["id"]])
    return ev["id"]


def _ev_without(key, **over):
    ev = make_event(**over)
    ev.pop(key)
    return ev


BIN_OK = {"specversion": "1.0", "source": "/bin", "type": "t"}

# (case id, request thunk(url) -> Resp, status, error code, attribute or None)
CASES = [
    ("invalid_json", lambda u: post_structured(u, '{"specversion": "1.0", "id": '),
     400, "invalid_json", None),
    ("not_an_object", lambda u: post_structured(u, '[1, 2]'), 400, None, None),
    ("missing_id", lambda u: post_structured(u, _ev_without("id")), 400, "invalid_event", "id"),
    ("missing_source", lambda u: post_structured(u, _ev_without("source")),
     400, "invalid_event", "source"),
    ("empty_type", lambda u: post_structured(u, make_event(type="")), 400, "invalid_event", "type"),
    ("specversion_0_3", lambda u: post_structured(u, make_event(specversion="0.3")),
     400, "invalid_event", "specversion"),
    ("bad_time", lambda u: post_structured(u, make_event(time="yesterday at noon")),
     400, "invalid_event", "time"),
    ("uppercase_extension", lambda u: post_structured(u, make_event(MyExt="x")),
     400, "invalid_event", "myext"),
    ("too_large", lambda u: post_structured(u, make_event(data="x" * (MAX_BODY * 2))),
     413, "too_large", None),
    ("batch_too_large", lambda u: post_batch(u, [make_event() for _ in range(MAX_BATCH + 1)]),
     413, "too_large", None),
    ("text_plain_no_ce_headers", lambda u: http_request("POST", u, "hello",
                                                         {"Content-Type": "text/plain"}),
     415, "unsupported_media_type", None),
    ("binary_invalid_utf8", lambda u: post_binary(u, dict(BIN_OK, id=uid(), subject="%FF"), b"x",
                                                  content_type="text/plain", encode=False),
     400, "invalid_event", None),
    ("binary_missing_id", lambda u: post_binary(u, BIN_OK, b"x", content_type="text/plain"),
     400, "invalid_event", "id"),
]


@pytest.mark.parametrize("name,send,status,code,attribute", CASES, ids=[c[0] for c in CASES])
def test_malformed_request(ferry, peer, name, send, status, code, attribute):
    p = peer()
    f = ferry(_cfg(p))
    r = send(f.events_url)
    assert r.status == status, f"{name}: expected {status}, got {r}"
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str), \
        f"{name}: error body must be {{'error': CODE, 'message': ...}}, got {body}"
    assert isinstance(body.get("message"), str) and body["message"], \
        f"{name}: error body needs a non-empty message: {body}"
    if code:
        assert body["error"] == code, f"{name}: expected error {code!r}, got {body}"
    if attribute:
        assert str(body.get("attribute", "")).lower() == attribute, \
            f"{name}: expected attribute {attribute!r}, got {body}"
    good_id = _still_serving(f, p)
    time.sleep(0.2)
    assert set(p.ids()) == {good_id}, \
        f"{name}: something was delivered from a rejected request: {p.snapshot()}"


def test_batch_with_bad_element_is_all_or_nothing(ferry, peer):
    p = peer()
    f = ferry(_cfg(p))
    good = make_event()
    bad = _ev_without("id")
    r = post_batch(f.events_url, [good, bad, make_event()])
    assert r.status == 400, f"expected 400, got {r}"
    body = r.json()
    assert body.get("error") == "invalid_event", body
    assert body.get("index") == 1, f"expected index 1 (the bad element), got {body}"
    assert body.get("attribute") == "id", f"expected attribute 'id', got {body}"
    # Not a JSON array at all.
    r = post_batch(f.events_url, json.dumps(make_event()))
    assert r.status == 400, f"batch that is not an array: expected 400, got {r}"
    _still_serving(f, p)
    time.sleep(0.3)
    assert good["id"] not in p.ids(), "an event of a rejected batch was delivered"
    # A good event with the same id is not a duplicate of the rejected one.
    f.post_ok(good)
    p.wait_ids([good["id"]])


def test_method_and_path_errors(ferry, peer):
    p = peer()
    f = ferry(_cfg(p))
    r = http_request("GET", f.events_url)
    assert r.status == 405, f"GET /v1/events: expected 405, got {r}"
    r = http_request("POST", f.url("/v1/nope"), "{}", {"Content-Type": "application/cloudevents+json"})
    assert r.status == 404, f"unknown path: expected 404, got {r}"
    r = http_request("GET", f.url("/definitely/not/here"))
    assert r.status == 404, f"unknown path: expected 404, got {r}"
    _still_serving(f, p)


def _raw(f, data: bytes, close_after=True, read=False):
    host, port = f.listen.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=scaled(5))
    try:
        s.sendall(data)
        if read:
            try:
                return s.recv(4096)
            except OSError:
                return b""
    finally:
        if close_after:
            s.close()
    return b""


def test_truncated_bodies_and_disconnects(ferry, peer):
    p = peer()
    f = ferry(_cfg(p))
    ev = json.dumps(make_event()).encode()
    head = (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/cloudevents+json\r\n"
            b"Content-Length: %d\r\n\r\n" % (len(ev) + 500))
    # Body shorter than Content-Length, then the client goes away.
    for _ in range(5):
        _raw(f, head + ev[:20])
    # Headers cut in the middle.
    _raw(f, b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Ty")
    # Connect and close at once.
    _raw(f, b"")
    # Half-closed write side after a truncated body: must not hang or crash.
    host, port = f.listen.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=scaled(5))
    s.sendall(head + ev[:10])
    s.shutdown(socket.SHUT_WR)
    s.settimeout(1.0)
    try:
        s.recv(4096)
    except OSError:
        pass
    s.close()
    # Chunked body aborted mid-chunk.
    _raw(f, b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/cloudevents+json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n100\r\n" + ev[:30])
    time.sleep(0.2)
    assert f.running(), f"ferry died after client disconnects; stderr:\n{f.stderr_tail()}"
    _still_serving(f, p)
