"""Listener limits (the "http" config extension): slow clients are cut
off, connections past max_connections are refused at once, oversized
headers are rejected, and well-behaved clients are served throughout."""

import http.client
import json
import os
import socket
import threading
import time

import pytest

from ferrylib import (base_config, http_peer, http_request, make_event,
                      post_structured, scaled, wait_for)


def host_port(f):
    host, port = f.listen.rsplit(":", 1)
    return host, int(port)


def open_partial(f, head=b"POST /v1/events HTTP/1.1\r\nHost: ferry\r\n"):
    """A connection that has sent the start of a request and no more."""
    s = socket.create_connection(host_port(f), timeout=scaled(10))
    s.sendall(head)
    return s


def closed_by_server(s, timeout):
    """True once the server closes `s` (EOF or reset) within `timeout`
    seconds; False if it is still open then."""
    s.settimeout(timeout)
    try:
        return s.recv(4096) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


class Trickler(threading.Thread):
    """Slow loris: sends the request line and then one header byte every
    `interval` seconds, so the connection is never idle for long; records
    when the server closed it."""

    def __init__(self, f, interval=0.3, limit=15.0):
        super().__init__(daemon=True)
        self.sock = open_partial(f, b"POST /v1/events HTTP/1.1\r\nHost: ferry\r\nX-Slow: ")
        self.interval = interval
        self.limit = limit
        self.started = time.monotonic()
        self.closed_after = None
        self.start()

    def run(self):
        while time.monotonic() - self.started < self.limit:
            try:
                self.sock.sendall(b"a")
            except OSError:
                break
            if closed_by_server(self.sock, self.interval):
                break
        else:
            return
        self.closed_after = time.monotonic() - self.started
        self.sock.close()


def test_slow_loris_is_cut_off_and_others_are_served(ferry, peer):
    out = peer(name="out")
    f = ferry(base_config({"out": http_peer(out)},
                          http={"connection_timeout_s": 2, "max_connections": 16}))
    slow = [Trickler(f) for _ in range(6)]
    time.sleep(0.3)
    # A well-behaved client is served at once, while the lorises trickle.
    t0 = time.monotonic()
    ev = make_event()
    r = f.post(ev)
    assert r.status == 202, r
    assert time.monotonic() - t0 < scaled(2), "a good client waited behind slow ones"
    out.wait_ids([ev["id"]])
    for t in slow:
        t.join(scaled(15))
    cut = [t.closed_after for t in slow]
    assert all(c is not None for c in cut), f"slow connections still open: {cut}"
    # Never idle for the timeout, yet cut soon after their 2 s deadline.
    assert all(1.5 <= c <= scaled(6) for c in cut), cut
    assert f.post(make_event()).status == 202


def test_idle_connection_is_closed_after_the_timeout(ferry, peer):
    f = ferry(base_config({"out": http_peer(peer(name="out"))},
                          http={"connection_timeout_s": 2}))
    s = open_partial(f)
    t0 = time.monotonic()
    assert closed_by_server(s, scaled(8)), "an idle half-sent request was never closed"
    assert time.monotonic() - t0 >= 1.5
    s.close()


def test_connections_past_max_connections_are_refused(ferry, peer):
    out = peer(name="out")
    f = ferry(base_config({"out": http_peer(out)},
                          http={"max_connections": 4, "threads": 2,
                                "connection_timeout_s": 30}))
    held = [open_partial(f, b"GET /healthz HTTP/1.1\r\nHost: ferry\r\n") for _ in range(4)]
    time.sleep(0.3)  # accepted and counted
    # The fifth is closed at once (not left waiting in the backlog).
    t0 = time.monotonic()
    extra = socket.create_connection(host_port(f), timeout=scaled(10))
    try:
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: ferry\r\n\r\n")
    except OSError:
        pass
    assert closed_by_server(extra, scaled(5)), "a connection past the limit was kept"
    assert time.monotonic() - t0 < scaled(3)
    extra.close()
    # The connections already open keep working.
    held[0].sendall(b"Connection: close\r\n\r\n")
    held[0].settimeout(scaled(5))
    assert held[0].recv(64).startswith(b"HTTP/1.1 200"), "an open connection was broken"
    held[0].close()
    # A freed slot is usable again.
    wait_for(lambda: _get_ok(f), 5, msg="no slot was freed")
    for s in held[1:]:
        s.close()
    wait_for(lambda: '"msg":"refused connections: max_connections reached"'
             in f.stderr_path.read_text(), 5, msg="refusals were not logged")


