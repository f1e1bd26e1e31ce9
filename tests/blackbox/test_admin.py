"""Contract: the admin listener (dead letters, peers, token), the
`ferry dead-letters` command line, and ordered delivery by partitionkey.

Dead letters come from a peer answering 404 (not retryable: dead at once);
"fixing the peer" is switching its default answer to 200.
"""

import json
import re

import pytest

from ferrylib import (Peer, Reply, base_config, cli_output, free_port, http_peer,
                      http_request, make_event, metric_value, run_cli, wait_for)

TOKEN = "adm-s3cret"


def _dead_ferry(ferry, peer, n=1, name="inv", **top):
    """A Ferry whose only peer answers 404, with n dead letters made."""
    p = peer(404, name=name)
    f = ferry(base_config({name: http_peer(p)}, **top))
    events = [make_event(type="com.example.dead", data={"n": i}) for i in range(n)]
    for ev in events:
        f.post_ok(ev)
    token = (top.get("admin") or {}).get("token")
    f.wait_dead_letters(n, token=token)
    return f, p, events


def _cli(f, *args, env=None, token=None):
    extra = ["--admin", f.admin_base]
    if token:
        extra += ["--token", token]
    return run_cli(["dead-letters", *args, *extra], env=env)


# ---------------------------------------------------------------------------
# dead letters over HTTP


def test_dead_letter_listed_with_reason_and_attempts(ferry, peer):
    f, p, (ev,) = _dead_ferry(ferry, peer)
    (dl,) = f.dead_letters()
    assert dl["peer"] == "inv"
    assert dl["event_id"] == ev["id"]
    assert dl["source"] == ev["source"]
    assert dl["type"] == "com.example.dead"
    assert dl["attempts"] == 1, dl
    assert dl["last_status"] == 404, dl
    assert "404" in dl["reason"], dl
    assert isinstance(dl["id"], int) and dl["id"] > 0
    assert dl["dead_ms"] >= dl["received_ms"] > 0
    assert len(p.requests_for(ev["id"])) == 1, "a 404 must not be retried"


def test_show_has_attempts_and_event(ferry, peer):
    f, p, (ev,) = _dead_ferry(ferry, peer)
    (dl,) = f.dead_letters()
    r = f.admin("GET", f"/v1/dead-letters/{dl['id']}")
    assert r.status == 200, r
    d = r.json()
    assert d["id"] == dl["id"] and d["peer"] == "inv"
    assert isinstance(d["attempts"], list) and len(d["attempts"]) == 1, d
    a = d["attempts"][0]
    assert a["n"] == 1 and a["status"] == 404
    assert a["at_ms"] > 0 and a["duration_ms"] >= 0
    assert d["event"]["id"] == ev["id"]
    assert d["event"]["type"] == ev["type"]
    assert d["event"]["data"] == ev["data"]
    r = f.admin("GET", "/v1/dead-letters/987654321")
    assert r.status == 404 and r.json()["error"] == "not_found", r


def test_replay_after_fixing_the_peer_delivers(ferry, peer):
    f, p, (ev,) = _dead_ferry(ferry, peer)
    (dl,) = f.dead_letters()
    p.set_default(200)
    r = f.admin("POST", f"/v1/dead-letters/{dl['id']}/replay")
    assert r.status == 200 and r.json() == {"replayed": 1}, r
    p.wait_ids([ev["id"]])
    wait_for(lambda: f.dead_letters() == [], msg="the replayed dead letter is still listed")
    assert f.admin("GET", f"/v1/dead-letters/{dl['id']}").status == 404
    r = f.admin("POST", f"/v1/dead-letters/{dl['id']}/replay")
    assert r.status == 404, r
    # Delivered: nothing left in the spool but the dedupe log.
    wait_for(lambda: f.query("SELECT count(*) AS n FROM events")[0]["n"] == 0)


