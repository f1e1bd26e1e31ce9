"""Observability: /metrics parsed by a real Prometheus exposition-format
parser with every series of the contract, figures that move as events
flow, retry and dead-letter; structured logs with the fields operators
need (and the trace id); auth leaves health and metrics open."""

import json
import time

import pytest

from ferrylib import (base_config, http_peer, http_request, make_event, post_structured,
                      scaled, wait_for)

parser = pytest.importorskip("prometheus_client.parser",
                             reason="Debian's python3-prometheus-client provides the parser")

CONTRACT = {
    "ferry_events_received": ("counter", {"mode"}),
    "ferry_events_rejected": ("counter", {"reason"}),
    "ferry_events_duplicate": ("counter", set()),
    "ferry_deliveries": ("counter", {"peer", "outcome"}),
    "ferry_delivery_duration_seconds": ("histogram", {"peer"}),
    "ferry_spool_pending": ("gauge", {"peer"}),
    "ferry_spool_bytes": ("gauge", set()),
    "ferry_spool_oldest_age_seconds": ("gauge", {"peer"}),
    "ferry_deliveries_in_flight": ("gauge", {"peer"}),
    "ferry_dead_letters": ("gauge", {"peer"}),
    "ferry_breaker_open": ("gauge", {"peer"}),
    "ferry_build_info": ("gauge", {"version"}),
}


def scrape(f):
    """{family name: Metric} parsed by prometheus_client (raises on bad syntax)."""
    text = f.metrics()
    return {m.name: m for m in parser.text_string_to_metric_families(text)}


def value(families, family, sample_name=None, **labels):
    m = families[family]
    for s in m.samples:
        if (sample_name is None or s.name == sample_name) and \
                all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


def test_metrics_parse_and_cover_the_contract(ferry, peer):
    p = peer()
    f = ferry(base_config({"p": http_peer(p)}))
    ev = make_event()
    f.post_ok(ev)
    p.wait_ids([ev["id"]])
    fams = scrape(f)
    for name, (kind, labels) in CONTRACT.items():
        assert name in fams, f"{name} missing from /metrics"
        assert fams[name].type == kind, f"{name}: type {fams[name].type}, want {kind}"
        assert fams[name].documentation, f"{name} has no HELP text"
        for s in fams[name].samples:
            got = set(s.labels) - {"le"}
            assert got == labels, f"{s.name} labels {got}, contract says {labels}"
    hist = {s.name for s in fams["ferry_delivery_duration_seconds"].samples}
    assert {"ferry_delivery_duration_seconds_bucket", "ferry_delivery_duration_seconds_sum",
            "ferry_delivery_duration_seconds_count"} <= hist
    assert "+Inf" in {s.labels.get("le") for s in fams["ferry_delivery_duration_seconds"].samples}
    assert value(fams, "ferry_build_info") == 1


def test_metrics_move_with_delivery_retry_dead_letter(ferry, peer):
    ok, flaky, broken = peer(name="ok"), peer(name="flaky"), peer(name="broken")
    flaky.push(503)
    broken.set_default(404)
    f = ferry(base_config({"ok": http_peer(ok), "flaky": http_peer(flaky),
                           "broken": http_peer(broken)}))
    evs = [make_event() for _ in range(3)]
    for ev in evs:
        f.post_ok(ev)
    f.post_ok(evs[0])  # a duplicate
    assert post_structured(f.events_url, "{not json").status == 400
    ok.wait_ids([e["id"] for e in evs])
    flaky.wait_ids([e["id"] for e in evs])

    def settled():
        fams = scrape(f)
        return fams if value(fams, "ferry_dead_letters", peer="broken") == 3 and \
            value(fams, "ferry_spool_pending", peer="flaky") == 0 else None
    fams = wait_for(settled, scaled(10), msg=lambda: f.metrics())
    assert value(fams, "ferry_events_received", "ferry_events_received_total",
                 mode="structured") == 4
    assert value(fams, "ferry_events_duplicate", "ferry_events_duplicate_total") == 1
    assert value(fams, "ferry_events_rejected", "ferry_events_rejected_total",
                 reason="invalid_json") == 1
    total = "ferry_deliveries_total"
    assert value(fams, "ferry_deliveries", total, peer="ok", outcome="success") == 3
    assert value(fams, "ferry_deliveries", total, peer="flaky", outcome="retry") == 1
    assert value(fams, "ferry_deliveries", total, peer="flaky", outcome="success") == 3
    assert value(fams, "ferry_deliveries", total, peer="broken", outcome="dead") == 3
    assert value(fams, "ferry_delivery_duration_seconds", "ferry_delivery_duration_seconds_count",
                 peer="ok") == 3
    assert value(fams, "ferry_spool_pending", peer="ok") == 0
    assert value(fams, "ferry_deliveries_in_flight", peer="ok") == 0
    assert value(fams, "ferry_spool_bytes") > 0


def log_records(f):
    out = []
    for line in f.stderr_path.read_text().splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))  # every JSON line must parse
    return out


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_logs_name_failed_attempts_dead_letters_and_trace(ferry, peer):
    p = peer()
    p.push(503)
    p.push(422)
    f = ferry(base_config({"p": http_peer(p)}, ingest={"token": "s3cret"}))
    ev = make_event(traceparent=TRACEPARENT)
    r = post_structured(f.events_url, ev, headers={"Authorization": "Bearer s3cret"})
    assert r.status == 202, r
    wait_for(lambda: any(rec.get("msg") == "delivery dead-lettered" for rec in log_records(f)),
             scaled(10), msg=lambda: f.stderr_tail(20))
    recs = log_records(f)
    failed = [r for r in recs if r.get("msg") == "delivery attempt failed"]
    assert failed, "no log for the failed attempt"
    a = failed[0]
    assert a["level"] == "info"
    assert a["peer"] == "p" and a["event_id"] == ev["id"] and a["attempt"] == 1
    assert a["status"] == 503 and "next_retry" in a and a["retry_in_ms"] >= 0
    assert a["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    dead = [r for r in recs if r.get("msg") == "delivery dead-lettered"][0]
    assert dead["level"] == "warn"
    assert dead["event_id"] == ev["id"] and dead["status"] == 422 and dead["reason"]
    assert dead["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    start = [r for r in recs if r.get("msg") == "starting"][0]
    assert start["config"]["ingest"]["token"] == "***", "the token must be masked"
    assert "s3cret" not in f.stderr_path.read_text(), "a secret leaked into the logs"
    # health and metrics stay open while ingest needs a token
    assert http_request("GET", f.url("/healthz")).status == 200
    assert http_request("GET", f.url("/readyz")).status == 200
    assert http_request("GET", f.url("/metrics")).status == 200
    assert post_structured(f.events_url, make_event()).status == 401


def test_text_log_format(ferry, peer):
    p = peer()
    f = ferry(base_config({"p": http_peer(p)}), env={"FERRY_LOG_FORMAT": "text"})
    # /readyz can answer 200 a moment before the "ready" record is written.
    ready = wait_for(lambda: [l for l in f.stderr_path.read_text().splitlines()
                              if " ready " in l], 5,
                     msg=lambda: f.stderr_path.read_text()[-1000:])
    stamp, level = ready[0].split()[:2]
    assert stamp.endswith("Z") and "T" in stamp and level == "info"
    assert "listen=127.0.0.1:" in ready[0]
