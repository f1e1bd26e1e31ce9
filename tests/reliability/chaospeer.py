"""A chaos peer: an HTTP(S) server on 127.0.0.1 that answers each request
(and, over TLS, each connection) with a fault chosen from a seeded random
schedule, and logs every attempt with monotonic timestamps so that a test
can check Ferry's retry delays, breaker and ordering from the outside.

Behaviours per request (HTTP):
  ok          200, empty body
  e500, e503  500 / 503, no Retry-After
  ra429       429 with Retry-After: N (N from the schedule, seconds)
  ra503       503 with Retry-After: N
  hang        read the request, answer nothing until the client hangs up
              (Ferry's timeout_ms); never longer than hang_max
  reset       read the request, then close with SO_LINGER 0 (a TCP RST)
  slow_ok     200 whose body trickles in well within the client's timeout
  slow_fail   200 whose body trickles past the client's timeout
  garbage     a reply that is not HTTP at all (no status line), then close
Behaviours per connection (TLS listener only, chosen at accept):
  tls_ok         the handshake uses the certificate Ferry trusts; the
                 request then gets a per-request behaviour
  tls_untrusted  the handshake uses a certificate from another CA
  tls_plain      plain TCP garbage instead of a TLS handshake
  tls_reset      accept, then reset before the handshake

Every response carries "Connection: close" and the peer closes each
connection after one request. This is deliberate: curl transparently
re-sends a request whose *reused* connection died before any answer, so
with keep-alive one of Ferry's attempts could reach the peer twice and the
peer could no longer number attempts exactly.

Timestamps (time.monotonic()) of each Attempt, chosen so that checks are
sound rather than merely plausible:
  t_accept  the connection was accepted (Ferry started this attempt before)
  t_arrival when the kernel received the request's first bytes
            (SO_TIMESTAMPNS; over TLS, TCP_INFO's last receive). It does
            not wait for the accepting thread, but it can read a few ms
            early (loopback TCP timestamps are not exact to the ms).
            Attempts are *ordered* by t_accept: one thread accepts, in the
            kernel's order.
  t_req     the request was fully read
  end_lo    a lower estimate of when Ferry saw the attempt end: taken just
            before the last bytes were written (Ferry cannot finish before
            it reads them); for hang/slow_fail, when the kernel last took an
            ACK from Ferry (TCP_INFO; its FIN carries one), less a jiffy
  end_hi    an upper estimate: after the last write and the close; for
            hang/slow_fail, when the hang-up was noticed

So for attempts a, b of one delivery, b.t_accept - a.end_lo is at least
Ferry's real gap (use it for lower bounds: Ferry connected before we
accepted), and b.t_start - a.end_hi, with t_start = min(t_accept,
t_arrival), is at most the real gap plus the time to connect and send (use
it for upper bounds: a late accepting thread cannot stretch it).
"""

from __future__ import annotations

import collections
import itertools
import json
import random
import select
import socket
import ssl
import struct
import threading
import time
import urllib.parse

HTTP_BEHAVIOURS = ("ok", "e500", "e503", "ra429", "ra503", "hang", "reset",
                   "slow_ok", "slow_fail", "garbage")
TLS_BEHAVIOURS = ("tls_ok", "tls_untrusted", "tls_plain", "tls_reset")
# Outcomes Ferry must treat as success (when nothing else goes wrong).
SUCCESS_BEHAVIOURS = ("ok", "slow_ok")

# Linux's SO_TIMESTAMPNS (also the SCM_ type of its ancillary data); Python
# 3.11's socket module does not name it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)

REASONS = {200: "OK", 429: "Too Many Requests", 500: "Internal Server Error",
           503: "Service Unavailable"}