def test_replay_all_and_by_peer(ferry, peer):
    a, b = peer(404, name="a"), peer(404, name="b")
    f = ferry(base_config({"a": http_peer(a), "b": http_peer(b)}))
    evs = [make_event() for _ in range(2)]
    for ev in evs:
        f.post_ok(ev)
    f.wait_dead_letters(4)
    a.set_default(200)
    b.set_default(200)
    r = f.admin("POST", "/v1/dead-letters/replay?peer=a")
    assert r.status == 200 and r.json()["replayed"] == 2, r
    a.wait_ids([e["id"] for e in evs])
    wait_for(lambda: len(f.dead_letters()) == 2)
    assert {d["peer"] for d in f.dead_letters()} == {"b"}
    assert b.delivered_ids() == []
    r = f.admin("POST", "/v1/dead-letters/replay")
    assert r.status == 200 and r.json()["replayed"] == 2, r
    b.wait_ids([e["id"] for e in evs])
    wait_for(lambda: f.dead_letters() == [])
    r = f.admin("POST", "/v1/dead-letters/replay?peer=nobody")
    assert r.status == 409 and r.json()["error"] == "unknown_peer", r


def test_purge_one_and_all(ferry, peer):
    f, p, evs = _dead_ferry(ferry, peer, n=3)
    ids = [d["id"] for d in f.dead_letters()]
    r = f.admin("DELETE", f"/v1/dead-letters/{ids[0]}")
    assert r.status == 200 and r.json() == {"purged": 1}, r
    assert f.admin("DELETE", f"/v1/dead-letters/{ids[0]}").status == 404
    assert [d["id"] for d in f.dead_letters()] == ids[1:]
    r = f.admin("DELETE", "/v1/dead-letters?peer=other")
    assert r.status == 200 and r.json() == {"purged": 0}, r
    r = f.admin("DELETE", "/v1/dead-letters")
    assert r.status == 200 and r.json() == {"purged": 2}, r
    assert f.dead_letters() == []
    assert f.query("SELECT count(*) AS n FROM events")[0]["n"] == 0
    assert f.query("SELECT count(*) AS n FROM attempts")[0]["n"] == 0
    wait_for(lambda: metric_value(f.metrics(), "ferry_dead_letters", peer="inv") == 0,
             msg=lambda: f"ferry_dead_letters not back to 0: {f.metrics()}")


def test_paging_with_limit_and_cursor(ferry, peer):
    f, p, evs = _dead_ferry(ferry, peer, n=5)
    seen, after, pages = [], None, 0
    while True:
        path = "/v1/dead-letters?limit=2" + (f"&after={after}" if after else "")
        r = f.admin("GET", path)
        assert r.status == 200, r
        page = r.json()
        assert len(page["items"]) <= 2
        seen += [d["id"] for d in page["items"]]
        pages += 1
        after = page["next"]
        if after is None:
            break
    assert pages == 3
    assert seen == sorted(seen) and len(set(seen)) == 5
    assert {d["event_id"] for d in f.dead_letters()} == {e["id"] for e in evs}
    r = f.admin("GET", "/v1/dead-letters?peer=inv&limit=1000")
    assert len(r.json()["items"]) == 5 and r.json()["next"] is None
    assert f.admin("GET", "/v1/dead-letters?peer=other").json() == {"items": [], "next": None}
    for bad in ("0", "1001", "ten", "-3"):
        r = f.admin("GET", f"/v1/dead-letters?limit={bad}")
        assert r.status == 400, (bad, r)
        e = r.json()
        assert e["error"] == "invalid_parameter" and e["parameter"] == "limit", e
        assert e["message"]
    r = f.admin("GET", "/v1/dead-letters?after=x")
    assert r.status == 400 and r.json()["parameter"] == "after", r


def test_token_required_when_set(ferry, peer):
    f, p, evs = _dead_ferry(ferry, peer, admin={"token": TOKEN})
    for method, path in (("GET", "/v1/dead-letters"), ("GET", "/v1/peers"),
                         ("DELETE", "/v1/dead-letters"), ("POST", "/v1/dead-letters/replay"),
                         ("GET", "/v1/dead-letters/1")):
        for token in (None, "wrong"):
            r = f.admin(method, path, token)
            assert r.status == 401, (method, path, token, r)
            assert r.json()["error"] == "unauthorized"
    assert len(f.dead_letters(token=TOKEN)) == 1, "the 401s changed something"
    r = http_request("GET", f.admin_base + "/v1/peers",
                     headers={"Authorization": f"bearer {TOKEN}"})
    assert r.status == 200, "the scheme is case-insensitive"
    # The main listener's health and metrics never need a token.
    for path in ("/healthz", "/readyz", "/metrics"):
        assert http_request("GET", f.url(path)).status == 200, path
    # The CLI: refused without the token, fine with --token or the env.
    cp = _cli(f, "list")
    assert cp.returncode == 1, cli_output(cp)
    assert "401" in cli_output(cp) and "token" in cli_output(cp).lower()
    cp = _cli(f, "list", token=TOKEN)
    assert cp.returncode == 0, cli_output(cp)
    cp = _cli(f, "list", env={"FERRY_ADMIN_TOKEN": TOKEN})
    assert cp.returncode == 0, cli_output(cp)
    assert evs[0]["id"] in cli_output(cp)


