"""Hostile clients (issue 7, item 5). While attackers run -- slow-loris
connections, oversized headers and bodies, invalid UTF-8, JSON nested
100,000 deep, garbage request lines, and 10,000 open idle connections --
a well-behaved client keeps posting. Invariants:

  * every well-behaved request gets its 202 within FERRY_REL_LATENCY_MS
    (default 2000) and its event is delivered;
  * every hostile request gets a 4xx (or a closed connection), never a
    202 for something invalid, never a 5xx, and never waits past the
    connection timeout;
  * Ferry's resident memory (VmRSS, sampled from /proc) stays under a
    stated bound, and Ferry is alive and exits 0 at the end.

Knobs: FERRY_REL_HOSTILE_S (8: how long the attack mix runs),
FERRY_REL_LORIS (100 slow-loris connections at a time),
FERRY_REL_CONNECTIONS (10000 idle connections), FERRY_REL_LATENCY_MS,
FERRY_REL_RSS_MIB (96: bound for the attack mix),
FERRY_REL_RSS_CONN_MIB (128: bound with every idle connection held),
FERRY_REL_SEED.

The idle connections come from 127.0.0.2 and the well-behaved client from
127.0.0.1 (all of 127/8 is loopback on Linux), so the per-IP limit can
single the attacker out as it would in production.
"""

import errno
import random
import resource
import select
import socket
import subprocess
import threading
import time

import pytest

from ferrylib import Peer, base_config, http_peer, http_request, make_event, \
    post_structured, wait_for
from rellib import RssSampler, rss_kib, scaled, uid

CT = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
IDLE_SRC = "127.0.0.2"
IP_BIND_ADDRESS_NO_PORT = 24


def _hp(f):
    host, port = f.listen.rsplit(":", 1)
    return host, int(port)


def raw(f, data: bytes, timeout: float, src=None):
    """Send raw bytes, return (status or None if the connection closed
    without an answer, seconds until the answer or the close)."""
    t0 = time.monotonic()
    s = socket.create_connection(_hp(f), timeout=timeout,
                                 source_address=(src, 0) if src else None)
    try:
        try:
            s.sendall(data)
        except OSError:
            pass  # answered (413/431) and closed before we finished: read it
        buf = b""
        try:
            while b"\r\n" not in buf:
                d = s.recv(4096)
                if not d:
                    break
                buf += d
        except socket.timeout:
            return "timeout", time.monotonic() - t0
        except OSError:
            pass
        line = buf.split(b"\r\n", 1)[0].split()
        status = int(line[1]) if len(line) >= 2 and line[1].isdigit() else None
        return status, time.monotonic() - t0
    finally:
        s.close()


def _req(path, headers, body=b"", method="POST"):
    h = f"{method} {path} HTTP/1.1\r\nHost: ferry\r\n".encode()
    for k, v in headers:
        h += k.encode("latin-1") + b": " + (v if isinstance(v, bytes) else v.encode("latin-1")) \
            + b"\r\n"
    return h + b"Connection: close\r\n\r\n" + body


def _post(body, ct=CT, extra=()):
    return _req("/v1/events", [("Content-Type", ct), ("Content-Length", str(len(body))),
                               *extra], body)


def _nested(depth):
    return (b'{"specversion":"1.0","id":"deep","source":"/h","type":"t","data":'
            + b"[" * depth + b"]" * depth + b"}")


# name -> (request bytes, allowed answers; None = connection closed)
REJECT = {400, 404, 405, 411, 413, 414, 415, 431, 505, None}


