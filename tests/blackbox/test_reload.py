"""Configuration reload (SIGHUP): new routes apply, invalid files are
rejected with the old config kept, removed peers' pending deliveries are
dead-lettered with a reason, and nothing is lost or delivered twice."""

import json
import signal
import time

from ferrylib import (base_config, http_peer, make_event, post_structured, scaled,
                      wait_for)


def rewrite(f, config):
    """Replace the running instance's config file (keeping its ports and spool)."""
    config["listen"] = f.config["listen"]
    config["admin"] = {**f.config["admin"], **config.get("admin", {})}
    config["spool"] = f.config["spool"]
    f.config_path.write_text(json.dumps(config, indent=2))


def sighup_and_wait(f, marker="reload"):
    """Send SIGHUP and wait until the log shows the outcome."""
    before = f.stderr_path.read_text().count('"msg":"reload')
    f.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: f.stderr_path.read_text().count('"msg":"reload') >= before + 2,
             10, msg=lambda: f"no reload outcome logged:\n{f.stderr_tail(20)}")


def test_sighup_applies_new_routes_and_peers(ferry, peer):
    a, b = peer(name="a"), peer(name="b")
    f = ferry(base_config({"a": http_peer(a)}))
    first = make_event()
    f.post_ok(first)
    a.wait_ids([first["id"]])

    rewrite(f, base_config({"a": http_peer(a), "b": http_peer(b)},
                           routes=[{"name": "all", "to": ["a", "b"]}]))
    sighup_and_wait(f)
    assert '"msg":"reloaded"' in f.stderr_path.read_text()
    second = make_event()
    f.post_ok(second)
    a.wait_ids([second["id"]])
    b.wait_ids([second["id"]])
    assert first["id"] not in b.ids(), "a reload must not re-route events already accepted"


def test_invalid_config_is_rejected_and_old_kept(ferry, peer):
    a = peer(name="a")
    f = ferry(base_config({"a": http_peer(a)}))
    f.config_path.write_text('{"routes": [{"to": ["nowhere"]}]}')
    sighup_and_wait(f)
    log = f.stderr_path.read_text()
    assert "reload rejected" in log
    assert 'no peer named \\"nowhere\\"' in log, log[-2000:]
    ev = make_event()
    f.post_ok(ev)
    a.wait_ids([ev["id"]])
    assert f.running


def test_removed_peer_pending_deliveries_are_dead_lettered(ferry, peer):
    a, gone = peer(name="a"), peer(name="gone")
    gone.stop()  # its deliveries stay pending
    f = ferry(base_config({"a": http_peer(a), "gone": http_peer(gone)},
                          retry={"initial_delay_ms": 200, "max_delay_ms": 200}))
    evs = [make_event() for _ in range(3)]
    for ev in evs:
        f.post_ok(ev)
    a.wait_ids([e["id"] for e in evs])
    rewrite(f, base_config({"a": http_peer(a)}))
    sighup_and_wait(f)
    wait_for(lambda: f.query("SELECT count(*) AS n FROM dead_letters WHERE peer='gone'")[0]["n"] == 3,
             10, msg="pending deliveries of the removed peer were not dead-lettered")
    reasons = {r["reason"] for r in f.query("SELECT reason FROM dead_letters WHERE peer='gone'")}
    assert reasons == {'peer "gone" is no longer configured'}, reasons
    assert f.query("SELECT count(*) AS n FROM deliveries")[0]["n"] == 0


def test_reload_under_load_loses_and_duplicates_nothing(ferry, peer):
    a = peer(name="a")
    a.set_default(200, delay=0.05)  # deliveries are in flight when the reload comes
    f = ferry(base_config({"a": http_peer(a, max_in_flight=4)}))
    ids = []
    for i in range(60):
        ev = make_event()
        f.post_ok(ev)
        ids.append(ev["id"])
        if i in (20, 40):
            rewrite(f, base_config({"a": http_peer(a, max_in_flight=8)}))
            f.proc.send_signal(signal.SIGHUP)
    a.wait_ids(ids, timeout=scaled(30))
    time.sleep(scaled(0.5))  # would a redelivery still come?
    delivered = a.delivered_ids()
    dups = {i for i in ids if delivered.count(i) > 1}
    assert not dups, f"{len(dups)} events delivered twice across reloads"


def test_admin_reload_endpoint(ferry, peer):
    a, b = peer(name="a"), peer(name="b")
    f = ferry(base_config({"a": http_peer(a)}, admin={"token": "adm1n"}))
    assert f.admin("POST", "/v1/reload").status == 401, "reload needs the admin token"

    rewrite(f, base_config({"a": http_peer(a), "b": http_peer(b)},
                           routes=[{"name": "all", "to": ["b"]}], admin={"token": "adm1n"}))
    r = f.admin("POST", "/v1/reload", token="adm1n")
    assert r.status == 200, r
    assert r.json().get("reloaded") is True, r.body
    ev = make_event()
    f.post_ok(ev)
    b.wait_ids([ev["id"]])
    time.sleep(scaled(0.2))
    assert ev["id"] not in a.ids(), "the old route still applied after reload"

    f.config_path.write_text('{"peers": {"x": {"url": "ftp://nope"}}}')
    r = f.admin("POST", "/v1/reload", token="adm1n")
    assert r.status == 400, r
    assert r.json()["error"] == "invalid_config", r.body
    assert "peers.x.url" in r.json()["message"], r.body
    ev2 = make_event()
    f.post_ok(ev2)
    b.wait_ids([ev2["id"]])
