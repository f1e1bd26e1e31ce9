"""End-to-end test of Ferry's container images and docker/compose.yaml.

Run:  /usr/bin/python3 -m pytest -q -rs -s tests/containers     (or: make test-containers)

What it does, against the local Docker engine:
  1. makes a local `debian:bookworm-slim` when there is none
     (tests/containers/make-base-image.sh: debootstrap, no registry needed);
  2. builds ferry:latest and ferry-demo:latest from docker/Dockerfile with
     host networking (the classic builder when buildx is missing);
  3. brings docker/compose.yaml up under a unique project name, on free
     host ports, and checks the payment example: fan-out to both consumers,
     events that wait while shipping is down, no acknowledged event lost
     when checkout's Ferry is killed mid-stream, healthy health checks;
  4. tears everything down (`down -v`), whatever happened.

Skipped, with the reason, when no Docker engine answers or no compose
(`docker compose` or `docker-compose`) is installed.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
COMPOSE_FILE = ROOT / "docker" / "compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
BASE_IMAGE = "debian:bookworm-slim"
FERRY_IMAGE = "ferry:latest"
DEMO_IMAGE = "ferry-demo:latest"
FERRIES = ("checkout-ferry", "inventory-ferry", "shipping-ferry")
CONSUMERS = ("inventory", "shipping")


def run(cmd, timeout=120, check=True, env=None):
    """Runs cmd; returns CompletedProcess with text output (stderr merged)."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=timeout, env=env, cwd=ROOT)
    if check and p.returncode != 0:
        tail = "\n".join(p.stdout.splitlines()[-40:])
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {p.returncode}:\n{tail}")
    return p


def note(msg):
    print(f"[containers] {msg}", flush=True)


# ---- environment: skip with the reason when there is no engine ------------

def _docker_problem():
    if not shutil.which("docker"):
        return "no Docker engine: the docker command is not installed"
    try:
        p = run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "no Docker engine: `docker info` timed out"
    if p.returncode != 0 or not p.stdout.strip():
        last = (p.stdout.strip().splitlines() or ["?"])[-1]
        return f"no Docker engine answers (`docker info`: {last})"
    return None


def _compose_command():
    if shutil.which("docker") and run(["docker", "compose", "version"], check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose") and run(["docker-compose", "version"], check=False).returncode == 0:
        return ["docker-compose"]
    return None


_PROBLEM = _docker_problem()
COMPOSE = None if _PROBLEM else _compose_command()
if not _PROBLEM and not COMPOSE:
    _PROBLEM = "no compose: neither `docker compose` nor `docker-compose` works"


@pytest.fixture(autouse=True, scope="module")
def _engine():
    # A skip, not a module-level one: pytest would then exit 5 ("no tests").
    if _PROBLEM:
        pytest.skip(_PROBLEM)


# ---- HTTP -----------------------------------------------------------------

def http(method, url, body=None, timeout=10):
    """(status, text); status 0 when the connection fails."""
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (OSError, urllib.error.URLError) as e:
        return 0, str(e)


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.25)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(text, name, **labels):
    """Value of one sample in Prometheus text, or None. Labels in Ferry's order."""
    sel = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
    for line in text.splitlines():
        if line.startswith(f"{name}{sel} "):
            return float(line.split()[-1])
    return None


# ---- images and stack -----------------------------------------------------

@pytest.fixture(scope="module")
def images(_engine):
    t0 = time.monotonic()
    p = run(["bash", str(HERE / "make-base-image.sh"), BASE_IMAGE], timeout=900)
    note(f"base image {BASE_IMAGE}: {time.monotonic() - t0:.0f}s "
         f"({p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ''})")

    env = dict(os.environ)
    if run(["docker", "buildx", "version"], check=False).returncode != 0:
        env["DOCKER_BUILDKIT"] = "0"  # no buildx: the classic builder
    for tag, target in ((FERRY_IMAGE, None), (DEMO_IMAGE, "demo")):
        t0 = time.monotonic()
        cmd = ["docker", "build", "--network", "host", "-f", str(DOCKERFILE), "-t", tag]
        if target:
            cmd += ["--target", target]
        run(cmd + [str(ROOT)], timeout=1200, env=env)
        size = run(["docker", "image", "ls", "--format", "{{.Size}}", tag]).stdout.strip()
        note(f"built {tag} in {time.monotonic() - t0:.0f}s, size {size}")


