"""Disk full and spool limit under load (issue 7, item 3). Concurrent
clients keep posting while the spool's disk fills (or its spool.max_bytes
is reached), and keep posting through the recovery. Invariants:

  * never a 202 for an event that is not durable: at the moment the disk
    is full, every acknowledged event is in the spool database (committed
    and visible to a new reader) or already answered 2xx by the peer;
  * every refusal is 503 "unavailable" with Retry-After; nothing else;
  * Ferry recovers by itself, without a restart: once deliveries drain
    (or the other process frees its space) ingest answers 202 again and
    readiness returns to 200;
  * nothing acknowledged is lost or dead-lettered.

The disk-full tests mount a 16 MiB tmpfs of their own and so need root
(skipped with the reason otherwise); the spool-limit test runs anywhere.

Knobs: FERRY_REL_DISK_CLIENTS (4), FERRY_REL_FULL_S (2: how long the
clients keep hammering a full disk), FERRY_REL_SEED.
"""

import os
import time

import pytest

from ferrylib import (Peer, base_config, http_peer, http_request, make_event,
                      small_tmpfs, wait_for)
from rellib import Loader, scaled, uid


@pytest.fixture
def small_fs(tmp_path):
    yield from small_tmpfs(tmp_path)


def _check_answer(resp, body):
    if resp.status == 202:
        return
    assert resp.status == 503, f"unexpected answer {resp.status}: {body[:200]!r}"
    assert resp.getheader("Retry-After"), f"503 without Retry-After: {body[:200]!r}"
    assert b'"unavailable"' in body, f"503 that is not 'unavailable': {body[:200]!r}"


def _maker(pad_lo, pad_hi):
    def make(pos, rng):
        n, i = pos
        pad = "p" * rng.randint(pad_lo, pad_hi)
        if rng.random() < 0.2:
            evs = [make_event(id=uid(f"d{n}"), data={"i": i, "pad": pad}) for _ in range(3)]
            return "batch", evs, [e["id"] for e in evs]
        ev = make_event(id=uid(f"d{n}"), data={"i": i, "pad": pad})
        return "structured", ev, [ev["id"]]
    return make


def _quiesce(load):
    """Pause the clients and wait until no request is in progress."""
    load.paused.set()
    wait_for(lambda: load.outstanding == 0, scaled(30), msg="clients never went quiet")


def _not_durable(f, acked, peer):
    """Acknowledged ids neither in the spool nor answered 2xx by the peer.
    The spool is read first: an event missing from it was delivered and
    deleted before, so the peer's later snapshot has it."""
    in_spool = {r["ce_id"] for r in f.query("SELECT ce_id FROM events")}
    answered = {r.event_id for r in peer.snapshot() if r.answered and r.status == 200}
    return set(acked) - in_spool - answered


def _ready(f):
    try:
        return http_request("GET", f.url("/readyz"), timeout=5)
    except OSError as e:
        return e


