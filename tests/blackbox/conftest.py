"""pytest harness for Ferry's black-box tests.

Run:  FERRY_BIN=/path/to/ferry /usr/bin/python3 -m pytest -q tests/blackbox
      (FERRY_TEST_TIMEOUT_SCALE=3 stretches every bounded wait, e.g. under ASan;
       -m "not slow" skips the crash/durability tests.)

Fixtures:
  ferry  - factory: ferry(config_dict, env=..., args=..., cwd=..., start=True) -> Ferry.
           Teardown SIGTERMs every instance still running and asserts exit 0
           (unless the test killed it).  On a test failure the tail of each
           instance's stderr is attached to the report.
  peer   - factory: peer(status=200, name=...) -> Peer; stopped at teardown.
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ferrylib  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: crash/durability tests (several seconds)")


def pytest_sessionstart(session):
    b = ferrylib.ferry_bin()
    if not os.access(b, os.X_OK):
        pytest.exit(f"ferry binary not found or not executable: {b} (set FERRY_BIN)", returncode=3)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for f in getattr(item, "_ferries", []):
            for run in range(1, f.runs + 1):
                rep.sections.append((f"{f.name} stderr (run {run}, tail)",
                                     f.stderr_tail(60, run=run)))


@pytest.fixture
def peer():
    peers = []

    def make(status=200, name=None):
        p = ferrylib.Peer(status, name=name or f"peer{len(peers) + 1}")
        peers.append(p)
        return p

    yield make
    for p in peers:
        try:
            p.stop()
        except Exception:  # noqa: BLE001
            pass


@pytest.fixture
def ferry(tmp_path, request):
    yield from ferrylib.ferry_fixture(tmp_path, request, log_level="debug",
                                      timeout=10.0)