class Schedule:
    """A seeded sequence of behaviours: the k-th request (in arrival order)
    gets the k-th draw. Which event meets which fault depends on timing,
    but the sequence of faults is fixed by the seed.

    weights: {behaviour: weight}; tls_weights likewise for connections
    (TLS listeners only); retry_after: choices of Retry-After seconds.
    """

    def __init__(self, seed: int, weights: dict, tls_weights: dict | None = None,
                 retry_after=(0, 1, 2)):
        for b in weights:
            assert b in HTTP_BEHAVIOURS, f"unknown behaviour {b}"
        for b in tls_weights or {}:
            assert b in TLS_BEHAVIOURS, f"unknown TLS behaviour {b}"
        self.seed = seed
        self._rng = random.Random(seed)
        self._tls_rng = random.Random(seed * 7919 + 1)
        self._names = list(weights)
        self._weights = [weights[k] for k in self._names]
        self._tls_names = list(tls_weights or {"tls_ok": 1})
        self._tls_weights = [(tls_weights or {"tls_ok": 1})[k] for k in self._tls_names]
        self._ra = tuple(retry_after)
        self._lock = threading.Lock()
        self.forced = collections.deque()  # (behaviour, retry_after) served first

    def next(self):
        """(behaviour, retry_after seconds or None) for the next request."""
        with self._lock:
            if self.forced:
                return self.forced.popleft()
            b = self._rng.choices(self._names, self._weights)[0]
            ra = self._rng.choice(self._ra) if b in ("ra429", "ra503") else None
            return b, ra

    def next_conn(self) -> str:
        with self._lock:
            return self._tls_rng.choices(self._tls_names, self._tls_weights)[0]