def _get_ok(f):
    try:
        return http_request("GET", f.url("/healthz"), timeout=2).status == 200
    except OSError:
        return False


def test_per_ip_limit_refuses_extra_connections(ferry, peer):
    f = ferry(base_config({"out": http_peer(peer(name="out"))},
                          http={"max_connections_per_ip": 2}))
    time.sleep(0.5)  # the readiness checks' connections are gone
    held = [open_partial(f) for _ in range(2)]
    assert not any(closed_by_server(s, 0.3) for s in held), "a connection within the limit was refused"
    extra = socket.create_connection(host_port(f), timeout=scaled(10))
    assert closed_by_server(extra, scaled(5)), "a third connection from 127.0.0.1 was kept"
    extra.close()
    for s in held:
        s.close()
    wait_for(lambda: _get_ok(f), 5, msg="the listener did not recover")


def test_oversized_headers_are_rejected_and_serving_goes_on(ferry, peer):
    out = peer(name="out")
    f = ferry(base_config({"out": http_peer(out)}, http={"max_header_bytes": 16384}))
    body = json.dumps(make_event())
    ct = {"Content-Type": "application/cloudevents+json"}
    # Within the limit, even in many lines: served.
    many = {**ct, **{f"X-Pad-{i}": "p" * 100 for i in range(100)}}  # ~12 KiB
    assert http_request("POST", f.events_url, body, many).status == 202
    # A 64 KiB header: 431 from libmicrohttpd, or the connection closed.
    try:
        r = http_request("POST", f.events_url, json.dumps(make_event()),
                         {**ct, "X-Big": "b" * 65536}, timeout=10)
        assert r.status == 431, r
    except (http.client.HTTPException, OSError):
        pass
    ev = make_event()
    assert f.post(ev).status == 202
    out.wait_ids([ev["id"]])


@pytest.mark.parametrize("limits, error", [
    ({"max_connections": 0}, "http.max_connections: must be between 1 and 1048576"),
    ({"connection_timeout_s": 0}, "http.connection_timeout_s: must be between 1 and 86400"),
    ({"max_header_bytes": 100}, "http.max_header_bytes: must be between 4096 and 1048576"),
    ({"threads": 8, "max_connections": 4}, "http.max_connections: must be at least threads (8)"),
    ({"max_conns": 4}, "http.max_conns: unknown key"),
])
def test_bad_limits_are_config_errors(tmp_path, limits, error):
    from ferrylib import cli_output, run_cli
    path = tmp_path / "ferry.json"
    path.write_text(json.dumps({"http": limits}))
    cp = run_cli(["check-config", "-c", path])
    assert cp.returncode == 2, cli_output(cp)
    assert error in cli_output(cp), cli_output(cp)


def _threads(f) -> int:
    return len(os.listdir(f"/proc/{f.proc.pid}/task"))


def _start_on(ferry, cpus, config):
    """Start a Ferry whose affinity mask is @cpus (inherited from us)."""
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        return ferry(config)
    finally:
        os.sched_setaffinity(0, saved)


def test_auto_threads_follow_the_cpus_ferry_may_use(ferry, peer):
    """http.threads "auto" (the default): one pool thread per CPU of the
    affinity mask, at most 4; taskset -c 0 gives one."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs to compare a pinned Ferry with a free one")
    out = peer(name="out")
    pinned = _start_on(ferry, {cpus[0]}, base_config({"out": http_peer(out)}))
    free = _start_on(ferry, set(cpus), base_config({"out": http_peer(out)}))
    fixed = _start_on(ferry, {cpus[0]}, base_config({"out": http_peer(out)},
                                                    http={"threads": 3}))
    extra = min(len(cpus), 4) - 1
    assert _threads(free) - _threads(pinned) == extra
    assert _threads(fixed) - _threads(pinned) == 2  # a number is taken as it is
    for f in (pinned, free, fixed):
        assert post_structured(f.events_url, make_event()).status == 202
