"""Black-box test helpers for Ferry.

Everything here talks to the real `ferry` binary over HTTP, the command line
and (read-only) its SQLite spool.  Python 3 standard library only.

Main pieces:
  * Peer       - a loopback HTTP server that records requests and answers
                 from a script (status, headers, delay), stoppable and
                 restartable on the same port.
  * Ferry      - one `ferry serve` process with its own config, spool, ports
                 and captured stdout/stderr; stop/kill -9/restart.
  * helpers    - wait_for, uid, make_event, post_structured/binary/batch,
                 http_request, parse_metrics/metric_value, run_cli.
  * TLS        - TestPKI (a throwaway CA issuing server and client
                 certificates with the openssl CLI) and TlsPeer (a Peer
                 over HTTPS); http_request takes an SSLContext for https
                 URLs, and a Ferry with "tls" uses https URLs and its
                 ssl_context (set it before start()).
"""

from __future__ import annotations

import base64
import collections
import http.client
import http.server
import itertools
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Multiply every bounded wait by this (e.g. 3 under AddressSanitizer).
TIMEOUT_SCALE = float(os.environ.get("FERRY_TEST_TIMEOUT_SCALE", "1"))


def ferry_bin() -> str:
    b = os.environ.get("FERRY_BIN")
    if b:
        return str(Path(b).resolve())
    return str(REPO_ROOT / "build" / "ferry")


def scaled(t: float) -> float:
    return t * TIMEOUT_SCALE


# ---------------------------------------------------------------------------
# small utilities

_uid_counter = itertools.count()


