"""More delivery behaviour from the contract and README: peer headers,
Prefer: reply, trace context pass-through, file/stdout sinks, max_age_s,
the drain deadline (README extension drain_timeout_ms), spool.max_bytes."""

import json
import signal
import time

import pytest

from ferrylib import (base_config, cli_output, http_peer, http_request, make_event, post_batch,
                      post_binary, run_cli, scaled, wait_for)

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_peer_headers_and_prefer_reply(ferry, peer):
    p = peer()
    f = ferry(base_config({"p": http_peer(p, headers={"X-Env": "prod", "X-Team": "a b"})}))
    ev = make_event()
    f.post_ok(ev)
    p.wait_ids([ev["id"]])
    h = p.requests_for(ev["id"])[0].headers
    assert h.get("x-env") == "prod", f"configured peer header missing: {h}"
    assert h.get("x-team") == "a b", h
    assert h.get("prefer", "").lower() == "reply", f"deliveries must carry Prefer: reply: {h}"


def test_traceparent_attribute_passes_through(ferry, peer):
    pb, ps = peer(name="bin"), peer(name="struct")
    f = ferry(base_config({"bin": http_peer(pb), "struct": http_peer(ps, mode="structured")}))
    ev = make_event(traceparent=TP, tracestate="vendor=1")
    f.post_ok(ev)
    pb.wait_ids([ev["id"]])
    ps.wait_ids([ev["id"]])
    for p in (pb, ps):
        h = p.requests_for(ev["id"])[0].headers
        assert h.get("traceparent") == TP, f"peer {p.name}: traceparent header missing: {h}"
        assert h.get("tracestate") == "vendor=1", f"peer {p.name}: tracestate header missing: {h}"


def test_traceparent_http_header_passes_through(ferry, peer):
    """A plain W3C `traceparent` HTTP header on the ingest request (what
    tracing middleware sends) reaches the peer."""
    p = peer()
    f = ferry(base_config({"p": http_peer(p)}))
    ev = make_event()
    r = f.post(ev, headers={"traceparent": TP, "tracestate": "vendor=2"})
    assert r.status == 202, r
    eid = "bin-" + ev["id"]
    r = post_binary(f.events_url, {"specversion": "1.0", "id": eid, "source": "/b", "type": "t"},
                    b"x", content_type="text/plain", headers={"traceparent": TP})
    assert r.status == 202, r
    p.wait_ids([ev["id"], eid])
    for i in (ev["id"], eid):
        h = p.requests_for(i)[0].headers
        assert h.get("traceparent") == TP, \
            f"event {i}: ingest request's traceparent header was not passed to the peer: {h}"


def test_file_and_stdout_sinks(ferry, peer, tmp_path):
    out = tmp_path / "sink" / "audit.jsonl"
    out.parent.mkdir()
    f = ferry(base_config({"audit": {"type": "file", "path": str(out)},
                           "console": {"type": "stdout"}}))
    evs = [make_event(data={"i": i}) for i in range(3)]
    for e in evs:
        f.post_ok(e)

    def lines(text):
        objs = []
        for line in text.splitlines():
            try:
                objs.append(json.loads(line))
            except ValueError:
                pass
        return [o for o in objs if isinstance(o, dict) and "specversion" in o]
    want = {e["id"] for e in evs}
    wait_for(lambda: out.exists() and want <= {o["id"] for o in lines(out.read_text())}, 10,
             msg=lambda: f"file sink {out} lacks events: {out.read_text() if out.exists() else '(none)'}")
    wait_for(lambda: want <= {o["id"] for o in lines(f.stdout_text())}, 10,
             msg=lambda: f"stdout sink lacks events: {f.stdout_text()[-1000:]}")
    for o in lines(out.read_text()):
        assert o["data"] == {"i": [e for e in evs if e["id"] == o["id"]][0]["data"]["i"]}, o
    assert len(out.read_text().splitlines()) == 3, f"one line per event expected:\n{out.read_text()}"


def test_max_age_dead_letters(ferry, peer):
    p = peer(status=503)
    f = ferry(base_config({"p": http_peer(p, retry={"max_attempts": 1000, "max_age_s": 1})}))
    ev = make_event()
    f.post_ok(ev)
    wait_for(lambda: f.query("SELECT * FROM dead_letters"), 10,
             msg="a delivery past max_age_s was never dead-lettered")
    d = f.query("SELECT * FROM dead_letters")[0]
    assert d["peer"] == "p" and d["last_status"] == 503, d
    assert "max_age" in d["reason"], f"reason should name max_age_s: {d}"
    n = len(p.requests_for(ev["id"]))
    time.sleep(scaled(1.0))
    assert len(p.requests_for(ev["id"])) == n, "attempts continued after dead-lettering"


