#!/usr/bin/env python3
"""Write docs/RELIABILITY.md from the reliability campaign's result files.

    report.py --results DIR [--fuzz DIR] [--memory DIR] [--junit FILE]
              [--settings "K=V ..."] [--out docs/RELIABILITY.md]
    report.py summarize-log --suite NAME --command CMD --seconds S
              [--exit-code N] LOG OUT.json

Inputs (all JSON, one object per file):
  * --results: what tests/reliability writes into $FERRY_REL_OUT, one file
    per test, keyed by "test" (crashloop, chaos_concurrent, ...), each with
    its figures, "seed" and the exact "command" that reproduces it.
  * --fuzz: tests/fuzz/run.sh's OUTDIR: one <target>.json per libFuzzer
    target ("target", "seconds", "executions", "exec_per_s",
    "corpus_files", "corpus_bytes", "crashes", ...).
  * --memory: memory-safety suite summaries, any file with a "suite" key:
        {"suite": "valgrind", "passed": N, "failed": N, "skipped": N,
         "seconds": S, "command": "make test-valgrind ...",
         "exit_code": 0}
    `summarize-log` makes one from a pytest/ctest log (it reads the last
    pytest summary line and ctest's "N tests failed out of M").
  * --junit: pytest's JUnit XML of the reliability run, for each test's
    outcome (passed, failed, skipped with its reason, xfailed).

Python 3 standard library only.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------
# inputs


def load_dir(d, key):
    out = []
    if not d or not Path(d).is_dir():
        return out
    for p in sorted(glob.glob(os.path.join(d, "*.json"))):
        try:
            obj = json.loads(Path(p).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(obj, dict) and key in obj:
            obj["_file"] = p
            out.append(obj)
    return out


def load_junit(path):
    """{test function name (with params): (outcome, message)}."""
    out = {}
    if not path or not Path(path).is_file():
        return out
    for tc in ET.parse(path).getroot().iter("testcase"):
        name = tc.get("name")
        outcome, msg = "passed", ""
        for child in tc:
            if child.tag in ("failure", "error"):
                outcome, msg = "failed", child.get("message", "")
            elif child.tag == "skipped":
                typ = child.get("type", "")
                outcome = "xfailed" if "xfail" in typ else "skipped"
                msg = child.get("message", "")
        msg = " ".join(msg.split())
        out[name] = (outcome, msg[:300] + ("…" if len(msg) > 300 else ""))
    return out


def machine():
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1048576:.1f} GiB RAM"
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "system": platform.system(), "mem": mem}


def git_rev():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return rev + (" with local changes" if dirty else "") if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def ferry_version(binary):
    try:
        return subprocess.run([str(REPO / binary), "version"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ---------------------------------------------------------------------------
# summarize-log


def summarize_log(args):
    text = Path(args.log).read_text(errors="replace") if Path(args.log).exists() else ""
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    # pytest: the last summary line of each session, "== 3 passed, 1 skipped in 2.0s =="
    # or with -q "3 passed, 1 skipped in 2.0s".
    sessions = re.findall(r"^=*\s*((?:\d+ [a-z]+(?:, )?)+) in [\d.]+s", text, re.M)
    for line in sessions:
        for n, what in re.findall(r"(\d+) ([a-z]+)", line):
            n = int(n)
            if what in ("passed", "xpassed"):
                counts["passed"] += n
            elif what in ("failed", "error", "errors"):
                counts["failed"] += n
            elif what in ("skipped", "xfailed", "deselected"):
                counts["skipped"] += n
    # ctest: "100% tests passed, 0 tests failed out of 24"
    for pct, failed, total in re.findall(
            r"(\d+)% tests passed, (\d+) tests failed out of (\d+)", text):
        counts["passed"] += int(total) - int(failed)
        counts["failed"] += int(failed)
    out = {"suite": args.suite, **counts, "seconds": round(float(args.seconds), 1),
           "command": args.command, "exit_code": args.exit_code,
           "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if args.exit_code and not counts["failed"]:
        out["note"] = (f"exit code {args.exit_code} with no failing test in the log "
                       "(interrupted, or failed before the tests ran)")
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))
    return 0


# ---------------------------------------------------------------------------
# the document


def fmt(v, digits=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def mib(kib):
    return "–" if kib is None else f"{kib / 1024:.1f}"


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


TEST_FUNCS = {  # result name -> (pytest function, item)
    "crashloop": ("test_crash_loop", "1. Crash loop"),
    "chaos_concurrent": ("test_chaos_concurrent", "2. Chaos peers"),
    "chaos_tls_breaker": ("test_chaos_tls_and_breaker", "2. Chaos peers"),
    "diskfull_own_backlog": ("test_own_backlog_fills_disk_under_load", "3. Disk full"),
    "diskfull_other_process": ("test_disk_filled_by_another_process_under_load", "3. Disk full"),
    "spool_limit": ("test_spool_limit_under_load", "3. Spool limit"),
    "hostile_mix": ("test_hostile_mix_keeps_good_clients_served", "5. Hostile clients"),
    "connections_held": ("test_ten_thousand_idle_connections[held]", "5. Hostile clients"),
    "connections_refused": ("test_ten_thousand_idle_connections[refused]",
                            "5. Hostile clients"),
}


# Tests that guard one bug each and write no figures: (function, item, invariant).
REGRESSIONS = [
    ("test_non_http_reply_is_retried", "2",
     "a peer answering something that is not HTTP gets a retry, not a dead letter"),
]
REGRESSION_FILES = {"test_non_http_reply_is_retried": "tests/reliability/test_chaos.py"}


class Doc:
    binary = "build/ferry"

    def __init__(self, results, fuzz, memory, junit, settings):
        self.r = {x["test"]: x for x in results}
        self.fuzz = sorted(fuzz, key=lambda x: x["target"])
        self.memory = sorted(memory, key=lambda x: x["suite"])
        self.junit = junit
        self.settings = settings
        self.refs = []  # (label, command)

    def ref(self, label, command):
        """A numbered link to the command in the Reproduce list."""
        if (label, command) not in self.refs:
            self.refs.append((label, command))
        return f"[{self.refs.index((label, command)) + 1}](#reproduce)"

    def outcome(self, name):
        fn = TEST_FUNCS.get(name, (name,))[0]
        o = self.junit.get(fn)
        if o is None:
            return "recorded" if name in self.r else "not run"
        return o[0]

    def cmd(self, name):
        x = self.r.get(name)
        return self.ref(name, x["command"]) if x and x.get("command") else "–"

    # -- sections
    def summary(self):
        r = self.r
        rows = []

        def row(item, invariant, name, figure, ok):
            if name not in r:
                o = self.outcome(name)
                why = self.junit.get(TEST_FUNCS.get(name, (name,))[0], ("", ""))[1]
                rows.append((item, invariant, "not measured", f"{o}{': ' + why if why else ''}",
                             "–"))
                return
            o = self.outcome(name)
            verdict = "**holds**" if ok and o in ("passed", "recorded") else f"**FAILS** ({o})"
            rows.append((item, invariant, figure, verdict, self.cmd(name)))

        c = r.get("crashloop", {})
        row("1", "every 202'd event delivered to every matching peer across kill -9",
            "crashloop", f"{fmt(c.get('lost'))} lost of {fmt(c.get('deliveries_expected'))} "
            f"after {fmt(c.get('kills'))} kills", c.get("lost") == 0)
        x = r.get("chaos_concurrent", {})
        row("2", "no loss through chaos peers", "chaos_concurrent",
            f"{fmt(x.get('lost'))} lost of {fmt(x.get('deliveries_expected'))}",
            x.get("lost") == 0 and x.get("dead_letters") == 0)
        row("2", "every retry delay within the policy's bounds", "chaos_concurrent",
            f"{fmt(x.get('gap_violations'))} violations in {fmt(x.get('gaps_checked'))} gaps",
            x.get("gap_violations") == 0)
        row("2", "ordering per partition key", "chaos_concurrent",
            f"{fmt(x.get('order_violations'))} violations in {fmt(x.get('order_checks'))} "
            "checks", x.get("order_violations") == 0)
        t = r.get("chaos_tls_breaker", {})
        logged = t.get("breaker_logged", {})
        row("2", "breakers open, probe and close as specified (TLS faults too)",
            "chaos_tls_breaker",
            f"opened {fmt(t.get('breaker_opened'))}, reopened {fmt(t.get('breaker_reopened'))}"
            f", closed {fmt(t.get('breaker_closed'))}; "
            f"{fmt(t.get('gap_violations'))} delay violations",
            t.get("lost") == 0 and t.get("gap_violations") == 0 and
            (logged.get("opened"), logged.get("reopened"), logged.get("closed")) ==
            (t.get("breaker_opened"), t.get("breaker_reopened"), t.get("breaker_closed")))
        for name, what in (("diskfull_own_backlog", "disk full (own backlog)"),
                           ("diskfull_other_process", "disk full (another process)"),
                           ("spool_limit", "spool.max_bytes")):
            d = r.get(name, {})
            row("3", f"{what}: no 202 without durability, recovery without restart", name,
                f"{fmt(d.get('acked_not_durable'))} not durable, {fmt(d.get('lost'))} lost, "
                f"{fmt(d.get('refused_503'))} × 503, recovered in "
                f"{fmt(d.get('recovery_seconds'), 2)} s",
                d.get("acked_not_durable") == 0 and d.get("lost") == 0 and
                d.get("answer_problems") == 0 and d.get("restarts") == 0)
        h = r.get("hostile_mix", {})
        row("5", "hostile mix: good clients served, memory bounded", "hostile_mix",
            f"good max {fmt(h.get('good_latency_max_ms'))} ms, RSS peak "
            f"{mib(h.get('rss_peak_kib'))} MiB (bound {fmt(h.get('rss_bound_mib'))})",
            h.get("hostile_unexpected") == 0 and h.get("good_other") == {})
        for fn, item, invariant in REGRESSIONS:
            o = self.junit.get(fn)
            if o is not None:
                rows.append((item, invariant, f"`{fn}`",
                             "**holds**" if o[0] == "passed" else f"**FAILS** ({o[0]})",
                             self.ref(fn, f"FERRY_BIN={self.binary} /usr/bin/python3 -m pytest "
                                          f"-q -p no:cacheprovider {REGRESSION_FILES[fn]}::{fn}")))
        for mode in ("held", "refused"):
            k = r.get(f"connections_{mode}", {})
            row("5", f"{fmt(k.get('connections_attempted'))} idle connections ({mode})",
                f"connections_{mode}",
                f"{fmt(k.get('held'))} held, {fmt(k.get('refused'))} refused; good max "
                f"{fmt(k.get('good_latency_max_ms'))} ms; RSS {mib(k.get('rss_peak_kib'))} MiB",
                bool(k) and k.get("dropped_by_kernel") == 0)
        return table(["item", "invariant", "measured", "result", "reproduce"], rows)

    def faults(self):
        rows = []
        c = self.r.get("crashloop")
        if c:
            rows.append(("crash loop", "kill -9 at a random moment, then restart",
                         f"{fmt(c['kills'])} (POSTs in progress at {fmt(c.get('kills_with_posts_in_progress'))}"
                         f", deliveries in flight at {fmt(c.get('kills_with_deliveries_in_flight'))})",
                         self.cmd("crashloop")))
        for name, label in (("chaos_concurrent", "chaos peers (HTTP)"),
                            ("chaos_tls_breaker", "chaos peer (HTTPS, one at a time)")):
            x = self.r.get(name)
            if x:
                f = x.get("faults", {})
                rows.append((label, ", ".join(f"{k} {fmt(v)}" for k, v in sorted(f.items())),
                             f"{fmt(sum(f.values()))} of {fmt(x.get('attempts'))} attempts",
                             self.cmd(name)))
        for name, label in (("diskfull_own_backlog", "disk full: own backlog, peer down"),
                            ("diskfull_other_process", "disk full: another process fills it"),
                            ("spool_limit", "spool.max_bytes reached, peer down")):
            d = self.r.get(name)
            if d:
                rows.append((label, f"{fmt(d.get('clients'))} clients posting through it",
                             f"full for {fmt(d.get('seconds_full'))} s, "
                             f"{fmt(d.get('refused_503'))} requests refused",
                             self.cmd(name)))
        h = self.r.get("hostile_mix")
        if h:
            by = h.get("hostile_by_attack", {})
            rows.append(("hostile requests", f"{len(by)} kinds (see below)",
                         f"{fmt(h.get('hostile_requests'))} requests, "
                         f"{fmt(h.get('loris_connections'))} slow-loris connections",
                         self.cmd("hostile_mix")))
        for mode in ("held", "refused"):
            k = self.r.get(f"connections_{mode}")
            if k:
                rows.append((f"idle connections ({mode})", "opened and left idle, half with "
                             "a half-sent request", fmt(k.get("connections_attempted")),
                             self.cmd(f"connections_{mode}")))
        return table(["test", "fault", "injected", "reproduce"], rows)

    def events(self):
        rows = []
        for name, label in (("crashloop", "crash loop"), ("chaos_concurrent", "chaos peers"),
                            ("chaos_tls_breaker", "chaos peer, HTTPS"),
                            ("diskfull_own_backlog", "disk full, own backlog"),
                            ("diskfull_other_process", "disk full, other process"),
                            ("spool_limit", "spool limit")):
            x = self.r.get(name)
            if not x:
                continue
            acked = x.get("acknowledged", x.get("events"))
            expected = x.get("deliveries_expected", acked)
            dups = x.get("duplicates")
            rate = x.get("duplicate_rate")
            if rate is None and expected:
                rate = (dups or 0) / expected
            rows.append((label, fmt(acked), fmt(expected), f"**{fmt(x.get('lost'))}**",
                         fmt(dups), f"{rate * 100:.2f} %" if rate is not None else "–",
                         fmt(x.get("dead_letters", 0)), self.cmd(name)))
        return table(["test", "events acknowledged (202)", "deliveries expected", "lost",
                      "duplicates", "duplicate rate", "dead letters", "reproduce"], rows)

    def retry(self):
        rows = []
        for name, label in (("chaos_concurrent", "chaos peers (full and equal jitter)"),
                            ("chaos_tls_breaker", "HTTPS peer with breaker")):
            x = self.r.get(name)
            if x:
                rows.append((label, fmt(x.get("gaps_checked")), f"**{fmt(x.get('gap_violations'))}**",
                             f"{fmt(x.get('worst_over_upper_ms'))} ms",
                             f"{fmt(x.get('tolerance_ms'))} ms",
                             f"{fmt(x.get('min_margin_over_lower_ms'))} ms",
                             f"{fmt(x.get('tolerance_lower_ms'))} ms",
                             f"{fmt(x.get('starved_credit_ms'))} ms", self.cmd(name)))
        out = table(["test", "retry gaps checked", "violations",
                     "worst: gap minus its upper bound", "upper tolerance",
                     "closest: gap minus its lower bound", "lower tolerance",
                     "CPU-starvation credit used", "reproduce"], rows)
        t = self.r.get("chaos_tls_breaker")
        if t:
            lg = t.get("breaker_logged", {})
            out += "\n\n" + table(
                ["breaker", "replayed from the attempt log", "Ferry's log", "/v1/peers samples"],
                [("opened", fmt(t.get("breaker_opened")), fmt(lg.get("opened")),
                  fmt(t.get("states_seen", {}).get("open"))),
                 ("probe failed, open again", fmt(t.get("breaker_reopened")),
                  fmt(lg.get("reopened")), fmt(t.get("states_seen", {}).get("half-open"))),
                 ("closed", fmt(t.get("breaker_closed")), fmt(lg.get("closed")),
                  fmt(t.get("states_seen", {}).get("closed")))])
        return out

    def disk(self):
        rows = []
        for name, label in (("diskfull_own_backlog", "disk full, own backlog"),
                            ("diskfull_other_process", "disk full, other process"),
                            ("spool_limit", "spool.max_bytes")):
            d = self.r.get(name)
            if d:
                rows.append((label, fmt(d.get("acknowledged_before_recovery")),
                             fmt(d.get("refused_503")), fmt(d.get("answer_problems")),
                             f"**{fmt(d.get('acked_not_durable'))}**",
                             f"{fmt(d.get('latency_503_p50_ms'))} / "
                             f"{fmt(d.get('latency_503_max_ms'))} ms",
                             f"{fmt(d.get('recovery_seconds'), 2)} s", fmt(d.get("restarts")),
                             self.cmd(name)))
        return table(["test", "202s before recovery", "503s", "bad refusals (no Retry-After, "
                      "not 503)", "202'd but not durable", "503 answer time p50 / max",
                      "recovery", "restarts", "reproduce"], rows)

    def hostile(self):
        out = []
        h = self.r.get("hostile_mix")
        if h:
            out.append(table(
                ["attack requests", "unexpected answers", "good requests", "good p50 / p99 / max",
                 "slow-loris cut (longest life)", "RSS base → peak (bound)", "reproduce"],
                [(fmt(h.get("hostile_requests")), f"**{fmt(h.get('hostile_unexpected'))}**",
                  f"{fmt(h.get('good_202'))} × 202 of {fmt(h.get('good_requests'))}",
                  f"{fmt(h.get('good_latency_p50_ms'))} / {fmt(h.get('good_latency_p99_ms'))} / "
                  f"{fmt(h.get('good_latency_max_ms'))} ms",
                  f"{fmt(h.get('loris_cut'))} ({fmt(h.get('loris_max_life_s'), 2)} s, timeout "
                  f"{fmt(h.get('connection_timeout_s'))} s)",
                  f"{mib(h.get('rss_base_kib'))} → {mib(h.get('rss_peak_kib'))} MiB "
                  f"({fmt(h.get('rss_bound_mib'))} MiB)", self.cmd("hostile_mix"))]))
            rows = []
            for k, v in sorted(h.get("hostile_by_attack", {}).items()):
                ans = ", ".join(f"{'closed' if s == 'None' else s} × {n}"
                                for s, n in sorted(v.items()))
                rows.append((k, ans or "–"))
            out.append(table(["attack", "answers"], rows))
        rows = []
        for mode in ("held", "refused"):
            k = self.r.get(f"connections_{mode}")
            if k:
                lim = f"max_connections {fmt(k.get('max_connections'))}"
                if k.get("max_connections_per_ip"):
                    lim += f", per IP {fmt(k.get('max_connections_per_ip'))}"
                rows.append((mode, lim, fmt(k.get("connections_attempted")), fmt(k.get("held")),
                             fmt(k.get("refused")), fmt(k.get("dropped_by_kernel")),
                             f"{fmt(k.get('good_latency_p50_ms'))} / "
                             f"{fmt(k.get('good_latency_max_ms'))} ms",
                             f"{mib(k.get('rss_base_kib'))} → {mib(k.get('rss_peak_kib'))} MiB "
                             f"({fmt(k.get('rss_bound_mib'))} MiB)", self.cmd(f"connections_{mode}")))
        if rows:
            out.append(table(["idle connections", "limits", "attempted", "held by Ferry",
                              "refused at once", "lost in the kernel backlog",
                              "good p50 / max", "RSS base → peak (bound)", "reproduce"], rows))
        return "\n\n".join(out) if out else "_Not measured in this run._"

    def fuzzing(self):
        if not self.fuzz:
            return ("_Not measured in this run: tests/fuzz/run.sh was not available or "
                    "produced no results._")
        rows = []
        for f in self.fuzz:
            crashes = f.get("crashes") or []
            cmd = f"FUZZ_TARGETS={f['target']} tests/fuzz/run.sh {f.get('seconds')} OUTDIR"
            rows.append((f["target"], fmt(f.get("seconds")), fmt(f.get("executions")),
                         fmt(f.get("exec_per_s")), fmt(f.get("corpus_files")),
                         fmt(f.get("corpus_bytes")), f"{fmt(f.get('new_files'))}",
                         f"**{len(crashes)}**", self.ref(f"fuzz {f['target']}", cmd)))
        total = sum(int(f.get("executions") or 0) for f in self.fuzz)
        return table(["target", "seconds", "executions", "exec/s", "corpus files",
                      "corpus bytes", "new this run", "crashes", "reproduce"], rows) + \
            f"\n\nTotal: {total:,} executions."

    def memsafety(self):
        if not self.memory:
            return "_Not measured in this run (no memory-safety summaries were found)._"
        rows = []
        for m in self.memory:
            rows.append((m["suite"], fmt(m.get("passed")), f"**{fmt(m.get('failed'))}**",
                         fmt(m.get("skipped")), f"{fmt(m.get('seconds'))} s",
                         fmt(m.get("exit_code")), m.get("note", ""),
                         self.ref(f"memory {m['suite']}", m.get("command", "?"))))
        return table(["suite", "passed", "failed", "skipped", "wall time", "exit code", "note",
                      "reproduce"], rows)

    def not_run(self):
        lines = []
        for name, (fn, item) in TEST_FUNCS.items():
            if name not in self.r:
                o = self.junit.get(fn)
                lines.append(f"- {item}, `{fn}`: {o[0] + ': ' + o[1] if o else 'not run'}")
        extra = [(n, o) for n, o in self.junit.items()
                 if o[0] in ("failed", "xfailed", "skipped")
                 and n not in {v[0] for v in TEST_FUNCS.values()}]
        extra = [(n, o) for n, o in extra if n not in REGRESSION_FILES or o[0] != "passed"]
        for n, o in extra:
            lines.append(f"- `{n}`: {o[0]}{': ' + o[1] if o[1] else ''}")
        return "\n".join(lines)

    def render(self, m, rev, version, binary):
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        seeds = sorted({str(x.get("seed")) for x in self.r.values() if x.get("seed")})
        parts = [
            "# Reliability",
            "",
            "Ferry's promise is that an event it answered `202` for is delivered, at least "
            "once, to every peer its routes name -- through crashes, failing peers, full "
            "disks and hostile clients. This page holds the figures that back the promise. "
            "It is written by `make reliability` (tests/reliability/report.py); do not edit "
            "it by hand. The same tests run in CI with smaller settings "
            "(`make test-reliability`).",
            "",
            f"- **Measured:** {when}, commit {rev}, `{version}` (`{binary}`)",
            f"- **Machine:** {m['nproc']} × {m['cpu']}, {m['system']} {m['kernel']}"
            + (f", {m['mem']}" if m["mem"] else ""),
            f"- **Settings:** `{self.settings or 'defaults'}`",
            f"- **Seed:** {', '.join(seeds) or '–'} (`FERRY_REL_SEED`; every test derives its "
            "own from it, and each reproduce command below pins it)",
            "",
            "## Summary",
            "",
            self.summary(),
            "",
            "## Faults injected",
            "",
            self.faults(),
            "",
            "## Events acknowledged, lost and duplicated",
            "",
            "Delivery is at least once, so duplicates are expected (a crash between a peer's "
            "answer and the spool recording it, or a peer answering after Ferry's timeout); "
            "losses are not.",
            "",
            self.events(),
            "",
            "## Retry delays and circuit breakers",
            "",
            "Each retry gap is measured at the chaos peer, from when Ferry could have seen an "
            "attempt end to when the next attempt connected, and compared with the policy in "
            "the README: at least `Retry-After` (capped by `max_delay_ms`) and at least cap/2 "
            "with equal jitter; at most `min(max_delay_ms, initial_delay_ms × multiplier^(n-1))`"
            " raised to `Retry-After`, plus the tolerance. Behind an open breaker the next "
            "attempt waits at least `open_ms`. The lower bound is checked against when the "
            "peer accepted the next connection (Ferry connected before that), the upper "
            "bound against the earlier of that and the kernel's arrival time of the request; "
            "Ferry keeps retry times in whole milliseconds, hence a 2 ms lower tolerance. "
            "Were Ferry's threads kept off the CPU by a loaded machine during a gap, their "
            "measured run-queue wait is credited to the upper bound; the credit used is shown.",
            "",
            self.retry(),
            "",
            "## Disk full and spool limit under load",
            "",
            self.disk(),
            "",
            "## Hostile clients",
            "",
            self.hostile(),
            "",
            "## Fuzzing",
            "",
            self.fuzzing(),
            "",
            "## Memory safety",
            "",
            self.memsafety(),
        ]
        nr = self.not_run()
        if nr:
            parts += ["", "## Not measured, skipped or failing in this run", "", nr]
        parts += ["", "## Reproduce", "",
                  "Run from the repository root after `make build` (fuzz and memory-safety "
                  "commands build their own binaries).", ""]
        for i, (label, cmd) in enumerate(self.refs, 1):
            parts.append(f"{i}. {label}: `{cmd}`")
        parts += ["", "## Result files", "",
                  "`make reliability` keeps every input of this page under "
                  "`$(BUILD)/reliability/`: `results/<test>.json` (one per test, with "
                  "`command` and `seed`), `results/junit.xml`, `fuzz/<target>.json` "
                  "(tests/fuzz/run.sh) and `memory/<suite>.json`. A memory-safety summary is "
                  "`{\"suite\": NAME, \"passed\": N, \"failed\": N, \"skipped\": N, "
                  "\"seconds\": S, \"command\": CMD, \"exit_code\": N}`; "
                  "`report.py summarize-log` makes one from a pytest or ctest log.", ""]
        return "\n".join(parts)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "summarize-log":
        p = argparse.ArgumentParser(prog="report.py summarize-log")
        p.add_argument("--suite", required=True)
        p.add_argument("--command", required=True)
        p.add_argument("--seconds", required=True)
        p.add_argument("--exit-code", type=int, default=0)
        p.add_argument("log")
        p.add_argument("out")
        return summarize_log(p.parse_args(argv[1:]))
    p = argparse.ArgumentParser(prog="report.py")
    p.add_argument("--results", required=True)
    p.add_argument("--fuzz")
    p.add_argument("--memory")
    p.add_argument("--junit")
    p.add_argument("--settings", default="")
    p.add_argument("--binary", default="build/ferry")
    p.add_argument("--out", default=str(REPO / "docs" / "RELIABILITY.md"))
    a = p.parse_args(argv)
    results = load_dir(a.results, "test")
    if not results:
        print(f"report.py: no results in {a.results}", file=sys.stderr)
        return 1
    doc = Doc(results, load_dir(a.fuzz, "target"), load_dir(a.memory, "suite"),
              load_junit(a.junit), a.settings)
    doc.binary = a.binary
    text = doc.render(machine(), git_rev(), ferry_version(a.binary), a.binary)
    Path(a.out).write_text(text)
    print(f"report.py: wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