def uid(prefix: str = "ev") -> str:
    """A unique event id (unique across tests and processes)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}-{next(_uid_counter)}"


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out to outgoing connections."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def free_port() -> int:
    """A free loopback port, below the kernel's ephemeral range when it can
    be: tests stop servers (Ferry, peers) and start them again on the same
    port, and meanwhile an outgoing connection of any process could be
    given an ephemeral port, which made the restart fail with EADDRINUSE."""
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(200 if low > 12000 else 0):
        port = rng.randint(10000, low - 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def wait_for(pred, timeout: float = 10.0, interval: float = 0.05, msg=None):
    """Poll pred() until it returns a truthy value; return it.

    Raises AssertionError with msg (a string or a callable returning one)
    when the (scaled) timeout passes.
    """
    deadline = time.monotonic() + scaled(timeout)
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            text = msg() if callable(msg) else msg
            raise AssertionError(
                f"timed out after {scaled(timeout):.1f}s: {text or 'condition not met'}")
        time.sleep(interval)


def hdr_encode(value: str) -> str:
    """Percent-encode a header value per the CloudEvents HTTP binding:
    space, '"', '%' and everything outside printable ASCII."""
    out = []
    for b in value.encode("utf-8"):
        if b <= 0x20 or b >= 0x7F or b in (0x22, 0x25):
            out.append("%%%02X" % b)
        else:
            out.append(chr(b))
    return "".join(out)


def make_event(**attrs) -> dict:
    ev = {
        "specversion": "1.0",
        "id": uid(),
        "source": "/blackbox/test",
        "type": "com.example.test",
    }
    ev.update(attrs)
    return ev


# ---------------------------------------------------------------------------
# HTTP client


class Resp:
    def __init__(self, status: int, headers, body: bytes):
        self.status = status
        self.headers = headers  # http.client.HTTPMessage (case-insensitive)
        self.body = body

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except Exception as e:  # noqa: BLE001
            raise AssertionError(
                f"response body is not JSON ({e}): status {self.status}, body {self.body[:500]!r}")

    def __repr__(self):
        return f"<Resp {self.status} {self.body[:300]!r}>"


def http_request(method: str, url: str, body: bytes | str | None = None,
                 headers: dict | list | None = None, timeout: float = 15.0,
                 context=None) -> Resp:
    """One HTTP request with http.client (no automatic headers beyond Host
    and Content-Length, no exception on 4xx/5xx).  https:// URLs use
    `context` (an ssl.SSLContext, e.g. TestPKI.client_context())."""
    u = urllib.parse.urlsplit(url)
    if u.scheme == "https":
        conn = http.client.HTTPSConnection(u.hostname, u.port, timeout=scaled(timeout),
                                           context=context)
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=scaled(timeout))
    path = u.path or "/"
    if u.query:
        path += "?" + u.query
    if isinstance(body, str):
        body = body.encode("utf-8")
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        items = headers.items() if isinstance(headers, dict) else (headers or [])
        for k, v in items:
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, r.headers, data)
    finally:
        conn.close()


def post_structured(url: str, event: dict | str | bytes, headers: dict | None = None,
                    content_type: str = "application/cloudevents+json",
                    context=None) -> Resp:
    body = event if isinstance(event, (str, bytes)) else json.dumps(event)
    h = {"Content-Type": content_type}
    h.update(headers or {})
    return http_request("POST", url, body, h, context=context)


def post_batch(url: str, events: list | str, headers: dict | None = None) -> Resp:
    body = events if isinstance(events, str) else json.dumps(events)
    h = {"Content-Type": "application/cloudevents-batch+json"}
    h.update(headers or {})
    return http_request("POST", url, body, h)


def post_binary(url: str, attrs: dict, data: bytes | str = b"",
                content_type: str | None = None, headers: dict | None = None,
                encode: bool = True) -> Resp:
    """Binary mode: every attribute as a ce- header (percent-encoded unless
    encode=False), body = data, Content-Type = content_type."""
    h = []
    for k, v in attrs.items():
        v = str(v)
        h.append((f"ce-{k}", hdr_encode(v) if encode else v))
    if content_type is not None:
        h.append(("Content-Type", content_type))
    for k, v in (headers or {}).items():
        h.append((k, v))
    return http_request("POST", url, data, h)


# ---------------------------------------------------------------------------
# Prometheus text format


def parse_metrics(text: str):
    """[(name, {label: value}, float)] from the exposition text."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        labels = {}
        if "{" in line:
            name, rest = line.split("{", 1)
            lab, val = rest.rsplit("}", 1)
            i = 0
            while i < len(lab):
                eq = lab.index("=", i)
                key = lab[i:eq].strip().lstrip(",").strip()
                assert lab[eq + 1] == '"', f"bad metrics line {line!r}"
                j = eq + 2
                buf = []
                while lab[j] != '"':
                    if lab[j] == "\\":
                        j += 1
                        buf.append({"n": "\n"}.get(lab[j], lab[j]))
                    else:
                        buf.append(lab[j])
                    j += 1
                labels[key] = "".join(buf)
                i = j + 1
                while i < len(lab) and lab[i] in ", ":
                    i += 1
            val = val.strip()
        else:
            name, val = line.split(None, 1)
        val = val.split()[0]  # drop an optional timestamp
        try:
            v = float(val)
        except ValueError:
            continue
        out.append((name.strip(), labels, v))
    return out


def metric_value(text: str, name: str, **labels):
    """The value of the first sample `name` whose labels include `labels`,
    or None."""
    for n, lab, v in parse_metrics(text):
        if n == name and all(lab.get(k) == str(val) for k, val in labels.items()):
            return v
    return None


# ---------------------------------------------------------------------------
# Peer: a scripted, recording HTTP server


class Reply:
    def __init__(self, status: int = 200, headers: dict | None = None,
                 delay: float = 0.0, body: bytes = b""):
        self.status = status
        self.headers = headers or {}
        self.delay = delay
        self.body = body