def attacks(max_body):
    big_hdr = [("X-Big", "b" * 65536)]
    many_hdr = [(f"X-Pad-{i}", "p" * 1000) for i in range(200)]
    return {
        "oversized_header_64k": (_post(b"{}", extra=big_hdr), {431, None}),
        "oversized_headers_200k": (_post(b"{}", extra=many_hdr), {431, None}),
        "oversized_url_100k": (_req("/v1/events?" + "u" * 100000, []), {414, 431, None}),
        "declared_body_2g": (_req("/v1/events", [("Content-Type", CT),
                                                 ("Content-Length", "2000000000")]), {413}),
        "body_over_limit": (_post(b"x" * (max_body + 1)), {413, None}),
        "chunked_body_over_limit": (
            _req("/v1/events", [("Content-Type", CT), ("Transfer-Encoding", "chunked")],
                 b"".join(b"10000\r\n" + b"c" * 65536 + b"\r\n" for _ in range(24))
                 + b"0\r\n\r\n"), {413, None}),
        "batch_over_max_batch": (_post(("[" + ",".join(
            '{"specversion":"1.0","id":"b%d","source":"/h","type":"t"}' % i
            for i in range(1001)) + "]").encode(), ct=BATCH), {413}),
        "bad_chunk_size": (_req("/v1/events", [("Content-Type", CT),
                                               ("Transfer-Encoding", "chunked")],
                                b"zzzz\r\nabc\r\n0\r\n\r\n"), REJECT),
        "negative_length": (_req("/v1/events", [("Content-Type", CT),
                                                ("Content-Length", "-5")]), REJECT),
        "invalid_utf8_id": (_post(b'{"specversion":"1.0","id":"\xff\xfe","source":"/h",'
                                  b'"type":"t"}'), {400}),
        "overlong_utf8_data": (_post(b'{"specversion":"1.0","id":"o","source":"/h","type":"t",'
                                     b'"data":"\xc0\xaf\xed\xa0\x80"}'), {400}),
        "invalid_utf8_batch": (_post(b'[{"specversion":"1.0","id":"\x80","source":"/h",'
                                     b'"type":"t"}]', ct=BATCH), {400}),
        "invalid_utf8_binary_pct": (_req("/v1/events", [
            ("ce-specversion", "1.0"), ("ce-id", "%FF%FE"), ("ce-source", "/h"),
            ("ce-type", "t"), ("Content-Type", "text/plain"), ("Content-Length", "1")], b"x"),
            {400}),
        "invalid_utf8_binary_raw": (_req("/v1/events", [
            ("ce-specversion", "1.0"), ("ce-id", b"raw\xff\xfe"), ("ce-source", "/h"),
            ("ce-type", "t"), ("Content-Type", "text/plain"), ("Content-Length", "1")], b"x"),
            {400}),
        "nested_array_100k": (_post(b"[" * 100000), {400}),
        "nested_object_50k": (_post(b'{"a":' * 50000 + b"1" + b"}" * 50000), {400}),
        "nested_data_100k": (_post(_nested(100000)), {400}),
        "nested_batch_100k": (_post(b"[" * 100000, ct=BATCH), {400}),
        "garbage_request_line": (b"\x00\x01\x02\xffgarbage\r\n\r\n", REJECT),
        "bad_http_version": (b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", REJECT),
        "nul_in_header": (_post(b"{}", extra=[("X-Nul", b"a\x00b")]), REJECT),
    }


class Loris(threading.Thread):
    """Keeps `n` slow-loris connections open: each sends a request line and
    then one header byte every `every` seconds. Records how long each lived
    before Ferry cut it."""

    def __init__(self, f, n, every, until):
        super().__init__(daemon=True)
        self.f, self.n, self.every, self.until = f, n, every, until
        self.lifetimes = []
        self.opened = 0
        self.start()

    def _open(self):
        s = socket.create_connection(_hp(self.f), timeout=5)
        s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: ferry\r\nX-Slow: ")
        s.setblocking(False)
        self.opened += 1
        return [s, time.monotonic()]

    def run(self):
        conns = []
        while time.monotonic() < self.until:
            while len(conns) < self.n:
                try:
                    conns.append(self._open())
                except OSError:
                    time.sleep(0.05)
                    break
            time.sleep(self.every)
            alive = []
            for c in conns:
                s, t0 = c
                try:
                    r, _, _ = select.select([s], [], [], 0)
                    if r and not s.recv(4096):
                        raise ConnectionResetError
                    s.send(b"a")
                    alive.append(c)
                except OSError:
                    self.lifetimes.append(time.monotonic() - t0)
                    s.close()
            conns = alive
        for s, _ in conns:
            s.close()


def _good_client(f, until, lat, statuses, ids):
    while time.monotonic() < until:
        ev = make_event(id=uid("good"))
        t0 = time.monotonic()
        try:
            r = post_structured(f.events_url, ev)
            st = r.status
        except OSError as e:
            st = type(e).__name__
        lat.append(time.monotonic() - t0)
        statuses[st] = statuses.get(st, 0) + 1
        if st == 202:
            ids.append(ev["id"])
        time.sleep(0.05)


def _pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else None


def test_hostile_mix_keeps_good_clients_served(ferry, rel):
    duration = rel.float("FERRY_REL_HOSTILE_S", 8.0)
    lorises = rel.int("FERRY_REL_LORIS", 100)
    lat_bound = rel.int("FERRY_REL_LATENCY_MS", 2000) / 1000.0
    rss_bound = rel.int("FERRY_REL_RSS_MIB", 96)
    timeout_s = 2
    max_body = 1048576
    out = Peer(name="out")
    try:
        f = ferry(base_config({"out": http_peer(out)},
                              http={"max_connections": 4096, "connection_timeout_s": timeout_s,
                                    "max_header_bytes": 16384},
                              ingest={"max_body_bytes": max_body}))
        base = rss_kib(f.proc.pid)["rss"]
        sampler = RssSampler(f.proc.pid, 0.05)
        until = time.monotonic() + duration
        loris = Loris(f, lorises, 0.25, until)
        lat, statuses, ids = [], {}, []
        good = threading.Thread(target=_good_client, args=(f, until, lat, statuses, ids))
        good.start()
        catalog = attacks(max_body)
        results = {name: {} for name in catalog}
        bad = []
        lock = threading.Lock()

        def attacker(seed):
            rng = random.Random(seed)
            names = sorted(catalog)
            while time.monotonic() < until:
                name = rng.choice(names)
                data, allowed = catalog[name]
                st, took = raw(f, data, timeout=timeout_s * 3 + 5)
                with lock:
                    results[name][str(st)] = results[name].get(str(st), 0) + 1
                    if st not in allowed or took > timeout_s * 2 + 3:
                        bad.append(f"{name}: answer {st} after {took:.2f}s "
                                   f"(allowed {sorted(map(str, allowed))})")
        attackers = [threading.Thread(target=attacker, args=(rel.seed + k,)) for k in range(3)]
        for t in attackers:
            t.start()
        for t in attackers + [good, loris]:
            t.join(duration + 60)
        peak = sampler.stop()
        out.wait_ids(ids, timeout=scaled(30))
        alive = http_request("GET", f.url("/healthz")).status
        hwm = rss_kib(f.proc.pid)["hwm"]
        cut = loris.lifetimes
        result = {
            "seconds": duration, "good_requests": len(lat), "good_202": statuses.get(202, 0),
            "good_other": {str(k): v for k, v in statuses.items() if k != 202},
            "good_latency_p50_ms": round(_pct(lat, 0.5) * 1000, 1),
            "good_latency_p99_ms": round(_pct(lat, 0.99) * 1000, 1),
            "good_latency_max_ms": round(max(lat) * 1000, 1),
            "latency_bound_ms": lat_bound * 1000,
            "hostile_requests": sum(sum(v.values()) for v in results.values()),
            "hostile_by_attack": results, "hostile_unexpected": len(bad),
            "loris_connections": loris.opened, "loris_cut": len(cut),
            "loris_max_life_s": round(max(cut), 2) if cut else None,
            "connection_timeout_s": timeout_s,
            "rss_base_kib": base, "rss_peak_kib": max(peak, hwm), "rss_bound_mib": rss_bound,
        }
        rel.record("hostile_mix", result)
        assert not bad, "\n".join(bad[:10])
        assert statuses.get(202, 0) == len(lat) and lat, f"good client: {statuses}"
        assert max(lat) < scaled(lat_bound), \
            f"a well-behaved request took {max(lat):.2f}s (bound {lat_bound}s)"
        assert alive == 200
        assert cut, "no slow-loris connection was ever cut"
        assert max(cut) <= timeout_s * 2 + 1.5, f"a slow-loris lived {max(cut):.1f}s"
        assert max(peak, hwm) < rss_bound * 1024, \
            f"Ferry's RSS reached {max(peak, hwm) / 1024:.1f} MiB (bound {rss_bound} MiB)"
    finally:
        out.stop()


def _raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _tcp_table():
    """Rows of /proc/net/tcp as (local (ip, port), remote (ip, port), state,
    rx_queue). For a listener, rx_queue is its accept queue's length."""
    def addr(a):
        ip, port = a.split(":")
        return socket.inet_ntoa(bytes.fromhex(ip)[::-1]), int(port, 16)
    rows = {}
    with open("/proc/net/tcp") as fh:
        next(fh)
        for line in fh:  # not a snapshot: a row may show twice, keep one
            p = line.split()
            rows[(p[1], p[2])] = (addr(p[1]), addr(p[2]), p[3], int(p[4].split(":")[1], 16))
    return list(rows.values())


def _server_side(port):
    """(connections from IDLE_SRC that Ferry's side holds ESTABLISHED,
    the listener's accept queue length)."""
    held, queue = 0, 0
    for local, remote, state, rxq in _tcp_table():
        if local[1] != port:
            continue
        if state == "0A":
            queue = rxq
        elif state == "01" and remote[0] == IDLE_SRC:
            held += 1
    return held, queue


def _listen_backlog(port):
    """The listener's backlog (ss's Send-Q for a listening socket); 128 if
    ss is not there to say."""
    try:
        out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True,
                             text=True, timeout=10).stdout.split()
        return int(out[2])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return 128