def test_admin_token_from_env(ferry, peer):
    p = peer(200)
    f = ferry(base_config({"inv": http_peer(p)}), env={"FERRY_ADMIN_TOKEN": "from-env"})
    assert f.admin("GET", "/v1/peers").status == 401
    assert f.admin("GET", "/v1/peers", "from-env").status == 200


def test_peers_endpoint(ferry, peer, tmp_path):
    p = peer(404, name="inv")
    f = ferry(base_config({"inv": http_peer(p), "console": {"type": "stdout"},
                           "audit": {"type": "file", "path": str(tmp_path / "audit.jsonl")}}))
    f.post_ok(make_event())
    f.wait_dead_letters(1)
    r = f.admin("GET", "/v1/peers")
    assert r.status == 200, r
    peers = {x["name"]: x for x in r.json()["peers"]}
    assert set(peers) == {"inv", "console", "audit"}
    for x in peers.values():
        assert x["breaker"] in ("closed", "open", "half-open"), x
        for k in ("in_flight", "pending", "dead_letters"):
            assert isinstance(x[k], int) and x[k] >= 0, (k, x)
    assert peers["inv"]["type"] == "http" and peers["inv"]["url"] == p.url()
    assert peers["console"]["type"] == "stdout"
    assert peers["audit"]["type"] == "file"
    assert peers["inv"]["dead_letters"] == 1
    assert peers["inv"]["pending"] == 0


def test_unknown_path_and_method(ferry, peer):
    f = ferry(base_config({"inv": http_peer(peer(200))}))
    r = f.admin("GET", "/v1/nothing")
    assert r.status == 404 and r.json()["error"] == "not_found", r
    r = f.admin("PUT", "/v1/dead-letters")
    assert r.status == 405 and r.json()["error"] == "method_not_allowed", r
    assert "GET" in r.headers.get("Allow", "")
    assert f.admin("GET", "/v1/reload").status == 405
    assert f.admin("POST", "/v1/peers").status == 405


def test_replay_refused_for_a_peer_no_longer_configured(ferry, peer):
    old, keep = peer(404, name="old"), peer(200, name="keep")
    cfg = base_config({"old": http_peer(old), "keep": http_peer(keep)})
    f = ferry(cfg)
    ev = make_event()
    f.post_ok(ev)
    keep.wait_ids([ev["id"]])
    (dl,) = f.wait_dead_letters(1)
    assert f.stop() == 0
    # Restart with "old" gone from the config.
    cfg2 = dict(cfg, peers={"keep": cfg["peers"]["keep"]},
                routes=[{"name": "all", "to": ["keep"]}])
    f.config_path.write_text(json.dumps(cfg2))
    f.start()
    r = f.admin("POST", f"/v1/dead-letters/{dl['id']}/replay")
    assert r.status == 409, r
    assert r.json()["error"] == "unknown_peer" and "old" in r.json()["message"]
    r = f.admin("POST", "/v1/dead-letters/replay")
    assert r.status == 200, r
    assert r.json()["replayed"] == 0 and r.json()["skipped"] == 1, r.json()
    assert len(f.dead_letters()) == 1
    r = f.admin("DELETE", f"/v1/dead-letters/{dl['id']}")
    assert r.status == 200 and r.json() == {"purged": 1}


# ---------------------------------------------------------------------------
# the command line