class Stack:
    """One docker/compose.yaml project, on its own host ports."""

    def __init__(self):
        self.project = f"ferrytest-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.ports = {k: free_port() for k in
                      ("CHECKOUT_PORT", "CHECKOUT_FERRY_PORT", "INVENTORY_PORT", "SHIPPING_PORT")}
        self.env = dict(os.environ, **{k: str(v) for k, v in self.ports.items()})
        self._ids = {}

    def compose(self, *args, timeout=180, check=True):
        return run(COMPOSE + ["-f", str(COMPOSE_FILE), "-p", self.project, *args],
                   timeout=timeout, check=check, env=self.env)

    def container(self, service):
        """The service's container id (stop and start keep it)."""
        if service not in self._ids:
            # Both compose v1 and v2 label their containers so.
            out = run(["docker", "ps", "-a", "--no-trunc", "--filter",
                       f"label=com.docker.compose.project={self.project}", "--format",
                       '{{.ID}} {{.Label "com.docker.compose.service"}}']).stdout
            self._ids = {svc: cid for cid, svc in (line.split() for line in out.splitlines())}
            assert service in self._ids, f"no container for service {service}"
        return self._ids[service]

    def healths(self, services=FERRIES):
        ids = [self.container(s) for s in services]
        out = run(["docker", "inspect", "--format",
                   "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}", *ids])
        return dict(zip(services, out.stdout.split()))

    def wait_healthy(self, services=FERRIES, timeout=90):
        wait_for(lambda: set(self.healths(services).values()) == {"healthy"}, timeout,
                 f"{', '.join(services)} to be healthy")

    # URLs on the published host ports
    def pay_url(self):
        return f"http://127.0.0.1:{self.ports['CHECKOUT_PORT']}/pay"

    def received_url(self, consumer):
        return f"http://127.0.0.1:{self.ports[consumer.upper() + '_PORT']}/received"

    def metrics(self):
        status, text = http("GET", f"http://127.0.0.1:{self.ports['CHECKOUT_FERRY_PORT']}/metrics")
        assert status == 200, f"checkout's Ferry /metrics: {status} {text}"
        return text

    def received(self, consumer):
        status, text = http("GET", self.received_url(consumer), timeout=5)
        return set(json.loads(text)["ids"]) if status == 200 else None

    def pay(self, order):
        return http("POST", self.pay_url(), json.dumps({"order": order, "amount": 42}))

    def wait_delivered(self, ids, consumers=CONSUMERS, timeout=60):
        ids = set(ids)

        def done():
            return all((self.received(c) or set()) >= ids for c in consumers)
        try:
            wait_for(done, timeout, f"{len(ids)} events at {', '.join(consumers)}")
        except AssertionError as e:
            missing = {c: sorted(ids - (self.received(c) or set())) for c in consumers}
            raise AssertionError(f"{e}; missing: {missing}") from None

    def logs(self):
        return self.compose("logs", "--no-color", "--tail", "40", check=False, timeout=60).stdout


@pytest.fixture(scope="module")
def stack(images, request):
    s = Stack()
    failed_before = request.session.testsfailed
    t0 = time.monotonic()
    up = False
    try:
        s.compose("up", "-d", "--no-build", timeout=300)
        s.wait_healthy()
        for url in (s.pay_url().replace("/pay", "/healthz"),
                    *(s.received_url(c).replace("/received", "/healthz") for c in CONSUMERS)):
            wait_for(lambda: http("GET", url, timeout=2)[0] == 200, 30, url)
        note(f"stack {s.project} up and healthy in {time.monotonic() - t0:.0f}s")
        up = True
        yield s
    finally:
        if not up or request.session.testsfailed > failed_before:
            sys.stdout.write(f"---- compose logs ({s.project}, tail) ----\n{s.logs()}\n")
        s.compose("down", "-v", "--remove-orphans", "-t", "5", timeout=180, check=False)
        label = f"label=com.docker.compose.project={s.project}"
        left = [x for cmd in (["ps", "-a"], ["volume", "ls"], ["network", "ls"])
                for x in run(["docker", *cmd, "-q", "--filter", label], check=False).stdout.split()]
        assert not left, f"left behind after down -v: {left}"


# ---- the tests --------------------------------------------------------------