class Request:
    """One request the Peer received."""

    def __init__(self, method, path, headers_list, body, t):
        self.method = method
        self.path = path
        self.headers_list = headers_list  # [(name, value)] as received
        self.headers = {k.lower(): v for k, v in headers_list}
        self.body = body
        self.time = t  # time.monotonic() when the request was complete
        self.status = None  # status we answered (set before the delay)
        self.answered = False  # True once the response was written
        self.client_gone = False  # the client hung up before we answered

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def is_structured(self) -> bool:
        return self.content_type.split(";")[0].strip().lower() == "application/cloudevents+json"

    def event(self) -> dict:
        """The CloudEvent carried, as a dict.  Binary mode: attributes from
        the percent-decoded ce- headers, "data" = the raw body bytes."""
        if self.is_structured:
            return json.loads(self.body.decode("utf-8"))
        ev = {}
        for k, v in self.headers_list:
            kl = k.lower()
            if kl.startswith("ce-"):
                raw = v.encode("latin-1")
                ev[kl[3:]] = urllib.parse.unquote_to_bytes(raw).decode("utf-8")
        if self.content_type:
            ev.setdefault("datacontenttype", self.content_type)
        ev["data"] = self.body
        return ev

    @property
    def event_id(self):
        try:
            return self.event().get("id")
        except Exception:  # noqa: BLE001
            return None

    def __repr__(self):
        return (f"<Request {self.method} {self.path} status={self.status} "
                f"headers={self.headers} body={self.body[:200]!r}>")


def _closed_by_client(sock) -> bool:
    """True when the client has closed its side (EOF or reset) while we
    were delaying the answer."""
    import select
    try:
        r, _, _ = select.select([sock], [], [], 0)
        if not r:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class Peer:
    """Loopback HTTP server on 127.0.0.1 that records every request and
    answers from a script: scripted replies are consumed in order, then the
    default reply is used.  stop()/start() keep the port."""

    def __init__(self, status: int = 200, name: str = "peer"):
        self.name = name
        self.default = Reply(status)
        self.script = collections.deque()
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.port = None
        self.server = None
        self.thread = None
        self._conns = set()
        self.up = False
        self.start()

    # -- script
    def push(self, status: int = 200, headers: dict | None = None, delay: float = 0.0,
             body: bytes = b"", times: int = 1):
        with self.lock:
            for _ in range(times):
                self.script.append(Reply(status, headers, delay, body))

    def set_default(self, status: int = 200, headers: dict | None = None,
                    delay: float = 0.0, body: bytes = b""):
        with self.lock:
            self.default = Reply(status, headers, delay, body)

    def _next_reply(self) -> Reply:
        with self.lock:
            return self.script.popleft() if self.script else self.default

    def reply_for(self, req: "Request") -> Reply:
        """The reply to req: the script, then the default.  Subclasses may
        answer by content instead (e.g. fail one event id)."""
        return self._next_reply()

    # -- lifecycle
    def url(self, path: str = "/events") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self):
        peer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def setup(self):
                super().setup()
                with peer.lock:
                    peer._conns.add(self.connection)

            def finish(self):
                try:
                    super().finish()
                finally:
                    with peer.lock:
                        peer._conns.discard(self.connection)

            def _read_body(self) -> bytes:
                te = self.headers.get("Transfer-Encoding", "")
                if "chunked" in te.lower():
                    chunks = []
                    while True:
                        line = self.rfile.readline()
                        n = int(line.split(b";")[0].strip() or b"0", 16)
                        if n == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        chunks.append(self.rfile.read(n))
                        self.rfile.readline()
                    return b"".join(chunks)
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _handle(self):
                body = self._read_body()
                if not peer.up:
                    self.close_connection = True
                    return
                req = Request(self.command, self.path, list(self.headers.items()),
                              body, time.monotonic())
                reply = peer.reply_for(req)
                req.status = reply.status
                with peer.lock:
                    peer.requests.append(req)
                if reply.delay:
                    time.sleep(reply.delay)
                    if _closed_by_client(self.connection):
                        req.client_gone = True
                        self.close_connection = True
                        return
                if not peer.up:
                    self.close_connection = True
                    return
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, str(v))
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    if reply.body:
                        self.wfile.write(reply.body)
                    self.wfile.flush()
                    req.answered = True
                except OSError:
                    self.close_connection = True

            do_POST = do_PUT = do_GET = do_DELETE = do_PATCH = _handle

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", self.port or free_port()),
                                              Handler)
        srv.daemon_threads = True
        self._wrap_server(srv)
        self.server = srv
        self.port = srv.server_address[1]
        self.up = True
        self.thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                       name=f"peer-{self.name}", daemon=True)
        self.thread.start()

    def _wrap_server(self, srv):
        """Hook for subclasses (TlsPeer) to wrap the listening socket."""

    def stop(self):
        """Close the listener and every open connection (peer down)."""
        if not self.server:
            return
        self.up = False
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server = None
        self.thread.join(5)

    # -- inspection
    def snapshot(self) -> list[Request]:
        with self.lock:
            return list(self.requests)

    def requests_for(self, event_id: str) -> list[Request]:
        return [r for r in self.snapshot() if r.event_id == event_id]

    def ids(self) -> list:
        """Event ids of all requests (every attempt), in arrival order."""
        return [r.event_id for r in self.snapshot()]

    def delivered_ids(self) -> list:
        """Event ids of requests answered 2xx (successful deliveries)."""
        return [r.event_id for r in self.snapshot() if r.status and 200 <= r.status < 300]

    def wait_requests(self, n: int, timeout: float = 10.0) -> list[Request]:
        wait_for(lambda: len(self.snapshot()) >= n, timeout,
                 msg=lambda: f"peer {self.name}: expected >= {n} requests, got "
                             f"{len(self.snapshot())}: {self.snapshot()}")
        return self.snapshot()

    def wait_ids(self, ids, timeout: float = 10.0):
        want = set(ids)
        wait_for(lambda: want <= set(self.delivered_ids()), timeout,
                 msg=lambda: f"peer {self.name}: missing ids "
                             f"{sorted(want - set(self.delivered_ids()))[:20]} "
                             f"(got {len(self.snapshot())} requests)")

    def __repr__(self):
        return f"<Peer {self.name} :{self.port}>"


