"""Shared pieces of the reliability campaign (tests/reliability/).

  * scale and seed: every test reads its size from FERRY_REL_* environment
    variables with CI-sized defaults, and its randomness from one seed
    (FERRY_REL_SEED, else a fresh one that is printed and recorded).
  * results: each test writes its figures as JSON into $FERRY_REL_OUT
    (default: a temporary directory, printed), with the exact command that
    reproduces them; tests/reliability/report.py turns them into
    docs/RELIABILITY.md.
  * Loader: client threads posting events at Ferry over keep-alive
    connections, remembering which ids were acknowledged (202).
  * rss(): a process's resident memory from /proc.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "blackbox"))

import ferrylib  # noqa: E402  (the black-box harness, reused as is)
from ferrylib import make_event, scaled, uid  # noqa: E402,F401


def env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else default


def env_float(name: str, default: float) -> float:
    v = os.environ.get(name)
    return float(v) if v not in (None, "") else default


_SEED = None


def seed() -> int:
    """The campaign's seed: FERRY_REL_SEED, else one drawn once per run."""
    global _SEED
    if _SEED is None:
        s = os.environ.get("FERRY_REL_SEED")
        _SEED = int(s) if s else random.SystemRandom().randrange(1, 2**31)
    return _SEED


def test_seed(name: str) -> int:
    """A per-test seed derived from the campaign seed, so that one test's
    draws do not depend on which tests ran before it."""
    return (seed() * 1000003 + sum(name.encode()) * 7919) % (2**31)


_OUT = None


def out_dir() -> Path:
    global _OUT
    if _OUT is None:
        d = os.environ.get("FERRY_REL_OUT")
        if d:
            _OUT = Path(d).resolve()
            _OUT.mkdir(parents=True, exist_ok=True)
        else:
            _OUT = Path(tempfile.mkdtemp(prefix="ferry-rel-"))
    return _OUT


def ferry_bin_rel() -> str:
    """The binary under test, relative to the repository when inside it."""
    b = Path(ferrylib.ferry_bin())
    try:
        return str(b.relative_to(REPO))
    except ValueError:
        return str(b)


def repro_command(nodeid: str, env: dict) -> str:
    """The exact command (from the repository root) that reruns one test
    with the same scale and seed."""
    parts = [f"FERRY_BIN={shlex.quote(ferry_bin_rel())}"]
    parts += [f"{k}={shlex.quote(str(v))}" for k, v in sorted(env.items())]
    parts += ["/usr/bin/python3", "-m", "pytest", "-q", "-p", "no:cacheprovider",
              shlex.quote(nodeid)]
    return " ".join(parts)


def write_result(name: str, result: dict, nodeid: str, env: dict) -> Path:
    """Write one test's figures to $FERRY_REL_OUT/<name>.json."""
    result = dict(result)
    result.setdefault("test", name)
    result["seed"] = env.get("FERRY_REL_SEED", seed())
    result["command"] = repro_command(nodeid, {**env, "FERRY_REL_SEED": result["seed"]})
    result["binary"] = ferry_bin_rel()
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path = out_dir() / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"\n[reliability] {name}: {json.dumps(result, sort_keys=True)}")
    return path