def _drain_key_supported(tmp_path):
    cfg = tmp_path / "probe.json"
    cfg.write_text(json.dumps({"drain_timeout_ms": 100}))
    return run_cli(["check-config", "-c", cfg]).returncode == 0


def test_drain_deadline_keeps_slow_delivery_for_next_start(ferry, peer, tmp_path):
    """The in-flight attempt outlives drain_timeout_ms: Ferry exits 0
    without waiting for it, and delivers it after the restart."""
    if not _drain_key_supported(tmp_path):
        pytest.skip("drain_timeout_ms (README extension) not accepted")
    p = peer()
    p.push(200, delay=4.0)
    f = ferry(base_config({"p": http_peer(p, timeout_ms=10000)}, drain_timeout_ms=300))
    ev = make_event()
    f.post_ok(ev)
    p.wait_requests(1)
    rc = f.stop(signal.SIGTERM, timeout=3)
    assert rc == 0, f"exit code {rc}"
    assert not f.query("SELECT * FROM dead_letters"), "a drain must never dead-letter"
    f.start()
    wait_for(lambda: any(r.answered and not r.client_gone and r.status == 200
                         for r in p.requests_for(ev["id"])[1:]), 10,
             msg=lambda: f"the delivery abandoned at the drain deadline was not redelivered: "
                         f"{p.requests_for(ev['id'])}")


def test_ingest_503_while_draining(ferry, peer):
    p = peer()
    p.push(200, delay=2.0)
    f = ferry(base_config({"p": http_peer(p, timeout_ms=10000)}))
    f.post_ok(make_event())
    p.wait_requests(1)
    f.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    try:
        r = f.post(make_event())
    except OSError:
        r = None  # listener closed: also fine
    if r is not None:
        assert r.status == 503, f"POST during drain: expected 503, got {r}"
        assert r.json().get("error") == "unavailable", r.body
        assert r.headers.get("Retry-After"), "503 unavailable must carry Retry-After"
    rc = f.proc.wait(scaled(30))
    f.returncodes.append(rc)
    assert rc == 0, f"exit code {rc}"


@pytest.mark.slow
def test_spool_full_then_recovers(ferry, peer):
    p = peer()
    p.stop()
    f = ferry(base_config({"p": http_peer(p)}, retry={"max_attempts": 100000},
                          spool={"max_bytes": 1048576}))
    big = "x" * 60000
    full = None
    for i in range(60):
        r = post_batch(f.events_url, [make_event(data=big) for _ in range(4)])
        if r.status == 503:
            full = r
            break
        assert r.status == 202, f"batch {i}: {r}"
    assert full is not None, "spool.max_bytes (1 MiB) was never enforced after ~14 MB of events"
    assert full.json().get("error") == "unavailable", full.body
    assert full.headers.get("Retry-After"), "503 unavailable must carry Retry-After"
    r = http_request("GET", f.url("/readyz"))
    assert r.status == 503, f"/readyz with a full spool: expected 503, got {r}"
    assert http_request("GET", f.url("/healthz")).status == 200, "liveness must stay 200"
    # The peer comes back and drains the spool: ingest and readiness recover.
    p.start()
    wait_for(lambda: http_request("GET", f.url("/readyz")).status == 200, 30,
             msg=lambda: f"/readyz never recovered after the spool drained: "
                         f"{http_request('GET', f.url('/readyz'))}; metrics spool_bytes="
                         f"{[l for l in f.metrics().splitlines() if 'spool' in l]}")
    ev = make_event()
    f.post_ok(ev)
    p.wait_ids([ev["id"]], timeout=20)


def test_config_from_ferry_config_env(ferry, peer, tmp_path):
    p = peer()
    f = ferry(base_config({"p": http_peer(p)}), start=False)
    # Start without -c: the file comes from FERRY_CONFIG.
    f.extra_env["FERRY_CONFIG"] = str(f.config_path)
    f.config_path, path = None, f.config_path
    f.start()
    ev = make_event()
    f.post_ok(ev)
    p.wait_ids([ev["id"]])