def http_peer(peer: Peer, **kw) -> dict:
    """Peer config entry with test-friendly defaults."""
    cfg = {"url": peer.url(), "timeout_ms": 5000,
           "breaker": {"failure_threshold": 5, "open_ms": 200}}
    cfg.update(kw)
    return cfg


def base_config(peers: dict, routes: list | None = None, **top) -> dict:
    cfg = {
        "log": {"level": "debug", "format": "json"},
        "retry": {"max_attempts": 20, "initial_delay_ms": 50, "max_delay_ms": 500,
                  "multiplier": 2.0, "jitter": "none", "max_age_s": 3600},
        "peers": peers,
        "routes": routes if routes is not None else [{"name": "all", "to": list(peers)}],
    }
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


# ---------------------------------------------------------------------------
# Ferry process


def clean_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    env.setdefault("ASAN_OPTIONS", "")
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


class Ferry:
    """One `ferry serve` process.

    config: a dict written to <dir>/ferry.json (listen/admin ports and the
    spool dir are filled in unless given), or None for no config file.
    """

    _seq = itertools.count(1)

    def __init__(self, workdir: Path, config: dict | None, env: dict | None = None,
                 args: list | None = None, cwd: Path | None = None, name: str | None = None,
                 log_level: str | None = "debug"):
        self.n = next(Ferry._seq)
        self.name = name or f"ferry{self.n}"
        self.dir = Path(workdir) / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.extra_env = env or {}
        self.extra_args = args or []
        self.cwd = Path(cwd) if cwd else self.dir
        self.log_level = log_level
        self.proc = None
        self.killed = False
        self.runs = 0
        self.returncodes = []
        self.config_path = None
        if config is not None:
            config.setdefault("listen", f"127.0.0.1:{free_port()}")
            config.setdefault("admin", {})
            config["admin"].setdefault("listen", f"127.0.0.1:{free_port()}")
            config.setdefault("spool", {})
            config["spool"].setdefault("dir", str(self.dir / "spool"))
            self.config_path = self.dir / "ferry.json"
            self.config_path.write_text(json.dumps(config, indent=2))
        self.listen = self.extra_env.get("FERRY_LISTEN") or (config or {}).get("listen") \
            or "127.0.0.1:8080"
        # TLS listeners: https URLs; set ssl_context (trusting the test CA)
        # before start() so wait_ready() and admin() can talk to them.
        self.ssl_context = None
        self.scheme = "https" if (config or {}).get("tls") else "http"
        self.admin_scheme = "https" if (config or {}).get("admin", {}).get("tls") else "http"

    # -- paths / urls
    @property
    def spool_dir(self) -> Path:
        d = self.extra_env.get("FERRY_SPOOL_DIR") or (self.config or {}).get("spool", {}).get("dir") \
            or "./ferry-data"
        p = Path(d)
        return p if p.is_absolute() else self.cwd / p

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.listen}"

    @property
    def events_url(self) -> str:
        return self.base_url + "/v1/events"

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def admin_base(self) -> str:
        """Base URL of the admin listener (admin.listen)."""
        listen = self.extra_env.get("FERRY_ADMIN_LISTEN") \
            or (self.config or {}).get("admin", {}).get("listen") or "127.0.0.1:8081"
        return f"{self.admin_scheme}://{listen}"

    def admin(self, method: str, path: str, token: str | None = None,
              timeout: float = 15.0) -> Resp:
        """One request to the admin listener (POST with an empty body)."""
        h = {"Authorization": f"Bearer {token}"} if token else {}
        body = b"" if method == "POST" else None
        return http_request(method, self.admin_base + path, body, h, timeout=timeout,
                            context=self.ssl_context)

    def dead_letters(self, token: str | None = None, **query) -> list:
        """Every dead letter (following the cursors), as dicts."""
        items, after = [], None
        while True:
            q = dict(query)
            if after:
                q["after"] = after
            path = "/v1/dead-letters" + ("?" + urllib.parse.urlencode(q) if q else "")
            r = self.admin("GET", path, token)
            assert r.status == 200, f"GET {path} -> {r.status} {r.body[:300]!r}"
            page = r.json()
            items += page["items"]
            after = page["next"]
            if not after:
                return items

    def wait_dead_letters(self, n: int, timeout: float = 10.0, token: str | None = None,
                          **query) -> list:
        """Wait until at least n dead letters (matching query) exist."""
        return wait_for(lambda: (lambda d: d if len(d) >= n else None)(
                            self.dead_letters(token, **query)), timeout,
                        msg=lambda: f"{self.name}: expected >= {n} dead letters, got "
                                    f"{self.dead_letters(token, **query)}")

    @property
    def stdout_path(self) -> Path:
        return self.dir / f"stdout.{self.runs}.log"

    @property
    def stderr_path(self) -> Path:
        return self.dir / f"stderr.{self.runs}.log"

    # -- lifecycle
    def command(self) -> list:
        cmd = [ferry_bin(), "serve"]
        if self.config_path:
            cmd += ["-c", str(self.config_path)]
        if self.log_level:
            cmd += ["--log-level", self.log_level]
        return cmd + self.extra_args

    def start(self, wait_ready: bool = True, timeout: float = 10.0):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.runs += 1
        self.killed = False
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(self.command(), stdout=self._out, stderr=self._err,
                                     stdin=subprocess.DEVNULL, cwd=str(self.cwd),
                                     env=clean_env(self.extra_env))
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 10.0):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.proc.returncode} before it was ready;"
                    f" stderr tail:\n{self.stderr_tail()}")
            try:
                return http_request("GET", self.url("/readyz"), timeout=2,
                                    context=self.ssl_context).status == 200
            except OSError:
                return False
        wait_for(ready, timeout, interval=0.05,
                 msg=lambda: f"{self.name}: GET /readyz never answered 200; stderr tail:\n"
                             f"{self.stderr_tail()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _closed(self):
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f and not f.closed:
                f.close()

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send sig and wait (bounded) for exit; returns the exit code."""
        if not self.running():
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            self.killed = True
            self._closed()
            raise AssertionError(
                f"{self.name} did not exit within {scaled(timeout):.0f}s of signal {sig}; "
                f"stderr tail:\n{self.stderr_tail()}")
        self.returncodes.append(rc)
        self._closed()
        return rc

    def kill9(self):
        self.killed = True
        self.proc.kill()
        self.proc.wait(10)
        self.returncodes.append(self.proc.returncode)
        self._closed()

    def restart(self, wait_ready: bool = True):
        """Start again with the same config, ports and spool."""
        if self.running():
            rc = self.stop()
            assert rc == 0, f"{self.name} exited {rc} on SIGTERM"
        return self.start(wait_ready=wait_ready)

    # -- inspection
    def stderr_tail(self, n: int = 40, run: int | None = None) -> str:
        p = self.dir / f"stderr.{run or self.runs}.log"
        try:
            lines = p.read_text(errors="replace").splitlines()
        except OSError:
            return "(no stderr)"
        return "\n".join(lines[-n:])

    def stdout_text(self, run: int | None = None) -> str:
        p = self.dir / f"stdout.{run or self.runs}.log"
        try:
            return p.read_text(errors="replace")
        except OSError:
            return ""

    def metrics(self) -> str:
        r = http_request("GET", self.url("/metrics"), context=self.ssl_context)
        assert r.status == 200, f"GET /metrics -> {r.status} {r.body[:200]!r}"
        return r.body.decode("utf-8")

    def db(self) -> sqlite3.Connection:
        """Read-only connection to <spool dir>/spool.db."""
        path = self.spool_dir / "spool.db"
        assert path.exists(), f"no spool database at {path}"
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        conn.row_factory = sqlite3.Row
        return conn

    def query(self, sql: str, args=()) -> list:
        conn = self.db()
        try:
            return [dict(r) for r in conn.execute(sql, args).fetchall()]
        finally:
            conn.close()

    # -- convenience
    def post(self, event: dict, **kw) -> Resp:
        kw.setdefault("context", self.ssl_context)
        return post_structured(self.events_url, event, **kw)

    def post_ok(self, event: dict) -> Resp:
        r = self.post(event)
        assert r.status == 202, f"POST of a valid event -> {r.status} {r.body!r}"
        return r

    def __repr__(self):
        return f"<Ferry {self.name} {self.listen}>"


# ---------------------------------------------------------------------------
# CLI


def run_cli(args: list, env: dict | None = None, cwd=None, timeout: float = 20.0,
            input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([ferry_bin()] + [str(a) for a in args], capture_output=True,
                          env=clean_env(env), cwd=cwd, timeout=scaled(timeout),
                          input=input)


def cli_output(cp: subprocess.CompletedProcess) -> str:
    return (cp.stdout or b"").decode(errors="replace") + (cp.stderr or b"").decode(errors="replace")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---------------------------------------------------------------------------
# TLS: a throwaway PKI made with the openssl CLI, and an HTTPS peer


def _openssl(*args, cwd):
    cp = subprocess.run(["openssl", *args], cwd=str(cwd), capture_output=True, timeout=60)
    if cp.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed: "
                             f"{cp.stderr.decode(errors='replace')}")


class TestPKI:
    """A test CA (EC P-256, valid one day) in `dir`, issuing certificates:

        pki = TestPKI(tmp_path / "pki")
        server = pki.issue("server", dns=["localhost"], ips=["127.0.0.1"])
        client = pki.issue("client", usage="clientAuth")
        server.cert, server.key       # PEM file paths (str)
        pki.ca                        # the CA certificate file (str)
        pki.client_context()          # ssl.SSLContext trusting only this CA
    """

    __test__ = False  # not a pytest test class

    def __init__(self, dir: Path, name: str = "Ferry Test CA"):
        self.dir = Path(dir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = str(self.dir / "ca.pem")
        self.ca_key = str(self.dir / "ca.key")
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", self.ca_key, "-out", self.ca, "-days", "1",
                 "-subj", f"/CN={name}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=self.dir)

    class Issued:
        def __init__(self, cert: str, key: str):
            self.cert = cert
            self.key = key

    def issue(self, name: str, dns=(), ips=(), usage: str = "serverAuth") -> "TestPKI.Issued":
        """A leaf certificate for `name` with the given SANs (none: CN only)
        and extended key usage ("serverAuth" or "clientAuth")."""
        key = str(self.dir / f"{name}.key")
        csr = str(self.dir / f"{name}.csr")
        cert = str(self.dir / f"{name}.pem")
        ext = self.dir / f"{name}.ext"
        san = [f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips]
        lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature",
                 f"extendedKeyUsage={usage}"]
        if san:
            lines.append("subjectAltName=" + ",".join(san))
        ext.write_text("\n".join(lines) + "\n")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", key, "-out", csr, "-subj", f"/CN={name}", cwd=self.dir)
        _openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                 "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "1",
                 "-extfile", str(ext), "-out", cert, cwd=self.dir)
        return TestPKI.Issued(cert, key)

    def client_context(self, cert: "TestPKI.Issued | None" = None):
        """An SSLContext that trusts only this CA (hostname checked), with
        an optional client certificate."""
        import ssl
        ctx = ssl.create_default_context(cafile=self.ca)
        if cert is not None:
            ctx.load_cert_chain(cert.cert, cert.key)
        return ctx

    def server_context(self, cert: "TestPKI.Issued", require_client_cert: bool = False):
        """An SSLContext for a server presenting `cert`; with
        require_client_cert, clients must present one this CA issued."""
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert.cert, cert.key)
        if require_client_cert:
            ctx.load_verify_locations(cafile=self.ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


class TlsPeer(Peer):
    """A Peer over HTTPS on 127.0.0.1 with `ssl_context` (see
    TestPKI.server_context).  The handshake runs on the connection's own
    thread; what a connection raises (a failed handshake, mostly) is
    recorded in handshake_errors as "Type: message" strings."""

    def __init__(self, ssl_context, status: int = 200, name: str = "tlspeer"):
        self.ssl_context = ssl_context
        self.handshake_errors: list[str] = []
        super().__init__(status, name=name)

    def _wrap_server(self, srv):
        peer = self
        srv.socket = self.ssl_context.wrap_socket(srv.socket, server_side=True,
                                                  do_handshake_on_connect=False)

        def handle_error(request, client_address):
            import sys
            e = sys.exc_info()[1]
            with peer.lock:
                peer.handshake_errors.append(f"{type(e).__name__}: {e}")

        srv.handle_error = handle_error

    def url(self, path: str = "/events", host: str = "127.0.0.1") -> str:
        return f"https://{host}:{self.port}{path}"


# ---- pytest fixtures shared by the black-box and reliability suites -----

def ferry_fixture(tmp_path, request, log_level="debug", timeout=10.0,
                  forgive_killed=True):
    """Body of a `ferry` fixture: yields make(config, env=..., args=...,
    cwd=..., start=True, name=..., log_level=..., timeout=...) -> Ferry.
    At teardown every Ferry still running gets SIGTERM and must exit 0
    (with forgive_killed, a Ferry the test killed may not); one that
    exited on its own must have exited 0 or with one of its expected_rcs.
    """
    import pytest
    instances = []
    request.node._ferries = instances

    def make(config, env=None, args=None, cwd=None, start=True, name=None,
             log_level=log_level, timeout=timeout):
        f = Ferry(tmp_path, config, env=env, args=args, cwd=cwd, name=name,
                  log_level=log_level)
        instances.append(f)
        if start:
            f.start(timeout=timeout)
        return f

    yield make

    problems = []
    for f in instances:
        if f.proc is None:
            continue
        if f.running():
            try:
                rc = f.stop(signal.SIGTERM, timeout=30)
            except AssertionError as e:
                problems.append(str(e))
                continue
            if rc != 0 and not (forgive_killed and f.killed):
                problems.append(f"{f.name} exited {rc} on SIGTERM at teardown (expected 0); "
                                f"stderr tail:\n{f.stderr_tail()}")
        elif not f.killed and f.proc.returncode not in (0, None) and \
                f.proc.returncode not in getattr(f, "expected_rcs", ()):
            problems.append(f"{f.name} had exited on its own with {f.proc.returncode}; "
                            f"stderr tail:\n{f.stderr_tail()}")
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def small_tmpfs(tmp_path, size="16m"):
    """Body of a fixture: a size-limited tmpfs mounted for the test (the
    disk-full tests), unmounted after; skips without root or mount."""
    import pytest
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("disk-full tests need root to mount a size-limited tmpfs")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)