def test_ferry_image_contract(images):
    cfg = json.loads(run(["docker", "image", "inspect", "--format", "{{json .Config}}",
                          FERRY_IMAGE]).stdout)
    assert cfg["User"] == "10001:10001"
    assert cfg["Entrypoint"] == ["ferry"]
    assert "8080/tcp" in cfg["ExposedPorts"]
    assert "/var/lib/ferry" in cfg["Volumes"]
    assert "FERRY_LISTEN=0.0.0.0:8080" in cfg["Env"]
    assert "FERRY_SPOOL_DIR=/var/lib/ferry" in cfg["Env"]
    assert cfg["Healthcheck"]["Test"] == ["CMD", "ferry", "healthcheck"]
    demo = json.loads(run(["docker", "image", "inspect", "--format", "{{json .Config}}",
                           DEMO_IMAGE]).stdout)
    assert demo["User"] == "10001:10001"
    assert demo["Entrypoint"] == ["ferry-demo"]
    out = run(["docker", "run", "--rm", "--entrypoint", "sh", FERRY_IMAGE, "-c",
               "id -u; id -g; id -un; ls /usr/local/bin; "
               "ldd /usr/local/bin/ferry | grep -c 'not found' || true"]).stdout.split()
    assert out == ["10001", "10001", "ferry", "ferry", "0"], out


def test_compose_configs_are_valid(images):
    # As the sidecars see them: mounted read-only, read by uid 10001.
    for name in ("checkout", "inventory", "shipping"):
        p = run(["docker", "run", "--rm", "-v", f"{ROOT / 'docker' / 'config'}:/cfg:ro",
                 FERRY_IMAGE, "check-config", "-c", f"/cfg/{name}.json"], check=False)
        assert p.returncode == 0, p.stdout


def test_events_reach_both_consumers(stack):
    ids = [f"fanout-{i}" for i in range(5)]
    for order in ids:
        status, body = stack.pay(order)
        assert status == 202, (order, status, body)
        assert json.loads(body) == {"accepted": 1}
    stack.wait_delivered(ids)


def test_events_wait_while_shipping_is_down(stack):
    # shipping's pod is its app plus its sidecar (which lives in the app's
    # network namespace), so both stop and start together.
    stack.compose("stop", "-t", "5", "shipping-ferry", "shipping")
    try:
        ids = [f"wait-{i}" for i in range(5)]
        for order in ids:
            status, body = stack.pay(order)
            assert status == 202, (order, status, body)
        stack.wait_delivered(ids, consumers=("inventory",))
        assert stack.received("shipping") is None  # really down
        # The gauges are refreshed every few seconds.
        wait_for(lambda: metric(stack.metrics(), "ferry_spool_pending", peer="shipping") == len(ids),
                 30, f"checkout's Ferry to hold {len(ids)} deliveries for shipping")
        wait_for(lambda: (metric(stack.metrics(), "ferry_deliveries_total", peer="shipping",
                                 outcome="retry") or 0) > 0,
                 30, "failed attempts to shipping, to be retried")
    finally:
        stack.compose("start", "shipping", "shipping-ferry")
    stack.wait_delivered(ids, consumers=("shipping",))
    wait_for(lambda: metric(stack.metrics(), "ferry_spool_pending", peer="shipping") == 0,
             30, "checkout's spool to drain")
    assert metric(stack.metrics(), "ferry_deliveries_total", peer="shipping", outcome="dead") == 0
    stack.wait_healthy()


def test_kill_checkout_ferry_mid_stream_loses_no_acknowledged_event(stack):
    acked, refused = [], []
    stop = threading.Event()

    def publish():
        n = 0
        while not stop.is_set():
            order = f"kill-{n}"
            n += 1
            status, _ = stack.pay(order)
            (acked if status == 202 else refused).append(order)
            time.sleep(0.02)

    t = threading.Thread(target=publish, daemon=True)
    t.start()
    try:
        wait_for(lambda: len(acked) >= 30, 60, "30 acknowledged events before the kill")
        ferry = stack.container("checkout-ferry")
        run(["docker", "kill", ferry])
        assert run(["docker", "inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}",
                    ferry]).stdout.split() == ["false", "137"]
        n_refused = len(refused)
        wait_for(lambda: len(refused) > n_refused, 30, "a refused publish while Ferry is down")
        stack.compose("start", "checkout-ferry")
        stack.wait_healthy(("checkout-ferry",))
        n_acked = len(acked)
        wait_for(lambda: len(acked) >= n_acked + 30, 60, "30 acknowledged events after the restart")
    finally:
        stop.set()
        t.join(timeout=30)
    note(f"kill test: {len(acked)} acknowledged, {len(refused)} refused while Ferry was down")
    stack.wait_delivered(acked, timeout=90)


def test_healthchecks_report_healthy(stack):
    stack.wait_healthy()
    for s in FERRIES:
        out = run(["docker", "exec", stack.container(s), "ferry", "healthcheck"]).stdout
        assert out.startswith("200"), (s, out)