def _run(ferry, rel, peer, spool_cfg, fill, free, reason_word, name):
    clients = rel.int("FERRY_REL_DISK_CLIENTS", 4)
    full_s = rel.float("FERRY_REL_FULL_S", 2.0)
    t0 = time.monotonic()
    f = ferry(base_config({"p": http_peer(peer, max_in_flight=16)},
                          retry={"max_attempts": 100000, "initial_delay_ms": 20,
                                 "max_delay_ms": 200},
                          spool=spool_cfg))
    load = Loader(f, clients, _maker(2000, 16000), rel.seed, check=_check_answer)
    try:
        fill()
        wait_for(lambda: load.statuses.get(503, 0) >= 20, scaled(90), interval=0.05,
                 msg=lambda: f"never refused: {len(load.acked)} acknowledged, "
                             f"statuses {load.statuses}, errors {load.errors}")
        t_full = time.monotonic()
        time.sleep(full_s)  # keep hammering the full spool
        _quiesce(load)
        acked_full = load.acked_ids()
        not_durable = _not_durable(f, acked_full, peer)
        ready = _ready(f)
        healthy = http_request("GET", f.url("/healthz")).status
        assert f.running(), "Ferry died on a full disk"
        # Recovery, with the clients posting again through it.
        n_before = len(acked_full)
        load.paused.clear()
        t_free = time.monotonic()
        free()
        wait_for(lambda: len(load.acked_ids()) > n_before + 10, scaled(90), interval=0.05,
                 msg=lambda: f"ingest never recovered without a restart: /readyz "
                             f"{_ready(f)}; statuses {load.statuses}")
        recovered_s = time.monotonic() - t_free
        time.sleep(0.5)
    finally:
        load.stop()
    acked = load.acked_ids()
    try:
        wait_for(lambda: not set(acked) - set(peer.delivered_ids()), scaled(120), interval=0.25)
    except AssertionError:
        pass
    lost = set(acked) - set(peer.delivered_ids())
    wait_for(lambda: getattr(_ready(f), "status", 0) == 200, scaled(60),
             msg=lambda: f"/readyz never returned to 200: {_ready(f)}")
    dead = f.query("SELECT reason FROM dead_letters")
    ok = [r.event_id for r in peer.snapshot() if r.answered and r.status == 200]
    dups = len(ok) - len(set(ok))
    result = {
        "acknowledged": len(acked), "acknowledged_before_recovery": len(acked_full),
        "refused_503": load.statuses.get(503, 0),
        "other_answers": {k: v for k, v in load.statuses.items() if k != 503},
        "answer_problems": len(load.problems), "acked_not_durable": len(not_durable),
        "lost": len(lost), "duplicates": dups, "dead_letters": len(dead),
        "clients": clients, "seconds_full": round(t_free - t_full, 1),
        "recovery_seconds": round(recovered_s, 2), "restarts": 0,
        "latency_503_p50_ms": load.latency_ms(503, 0.5),
        "latency_503_max_ms": load.latency_ms(503, 1.0),
        "latency_202_p50_ms": load.latency_ms(202, 0.5),
        "latency_202_max_ms": load.latency_ms(202, 1.0),
        "seconds": round(time.monotonic() - t0, 1)}
    rel.record(name, result)
    assert not load.problems, load.problems[:5]
    assert not not_durable, f"{len(not_durable)} events got a 202 but are not in the spool: " \
                            f"{sorted(not_durable)[:5]}"
    assert getattr(ready, "status", None) == 503 and reason_word in ready.body.decode(), \
        f"/readyz while full: {ready}"
    assert healthy == 200
    assert not lost, f"{len(lost)} acknowledged events never delivered: {sorted(lost)[:5]}"
    assert not dead, dead[:5]
    assert f.running() and f.runs == 1, "recovery must not need a restart"


def test_own_backlog_fills_disk_under_load(ferry, rel, small_fs):
    """The peer is down, so Ferry's own backlog fills the disk."""
    if os.environ.get("FERRY_SANITIZED"):
        pytest.skip("known issue: the drain can stall on ENOSPC when checkpoints lag "
                    "(sanitizer builds); see tests/blackbox/test_diskfull.py")
    p = Peer(name="down")
    p.stop()
    try:
        _run(ferry, rel, p, {"dir": str(small_fs / "spool")}, fill=lambda: None, free=p.start,
             reason_word="disk", name="diskfull_own_backlog")
    finally:
        p.stop()


def test_disk_filled_by_another_process_under_load(ferry, rel, small_fs):
    """The peer is up and deliveries flow; another process fills the disk
    and later frees its space."""
    p = Peer(name="up")
    filler = small_fs / "filler"

    def fill():
        # Ferry's own deliveries may have left the disk at its reserve's
        # edge already, and creating the file can then fail for space:
        # the disk is full either way, which is what this test needs.
        try:
            with open(filler, "wb") as out:
                block = b"\0" * (1 << 16)
                while True:
                    out.write(block)
                    out.flush()
        except OSError:
            pass

    try:
        _run(ferry, rel, p, {"dir": str(small_fs / "spool")}, fill=fill, free=lambda: filler.unlink(missing_ok=True),
             reason_word="disk", name="diskfull_other_process")
    finally:
        p.stop()


def test_spool_limit_under_load(ferry, rel, tmp_path):
    """spool.max_bytes (2 MiB) reached with the peer down; no root needed."""
    p = Peer(name="down")
    p.stop()
    try:
        _run(ferry, rel, p, {"max_bytes": 2 * 1048576}, fill=lambda: None, free=p.start,
             reason_word="spool.max_bytes", name="spool_limit")
    finally:
        p.stop()