def rss_kib(pid: int) -> dict:
    """{"rss": VmRSS, "hwm": VmHWM} in KiB (0 when the process is gone)."""
    out = {"rss": 0, "hwm": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss"] = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                out["hwm"] = int(line.split()[1])
    except OSError:
        pass
    return out


class RssSampler(threading.Thread):
    """Samples a process's VmRSS every `interval` s; .peak in KiB."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._halt = threading.Event()
        self.start()

    def run(self):
        while not self._halt.is_set():
            r = rss_kib(self.pid)["rss"]
            self.peak = max(self.peak, r)
            self.samples += 1
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join(5)
        return self.peak


class RunQueueSampler(threading.Thread):
    """Samples how long a process's threads have waited on a CPU run queue
    (the second field of /proc/PID/task/*/schedstat), so a timing check can
    tell Ferry being late from Ferry being starved of CPU by a loaded
    machine. wait_between(t1, t2) is the run-queue wait of all of Ferry's
    threads between two time.monotonic() instants, rounded outwards to the
    samples around them (so it errs towards more credit, never less)."""

    def __init__(self, pid: int, interval: float = 0.01):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples = []  # (monotonic, total run-queue wait in seconds)
        self._halt = threading.Event()
        self.available = self._read() is not None
        if self.available:
            self.start()

    def _read(self):
        total = 0
        try:
            for d in os.listdir(f"/proc/{self.pid}/task"):
                try:
                    with open(f"/proc/{self.pid}/task/{d}/schedstat") as fh:
                        total += int(fh.read().split()[1])
                except (OSError, IndexError, ValueError):
                    continue
        except OSError:
            return None
        return total / 1e9

    def run(self):
        while not self._halt.is_set():
            w = self._read()
            if w is None:
                return
            self.samples.append((time.monotonic(), w))
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        if self.available:
            self.join(5)

    def wait_between(self, t1: float, t2: float) -> float:
        import bisect
        s = self.samples
        if not s or t2 <= t1:
            return 0.0
        times = [x[0] for x in s]
        i = max(0, bisect.bisect_right(times, t1) - 1)
        j = min(len(s) - 1, bisect.bisect_left(times, t2))
        return max(0.0, s[j][1] - s[i][1])


class Loader:
    """`threads` clients posting events at a Ferry until stop().

    make(i, rng) -> (kind, payload, ids): kind "structured" (payload an
    event dict), "batch" (a list of events) or "binary" (an event dict
    whose data is bytes); ids are the event ids it carries. Every id whose
    request got a 202 lands in .acked; other answers are counted in
    .statuses; transport errors (Ferry down, reset) in .errors. A request
    whose answer was lost is not acknowledged, so it is not counted.

    check(resp) may raise to flag an answer (e.g. a 503 without
    Retry-After); the messages collect in .problems.
    """

    def __init__(self, f, threads: int, make, seed: int, pace: float = 0.0,
                 check=None, timeout: float = 15.0):
        self.f = f
        self.make = make
        self.pace = pace
        self.check = check
        self.timeout = timeout
        self.acked: list = []
        self.acked_at: dict = {}
        self.statuses: dict = {}
        self.latency: dict = {}  # status -> [seconds]
        self.errors: dict = {}
        self.problems: list = []
        self.sent = 0
        self.outstanding = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.paused = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(n, random.Random(seed + n)),
                                         daemon=True, name=f"loader-{n}")
                        for n in range(threads)]
        for t in self.threads:
            t.start()

    def _count(self, d, k):
        with self.lock:
            d[k] = d.get(k, 0) + 1

    def _run(self, n, rng):
        host, port = self.f.listen.rsplit(":", 1)
        conn = None
        i = 0
        while not self.stopping.is_set():
            if self.paused.is_set():
                time.sleep(0.01)
                continue
            kind, payload, ids = self.make((n, i), rng)
            i += 1
            if kind == "structured":
                body = json.dumps(payload)
                headers = {"Content-Type": "application/cloudevents+json"}
            elif kind == "batch":
                body = json.dumps(payload)
                headers = {"Content-Type": "application/cloudevents-batch+json"}
            else:
                data = payload.get("data", b"")
                headers = {f"ce-{k}": ferrylib.hdr_encode(str(v))
                           for k, v in payload.items() if k != "data"}
                headers["Content-Type"] = "application/octet-stream"
                body = data
            with self.lock:
                self.outstanding += 1
                self.sent += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, int(port),
                                                      timeout=scaled(self.timeout))
                t0 = time.monotonic()
                conn.request("POST", "/v1/events", body, headers)
                r = conn.getresponse()
                rbody = r.read()
                with self.lock:
                    self.latency.setdefault(r.status, []).append(time.monotonic() - t0)
                if r.status == 202:
                    now = time.monotonic()
                    with self.lock:
                        self.acked.extend(ids)
                        for e in ids:
                            self.acked_at[e] = now
                else:
                    self._count(self.statuses, r.status)
                if self.check:
                    try:
                        self.check(r, rbody)
                    except AssertionError as e:
                        with self.lock:
                            if len(self.problems) < 50:
                                self.problems.append(str(e))
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                self._count(self.errors, type(e).__name__)
                if conn:
                    conn.close()
                conn = None
                time.sleep(0.01)
            finally:
                with self.lock:
                    self.outstanding -= 1
            if self.pace:
                time.sleep(self.pace)
        if conn:
            conn.close()

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(scaled(30))
        assert not any(t.is_alive() for t in self.threads), "a load thread is stuck"

    def latency_ms(self, status: int, q: float):
        """The q-quantile (0..1) of the answer time of requests answered
        with @status, in ms; None if there were none."""
        with self.lock:
            xs = sorted(self.latency.get(status, []))
        if not xs:
            return None
        return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000, 1)

    def acked_ids(self) -> list:
        with self.lock:
            return list(self.acked)