def test_cli_list_show_replay_purge(ferry, peer):
    f, p, evs = _dead_ferry(ferry, peer, n=3)
    ids = [d["id"] for d in f.dead_letters()]

    cp = _cli(f, "list")
    out = cli_output(cp)
    assert cp.returncode == 0, out
    lines = cp.stdout.decode().splitlines()
    assert re.match(r"ID\s+PEER\s+EVENT ID\s+TYPE\s+ATTEMPTS\s+DEAD SINCE\s+REASON", lines[0]), out
    assert len(lines) == 4, out
    for i, ev in zip(ids, evs):
        row = next(ln for ln in lines if ev["id"] in ln)
        assert row.split()[0] == str(i) and "inv" in row and "com.example.dead" in row, row
        assert "404" in row and re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row), row

    cp = _cli(f, "list", "--json")
    assert cp.returncode == 0, cli_output(cp)
    doc = json.loads(cp.stdout)
    assert [d["id"] for d in doc["items"]] == ids and doc["next"] is None

    cp = _cli(f, "list", "--page-size", "2")  # follows the cursor
    assert cp.returncode == 0 and len(cp.stdout.decode().splitlines()) == 4, cli_output(cp)
    cp = _cli(f, "list", "--limit", "2", "--page-size", "1", "--json")
    doc = json.loads(cp.stdout)
    assert [d["id"] for d in doc["items"]] == ids[:2] and doc["next"] == str(ids[1]), doc

    cp = _cli(f, "show", str(ids[0]))
    assert cp.returncode == 0, cli_output(cp)
    d = json.loads(cp.stdout)
    assert d["id"] == ids[0] and d["attempts"][0]["status"] == 404
    assert d["event"]["id"] == evs[0]["id"]

    p.set_default(200)
    cp = _cli(f, "replay", str(ids[0]))
    assert cp.returncode == 0 and "replayed 1" in cli_output(cp), cli_output(cp)
    p.wait_ids([evs[0]["id"]])
    cp = _cli(f, "show", str(ids[0]))
    assert cp.returncode == 1, cli_output(cp)
    assert "no such dead letter" in cli_output(cp) and "404" in cli_output(cp)

    cp = _cli(f, "purge", str(ids[1]))
    assert cp.returncode == 0 and "purged 1" in cli_output(cp), cli_output(cp)
    cp = _cli(f, "purge", str(ids[1]))
    assert cp.returncode == 1, cli_output(cp)
    cp = _cli(f, "replay", "--all", "--peer", "inv")
    assert cp.returncode == 0 and "replayed 1" in cli_output(cp), cli_output(cp)
    p.wait_ids([evs[2]["id"]])
    cp = _cli(f, "list")
    assert cp.returncode == 0 and "no dead letters" in cli_output(cp), cli_output(cp)
    cp = _cli(f, "purge", "--all")
    assert cp.returncode == 0 and "purged 0" in cli_output(cp), cli_output(cp)


def test_cli_usage_errors_and_help(ferry, peer):
    for args in (["dead-letters"], ["dead-letters", "frobnicate"],
                 ["dead-letters", "replay"], ["dead-letters", "purge", "1", "--all"],
                 ["dead-letters", "show"], ["dead-letters", "show", "abc"],
                 ["dead-letters", "list", "--bogus"], ["dead-letters", "list", "--limit", "0"],
                 ["dead-letters", "replay", "5", "--peer", "x"],
                 ["dead-letters", "list", "--all"]):
        cp = run_cli(args)
        assert cp.returncode == 2, (args, cli_output(cp))
    cp = run_cli(["dead-letters", "--help"])
    assert cp.returncode == 0, cli_output(cp)
    for word in ("list", "show", "replay", "purge", "--admin", "--token", "FERRY_ADMIN_TOKEN"):
        assert word in cli_output(cp), (word, cli_output(cp))
    for sub, words in (("list", ("--peer", "--limit", "--json")), ("show", ("ID",)),
                       ("replay", ("--all", "--peer")), ("purge", ("--all", "--peer"))):
        cp = run_cli(["dead-letters", sub, "--help"])
        assert cp.returncode == 0, (sub, cli_output(cp))
        for w in words:
            assert w in cli_output(cp), (sub, w)
    assert "dead-letters" in cli_output(run_cli(["--help"]))
    # Nobody listening: a runtime failure, not a usage error.
    cp = run_cli(["dead-letters", "list", "--admin", f"http://127.0.0.1:{free_port()}"])
    assert cp.returncode == 1, cli_output(cp)


# ---------------------------------------------------------------------------
# ordered delivery