class Attempt:
    """One attempt as the peer saw it (see the module doc for the times)."""

    __slots__ = ("conn", "kind", "tls", "event_id", "pkey", "tag", "t_accept", "t_arrival",
                 "t_req", "end_lo", "end_hi", "status", "retry_after", "ok", "client_gone",
                 "anomaly")

    def __init__(self, conn, t_accept, tag):
        self.conn = conn
        self.kind = None
        self.tls = None
        self.event_id = None
        self.pkey = None
        self.tag = tag
        self.t_accept = t_accept
        self.t_arrival = None
        self.t_req = None
        self.end_lo = None
        self.end_hi = None
        self.status = None
        self.retry_after = None
        self.ok = False
        self.client_gone = False
        self.anomaly = None

    @property
    def t_start(self):
        """When Ferry started this attempt, at the latest: the earlier of the
        accept and the kernel's arrival time of the request (a busy test
        process may run the accepting thread late). For upper bounds only:
        t_arrival may read a little early."""
        if self.t_arrival is None:
            return self.t_accept
        return min(self.t_accept, self.t_arrival)

    @property
    def owner(self):
        """The event this attempt belongs to: its id, or the tag set by a
        sequential test for attempts that never got as far as a request."""
        return self.event_id if self.event_id is not None else self.tag

    def as_dict(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __repr__(self):
        return (f"<Attempt conn={self.conn} {self.tls or ''}{'/' if self.tls else ''}"
                f"{self.kind} ev={self.event_id} ra={self.retry_after} "
                f"accept={self.t_accept:.3f} end=[{self.end_lo},{self.end_hi}] ok={self.ok}>")


class _Closed(Exception):
    pass


class ChaosPeer:
    """The server. `tls` = (trusted_ctx, untrusted_ctx) server SSLContexts
    to serve HTTPS (see TestPKI.server_context); None for plain HTTP.

    timeout_s is the client's (Ferry's) timeout_ms: slow_ok finishes within
    slow_ok_fraction of it and slow_fail trickles for 3x it.
    """

    def __init__(self, schedule: Schedule, timeout_s: float, tls=None, name="chaos",
                 hang_max: float = 10.0, slow_ok_fraction: float = 0.2,
                 detect_slack: float = 0.05):
        self.schedule = schedule
        self.timeout_s = timeout_s
        self.tls = tls
        self.name = name
        self.hang_max = hang_max
        self.slow_ok_s = timeout_s * slow_ok_fraction
        self.slow_fail_s = max(3 * timeout_s, timeout_s + 1.0)
        self.detect_slack = detect_slack
        self.tag = None  # stamped on every new attempt (sequential tests)
        self.attempts: list[Attempt] = []
        self.lock = threading.Lock()
        self._conn_ids = itertools.count(1)
        self._conns = set()
        self._threads = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.stopping = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        # A deep backlog: a burst of new connections must not wait for SYN
        # retransmits (1 s), which would look like a late retry.
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True,
                                          name=f"chaos-{name}")
        self._acceptor.start()

    def url(self, path="/events", host="127.0.0.1"):
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{path}"

    # -- lifecycle
    def _accept_loop(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            t = time.monotonic()
            if self.stopping:
                c.close()
                return
            th = threading.Thread(target=self._serve, args=(c, t), daemon=True)
            th.start()

    def stop(self):
        self.stopping = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._acceptor.join(5)

    # -- inspection
    def snapshot(self) -> list[Attempt]:
        with self.lock:
            return list(self.attempts)

    def by_owner(self) -> dict:
        """{owner: [Attempt, ...]} in the order Ferry connected."""
        out = collections.defaultdict(list)
        for a in self.snapshot():
            out[a.owner].append(a)
        for v in out.values():
            v.sort(key=lambda a: a.t_accept)
        return out

    def delivered(self) -> set:
        return {a.event_id for a in self.snapshot() if a.ok}

    def counts(self) -> dict:
        c = collections.Counter()
        for a in self.snapshot():
            c[a.tls if a.tls and a.tls != "tls_ok" else a.kind] += 1
        return dict(c)

    # -- one connection
    def _serve(self, c: socket.socket, t_accept: float):
        a = Attempt(next(self._conn_ids), t_accept, self.tag)
        with self.lock:
            self._conns.add(c)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        record = True
        try:
            c.settimeout(self.hang_max + 5)
            if self.tls:
                s = self._tls_stage(c, a)
                if s is None:  # the attempt ended in the TLS stage
                    return
                with self.lock:
                    self._conns.discard(c)
                    self._conns.add(s)
                c = s
            head, rest = self._read_head(c, a)
            if head is None:  # connected, sent nothing, left: no attempt
                record = False
                return
            self._request(c, a, head, rest)
        except (OSError, ValueError) as e:
            a.kind = a.kind or "broken"
            a.anomaly = a.anomaly or f"{type(e).__name__}: {e}"
            t = time.monotonic()
            a.end_lo = a.end_lo or t
            a.end_hi = a.end_hi or t
        finally:
            if record:
                self._record(a)
            with self.lock:
                self.in_flight -= 1
                self._conns.discard(c)
            try:
                c.close()
            except OSError:
                pass

    def _record(self, a: Attempt):
        with self.lock:
            self.attempts.append(a)

    def _tls_stage(self, c, a: Attempt):
        """Apply the connection's TLS behaviour: the TLS socket to read the
        request from, or None when the attempt ended here."""
        trusted, untrusted = self.tls
        kind = self.schedule.next_conn()
        a.tls = kind
        a.kind = kind
        a.end_lo = time.monotonic()  # Ferry cannot decide before this
        if kind == "tls_reset":
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
            a.end_hi = time.monotonic()
            return None
        if kind == "tls_plain":
            try:
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                c.shutdown(socket.SHUT_WR)
                _wait_eof(c, 2.0)
            except OSError:
                pass
            a.end_hi = time.monotonic()
            return None
        ctx = trusted if kind == "tls_ok" else untrusted
        try:
            s = ctx.wrap_socket(c, server_side=True)
        except (ssl.SSLError, OSError) as e:
            a.end_hi = time.monotonic()
            if kind == "tls_ok":
                a.anomaly = f"handshake with the trusted certificate failed: {e}"
            return None
        if kind == "tls_untrusted":
            a.end_hi = time.monotonic()
            a.anomaly = "Ferry completed a handshake with an untrusted certificate"
            s.close()
            return None
        a.kind = None
        a.end_lo = None
        return s

    def _read_head(self, c, a: Attempt):
        """The request head and what followed it. Over plain TCP it reads
        with recvmsg and SO_TIMESTAMPNS, so a.t_arrival is when the kernel
        received the request's first bytes (to the microsecond)."""
        buf = b""
        stamped = not isinstance(c, ssl.SSLSocket)
        if stamped:
            try:
                c.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            except (OSError, AttributeError):
                stamped = False
        while b"\r\n\r\n" not in buf:
            if stamped:
                d, anc, _, _ = c.recvmsg(65536, socket.CMSG_SPACE(16))
                if d and a.t_arrival is None:
                    a.t_arrival = _stamp(anc)
            else:
                d = c.recv(65536)
            if not d:
                if buf:
                    raise ValueError(f"connection closed mid-request: {buf[:200]!r}")
                return None, b""
            buf += d
            if len(buf) > 1 << 20:
                raise ValueError("request head over 1 MiB")
        head, rest = buf.split(b"\r\n\r\n", 1)
        return head, rest

    def _request(self, c, a: Attempt, head: bytes, rest: bytes):
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        body = rest
        while len(body) < n:
            d = c.recv(65536)
            if not d:
                raise OSError("client left mid-body")
            body += d
        a.t_req = time.monotonic()
        if a.t_arrival is None:
            a.t_arrival = _arrival(c, a.t_req)
        a.event_id, a.pkey = _event_of(headers, body)
        kind, ra = self.schedule.next()
        a.kind = kind
        a.retry_after = ra
        if kind == "ok":
            self._answer(c, a, 200)
        elif kind == "e500":
            self._answer(c, a, 500, b"chaos: internal error")
        elif kind == "e503":
            self._answer(c, a, 503, b"chaos: unavailable")
        elif kind in ("ra429", "ra503"):
            self._answer(c, a, 429 if kind == "ra429" else 503, b"chaos: later",
                         [("Retry-After", str(ra))])
        elif kind == "hang":
            gone = _wait_eof(c, self.hang_max)
            t = time.monotonic()
            a.end_lo, a.end_hi = self._hangup_lo(c, t), t
            a.client_gone = gone
            if not gone:
                a.anomaly = f"client still connected after hanging {self.hang_max}s"
        elif kind == "reset":
            a.end_lo = time.monotonic()
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
            a.end_hi = time.monotonic()
        elif kind in ("slow_ok", "slow_fail"):
            self._trickle(c, a, self.slow_ok_s if kind == "slow_ok" else self.slow_fail_s)
        elif kind == "garbage":
            a.end_lo = time.monotonic()
            try:
                c.sendall(b"\x00\x01chaos garbage, not HTTP at all\r\n\r\n")
                c.shutdown(socket.SHUT_WR)
                _wait_eof(c, 2.0)
            except OSError:
                pass
            a.end_hi = time.monotonic()
        else:  # pragma: no cover
            raise AssertionError(kind)

    def _hangup_lo(self, c, noticed: float) -> float:
        """A lower estimate of when the client hung up, which we noticed at
        @noticed: the last ACK the kernel took from it (its FIN carries
        one; a reset does not, which only makes this earlier), less a
        jiffy of TCP_INFO's resolution; `detect_slack` before @noticed
        where TCP_INFO is not there."""
        try:
            info = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
            last_ack_recv_ms = struct.unpack_from("I", info, 56)[0]
        except (OSError, AttributeError, struct.error):
            return noticed - self.detect_slack
        return min(noticed, noticed - last_ack_recv_ms / 1000.0 - 0.010)

    def _answer(self, c, a: Attempt, status: int, body: bytes = b"", extra=()):
        a.status = status
        h = [f"HTTP/1.1 {status} {REASONS.get(status, 'Chaos')}",
             f"Content-Length: {len(body)}", "Content-Type: text/plain", "Connection: close"]
        h += [f"{k}: {v}" for k, v in extra]
        data = ("\r\n".join(h) + "\r\n\r\n").encode() + body
        a.end_lo = time.monotonic()
        try:
            c.sendall(data)
            a.ok = 200 <= status < 300
            _close_gracefully(c)
        except OSError:
            a.client_gone = True
        a.end_hi = time.monotonic()

    def _trickle(self, c, a: Attempt, total_s: float):
        """200 with a body of one byte per step, spread over total_s."""
        a.status = 200
        steps = max(4, int(total_s / 0.02))
        step = total_s / steps
        h = (f"HTTP/1.1 200 OK\r\nContent-Length: {steps}\r\nContent-Type: text/plain\r\n"
             f"Connection: close\r\n\r\n").encode()
        try:
            c.sendall(h)
            for i in range(steps):
                if _wait_eof(c, step):
                    t = time.monotonic()
                    a.end_lo, a.end_hi = self._hangup_lo(c, t), t
                    a.client_gone = True
                    return
                if i == steps - 1:
                    a.end_lo = time.monotonic()
                c.sendall(b"x")
            a.ok = True
            _close_gracefully(c)
        except OSError:
            t = time.monotonic()
            a.end_lo = a.end_lo or self._hangup_lo(c, t)
            a.client_gone = True
        a.end_hi = time.monotonic()
        if a.kind == "slow_fail" and a.ok:
            a.anomaly = f"client waited {total_s:.2f}s for a body (past its timeout)"


def _stamp(ancillary):
    """The SCM_TIMESTAMPNS of a recvmsg, as a time.monotonic() value."""
    for level, typ, data in ancillary:
        if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack_from("qq", data)
            return sec + nsec / 1e9 - time.time() + time.monotonic()
    return None


def _arrival(c, now: float):
    """The monotonic time the last segment of data arrived on @c, from the
    kernel (TCP_INFO tcpi_last_data_recv: ms before now, in jiffies, so a
    few ms coarse), or None where TCP_INFO is not there."""
    try:
        info = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        last_data_recv_ms = struct.unpack_from("I", info, 52)[0]
    except (OSError, AttributeError, struct.error):
        return None
    return now - last_data_recv_ms / 1000.0


def _wait_eof(c, timeout: float) -> bool:
    """Wait up to timeout for the client to hang up (EOF or reset);
    True if it did. Discards anything else it sends."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if isinstance(c, ssl.SSLSocket) and c.pending():
            r = [c]
        else:
            r, _, _ = select.select([c], [], [], left)
        if not r:
            return False
        try:
            d = c.recv(4096)
        except ssl.SSLWantReadError:
            continue
        except (OSError, ssl.SSLError):
            return True
        if not d:
            return True


def _close_gracefully(c):
    """Half-close and wait (briefly) for the client to close its side, so
    the answer is never cut short by a reset."""
    try:
        # On an SSLSocket this drops the TLS layer without close_notify;
        # the answer is complete by its Content-Length either way.
        c.shutdown(socket.SHUT_WR)
        _wait_eof(c, 1.0)
    except (OSError, ssl.SSLError, ValueError):
        pass


def _event_of(headers: dict, body: bytes):
    """(id, partitionkey) of the delivered event (binary or structured)."""
    if "ce-id" in headers:
        return (urllib.parse.unquote(headers["ce-id"]),
                urllib.parse.unquote(headers["ce-partitionkey"])
                if "ce-partitionkey" in headers else None)
    try:
        ev = json.loads(body)
        return ev.get("id"), ev.get("partitionkey")
    except ValueError:
        return None, None


# ---------------------------------------------------------------------------
# The policy bounds


class Policy:
    """A peer's retry policy as Ferry's README states it."""

    def __init__(self, initial_delay_ms, max_delay_ms, multiplier, jitter):
        self.initial = initial_delay_ms
        self.max = max_delay_ms
        self.mult = multiplier
        self.jitter = jitter

    def config(self, **extra) -> dict:
        d = {"initial_delay_ms": self.initial, "max_delay_ms": self.max,
             "multiplier": self.mult, "jitter": self.jitter}
        d.update(extra)
        return d

    def cap_ms(self, n: int) -> float:
        """min(max_delay_ms, initial_delay_ms * multiplier^(n-1)) after the
        n-th failed attempt."""
        return min(self.max, self.initial * self.mult ** (n - 1))

    def bounds_ms(self, n: int, retry_after_s) -> tuple:
        """(lo, hi) of the wait after the n-th failed attempt: the jittered
        backoff, raised to Retry-After when given, capped by max_delay_ms."""
        cap = self.cap_ms(n)
        lo = {"full": 0.0, "equal": cap / 2, "none": cap}[self.jitter]
        hi = cap
        if retry_after_s is not None:
            ra = retry_after_s * 1000.0
            lo, hi = max(lo, ra), max(hi, ra)
        return min(lo, self.max), min(hi, self.max)


def check_gaps(attempts: list, policy: Policy, tol_lo: float, tol_hi: float,
               breaker_open_after=None, open_s: float = 0.0, starved=None):
    """Check every retry gap of one delivery's attempts (in order; all but
    the last failed). Returns (violations, stats) where stats has the
    number of gaps checked and the worst margins seen.

    breaker_open_after(i) -> True when the breaker (re)opened at attempt
    i's end: then the next attempt may not start before open_s, and may
    start as late as max(backoff bound, open_s).

    starved(t1, t2) -> seconds Ferry's threads spent waiting for a CPU
    between two instants (rellib.RunQueueSampler): added to the upper
    bound's tolerance, since no scheduler can be on time without a CPU.
    stats["starved_credit_ms"] is the most credit any gap needed.
    """
    bad, checked = [], 0
    worst_hi = -1e9  # largest (measured gap - upper bound), seconds
    worst_lo = 1e9   # smallest (measured gap - lower bound), seconds
    worst = None     # the gap closest to (or past) its upper bound
    closest = None   # the gap closest to (or below) its lower bound
    credit = 0.0     # the most starvation credit a gap needed to pass
    for i in range(len(attempts) - 1):
        a, b = attempts[i], attempts[i + 1]
        n = i + 1
        lo, hi = policy.bounds_ms(n, a.retry_after)
        lo, hi = lo / 1000.0, hi / 1000.0
        if breaker_open_after and breaker_open_after(i):
            lo, hi = max(lo, open_s), max(hi, open_s)
        g_lo = b.t_accept - a.end_lo
        g_hi = b.t_start - a.end_hi
        checked += 1
        if g_hi - hi > worst_hi:
            worst = {"attempt": n, "after": a.kind, "retry_after": a.retry_after,
                     "gap_ms": round(g_hi * 1000, 1), "upper_ms": round(hi * 1000, 1),
                     "arrival_vs_accept_ms": None if b.t_arrival is None else
                     round((b.t_arrival - b.t_accept) * 1000, 1)}
        worst_hi = max(worst_hi, g_hi - hi)
        if g_lo - lo < worst_lo:
            closest = {"attempt": n, "after": a.kind, "retry_after": a.retry_after,
                       "gap_ms": round(g_lo * 1000, 1), "lower_ms": round(lo * 1000, 1)}
        worst_lo = min(worst_lo, g_lo - lo)
        if g_lo < lo - tol_lo:
            bad.append(f"attempt {n + 1} came {g_lo * 1000:.0f} ms after attempt {n} "
                       f"({a.kind}, Retry-After {a.retry_after}) ended; the policy allows "
                       f"no less than {lo * 1000:.0f} ms")
        over = g_hi - (hi + tol_hi)
        s = 0.0
        if over > 0 and starved:
            s = starved(a.end_lo, b.t_start)
            if over <= s:
                credit = max(credit, over)
                over = 0
        if over > 0:
            bad.append(f"attempt {n + 1} came {g_hi * 1000:.0f} ms after attempt {n} "
                       f"({a.kind}, Retry-After {a.retry_after}) ended; the policy allows "
                       f"at most {hi * 1000:.0f} ms (+{tol_hi * 1000:.0f} ms tolerance, "
                       f"+{s * 1000:.0f} ms Ferry's threads waited for a CPU)")
    return bad, {"gaps": checked, "worst_over_upper_ms": worst_hi * 1000,
                 "worst_over_lower_ms": worst_lo * 1000, "worst": worst, "closest": closest,
                 "starved_credit_ms": credit * 1000}
