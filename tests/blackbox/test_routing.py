"""Contract: routes fan events out to every listed peer; filters (exact,
prefix, suffix, all, any, not) select events; an event matching no route is
accepted and delivered nowhere."""

import time

from ferrylib import base_config, http_peer, make_event, wait_for


def test_fanout_to_two_peers(ferry, peer):
    a, b = peer(name="a"), peer(name="b")
    f = ferry(base_config({"a": http_peer(a), "b": http_peer(b, mode="structured")},
                          routes=[{"name": "both", "to": ["a", "b"]}]))
    evs = [make_event(data={"i": i}) for i in range(5)]
    for e in evs:
        f.post_ok(e)
    ids = [e["id"] for e in evs]
    a.wait_ids(ids)
    b.wait_ids(ids)
    time.sleep(0.3)
    assert sorted(a.ids()) == sorted(ids), f"peer a: expected each event once, got {a.ids()}"
    assert sorted(b.ids()) == sorted(ids), f"peer b: expected each event once, got {b.ids()}"


def test_filters_select_peers(ferry, peer):
    names = ["exact", "prefix", "suffix", "all", "any", "not", "catchall_of_two"]
    peers = {n: peer(name=n) for n in names}
    routes = [
        {"name": "r-exact", "filter": {"exact": {"type": "order.created"}}, "to": ["exact"]},
        {"name": "r-prefix", "filter": {"prefix": {"type": "order."}}, "to": ["prefix"]},
        {"name": "r-suffix", "filter": {"suffix": {"subject": ".pdf"}}, "to": ["suffix"]},
        {"name": "r-all", "filter": {"all": [{"prefix": {"type": "order."}},
                                             {"exact": {"source": "/shop"}}]}, "to": ["all"]},
        {"name": "r-any", "filter": {"any": [{"exact": {"type": "order.created"}},
                                             {"exact": {"type": "invoice.paid"}}]}, "to": ["any"]},
        {"name": "r-not", "filter": {"all": [{"exact": {"source": "/shop"}},
                                             {"not": {"prefix": {"type": "order."}}}]},
         "to": ["not"]},
        # Two attributes in one exact filter: both must hold.
        {"name": "r-two", "filter": {"exact": {"type": "misc", "region": "eu"}},
         "to": ["catchall_of_two"]},
    ]
    f = ferry(base_config({n: http_peer(p) for n, p in peers.items()}, routes=routes))

    evs = {
        "e1": make_event(type="order.created", source="/shop", subject="a.pdf"),
        "e2": make_event(type="order.cancelled", source="/web", subject="b.txt"),
        "e3": make_event(type="invoice.paid", source="/shop", subject="c.pdf"),
        "e4": make_event(type="misc", source="/elsewhere"),                 # matches nothing
        "e5": make_event(type="misc", source="/shop", region="us"),          # not only
        "e6": make_event(type="misc", source="/web", region="eu"),           # two-attr exact
        "e7": make_event(type="misc", source="/web", subject="x.pdf.bak"),   # nothing
    }
    expect = {
        "exact": {"e1"},
        "prefix": {"e1", "e2"},
        "suffix": {"e1", "e3"},
        "all": {"e1"},
        "any": {"e1", "e3"},
        "not": {"e3", "e5"},
        "catchall_of_two": {"e6"},
    }
    for k in sorted(evs):
        r = f.post(evs[k])
        assert r.status == 202, f"{k}: expected 202, got {r}"
        assert r.json() == {"accepted": 1}, f"{k}: {r.body!r}"
    by_id = {e["id"]: k for k, e in evs.items()}
    for n, want in expect.items():
        peers[n].wait_ids([evs[k]["id"] for k in want])
    time.sleep(0.5)
    for n, want in expect.items():
        got = sorted(by_id.get(i, i) for i in peers[n].ids())
        assert got == sorted(want), f"peer {n}: expected {sorted(want)}, got {got}"


def test_no_matching_route_is_accepted_and_dropped(ferry, peer):
    p = peer()
    f = ferry(base_config({"p": http_peer(p)},
                          routes=[{"name": "only-x", "filter": {"exact": {"type": "x"}}, "to": ["p"]}]))
    nomatch = make_event(type="y")
    r = f.post(nomatch)
    assert r.status == 202, f"an event matching no route must be accepted, got {r}"
    match = make_event(type="x")
    f.post_ok(match)
    p.wait_ids([match["id"]])
    time.sleep(0.3)
    assert p.ids() == [match["id"]], f"expected only the matching event, got {p.ids()}"
    wait_for(lambda: f.running(), 1)