class KeyedPeer(Peer):
    """Answers `fail_status` to the first `fail_times` requests for event id
    `fail_id`, 200 to everything else."""

    def __init__(self, fail_id=None, fail_times=0, fail_status=503, name="ordered"):
        self.fail_id, self.fail_times, self.fail_status = fail_id, fail_times, fail_status
        self.failed = 0
        super().__init__(200, name=name)

    def reply_for(self, req):
        with self.lock:
            if req.event_id == self.fail_id and self.failed < self.fail_times:
                self.failed += 1
                return Reply(self.fail_status)
        return self.default


def _ordered_config(p):
    return base_config({"ord": http_peer(p, mode="structured")},
                       routes=[{"name": "ordered", "to": ["ord"], "ordering": "partitionkey"}])


def _assert_key_order(requests, order):
    """No request for order[k] before order[0..k-1] were each delivered."""
    delivered = set()
    for r in requests:
        if r.event_id not in order:
            continue
        k = order.index(r.event_id)
        missing = [i for i in order[:k] if i not in delivered]
        assert not missing, (f"{r.event_id} was sent before {missing} were delivered; "
                             f"arrival order: {[(x.event_id, x.status) for x in requests]}")
        if r.status and 200 <= r.status < 300:
            delivered.add(r.event_id)


def test_ordered_delivery_per_key(ferry):
    p = KeyedPeer()
    try:
        f = ferry(_ordered_config(p))
        a = [make_event(partitionkey="A", id=f"A{i}") for i in range(5)]
        b = [make_event(partitionkey="B", id=f"B{i}") for i in range(5)]
        p.fail_id, p.fail_times = a[0]["id"], 3
        for x, y in zip(a, b):  # accepted in this order: A0 B0 A1 B1 ...
            f.post_ok(x)
            f.post_ok(y)
        p.wait_ids([e["id"] for e in a + b], timeout=15)
        reqs = p.snapshot()
        a_ids, b_ids = [e["id"] for e in a], [e["id"] for e in b]
        assert [i for i in p.delivered_ids() if i in a_ids] == a_ids
        assert [i for i in p.delivered_ids() if i in b_ids] == b_ids
        _assert_key_order(reqs, a_ids)
        _assert_key_order(reqs, b_ids)
        assert len(p.requests_for(a_ids[0])) == 4, "A0: 3 failures then a success"
        # B was not held up by A's failing head.
        a0_ok = next(r.time for r in reqs if r.event_id == a_ids[0] and r.status == 200)
        b_last = next(r.time for r in reqs if r.event_id == b_ids[-1] and r.status == 200)
        assert b_last < a0_ok, "key B waited for key A's head"
    finally:
        p.stop()


def test_ordered_events_without_key_are_unordered(ferry):
    p = KeyedPeer()
    try:
        f = ferry(_ordered_config(p))
        evs = [make_event(id=f"U{i}") for i in range(4)]
        p.fail_id, p.fail_times = evs[0]["id"], 2
        for ev in evs:
            f.post_ok(ev)
        p.wait_ids([e["id"] for e in evs])
        first_ok = next(r.time for r in p.snapshot() if r.event_id == "U0" and r.status == 200)
        others = [r.time for r in p.snapshot() if r.event_id != "U0" and r.status == 200]
        assert min(others) < first_ok, "events without a partitionkey waited for each other"
    finally:
        p.stop()


@pytest.mark.slow
def test_ordered_delivery_survives_kill9(ferry):
    p = KeyedPeer()
    try:
        p.set_default(503)  # nothing gets through before the crash
        f = ferry(_ordered_config(p))
        a = [make_event(partitionkey="A", id=f"KA{i}") for i in range(6)]
        b = [make_event(partitionkey="B", id=f"KB{i}") for i in range(3)]
        for x in a[:3] + b + a[3:]:
            f.post_ok(x)
        p.wait_requests(3)
        f.kill9()
        before = len(p.snapshot())
        p.set_default(200)
        f.start()
        p.wait_ids([e["id"] for e in a + b], timeout=20)
        after = p.snapshot()[before:]
        for key in (a, b):
            ids = [e["id"] for e in key]
            _assert_key_order(p.snapshot(), ids)
            first = []
            for r in after:
                if r.event_id in ids and r.status == 200 and r.event_id not in first:
                    first.append(r.event_id)
            assert first == ids, first
    finally:
        p.stop()