def _open_idle(f, n, deadline_s=120.0):
    """Open n connections from IDLE_SRC without blocking on each, in chunks
    paced so that the listener's accept queue never overflows (past it the
    kernel drops connections the client believes open, which would say
    nothing about Ferry). Half send the start of a request and stop.
    Returns (connected sockets, {failure: count})."""
    host, port = _hp(f)
    socks, failed = [], {}

    def fail(k):
        failed[k] = failed.get(k, 0) + 1

    end = time.monotonic() + deadline_s
    backlog = _listen_backlog(port)
    chunk = max(16, min(1000, backlog // 4))
    for start in range(0, n, chunk):
        while _server_side(port)[1] > backlog - 2 * chunk and time.monotonic() < end:
            time.sleep(0.01)
        pending = {}
        poller = select.epoll()
        for i in range(start, min(n, start + chunk)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind((IDLE_SRC, 0))
                s.setblocking(False)
                rc = s.connect_ex((host, port))
            except OSError as e:
                s.close()
                fail(errno.errorcode.get(e.errno, str(e.errno)))
                continue
            if rc not in (0, errno.EINPROGRESS):
                fail(errno.errorcode.get(rc, str(rc)))
                s.close()
                continue
            pending[s.fileno()] = (s, i)
            poller.register(s.fileno(), select.EPOLLOUT)
        while pending and time.monotonic() < end:
            for fd, _ in poller.poll(0.5):
                s, i = pending.pop(fd)
                poller.unregister(fd)
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(errno.errorcode.get(err, str(err)))
                    s.close()
                    continue
                if i % 2:
                    try:
                        s.send(b"POST /v1/events HTTP/1.1\r\nHost: ferry\r\n")
                    except OSError:
                        pass
                socks.append(s)
        for s, _ in pending.values():
            fail("connect_timeout")
            s.close()
        poller.close()
    return socks, failed


def _closed_ones(socks):
    """The sockets the server has closed (EOF or reset)."""
    out = []
    poller = select.epoll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN | select.EPOLLRDHUP)
    for fd, ev in poller.poll(0, len(by_fd) + 1):
        s = by_fd[fd]
        try:
            if ev & (select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR) or not s.recv(1):
                out.append(s)
        except OSError:
            out.append(s)
    poller.close()
    return out


def _good_posts(f, n, out):
    lat = []
    ids = []
    for _ in range(n):
        ev = make_event(id=uid("good"))
        t0 = time.monotonic()
        r = post_structured(f.events_url, ev)
        lat.append(time.monotonic() - t0)
        assert r.status == 202, f"a well-behaved client got {r}"
        ids.append(ev["id"])
    out.wait_ids(ids, timeout=scaled(30))
    return lat


@pytest.mark.parametrize("mode", ["held", "refused"])
def test_ten_thousand_idle_connections(ferry, rel, mode):
    """10,000 connections opened and left idle (half with a half-sent
    request). "held": max_connections is above them, so Ferry holds them
    all; "refused": max_connections_per_ip 500 refuses all but 500 of the
    attacker's at once. Either way the well-behaved client (another
    address) is served within the bound and memory stays bounded."""
    n = rel.int("FERRY_REL_CONNECTIONS", 10000)
    lat_bound = rel.int("FERRY_REL_LATENCY_MS", 2000) / 1000.0
    rss_bound = rel.int("FERRY_REL_RSS_CONN_MIB", 128)
    soft, hard = _raise_nofile(2 * n + 2048)
    if soft < n + 1024:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low for {n} connections")
    per_ip = 500
    http = {"max_connections": n + 1024, "connection_timeout_s": 120, "threads": 2}
    if mode == "refused":
        http = {"max_connections": 4096, "max_connections_per_ip": per_ip,
                "connection_timeout_s": 120, "threads": 2}
    out = Peer(name="out")
    socks = []
    try:
        f = ferry(base_config({"out": http_peer(out)}, http=http))
        base = rss_kib(f.proc.pid)["rss"]
        sampler = RssSampler(f.proc.pid, 0.1)
        t0 = time.monotonic()
        socks, failed = _open_idle(f, n)
        open_s = time.monotonic() - t0
        time.sleep(1.0)  # refusals are immediate: let them land
        closed = _closed_ones(socks)
        held, queue = _server_side(_hp(f)[1])
        phantom = len(socks) - len(closed) - held
        lat = _good_posts(f, 30, out)
        health = http_request("GET", f.url("/healthz"), timeout=10).status
        rss_held = rss_kib(f.proc.pid)["rss"]
        for s in socks:
            s.close()
        socks = []
        # Afterwards: still serving, and the slots come back.
        wait_for(lambda: post_structured(f.events_url, make_event()).status == 202, 20)
        peak = max(sampler.stop(), rss_kib(f.proc.pid)["hwm"])
        result = {
            "mode": mode, "connections_attempted": n, "connected": len(closed) + held,
            "connect_failures": failed, "held": held, "refused": len(closed),
            "dropped_by_kernel": phantom, "accept_queue": queue,
            "open_seconds": round(open_s, 1), "max_connections": http["max_connections"],
            "max_connections_per_ip": http.get("max_connections_per_ip", 0),
            "good_requests": len(lat), "good_latency_max_ms": round(max(lat) * 1000, 1),
            "good_latency_p50_ms": round(_pct(lat, 0.5) * 1000, 1),
            "latency_bound_ms": lat_bound * 1000, "rss_base_kib": base,
            "rss_with_connections_kib": rss_held, "rss_peak_kib": peak,
            "rss_bound_mib": rss_bound}
        rel.record(f"connections_{mode}", result)
        assert health == 200
        assert max(lat) < scaled(lat_bound), \
            f"a well-behaved request took {max(lat):.2f}s with {held} idle connections held"
        assert peak < rss_bound * 1024, \
            f"Ferry's RSS reached {peak / 1024:.1f} MiB (bound {rss_bound} MiB)"
        assert phantom == 0 and not failed, \
            f"{phantom} connections the client thinks open are not on Ferry's side, " \
            f"failures {failed}: the test's pacing did not work, so it measured nothing"
        assert len(closed) + held == n
        if mode == "held":
            assert held >= n - 10, f"only {held} of {n} connections held: {result}"
        else:
            assert held <= per_ip, f"{held} connections from one address held (limit {per_ip})"
            assert len(closed) >= n - per_ip, result
    finally:
        for s in socks:
            s.close()
        out.stop()
