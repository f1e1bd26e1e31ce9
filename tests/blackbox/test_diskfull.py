"""Disk full: the spool lives on a 16 MiB tmpfs of the test's own. Ingest
must answer 503 (never 202 for an event that is not durable), readiness
must say why, and both must recover by themselves once deliveries drain.
Needs root for the mount; skipped (with the reason) elsewhere."""


import pytest

from ferrylib import (base_config, http_peer, http_request, make_event, post_structured,
                      scaled, small_tmpfs, wait_for)


@pytest.fixture
def small_fs(tmp_path):
    yield from small_tmpfs(tmp_path)


def test_own_backlog_filling_disk_refuses_then_recovers(ferry, peer, small_fs):
    p = peer()
    p.stop()
    f = ferry(base_config({"p": http_peer(p)}, retry={"max_attempts": 100000},
                          spool={"dir": str(small_fs / "spool")}))
    acked, refused = [], None
    pad = "y" * 20000
    for _ in range(2000):
        ev = make_event(data={"pad": pad})
        r = post_structured(f.events_url, ev)
        if r.status == 202:
            acked.append(ev["id"])
            continue
        refused = r
        break
    assert refused is not None, "a 16 MiB filesystem never filled up"
    assert refused.status == 503, refused
    assert refused.json()["error"] == "unavailable", refused.body
    assert refused.headers.get("Retry-After"), "503 must carry Retry-After"
    assert acked, "nothing was accepted before the disk filled"
    ready = http_request("GET", f.url("/readyz"))
    assert ready.status == 503, ready
    assert "disk" in ready.body.decode(), ready.body
    assert http_request("GET", f.url("/healthz")).status == 200
    assert f.running, "ferry must keep serving with a full disk"

    # The peer comes back: every acknowledged event is delivered, and ingest
    # and readiness recover without a restart.
    p.start()
    p.wait_ids(acked, timeout=scaled(60))

    def accepts_again():
        return post_structured(f.events_url, make_event()).status == 202
    wait_for(accepts_again, scaled(30), interval=0.5,
             msg=lambda: f"ingest never recovered: {http_request('GET', f.url('/readyz'))}")
    wait_for(lambda: http_request("GET", f.url("/readyz")).status == 200, scaled(30),
             msg=lambda: f"/readyz never recovered: {http_request('GET', f.url('/readyz'))}")


def fill(path, chunk=1 << 16):
    """Write zeros into @path until the filesystem is full."""
    with open(path, "wb") as out:
        block = b"\0" * chunk
        try:
            while True:
                out.write(block)
                out.flush()
        except OSError:
            pass


def test_disk_filled_by_another_process_refuses_then_recovers(ferry, peer, small_fs):
    p = peer()
    f = ferry(base_config({"p": http_peer(p)}, spool={"dir": str(small_fs / "spool")}))
    before = make_event()
    f.post_ok(before)
    p.wait_ids([before["id"]])
    filler = small_fs / "filler"
    fill(filler)
    statuses = []
    acked = []
    for _ in range(50):
        ev = make_event(data={"pad": "z" * 4000})
        r = post_structured(f.events_url, ev)
        statuses.append(r.status)
        if r.status == 202:
            acked.append(ev["id"])
        else:
            assert r.status == 503, r
            assert r.json()["error"] == "unavailable", r.body
            assert r.headers.get("Retry-After"), "503 must carry Retry-After"
            break
    assert 503 in statuses, f"a full disk never refused an event: {statuses}"
    wait_for(lambda: http_request("GET", f.url("/readyz")).status == 503, scaled(5),
             msg="readiness did not report the full disk")
    assert http_request("GET", f.url("/healthz")).status == 200
    assert f.running

    filler.unlink()  # the other process frees its space
    def accepts_again():
        ev = make_event()
        if post_structured(f.events_url, ev).status == 202:
            acked.append(ev["id"])
            return True
        return False
    wait_for(accepts_again, scaled(30), interval=0.5, msg="ingest never recovered")
    wait_for(lambda: http_request("GET", f.url("/readyz")).status == 200, scaled(30),
             msg=lambda: f"/readyz never recovered: {http_request('GET', f.url('/readyz'))}")
    p.wait_ids(acked, timeout=scaled(30))
