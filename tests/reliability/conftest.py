"""pytest harness for the reliability campaign (issue 7).

Run (from the repository root):
    FERRY_BIN=build/ferry /usr/bin/python3 -m pytest -q tests/reliability
or `make test-reliability` (CI sizes) / `make reliability` (long sizes and
docs/RELIABILITY.md).

Scale comes from FERRY_REL_* environment variables (see each test's
docstring); FERRY_REL_SEED fixes the randomness (printed on failure);
FERRY_REL_OUT is where each test writes its figures as JSON.

Fixtures:
  ferry  - factory: ferry(config_dict, env=..., start=True, log_level=...)
           -> ferrylib.Ferry; teardown SIGTERMs what still runs and
           expects exit 0 (unless the test killed it).
  rel    - the test's scale, seed and result writer (see Rel).
"""

import http.server
import os
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rellib  # noqa: E402  (puts tests/blackbox on sys.path)
import ferrylib  # noqa: E402

# ferrylib.Peer's server keeps Python's default listen backlog of 5; a burst
# of new connections from Ferry (after a restart, say) must not wait a
# second for SYN retransmits.
http.server.ThreadingHTTPServer.request_queue_size = 1024


def pytest_sessionstart(session):
    b = ferrylib.ferry_bin()
    if not os.access(b, os.X_OK):
        pytest.exit(f"ferry binary not found or not executable: {b} (set FERRY_BIN)",
                    returncode=3)


class Rel:
    """Per-test scale, seed and results.

    rel.int(NAME, default) / rel.float(...) read a FERRY_REL_* knob and
    remember it for the reproduce command; rel.seed and rel.rng are this
    test's seed and random.Random; rel.record(name, dict) writes the JSON.
    """

    def __init__(self, request):
        self.request = request
        self.env = {}
        self.seed = rellib.test_seed(request.node.nodeid)
        self.rng = random.Random(self.seed)

    def int(self, name, default):
        v = rellib.env_int(name, default)
        self.env[name] = v
        return v

    def float(self, name, default):
        v = rellib.env_float(name, default)
        self.env[name] = v
        return v

    def record(self, name, result):
        env = dict(self.env)
        env["FERRY_REL_SEED"] = rellib.seed()
        out = dict(result)
        out.setdefault("test_seed", self.seed)
        return rellib.write_result(name, out, self.request.node.nodeid, env)

    def describe(self):
        env = dict(self.env)
        env["FERRY_REL_SEED"] = rellib.seed()
        return (f"campaign seed {rellib.seed()} (test seed {self.seed}); reproduce with:\n"
                f"  {rellib.repro_command(self.request.node.nodeid, env)}")


@pytest.fixture
def rel(request):
    r = Rel(request)
    request.node._rel = r
    return r


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        r = getattr(item, "_rel", None)
        if r is not None:
            rep.sections.append(("reliability seed", r.describe()))
        for f in getattr(item, "_ferries", []):
            rep.sections.append((f"{f.name} stderr (tail)", f.stderr_tail(40)))


@pytest.fixture
def ferry(tmp_path, request):
    # A Ferry the campaign killed and restarted must still stop cleanly.
    yield from ferrylib.ferry_fixture(tmp_path, request, log_level="info",
                                      timeout=15.0, forgive_killed=False)
