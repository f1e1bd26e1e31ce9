#!/usr/bin/python3
"""Ferry's benchmark harness (`make bench`, `make bench-smoke`).

Runs the six scenarios of issue 8 against a release build of Ferry, with a
minimal libmicrohttpd + jansson server (bench/baseline.c) measured in the
same run as the yardstick, and writes

  build-bench/results/<profile>.json   every number measured
  docs/BENCHMARKS.md                   the report (full profile), with
  docs/bench-throughput.png            charts drawn by gnuplot
  docs/bench-latency.png

The smoke profile (CI) runs every scenario tiny and writes its report to
build-bench/ instead, so CI never rewrites docs/.

Pinning: the server under test (Ferry, or the baseline) runs alone on CPU 0;
every load generator and sink (wrk, ratesend, nginx, latsink) runs on CPU 1.
Ferry and the baseline alternate run by run, and medians are reported.

  bench/run.py [--smoke] [--ferry build/ferry] [--tools build-bench/tools]
               [--only 1,2,...] [--rounds N] [--duration S]
  bench/run.py --report-only build-bench/results/full.json

Standard library only; needs wrk, nginx (nginx-light), gnuplot and taskset.
"""

import argparse
import datetime
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER_CPU = 0  # the server under test, alone
LOAD_CPU = 1    # wrk, ratesend, nginx, latsink
# Scenario 4 is open loop: enough connections that a slow answer delays no
# send (5,000/s at 5 ms needs 25 in flight).
S4_CONNS = 64

# Targets from issue 8 (this 2-core machine, server pinned to one core).
TARGETS = {
    "s1_ratio": 0.7,           # Ferry / (MHD + jansson), same run
    "s2_events": 45000,        # batched ingest, events/s
    "s3_binary": 10000,        # delivered events/s, one request per event
    "s3_batch": 21500,         # delivered events/s, peer mode "batch"
    "s4_p99_ms": 5.0,          # ingest -> delivery p99 at 5,000 events/s
    "rss_idle_mb": 8,
    "rss_load_mb": 16,
    "rss_backlog_mb": 32,
    "ready_ms": 50,
}

# Reference points quoted in the issue (same machine class), for context.
REFERENCE = {
    "bare libmicrohttpd 202": "about 70,000 req/s",
    "libmicrohttpd + jansson parse": "about 34,000 req/s",
    "Fluent Bit in_http, filesystem buffering": "about 24,300 req/s",
    "Fluent Bit forwarding to an HTTP sink": "about 21,500 events/s",
    "Fluent Bit RSS": "about 8 MB idle, 37-59 MB under load",
}

PROFILES = {
    # rounds: alternating baseline/Ferry runs; durations in seconds
    "full": dict(rounds=5, duration=10, s3_duration=10, s4_duration=10,
                 s4_warmup=1, rate=5000, backlog=1000000, starts=7,
                 backlog_starts=3),
    "smoke": dict(rounds=1, duration=2, s3_duration=2, s4_duration=2,
                  s4_warmup=0, rate=5000, backlog=20000, starts=2,
                  backlog_starts=1),
}


# ----------------------------------------------------------------------------
# small helpers

def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def rel(path):
    """A path as the report shows it: relative to the repository."""
    try:
        r = os.path.relpath(path, ROOT)
        return path if r.startswith("..") else r
    except ValueError:
        return path


def cmdline(argv):
    out = []
    for a in argv:
        a = rel(a) if os.path.isabs(a) and a.startswith(ROOT) else a
        out.append(a if re.fullmatch(r"[\w./:=,@%+-]+", a) else
                   "'" + a.replace("'", "'\\''") + "'")
    return " ".join(out)


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_req(port, path, method="GET", timeout=10.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def proc_mem(pid):
    """VmRSS and VmHWM, and VmRSS split into RssAnon (the process's own
    memory) and RssFile (mapped files: mostly shared libraries' pages),
    KiB; {} once gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return {}
    return {k: int(v) for k, v in re.findall(
        r"^(VmRSS|VmHWM|RssAnon|RssFile|RssShmem):\s+(\d+)", text, re.M)}


def proc_status(pid):
    """VmRSS and VmHWM of pid in KiB, or (None, None) once it is gone."""
    m = proc_mem(pid)
    return m.get("VmRSS"), m.get("VmHWM")


def proc_cpu_s(pid):
    """User + system CPU seconds of pid, all its threads; None once gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def du_bytes(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(dirpath, f)).st_blocks * 512
            except OSError:
                pass
    return total


def mb(kib):
    return None if kib is None else kib / 1024.0


class Procs:
    """Every process the harness starts, so that all of them are stopped."""

    def __init__(self):
        self.live = []

    def start(self, argv, cpu=None, logfile=None, stdout=None):
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu)] + list(argv)
        out = open(logfile, "ab") if logfile else subprocess.DEVNULL
        p = subprocess.Popen(argv, stdout=stdout or out, stderr=out,
                             stdin=subprocess.DEVNULL)
        if logfile:
            out.close()
        p.argv = argv
        p.logfile = logfile
        self.live.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM, timeout=30):
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.live:
            self.live.remove(p)
        return p.returncode

    def stop_all(self):
        for p in list(self.live):
            self.stop(p, timeout=10)


def log_tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


# ----------------------------------------------------------------------------
# the harness

class Bench:
    def __init__(self, args, prof):
        self.a = args
        self.p = prof
        self.procs = Procs()
        self.tools = os.path.abspath(args.tools)
        self.ferry_bin = os.path.abspath(args.ferry)
        self.work = tempfile.mkdtemp(prefix="work-", dir=args.work_root)
        base = args.port_base
        self.port = dict(ferry=base, admin=base + 1, baseline=base + 2,
                         sink=base + 3, latsink=base + 4, dead=base + 5)
        self.commands = {}
        self.results = {"profile": args.profile, "targets": TARGETS,
                        "reference": REFERENCE, "scenarios": {},
                        "notes": [], "configs": {}}
        self.nonce = 0

    # -- processes ---------------------------------------------------------

    def note_cmd(self, key, argv):
        self.commands.setdefault(key, cmdline(argv))

    def next_nonce(self, tag):
        self.nonce += 1
        return f"{tag}{self.nonce}t{int(time.time()) % 100000}"

    def wait_http(self, p, port, path, what, timeout=120):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if p.poll() is not None:
                raise RuntimeError(f"{what} exited with {p.returncode}:\n"
                                   + log_tail(p.logfile or ""))
            try:
                if http_req(port, path, timeout=2)[0] == 200:
                    return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.005)
        raise RuntimeError(f"{what} not ready on port {port} after "
                           f"{timeout} s")

    def ferry_config(self, name, spool, peer):
        cfg = {
            "listen": f"127.0.0.1:{self.port['ferry']}",
            "admin": {"listen": f"127.0.0.1:{self.port['admin']}"},
            "log": {"level": "warn"},
            "spool": {"dir": spool, "max_bytes": 16 * 1024 ** 3},
            "drain_timeout_ms": 1000,
            "peers": {"sink": peer},
            "routes": [{"name": "all", "to": ["sink"]}],
        }
        path = os.path.join(self.work, f"{name}.json")
        with open(path, "w") as f:
            json.dump(cfg, f, indent=2)
        shown = json.loads(json.dumps(cfg))
        shown["spool"]["dir"] = "$WORK/" + os.path.basename(spool)
        self.results["configs"][name] = shown
        return path

    def dead_peer(self):
        """Peer down: a closed port, and neither retries nor breaker probes
        come back within the run, so only ingest is measured."""
        return {"url": f"http://127.0.0.1:{self.port['dead']}/events",
                "retry": {"initial_delay_ms": 3600000,
                          "max_delay_ms": 3600000, "jitter": "none"},
                "breaker": {"open_ms": 3600000}}

    def check_config(self, path):
        r = subprocess.run([self.ferry_bin, "check-config", "-c", path],
                           capture_output=True, text=True)
        return r.returncode, (r.stdout + r.stderr).strip()

    def start_ferry(self, cfg, fresh=True):
        spool = json.load(open(cfg))["spool"]["dir"]
        if fresh:
            shutil.rmtree(spool, ignore_errors=True)
        argv = [self.ferry_bin, "serve", "-c", cfg]
        self.note_cmd("ferry", ["taskset", "-c", str(SERVER_CPU)] + argv)
        p = self.procs.start(argv, cpu=SERVER_CPU,
                             logfile=os.path.join(self.work, "ferry.log"))
        self.wait_http(p, self.port["ferry"], "/readyz", "ferry")
        return p

    def stop_ferry(self, p, cfg=None, remove=True):
        rc = self.procs.stop(p)
        if rc not in (0, None):
            self.results["notes"].append(
                f"ferry exited with {rc} on SIGTERM: "
                + log_tail(p.logfile, 3).strip())
        if cfg and remove:
            shutil.rmtree(json.load(open(cfg))["spool"]["dir"],
                          ignore_errors=True)

    def start_baseline(self, parse=True, key="baseline"):
        argv = [os.path.join(self.tools, "baseline"), "--listen",
                str(self.port["baseline"])]
        if self.a.baseline_threads:
            argv += ["--threads", str(self.a.baseline_threads)]
        if not parse:
            argv.append("--no-parse")
        self.note_cmd(key, ["taskset", "-c", str(SERVER_CPU)] + argv)
        p = self.procs.start(argv, cpu=SERVER_CPU,
                             logfile=os.path.join(self.work, "baseline.log"))
        self.wait_http(p, self.port["baseline"], "/", "baseline")
        return p

    def start_nginx(self):
        d = os.path.join(self.work, "nginx")
        os.makedirs(d, exist_ok=True)
        conf = os.path.join(d, "nginx.conf")
        temp = "\n".join(f"  {k}_temp_path {d}/{k};" for k in
                         ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        with open(conf, "w") as f:
            f.write(f"""# generated by bench/run.py: the fast sink
worker_processes 1;
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
{temp}
  client_max_body_size 0;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{self.port['sink']};
    location = /nginx_status {{ stub_status; }}
    location / {{ return 200; }}
  }}
}}
""")
        self.nginx_conf = conf
        argv = ["nginx", "-p", d, "-c", conf, "-e", f"{d}/error.log"]
        self.note_cmd("nginx", ["taskset", "-c", str(LOAD_CPU)] + argv)
        p = self.procs.start(argv, cpu=LOAD_CPU,
                             logfile=os.path.join(d, "stderr.log"))
        self.wait_http(p, self.port["sink"], "/nginx_status", "nginx")
        self.nginx_base = None
        return p

    def sink_count(self):
        """Requests nginx has served, stub_status queries excluded.

        stub_status counts every request, itself included: each query is
        subtracted, so the count is exactly the deliveries."""
        st, body = http_req(self.port["sink"], "/nginx_status")
        total = int(body.decode().split("\n")[2].split()[2])
        if self.nginx_base is None:
            self.nginx_base = total
            self.nginx_queries = 0
            return 0
        self.nginx_queries += 1
        return total - self.nginx_base - self.nginx_queries

    def start_latsink(self):
        argv = [os.path.join(self.tools, "latsink"), "--listen",
                str(self.port["latsink"])]
        self.note_cmd("latsink", ["taskset", "-c", str(LOAD_CPU)] + argv)
        p = self.procs.start(argv, cpu=LOAD_CPU,
                             logfile=os.path.join(self.work, "latsink.log"))
        self.wait_http(p, self.port["latsink"], "/stats", "latsink")
        return p

    def latsink_stats(self, reset=False, id_prefix=""):
        path = f"/stats?id_prefix={id_prefix}" if id_prefix else "/stats"
        st, body = http_req(self.port["latsink"], path,
                            method="DELETE" if reset else "GET", timeout=60)
        return json.loads(body)

    def metrics(self):
        st, body = http_req(self.port["ferry"], "/metrics")
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                try:
                    out[k] = float(v)
                except ValueError:
                    pass
        return out

    def delivered(self, m):
        return m.get('ferry_deliveries_total{peer="sink",outcome="success"}',
                     0)

    def pending(self, m):
        return m.get('ferry_spool_pending{peer="sink"}')

    def wrk(self, url, duration, batch=1, key="wrk"):
        argv = ["wrk", "-t1", "-c32", f"-d{duration}s", "--timeout", "10s",
                "-s", os.path.join(ROOT, "bench", "ingest.lua"), url, "--",
                f"batch={batch}", f"nonce={self.next_nonce('w')}"]
        self.note_cmd(key, ["taskset", "-c", str(LOAD_CPU)] + argv)
        r = subprocess.run(["taskset", "-c", str(LOAD_CPU)] + argv,
                           capture_output=True, text=True,
                           timeout=duration + 60)
        lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
        if r.returncode != 0 or not lines:
            raise RuntimeError(f"wrk failed ({r.returncode}): "
                               f"{r.stdout[-400:]} {r.stderr[-400:]}")
        out = json.loads(lines[-1])
        out["batch"] = batch
        out["events_per_s"] = out["rps"] * batch
        bad = out["non2xx"] + out["connect_errors"] + out["read_errors"] + \
            out["write_errors"] + out["timeouts"]
        if bad:
            self.results["notes"].append(
                f"wrk against {url} (batch={batch}) saw {bad} failed "
                "requests; only 2xx answers are counted")
        return out

    def ratesend(self, port, rate, duration=None, count=None, batch=1,
                 conns=32, key="ratesend", nonce=None, path="/v1/events"):
        argv = [os.path.join(self.tools, "ratesend"), "--port", str(port),
                "--path", path,
                "--rate", str(rate), "--connections", str(conns),
                "--batch", str(batch), "--nonce",
                nonce or self.next_nonce("r")]
        argv += ["--count", str(count)] if count is not None else \
            ["--duration", str(duration)]
        self.note_cmd(key, ["taskset", "-c", str(LOAD_CPU)] + argv)
        r = subprocess.run(["taskset", "-c", str(LOAD_CPU)] + argv,
                           capture_output=True, text=True, timeout=3600)
        if not r.stdout.strip():
            raise RuntimeError(f"ratesend failed: {r.stderr.strip()}")
        out = json.loads(r.stdout)
        if r.returncode != 0:
            self.results["notes"].append(
                f"ratesend ({key}): {out['requests'] - out['ok']} of "
                f"{out['requests']} requests were not answered 2xx")
        return out

    def libfloor_mem(self):
        """proc_mem() of bench/libfloor.c on CPU 0: Ferry's libraries
        loaded and initialised, nothing else. {} if it cannot run."""
        argv = [os.path.join(self.tools, "libfloor")]
        self.note_cmd("libfloor", ["taskset", "-c", str(SERVER_CPU)] + argv)
        try:
            p = subprocess.Popen(["taskset", "-c", str(SERVER_CPU)] + argv,
                                 stdout=subprocess.PIPE, text=True)
        except OSError:
            return {}
        try:
            if p.stdout.readline().strip() != "ready":
                return {}
            time.sleep(1)
            return proc_mem(p.pid)
        finally:
            p.terminate()
            p.wait(timeout=10)

    def sample_rss(self, pid, stop, into):
        while not stop.is_set():
            rss, hwm = proc_status(pid)
            if rss is not None:
                into.append(rss)
            stop.wait(0.1)

    # -- scenarios ---------------------------------------------------------

    def s1_single(self):
        """Durable single-event ingest vs the MHD (+jansson) baselines, plus
        a diagnostic Ferry with its spool on tmpfs, where fdatasync costs
        nothing (not durable; not a supported setup): what the disk's sync
        latency takes out of the rate."""
        shm = "/dev/shm"
        tmpfs = os.path.isdir(shm) and os.access(shm, os.W_OK)
        return self.ingest_scenario(
            batch=1, servers=("bare", "baseline", "ferry")
            + (("ferry-tmpfs",) if tmpfs else ()))

    def s2_batch(self):
        """Batched ingest: 100 events of 1 KB per request."""
        return self.ingest_scenario(batch=100, servers=("baseline", "ferry"))

    def ingest_scenario(self, batch, servers):
        dur = self.a.duration or self.p["duration"]
        cfg = self.ferry_config(f"ingest{batch}",
                                os.path.join(self.work, "spool-ingest"),
                                self.dead_peer())
        runs = {s: [] for s in servers}
        shm_dir = cfg_tmpfs = None
        if "ferry-tmpfs" in servers:
            shm_dir = tempfile.mkdtemp(prefix="ferry-bench-", dir="/dev/shm")
            cfg_tmpfs = self.ferry_config(f"ingest{batch}-tmpfs",
                                          os.path.join(shm_dir, "spool"),
                                          self.dead_peer())
        try:
            self.ingest_rounds(batch, dur, servers, runs, cfg, cfg_tmpfs)
        finally:
            if shm_dir:
                shutil.rmtree(shm_dir, ignore_errors=True)
        res = {"duration_s": dur, "batch": batch, "runs": runs,
               "median_events_per_s": {s: median(
                   r["events_per_s"] for r in runs[s]) for s in servers}}
        med = res["median_events_per_s"]
        if med.get("baseline"):
            res["ratio"] = med["ferry"] / med["baseline"]
            res["paired_ratios"] = [f["events_per_s"] / b["events_per_s"]
                                    for f, b in zip(runs["ferry"],
                                                    runs["baseline"])]
        res["ferry_hwm_kb"] = max(r["hwm_kb"] or 0 for r in runs["ferry"])
        return res

    def ingest_rounds(self, batch, dur, servers, runs, cfg, cfg_tmpfs):
        for rnd in range(self.a.rounds or self.p["rounds"]):
            for srv in servers:
                ferry_cfg = cfg_tmpfs if srv == "ferry-tmpfs" else cfg
                if srv.startswith("ferry"):
                    p = self.start_ferry(ferry_cfg)
                    port, path = self.port["ferry"], "/v1/events"
                else:
                    p = self.start_baseline(parse=(srv == "baseline"),
                                            key=srv)
                    port, path = self.port["baseline"], "/v1/events"
                try:
                    out = self.wrk_cpu(p, f"http://127.0.0.1:{port}{path}",
                                       dur, batch)
                    rss, hwm = proc_status(p.pid)
                    out["rss_kb"], out["hwm_kb"] = rss, hwm
                    if srv.startswith("ferry"):
                        m = self.metrics()
                        out["ferry_received"] = sum(
                            v for k, v in m.items()
                            if k.startswith("ferry_events_received_total"))
                        out["spool_bytes"] = m.get("ferry_spool_bytes")
                finally:
                    if srv.startswith("ferry"):
                        self.stop_ferry(p, ferry_cfg)
                    else:
                        self.procs.stop(p)
                runs[srv].append(out)
                log(f"  batch={batch} round {rnd + 1} {srv}: "
                    f"{out['events_per_s']:.0f} events/s "
                    f"(p99 {out['p99_us'] / 1000:.1f} ms, "
                    f"CPU {out['cpu_util'] or 0:.2f}, "
                    f"RSS peak {mb(out['hwm_kb']):.1f} MB)")

    def wrk_cpu(self, p, url, dur, batch):
        """wrk against server process p, with the share of one CPU p used
        meanwhile (cpu_util: 1.0 is CPU 0 busy all the time)."""
        c0, t0 = proc_cpu_s(p.pid), time.monotonic()
        out = self.wrk(url, dur, batch=batch, key=f"wrk batch={batch}")
        c1, t1 = proc_cpu_s(p.pid), time.monotonic()
        out["cpu_util"] = (c1 - c0) / (t1 - t0) if None not in (c0, c1) \
            else None
        return out

    def s3_delivery(self):
        """End to end: wrk -> Ferry -> nginx `return 200;`, both modes."""
        dur = self.p["s3_duration"]
        warm = min(1.0, dur / 4)
        nginx = self.start_nginx()
        res = {"duration_s": dur, "window_s": dur - 2 * warm, "modes": {}}
        try:
            for mode in ("binary", "batch"):
                peer = {"url": f"http://127.0.0.1:{self.port['sink']}/events",
                        "mode": mode}
                cfg = self.ferry_config(f"deliver-{mode}",
                                        os.path.join(self.work,
                                                     "spool-deliver"), peer)
                rc, msg = self.check_config(cfg)
                if rc != 0:
                    res["modes"][mode] = {"skipped": True,
                                          "reason": f"ferry check-config "
                                          f"rejects mode \"{mode}\": {msg}"}
                    log(f"  mode {mode}: skipped ({msg})")
                    continue
                runs = []
                for rnd in range(self.a.rounds or self.p["rounds"]):
                    runs.append(self.s3_round(cfg, dur, warm, mode))
                    r = runs[-1]
                    log(f"  mode {mode} round {rnd + 1}: delivered "
                        f"{r['delivered_per_s']:.0f} events/s, ingest "
                        f"{r['ingest_per_s']:.0f} events/s")
                res["modes"][mode] = {
                    "runs": runs,
                    "median_delivered_per_s": median(
                        r["delivered_per_s"] for r in runs),
                    "median_ingest_per_s": median(
                        r["ingest_per_s"] for r in runs),
                    "hwm_kb": max(r["hwm_kb"] or 0 for r in runs)}
        finally:
            self.procs.stop(nginx)
        return res

    def s3_round(self, cfg, dur, warm, mode):
        p = self.start_ferry(cfg)
        try:
            self.sink_count()  # sets the base
            url = f"http://127.0.0.1:{self.port['ferry']}/v1/events"
            box = {}
            t = threading.Thread(target=lambda: box.update(
                wrk=self.wrk(url, dur, key="wrk deliver")))
            t.start()
            time.sleep(warm)
            n1, m1, t1 = self.sink_count(), self.metrics(), time.monotonic()
            time.sleep(dur - 2 * warm)
            n2, m2, t2 = self.sink_count(), self.metrics(), time.monotonic()
            t.join()
            if "wrk" not in box:
                raise RuntimeError("wrk failed during scenario 3")
            w = box["wrk"]
            rss, hwm = proc_status(p.pid)
            m3 = self.metrics()
            window = t2 - t1
            # the sink's count is exact in binary mode (one request, one
            # event); a batch request carries several, so the event count
            # there is Ferry's success counter, checked against nginx.
            sink_req = n2 - n1
            ok_ev = self.delivered(m2) - self.delivered(m1)
            events = sink_req if mode == "binary" else ok_ev
            return {"delivered_per_s": events / window,
                    "sink_requests_per_s": sink_req / window,
                    "ferry_success_per_s": ok_ev / window,
                    "events_per_request": ok_ev / sink_req if sink_req else None,
                    "ingest_per_s": w["events_per_s"], "wrk": w,
                    "window_s": window, "pending_after": self.pending(m3),
                    "rss_kb": rss, "hwm_kb": hwm}
        finally:
            self.stop_ferry(p, cfg)

    def s4_latency(self):
        """Ingest -> delivery latency at a fixed rate (ratesend, latsink)."""
        dur, rate, warm = (self.p["s4_duration"], self.p["rate"],
                           self.p["s4_warmup"])
        sink = self.start_latsink()
        res = {"rate": rate, "duration_s": dur, "warmup_s": warm, "modes": {}}
        try:
            # the harness's own floor: ratesend straight into latsink
            nonce = self.next_nonce("r")
            self.latsink_stats(reset=True, id_prefix=nonce + "-")
            sent = self.ratesend(self.port["latsink"], rate, duration=dur,
                                 conns=S4_CONNS, key="ratesend direct",
                                 nonce=nonce, path="/in")
            self.wait_sink_events(sent["ok"])
            floor = self.latsink_stats()
            floor["sent"] = sent
            res["direct"] = floor
            log(f"  harness floor (no Ferry): p50 "
                f"{floor['p50_us'] / 1000:.2f} ms p99 "
                f"{floor['p99_us'] / 1000:.2f} ms")
            for mode in ("binary", "batch"):
                peer = {"url": f"http://127.0.0.1:{self.port['latsink']}/in",
                        "mode": mode}
                cfg = self.ferry_config(f"latency-{mode}",
                                        os.path.join(self.work,
                                                     "spool-latency"), peer)
                rc, msg = self.check_config(cfg)
                if rc != 0:
                    res["modes"][mode] = {"skipped": True,
                                          "reason": f"ferry check-config "
                                          f"rejects mode \"{mode}\": {msg}"}
                    continue
                runs = []
                for rnd in range(self.a.rounds or self.p["rounds"]):
                    runs.append(self.s4_round(cfg, rate, dur, warm))
                    r = runs[-1]
                    log(f"  mode {mode} round {rnd + 1}: p50 "
                        f"{r['p50_us'] / 1000:.2f} ms p99 "
                        f"{r['p99_us'] / 1000:.2f} ms, delivered "
                        f"{r['unique']}/{r['sent']['ok']}"
                        + (f", {r['duplicates']} duplicates"
                           if r["duplicates"] else ""))
                mid = sorted(runs, key=lambda r: r["p99_us"])[len(runs) // 2]
                res["modes"][mode] = {
                    "runs": runs,
                    "median_p50_ms": median(r["p50_us"] for r in runs) / 1e3,
                    "median_p99_ms": median(r["p99_us"] for r in runs) / 1e3,
                    "median_p999_ms": median(r["p999_us"] for r in runs) / 1e3,
                    "median_run_percentiles": mid["percentiles"]}
            res["tmpfs"] = self.s4_tmpfs(rate, dur, warm)
        finally:
            self.procs.stop(sink)
        return res

    def s4_tmpfs(self, rate, dur, warm):
        """Diagnostic: one binary-mode run with the spool on tmpfs, where
        fdatasync costs nothing, to show what the disk's sync latency adds
        to the tail. Not a supported setup (tmpfs is not durable)."""
        shm = "/dev/shm"
        if not (os.path.isdir(shm) and os.access(shm, os.W_OK)):
            return None
        peer = {"url": f"http://127.0.0.1:{self.port['latsink']}/in",
                "mode": "binary"}
        d = tempfile.mkdtemp(prefix="ferry-bench-", dir=shm)
        try:
            cfg = self.ferry_config("latency-tmpfs", os.path.join(d, "spool"),
                                    peer)
            r = self.s4_round(cfg, rate, dur, warm)
            log(f"  diagnostic, spool on tmpfs: p50 {r['p50_us'] / 1000:.2f}"
                f" ms p99 {r['p99_us'] / 1000:.2f} ms; ingest alone p99 "
                f"{r['sent']['ingest_p99_us'] / 1000:.2f} ms")
            return {"p50_ms": r["p50_us"] / 1e3, "p99_ms": r["p99_us"] / 1e3,
                    "p999_ms": r["p999_us"] / 1e3,
                    "ingest_p50_ms": r["sent"]["ingest_p50_us"] / 1e3,
                    "ingest_p99_ms": r["sent"]["ingest_p99_us"] / 1e3}
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def s4_round(self, cfg, rate, dur, warm):
        p = self.start_ferry(cfg)
        try:
            port = self.port["ferry"]
            if warm:
                w = self.ratesend(port, rate, duration=warm, conns=S4_CONNS,
                                  key="ratesend")
                self.wait_sink_events(w["ok"], timeout=60)
            # count only this run's ids: late warm-up arrivals are stale
            nonce = self.next_nonce("r")
            self.latsink_stats(reset=True, id_prefix=nonce + "-")
            sent = self.ratesend(port, rate, duration=dur, conns=S4_CONNS,
                                 key="ratesend", nonce=nonce)
            complete = self.wait_sink_events(sent["ok"])
            st = self.latsink_stats()
            st["sent"] = sent
            st["complete"] = complete
            span = (st["last_ns"] - st["first_ns"]) / 1e9
            st["sink_events_per_s"] = st["unique"] / span if span > 0 else None
            st["hwm_kb"] = proc_status(p.pid)[1]
            if not complete:
                self.results["notes"].append(
                    f"scenario 4: only {st['unique']} of {sent['ok']} "
                    "accepted events reached the sink within 30 s")
            return st
        finally:
            self.stop_ferry(p, cfg)

    def wait_sink_events(self, n, timeout=30):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.latsink_stats()["unique"] >= n:
                return True
            time.sleep(0.05)
        return False

    def s5_s6_memory_backlog_start(self):
        """RSS idle / with a backlog, drain time, and start-to-ready."""
        res5 = {"backlog": self.p["backlog"]}
        res6 = {}
        readytime = os.path.join(self.tools, "readytime")
        spool = os.path.join(self.work, "spool-backlog")
        # peer down (nginx not started yet); short breaker and retry so the
        # drain begins within a second of the peer coming back
        peer = {"url": f"http://127.0.0.1:{self.port['sink']}/events",
                "retry": {"initial_delay_ms": 1000, "max_delay_ms": 1000,
                          "jitter": "none", "max_attempts": 1000000},
                "breaker": {"open_ms": 1000}}
        cfg = self.ferry_config("backlog", spool, peer)

        # 6: start to ready with an empty (new) spool
        def starts(n, fresh):
            out = []
            argv = [readytime, "--cpu", str(SERVER_CPU), "--port",
                    str(self.port["ferry"]), "--path", "/readyz", "--",
                    self.ferry_bin, "serve", "-c", cfg]
            self.note_cmd("readytime", argv)
            for _ in range(n):
                if fresh:
                    shutil.rmtree(spool, ignore_errors=True)
                r = subprocess.run(argv, capture_output=True, text=True,
                                   timeout=600)
                if r.returncode != 0:
                    raise RuntimeError(f"readytime: {r.stderr.strip()}")
                out.append(json.loads(r.stdout))
            return out

        empty = starts(self.p["starts"], fresh=True)
        res6["empty"] = {"runs": empty,
                         "median_ready_ms": median(r["ready_ms"]
                                                   for r in empty)}
        log(f"  start to ready, empty spool: "
            f"{res6['empty']['median_ready_ms']:.1f} ms (median)")

        # 5: the libraries' floor: what loading them alone costs
        res5["libfloor_mem"] = self.libfloor_mem()
        if res5["libfloor_mem"]:
            log(f"  library floor (libfloor): RSS "
                f"{mb(res5['libfloor_mem'].get('VmRSS')):.1f} MB")

        # 5: idle, then fill the backlog with the batched load, peer down
        p = self.start_ferry(cfg)
        try:
            time.sleep(2)
            res5["idle_rss_kb"], res5["idle_hwm_kb"] = proc_status(p.pid)
            res5["idle_mem"] = proc_mem(p.pid)
            samples = []
            stop = threading.Event()
            th = threading.Thread(target=self.sample_rss,
                                  args=(p.pid, stop, samples))
            th.start()
            t0 = time.monotonic()
            fill = self.ratesend(self.port["ferry"], 0,
                                 count=self.p["backlog"] // 100, batch=100,
                                 key="ratesend fill")
            res5["fill_s"] = time.monotonic() - t0
            stop.set()
            th.join()
            res5["fill"] = fill
            res5["fill_peak_rss_kb"] = max(samples) if samples else None
            time.sleep(2)
            m = self.metrics()
            res5["pending_after_fill"] = self.pending(m)
            res5["backlog_rss_kb"], res5["backlog_hwm_kb"] = \
                proc_status(p.pid)
            log(f"  backlog of {fill['ok'] * 100} events in "
                f"{res5['fill_s']:.1f} s; RSS {mb(res5['backlog_rss_kb']):.1f}"
                f" MB (peak {mb(res5['backlog_hwm_kb']):.1f} MB)")
        finally:
            self.stop_ferry(p, remove=False)
        res5["spool_disk_bytes"] = du_bytes(spool)

        # 6: start to ready with the backlog in the spool
        full = starts(self.p["backlog_starts"], fresh=False)
        res6["backlog"] = {"runs": full, "events": self.p["backlog"],
                           "median_ready_ms": median(r["ready_ms"]
                                                     for r in full)}
        log(f"  start to ready, {self.p['backlog']} pending: "
            f"{res6['backlog']['median_ready_ms']:.1f} ms (median)")

        # 5: restart with the backlog, then bring the peer back and drain
        p = self.start_ferry(cfg, fresh=False)
        nginx = None
        try:
            time.sleep(2)
            res5["restart_rss_kb"], res5["restart_hwm_kb"] = \
                proc_status(p.pid)
            res5["pending_at_restart"] = self.pending(self.metrics())
            samples = []
            stop = threading.Event()
            th = threading.Thread(target=self.sample_rss,
                                  args=(p.pid, stop, samples))
            th.start()
            t0 = time.monotonic()
            nginx = self.start_nginx()
            self.sink_count()
            first = None
            want = res5["pending_at_restart"] or self.p["backlog"]
            deadline = t0 + max(300, self.p["backlog"] / 1000)
            progress = []
            done = None
            while time.monotonic() < deadline:
                n = self.sink_count()
                now = time.monotonic()
                if n and first is None:
                    first = now
                if n >= want and done is None:
                    done = now
                pend = self.pending(self.metrics())
                progress.append((round(now - t0, 2), n, pend))
                if done and pend == 0:
                    break
                time.sleep(0.05)
            zero = time.monotonic()
            stop.set()
            th.join()
            done = done or zero
            res5["drain_delivered"] = n
            res5["drain_complete"] = n >= want and pend == 0
            res5["drain_s"] = done - t0
            res5["drain_pending_zero_s"] = zero - t0
            res5["drain_from_first_s"] = done - first if first else None
            res5["drain_events_per_s"] = (n / (done - first)
                                          if first and done > first else None)
            res5["drain_peak_rss_kb"] = max(samples) if samples else None
            res5["drain_hwm_kb"] = proc_status(p.pid)[1]
            res5["drain_progress"] = progress[:: max(1, len(progress) // 60)]
            log(f"  drained {n} events in {res5['drain_s']:.1f} s "
                f"({res5['drain_events_per_s'] or 0:.0f} events/s), "
                f"peak RSS {mb(res5['drain_peak_rss_kb']) or 0:.1f} MB")
            if not res5["drain_complete"]:
                self.results["notes"].append(
                    f"scenario 5: the drain did not finish: {n} of {want} "
                    f"delivered, {pend} pending")
        finally:
            self.stop_ferry(p, cfg)
            if nginx:
                self.procs.stop(nginx)
        return res5, res6

    # -- machine -----------------------------------------------------------

    def machine(self):
        def sh(cmd):
            try:
                return subprocess.run(cmd, shell=True, capture_output=True,
                                      text=True, timeout=20).stdout.strip()
            except Exception:
                return ""
        info = {
            "cpu": sh("lscpu | sed -n 's/^Model name: *//p' | head -1"),
            "nproc": os.cpu_count(),
            "mem": sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' "
                      "/proc/meminfo"),
            "kernel": sh("uname -sr"),
            "os": sh(". /etc/os-release && echo $PRETTY_NAME"),
            "spool_fs": sh(f"findmnt -no SOURCE,FSTYPE,OPTIONS -T "
                           f"{self.work}"),
            "spool_dir": re.sub(r"work-\w+$", "work-*", rel(self.work)),
            "ferry_version": sh(f"{self.ferry_bin} version").replace(
                "ferry ", ""),
            "ferry_binary": rel(self.ferry_bin),
            "git": sh(f"git -C {ROOT} rev-parse --short HEAD"),
            "git_dirty": bool(sh(f"git -C {ROOT} status --porcelain "
                                 "agent CMakeLists.txt")),
            "wrk": sh("wrk -v 2>&1 | head -1 | cut -d' ' -f1-2"),
            "nginx": sh("nginx -v 2>&1"),
            "libmicrohttpd": sh("pkg-config --modversion libmicrohttpd"),
            "jansson": sh("pkg-config --modversion jansson"),
            "sqlite": sh("pkg-config --modversion sqlite3"),
            "libcurl": sh("pkg-config --modversion libcurl"),
            "loadavg_start": open("/proc/loadavg").read().split()[:3],
        }
        info["fsync"] = self.fsync_probe()
        return info

    def fsync_probe(self, n=200):
        """Latency of a 4 KiB overwrite + fdatasync in the spool's
        filesystem: the floor under every durable 202."""
        path = os.path.join(self.work, "fsync-probe")
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        buf = os.urandom(4096)
        lat = []
        try:
            os.pwrite(fd, buf, 0)
            os.fsync(fd)
            for _ in range(n):
                t = time.perf_counter()
                os.pwrite(fd, buf, 0)
                os.fdatasync(fd)
                lat.append((time.perf_counter() - t) * 1e3)
        finally:
            os.close(fd)
            os.unlink(path)
        lat.sort()
        return {"n": n, "p50_ms": lat[n // 2], "p99_ms": lat[int(n * 0.99)]}

    # -- run ---------------------------------------------------------------

    def run(self, only):
        for k, port in self.port.items():
            if port_open(port):
                raise SystemExit(f"bench: port {port} ({k}) is in use; "
                                 "choose another with --port-base")
        t0 = time.time()
        self.results["started"] = datetime.datetime.now().isoformat(
            timespec="seconds")
        self.results["machine"] = self.machine()
        scen = self.results["scenarios"]
        plan = [("1", "s1", self.s1_single), ("2", "s2", self.s2_batch),
                ("3", "s3", self.s3_delivery), ("4", "s4", self.s4_latency),
                ("5", "s5", None)]
        failed = False
        for num, key, fn in plan:
            if only and num not in only and not (num == "5" and "6" in only):
                continue
            log(f"scenario {num}" + (" and 6" if num == "5" else ""))
            try:
                if num == "5":
                    scen["s5"], scen["s6"] = self.s5_s6_memory_backlog_start()
                else:
                    scen[key] = fn()
            except Exception as e:  # keep going: report what failed
                failed = True
                scen[key] = {"error": f"{type(e).__name__}: {e}"}
                log(f"  FAILED: {e}")
            finally:
                self.procs.stop_all()
        self.results["machine"]["loadavg_end"] = \
            open("/proc/loadavg").read().split()[:3]
        self.results["elapsed_s"] = time.time() - t0
        self.results["commands"] = self.commands
        return failed

    def cleanup(self):
        self.procs.stop_all()
        shutil.rmtree(self.work, ignore_errors=True)


# ----------------------------------------------------------------------------
# report

def fmt(x, digits=0, unit=""):
    if x is None:
        return "n/a"
    if isinstance(x, float) and digits == 0:
        return f"{x:,.0f}{unit}"
    return f"{x:,.{digits}f}{unit}"


def verdict(ok):
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def summarize(res):
    """[(what, target text, measured text, ok)] for the summary table."""
    s = res["scenarios"]
    T = res["targets"]
    rows = []

    def get(*path):
        d = s
        for k in path:
            if not isinstance(d, dict) or k not in d:
                return None
            d = d[k]
        return d

    r = get("s1", "ratio")
    rows.append(("1. single-event ingest, durable", f">= {T['s1_ratio']}x "
                 "MHD+jansson", f"{fmt(get('s1', 'median_events_per_s', 'ferry'))}"
                 f" req/s = {fmt(r, 2)}x",
                 None if r is None else r >= T["s1_ratio"]))
    v = get("s2", "median_events_per_s", "ferry")
    rows.append(("2. batched ingest (100 x 1 KB)",
                 f">= {T['s2_events']:,} events/s", fmt(v, unit=" events/s"),
                 None if v is None else v >= T["s2_events"]))
    for mode, key in (("binary", "s3_binary"), ("batch", "s3_batch")):
        m = get("s3", "modes", mode) or {}
        v = m.get("median_delivered_per_s")
        txt = "skipped (see below)" if m.get("skipped") else \
            fmt(v, unit=" events/s")
        rows.append((f"3. end-to-end delivery, mode {mode}",
                     f">= {T[key]:,} events/s", txt,
                     None if v is None else v >= T[key]))
    for mode in ("binary", "batch"):
        m = get("s4", "modes", mode) or {}
        v = m.get("median_p99_ms")
        if v is None and mode == "batch":
            continue
        rows.append((f"4. p99 ingest->delivery at {get('s4', 'rate') or 5000:,}"
                     f"/s ({mode})", f"< {T['s4_p99_ms']} ms",
                     fmt(v, 2, " ms"), None if v is None else
                     v < T["s4_p99_ms"]))
    idle = mb(get("s5", "idle_rss_kb"))
    floor = mb((get("s5", "libfloor_mem") or {}).get("VmRSS"))
    rows.append(("5. RSS idle", f"<= {T['rss_idle_mb']} MB",
                 fmt(idle, 1, " MB") + (f" (its libraries alone: "
                                        f"{fmt(floor, 1, ' MB')})"
                                        if floor else ""),
                 None if idle is None else idle <= T["rss_idle_mb"]))
    load = load_rss_mb(res)
    rows.append(("5. RSS under load (peak)", f"<= {T['rss_load_mb']} MB",
                 fmt(load, 1, " MB"),
                 None if load is None else load <= T["rss_load_mb"]))
    bl = [mb(get("s5", k)) for k in ("backlog_rss_kb", "restart_rss_kb")]
    bl = max([x for x in bl if x is not None], default=None)
    n = get("s5", "backlog")
    rows.append((f"5. RSS with a {fmt(n)}-event backlog",
                 f"<= {T['rss_backlog_mb']} MB", fmt(bl, 1, " MB"),
                 None if bl is None else bl <= T["rss_backlog_mb"]))
    for k, label in (("empty", "empty spool"),
                     ("backlog", f"{fmt(n)} pending")):
        v = get("s6", k, "median_ready_ms")
        rows.append((f"6. start to ready, {label}",
                     f"<= {T['ready_ms']} ms", fmt(v, 1, " ms"),
                     None if v is None else v <= T["ready_ms"]))
    return rows


def load_rss_mb(res):
    """Peak RSS of Ferry under load: VmHWM at the end of each loaded run of
    scenarios 1-4, after filling the backlog and after draining it
    (scenario 5). Each run is a new process, so VmHWM is that run's peak."""
    s = res["scenarios"]
    vals = []
    for k in ("s1", "s2"):
        for r in s.get(k, {}).get("runs", {}).get("ferry", []):
            vals.append(r.get("hwm_kb"))
    for k in ("s3", "s4"):
        for m in s.get(k, {}).get("modes", {}).values():
            for r in m.get("runs", []):
                vals.append(r.get("hwm_kb"))
    vals += [s.get("s5", {}).get(k) for k in ("backlog_hwm_kb",
                                               "drain_hwm_kb")]
    vals = [v for v in vals if v]
    return mb(max(vals)) if vals else None


def plot(res, outdir):
    """docs/bench-throughput.png and docs/bench-latency.png via gnuplot."""
    if not shutil.which("gnuplot"):
        return []
    s = res["scenarios"]
    tmp = tempfile.mkdtemp(prefix="plot-")
    made = []
    try:
        rows = []
        s1 = s.get("s1", {}).get("median_events_per_s", {})
        s2 = s.get("s2", {}).get("median_events_per_s", {})
        T = res["targets"]
        if s1:
            rows += [("1 bare MHD", s1.get("bare"), None),
                     ("1 MHD+jansson", s1.get("baseline"), None),
                     ("1 Ferry", s1.get("ferry"),
                      s1.get("baseline") and T["s1_ratio"] * s1["baseline"])]
        if s2:
            rows += [("2 MHD+jansson\\nbatch", s2.get("baseline"), None),
                     ("2 Ferry batch", s2.get("ferry"), T["s2_events"])]
        for mode, key in (("binary", "s3_binary"), ("batch", "s3_batch")):
            m = s.get("s3", {}).get("modes", {}).get(mode, {})
            if "median_delivered_per_s" in m:
                rows.append((f"3 Ferry deliver\\n{mode}",
                             m["median_delivered_per_s"], T[key]))
        if rows:
            dat = os.path.join(tmp, "tp.dat")
            with open(dat, "w") as f:
                for label, v, t in rows:
                    f.write(f'"{label}" {v if v is not None else "-"} '
                            f'{t if t else "-"}\n')
            png = os.path.join(outdir, "bench-throughput.png")
            gp = f"""
set terminal pngcairo size 1000,520 font "sans,10"
set output '{png}'
set title "Ferry throughput, server pinned to one core (medians of {res['profile']} run)"
set ylabel "events per second"
set datafile missing "-"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set bmargin 4
set grid ytics
set yrange [0:*]
set offsets 0, 0, graph 0.08, 0
set key top right
set format y "%.0s%c"
plot '{dat}' using 2:xtic(1) title "measured" lc rgb "#3b75af", \\
     '' using 3 title "target" lc rgb "#e0a040", \\
     '' using ($0-1.0/6):2:(sprintf("%.0f", $2)) with labels offset 0,0.7 notitle, \\
     '' using ($0+1.0/6):3:(sprintf("%.0f", $3)) with labels offset 0,0.7 notitle
"""
            subprocess.run(["gnuplot"], input=gp, text=True, check=True)
            made.append(png)
        series = []
        for mode in ("binary", "batch"):
            m = s.get("s4", {}).get("modes", {}).get(mode, {})
            pts = m.get("median_run_percentiles")
            if pts:
                dat = os.path.join(tmp, f"lat-{mode}.dat")
                with open(dat, "w") as f:
                    for p, us in pts:
                        if p < 100:
                            f.write(f"{1 / (1 - p / 100):.6f} {us / 1000:.4f}"
                                    f" {p}\n")
                series.append((mode, dat))
        if series:
            png = os.path.join(outdir, "bench-latency.png")
            rate = s["s4"].get("rate", 5000)
            plots = ", ".join(
                f"'{d}' using 1:2 with linespoints lw 2 title 'peer mode {m}'"
                for m, d in series)
            gp = f"""
set terminal pngcairo size 1000,520 font "sans,10"
set output '{png}'
set title "Ferry ingest-to-delivery latency at {rate:,} events/s (median run by p99)"
set xlabel "percentile"
set ylabel "latency (ms)"
set logscale x
set logscale y
set grid
set xtics ("0%%" 1, "50%%" 2, "90%%" 10, "99%%" 100, "99.9%%" 1000, "99.99%%" 10000)
set key bottom right opaque box
plot {plots}, {res['targets']['s4_p99_ms']} with lines dt 2 lc rgb "#c03030" title 'p99 target'
"""
            subprocess.run(["gnuplot"], input=gp, text=True, check=True)
            made.append(png)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return made


def runs_text(xs, digits=0, scale=1.0):
    return " / ".join(fmt(x * scale if x is not None else None, digits)
                      for x in xs)


def write_report(res, path, images):
    m = res.get("machine", {})
    s = res["scenarios"]
    T = res["targets"]
    c = res.get("commands", {})
    smoke = res["profile"] == "smoke"
    L = []
    w = L.append
    w("# Ferry benchmarks")
    w("")
    w("<!-- generated by bench/run.py (`make bench`); edit the harness, "
      "not this file -->")
    w("")
    if smoke:
        w("**Smoke run**: every scenario tiny, to check that the harness "
          "works. These numbers mean nothing.")
        w("")
    w(f"Run {res.get('started', '?')}, profile `{res['profile']}`, "
      f"{fmt(res.get('elapsed_s'))} s wall. Ferry {m.get('ferry_version', '?')}"
      f" at commit `{m.get('git', '?')}`"
      + (" with uncommitted changes in agent/" if m.get("git_dirty") else "")
      + ".")
    w("")
    la, lb = m.get("loadavg_start"), m.get("loadavg_end")
    if la:
        w(f"Load average at start {' '.join(la)}, at end "
          f"{' '.join(lb or ['?'])}. A busy machine lowers every figure and "
          "widens the run-to-run spread; compare Ferry with the baseline "
          "measured in the same run rather than across runs.")
        w("")
    w("## Summary")
    w("")
    w("| scenario | target | measured (median) | result |")
    w("|---|---|---|---|")
    for what, tgt, meas, ok in summarize(res):
        w(f"| {what} | {tgt} | {meas} | {verdict(ok)} |")
    w("")
    w("PASS/MISS is informational: the harness measures, it does not fail "
      "on a miss.")
    w("")
    for img in images:
        w(f"![{os.path.basename(img)}]({os.path.basename(img)})")
        w("")

    w("## Machine")
    w("")
    fs = m.get("fsync", {})
    w("| | |")
    w("|---|---|")
    for k, v in (("CPU", f"{m.get('cpu')} ({m.get('nproc')} CPUs)"),
                 ("memory", m.get("mem")), ("kernel", m.get("kernel")),
                 ("OS", m.get("os")),
                 ("spool filesystem", f"`{m.get('spool_fs')}` "
                  f"(spool under `{m.get('spool_dir')}`)"),
                 ("fsync probe", f"4 KiB write + fdatasync: p50 "
                  f"{fmt(fs.get('p50_ms'), 3)} ms, p99 "
                  f"{fmt(fs.get('p99_ms'), 3)} ms ({fs.get('n')} samples)"),
                 ("Ferry", f"`{m.get('ferry_binary')}` "
                  "(RelWithDebInfo), default threads and limits"),
                 ("libraries", f"libmicrohttpd {m.get('libmicrohttpd')}, "
                  f"jansson {m.get('jansson')}, SQLite {m.get('sqlite')}, "
                  f"libcurl {m.get('libcurl')}"),
                 ("tools", f"{m.get('wrk')}, {m.get('nginx')}")):
        w(f"| {k} | {v} |")
    w("")

    w("## How it is measured")
    w("")
    w("```sh")
    w("make bench         # full run (about 15 minutes); rewrites this file")
    w("make bench-smoke   # tiny run for CI; report in build-bench/")
    w("bench/run.py --only 4 --rounds 3   # one scenario while developing")
    w("```")
    w("")
    w(f"- **Pinning.** The server under test (Ferry, or the baseline) runs "
      f"alone on CPU {SERVER_CPU} (`taskset -c {SERVER_CPU}`), with all its "
      f"threads. Every load generator and sink (wrk, ratesend, nginx, "
      f"latsink) runs on CPU {LOAD_CPU}.")
    w("- **Load.** wrk with `bench/ingest.lua`: 1 thread, 32 keep-alive "
      "connections, structured CloudEvents of exactly 1,024 bytes, each "
      "with a unique id (a per-run nonce, the wrk thread and a counter), so "
      "dedupe never short-cuts a request. Batched requests carry 100 such "
      "events as `application/cloudevents-batch+json`.")
    w("- **Durable.** Ferry answers 202 only after its group commit is "
      "fsync'd. The spool is on the real disk above, never tmpfs; every run "
      "starts from an empty spool. Ferry logs at `warn`.")
    w("- **Baseline.** `bench/baseline.c`: libmicrohttpd (one internal "
      "polling thread on epoll; on one core a thread pool only adds "
      "switches) that reads the body, parses it with `json_loadb` and "
      "answers `202 {\"accepted\":1}`. `--no-parse` gives bare "
      "libmicrohttpd. It stores nothing.")
    w("- **Alternation and medians.** Each round runs every server once in "
      "turn (bare, baseline, Ferry, bare, baseline, Ferry, ...); tables give "
      "the median and every run.")
    w("- **Peer down** (scenarios 1 and 2): the route's HTTP peer is a closed "
      "port, with an hour of retry delay and breaker `open_ms`, so after "
      "the first few failures Ferry only ingests.")
    w("")
    w("Commands, as run (temporary paths shortened):")
    w("")
    w("```sh")
    for k in sorted(c):
        w(re.sub(r"\S*/work-[^/ ]+", "$WORK", c[k]))
    w("```")
    w("")

    # scenario 1 and 2
    for key, title in (("s1", "1. Durable single-event ingest"),
                       ("s2", "2. Batched ingest, 100 events per request")):
        d = s.get(key)
        w(f"## {title}")
        w("")
        if not d:
            w("Not run.")
            w("")
            continue
        if "error" in d:
            w(f"**Failed:** `{d['error']}`")
            w("")
            continue
        unit = "req/s" if d["batch"] == 1 else "events/s"
        w(f"wrk for {d['duration_s']} s per run; peer down. Events per second "
          f"count 2xx answers only{'' if d['batch'] == 1 else ' (x100)'}.")
        w("")
        w(f"| server | median {unit} | ratio to MHD+jansson | p99 latency | "
          "peak RSS | runs |")
        w("|---|---|---|---|---|---|")
        names = {"bare": "bare libmicrohttpd 202",
                 "baseline": "libmicrohttpd + jansson 202",
                 "ferry": "Ferry (durable)",
                 "ferry-tmpfs": "Ferry, spool on tmpfs (diagnostic)"}
        base = d["median_events_per_s"].get("baseline")
        for srv, runs in d["runs"].items():
            med = d["median_events_per_s"][srv]
            p99 = median(r["p99_us"] for r in runs)
            hwm = max((r["hwm_kb"] or 0) for r in runs)
            w(f"| {names[srv]} | {fmt(med)} | "
              f"{fmt(med / base, 2) + 'x' if base else 'n/a'} | "
              f"{fmt(p99 / 1000, 1)} ms | {fmt(mb(hwm), 1)} MB | "
              f"{runs_text([r['events_per_s'] for r in runs])} |")
        w("")
        if key == "s1" and "ratio" in d:
            ok = d["ratio"] >= T["s1_ratio"]
            w(f"Ferry / baseline: **{d['ratio']:.2f}x** (target "
              f">= {T['s1_ratio']}x: {verdict(ok)}); paired by round: "
              f"{runs_text(d['paired_ratios'], 2)}.")
            cpu = {srv: [r.get("cpu_util") for r in runs
                         if r.get("cpu_util") is not None]
                   for srv, runs in d["runs"].items()}
            if all(cpu.values()):
                w("")
                w("Share of CPU 0 each server used during its runs (median): "
                  + ", ".join(f"{names[srv]} {median(v):.2f}"
                              for srv, v in cpu.items()) + ".")
            if "ferry-tmpfs" in d["runs"]:
                w("")
                w("The diagnostic row is Ferry with its spool on tmpfs "
                  "(`/dev/shm`), where fdatasync costs nothing: not durable, "
                  "not a supported setup, run in every round beside the "
                  "others. It does the same work per request, and keeps CPU 0 "
                  "busy; durable Ferry leaves CPU 0 partly idle: with 32 "
                  "connections every request waits for its group's "
                  "fdatasync, so the disk's sync latency, not Ferry's CPU, "
                  "sets the durable rate.")
        if key == "s2":
            v = d["median_events_per_s"]["ferry"]
            w(f"Ferry: **{fmt(v)} events/s** (target >= "
              f"{T['s2_events']:,}: {verdict(v >= T['s2_events'])}).")
        w("")

    # scenario 3
    d = s.get("s3")
    w("## 3. End-to-end delivery to a fast sink")
    w("")
    if not d or "error" in d:
        w(f"**Failed:** `{d['error']}`" if d else "Not run.")
    else:
        w(f"wrk posts single events to Ferry as fast as it can for "
          f"{d['duration_s']} s; Ferry delivers each to nginx "
          "(`location / { return 200; }`, `access_log off`, one worker on "
          f"CPU {LOAD_CPU}). Delivered events per second are counted over "
          f"the middle {fmt(d['window_s'], 1)} s of the run (warm-up and "
          "wind-down cut off). In `binary` mode each request is one event and "
          "the count is nginx's own (`stub_status` requests, its own queries "
          "subtracted). In `batch` mode a request carries several events: "
          "the event count is Ferry's "
          "`ferry_deliveries_total{outcome=\"success\"}`, and nginx's request "
          "count gives the mean batch size.")
        w("")
        w("| peer mode | delivered events/s (median) | target | result | "
          "ingest events/s | events per sink request | peak RSS | runs "
          "(delivered/s) |")
        w("|---|---|---|---|---|---|---|---|")
        for mode, key in (("binary", "s3_binary"), ("batch", "s3_batch")):
            m = d["modes"].get(mode)
            if not m:
                continue
            if m.get("skipped"):
                w(f"| {mode} | skipped | >= {T[key]:,} | n/a | | | | |")
                continue
            v = m["median_delivered_per_s"]
            epr = median(r["events_per_request"] for r in m["runs"])
            w(f"| {mode} | {fmt(v)} | >= {T[key]:,} | "
              f"{verdict(v >= T[key])} | {fmt(m['median_ingest_per_s'])} | "
              f"{fmt(epr, 1)} | {fmt(mb(m['hwm_kb']), 1)} MB | "
              f"{runs_text([r['delivered_per_s'] for r in m['runs']])} |")
        for mode, m in d["modes"].items():
            if m.get("skipped"):
                w("")
                w(f"Mode `{mode}` skipped: {m['reason']}")
    w("")

    # scenario 4
    d = s.get("s4")
    w("## 4. Ingest-to-delivery latency at a fixed rate")
    w("")
    if not d or "error" in d:
        w(f"**Failed:** `{d['error']}`" if d else "Not run.")
    else:
        w(f"`bench/ratesend.c` posts {d['rate']:,} single events per second "
          f"for {d['duration_s']} s on {S4_CONNS} keep-alive connections (open loop: "
          "request *i* is due at *i*/rate; a send more than 1 ms behind "
          "schedule, for want of an idle connection, counts as late). "
          "Each event carries a `benchsent` "
          "extension attribute, the sender's CLOCK_REALTIME in ns just before "
          "the request is written; Ferry forwards it (as the `ce-benchsent` "
          "header in binary mode) and `bench/latsink.c` records "
          "arrival - benchsent for every event. The latency therefore "
          "includes the durable ingest (fsync) and the delivery. "
          f"{'A ' + str(d['warmup_s']) + ' s warm-up at the same rate precedes each measured run. ' if d.get('warmup_s') else ''}"
          "Percentiles are nearest-rank over all events of a run; the table "
          "gives the median over runs. latsink counts only the run's own "
          "ids (warm-up stragglers are ignored) and remembers every id: a "
          "redelivered event counts as a duplicate, not as a sample. "
          "*Delivered events/s* is unique events over the span from the "
          "first to the last arrival: below the sent rate, Ferry is not "
          "keeping up and the latency is mostly queueing.")
        w("")
        w("| peer mode | p50 | p99 | p99.9 | target p99 | result | "
          "sent events/s | delivered events/s | delivered / accepted | "
          "duplicates | late sends | p99 per run |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for mode, m in d["modes"].items():
            if m.get("skipped"):
                w(f"| {mode} | skipped | | | < {T['s4_p99_ms']} ms | n/a | "
                  "| | | | | |")
                continue
            runs = m["runs"]
            dl = sum(r.get("unique", r["events"]) for r in runs)
            dup = sum(r.get("duplicates", 0) for r in runs)
            ac = sum(r["sent"]["ok"] for r in runs)
            late = sum(r["sent"]["late"] for r in runs)
            w(f"| {mode} | {fmt(m['median_p50_ms'], 2)} ms | "
              f"{fmt(m['median_p99_ms'], 2)} ms | "
              f"{fmt(m['median_p999_ms'], 2)} ms | < {T['s4_p99_ms']} ms | "
              f"{verdict(m['median_p99_ms'] < T['s4_p99_ms'])} | "
              f"{fmt(median(r['sent']['events_per_s'] for r in runs))} | "
              f"{fmt(median(r.get('sink_events_per_s') for r in runs))} | "
              f"{dl:,} / {ac:,} | {dup:,} | {late:,} | "
              f"{runs_text([r['p99_us'] for r in runs], 2, 1e-3)} ms |")
        for mode, m in d["modes"].items():
            if m.get("skipped"):
                w("")
                w(f"Mode `{mode}` skipped: {m['reason']}")
        f = d.get("direct")
        if f:
            w("")
            w(f"Harness floor, measured in the same run: ratesend posting "
              f"straight to latsink (no Ferry; both on CPU {LOAD_CPU}) at "
              f"the same rate: p50 {fmt(f['p50_us'] / 1e3, 2)} ms, p99 "
              f"{fmt(f['p99_us'] / 1e3, 2)} ms, p99.9 "
              f"{fmt(f['p999_us'] / 1e3, 2)} ms: the part of the latency "
              "that is the tools and the machine, not Ferry.")
        runs = d["modes"].get("binary", {}).get("runs")
        if runs:
            w("")
            w("Ingest alone (ratesend: request written to 202 received), "
              "binary mode: p50 "
              f"{fmt(median(r['sent']['ingest_p50_us'] for r in runs) / 1e3, 2)}"
              " ms, p99 "
              f"{fmt(median(r['sent']['ingest_p99_us'] for r in runs) / 1e3, 2)}"
              " ms.")
        t = d.get("tmpfs")
        if t:
            w("")
            w("Diagnostic: one more binary-mode run with the spool on tmpfs "
              "(`/dev/shm`, where fdatasync costs nothing; not durable, not a "
              f"supported setup): p50 {fmt(t['p50_ms'], 2)} ms, p99 "
              f"{fmt(t['p99_ms'], 2)} ms, p99.9 {fmt(t['p999_ms'], 2)} ms "
              f"(ingest alone p99 {fmt(t['ingest_p99_ms'], 2)} ms). The "
              "difference from the table is what the spool disk's sync "
              "latency, and its tail above all, adds: every request that "
              "arrives during a slow fdatasync waits for it and the next.")
    w("")

    # scenario 5
    d = s.get("s5")
    w("## 5. Memory, backlog and drain")
    w("")
    if not d or "error" in d:
        w(f"**Failed:** `{d['error']}`" if d else "Not run.")
    else:
        w("VmRSS from `/proc/PID/status` (VmHWM for peaks). The backlog is "
          f"{d['backlog']:,} events posted with the batched load "
          "(ratesend, 100 per request, as fast as Ferry accepts) while the "
          "peer is down (a closed port; breaker `open_ms` and retry delays "
          "of 1 s so delivery resumes promptly). Ferry is then restarted on "
          "that spool, and nginx is started on the peer's port: drain time "
          "runs from nginx's start until nginx has counted every event; "
          "the time until Ferry's `ferry_spool_pending` gauge also read 0 "
          "is given beside it.")
        w("")
        T_ = T
        rows = [
            ("idle, empty spool (2 s after ready)", d.get("idle_rss_kb"),
             f"<= {T_['rss_idle_mb']} MB"),
            ("under load: peak over every loaded run (scenarios 1-5)",
             (load_rss_mb(res) or 0) * 1024 or None,
             f"<= {T_['rss_load_mb']} MB"),
            ("while filling the backlog (VmHWM)",
             d.get("backlog_hwm_kb"), f"<= {T_['rss_load_mb']} MB"),
            (f"{d['backlog']:,}-event backlog, same process, idle",
             d.get("backlog_rss_kb"), f"<= {T_['rss_backlog_mb']} MB"),
            (f"{d['backlog']:,}-event backlog, after a restart",
             d.get("restart_rss_kb"), f"<= {T_['rss_backlog_mb']} MB"),
            ("while draining (VmHWM of the restarted process)",
             d.get("drain_hwm_kb"), f"<= {T_['rss_load_mb']} MB"),
        ]
        w("| Ferry RSS | MB | target | result |")
        w("|---|---|---|---|")
        for label, kb, tgt in rows:
            lim = float(re.search(r"[\d.]+", tgt).group())
            v = mb(kb)
            w(f"| {label} | {fmt(v, 1)} | {tgt} | "
              f"{verdict(None if v is None else v <= lim)} |")
        im, fl = d.get("idle_mem") or {}, d.get("libfloor_mem") or {}
        if im and fl:
            w("")
            w(f"Where the idle RSS goes: Ferry's {fmt(mb(im.get('VmRSS')), 1)} "
              f"MB are {fmt(mb(im.get('RssFile')), 1)} MB of mapped files "
              "(the shared libraries' pages, shared with every process that "
              f"uses them) and {fmt(mb(im.get('RssAnon')), 1)} MB of its own "
              "memory. `bench/libfloor.c`, a program that only loads and "
              "initialises the libraries Ferry is built on (libcurl with its "
              "TLS stack, libmicrohttpd with GnuTLS, jansson, SQLite, "
              "libcrypto) and then sleeps, measured in the same run: "
              f"**{fmt(mb(fl.get('VmRSS')), 1)} MB** RSS "
              f"({fmt(mb(fl.get('RssFile')), 1)} MB files, "
              f"{fmt(mb(fl.get('RssAnon')), 1)} MB own). Ferry idles "
              f"{fmt(mb(im.get('VmRSS', 0) - fl.get('VmRSS', 0)), 1)} MB "
              "above that floor.")
        w("")
        w(f"Filling took {fmt(d.get('fill_s'), 1)} s "
          f"({fmt(d['fill']['events_per_s'])} events/s); "
          f"{fmt(d.get('pending_after_fill'))} deliveries pending; spool on "
          f"disk {fmt((d.get('spool_disk_bytes') or 0) / 2 ** 20)} MiB.")
        w("")
        w(f"Drain: **{fmt(d.get('drain_s'), 1)} s** from the peer's return "
          f"to the last delivery ({fmt(d.get('drain_delivered'))} events, "
          f"{fmt(d.get('drain_events_per_s'))} events/s from the first "
          f"delivery on; `ferry_spool_pending` 0 after "
          f"{fmt(d.get('drain_pending_zero_s'), 1)} s; complete: "
          f"{'yes' if d.get('drain_complete') else 'NO'}"
          "). No target is set for the drain time.")
    w("")

    # scenario 6
    d = s.get("s6")
    w("## 6. Start to ready")
    w("")
    if not d or "error" in d:
        w(f"**Failed:** `{d['error']}`" if d else "Not run.")
    else:
        w("`bench/readytime.c` forks, pins the child to CPU 0, execs "
          "`ferry serve` and polls `GET /readyz` every 0.2 ms until the first "
          "200; the clock starts before fork(). Then SIGTERM, and the time "
          "to exit is shown too. Empty spool: each start creates a new one.")
        w("")
        w("| spool | ready (median) | first accept | target | result | "
          "RSS at ready | stop | ready per start |")
        w("|---|---|---|---|---|---|---|---|")
        for k, label in (("empty", "empty (new)"),
                         ("backlog", f"{d.get('backlog', {}).get('events', 0):,}"
                          " pending")):
            x = d.get(k)
            if not x:
                continue
            runs = x["runs"]
            v = x["median_ready_ms"]
            w(f"| {label} | {fmt(v, 1)} ms | "
              f"{fmt(median(r['listen_ms'] for r in runs), 1)} ms | "
              f"<= {T['ready_ms']} ms | {verdict(v <= T['ready_ms'])} | "
              f"{fmt(mb(median(r['rss_kb'] for r in runs)), 1)} MB | "
              f"{fmt(median(r['stop_ms'] for r in runs), 0)} ms | "
              f"{runs_text([r['ready_ms'] for r in runs], 1)} ms |")
    w("")

    w("## Context")
    w("")
    w("Reference figures from issue 8, measured on this machine class under "
      "the same pinning (not re-measured by this harness):")
    w("")
    for k, v in res["reference"].items():
        w(f"- {k}: {v}")
    w("")
    if res.get("configs"):
        w("## Ferry configurations")
        w("")
        w("Generated per scenario by `bench/run.py`; everything not shown "
          "is Ferry's default.")
        w("")
        for name, cfg in res["configs"].items():
            w(f"<details><summary><code>{name}.json</code></summary>")
            w("")
            w("```json")
            w(json.dumps(cfg, indent=2))
            w("```")
            w("")
            w("</details>")
            w("")
    if res.get("notes"):
        w("## Notes from this run")
        w("")
        for n in res["notes"]:
            w(f"- {n}")
        w("")
    with open(path, "w") as f:
        f.write("\n".join(L))


# ----------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true",
                    help="tiny run for CI; report in build-bench/")
    ap.add_argument("--ferry", default=os.path.join(ROOT, "build", "ferry"),
                    help="the ferry binary (default build/ferry)")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build-bench"),
                    help="tools, results, spools and the smoke report "
                    "(default build-bench/)")
    ap.add_argument("--tools", default=None,
                    help="bench tool binaries (default BUILD_DIR/tools)")
    ap.add_argument("--out", default=None,
                    help="report path (default docs/BENCHMARKS.md, smoke: "
                    "BUILD_DIR/BENCHMARKS-smoke.md)")
    ap.add_argument("--results", default=None, help="results JSON path "
                    "(default BUILD_DIR/results/PROFILE.json)")
    ap.add_argument("--work-root", default=None,
                    help="where spools live, on a real disk (default "
                    "BUILD_DIR)")
    ap.add_argument("--only", default="", help="scenarios, e.g. 1,4")
    ap.add_argument("--rounds", type=int, default=0,
                    help="alternating runs per scenario (full 5, smoke 1)")
    ap.add_argument("--duration", type=int, default=0,
                    help="wrk seconds per run in scenarios 1 and 2")
    ap.add_argument("--baseline-threads", type=int, default=0,
                    help="baseline thread pool size (0: one polling thread)")
    ap.add_argument("--port-base", type=int, default=27400,
                    help="first of six loopback ports used (default 27400)")
    ap.add_argument("--report-only", metavar="RESULTS_JSON",
                    help="redraw the report and charts from saved results")
    a = ap.parse_args()
    a.profile = "smoke" if a.smoke else "full"
    bd = os.path.abspath(a.build_dir)
    a.tools = a.tools or os.path.join(bd, "tools")
    a.work_root = a.work_root or bd
    out = a.out or (os.path.join(bd, "BENCHMARKS-smoke.md") if a.smoke
                    else os.path.join(ROOT, "docs", "BENCHMARKS.md"))
    results = a.results or os.path.join(bd, "results", f"{a.profile}.json")

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if a.report_only:
        res = json.load(open(a.report_only))
        images = plot(res, os.path.dirname(os.path.abspath(out)))
        write_report(res, out, images)
        log(f"report: {rel(out)}")
        return 0

    for tool in ("wrk", "nginx", "gnuplot", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} not found (make bench installs wrk, "
                     "nginx-light and gnuplot-nox)")
    for b in (a.ferry, os.path.join(a.tools, "baseline")):
        if not os.access(b, os.X_OK):
            sys.exit(f"bench: {b} not found; run make bench-tools / make "
                     "build first")
    if (os.cpu_count() or 1) < 2:
        sys.exit("bench: needs at least 2 CPUs (server on 0, load on 1)")
    os.makedirs(a.work_root, exist_ok=True)
    os.makedirs(os.path.dirname(results), exist_ok=True)
    only = set(x.strip() for x in a.only.split(",") if x.strip())

    b = Bench(a, PROFILES[a.profile])

    def on_signal(sig, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    try:
        failed = b.run(only)
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        return 130
    finally:
        b.cleanup()
    res = b.results
    with open(results, "w") as f:
        json.dump(res, f, indent=1)
    images = plot(res, os.path.dirname(os.path.abspath(out)))
    write_report(res, out, images)
    log(f"results: {rel(results)}; report: {rel(out)}")
    for what, tgt, meas, ok in summarize(res):
        log(f"  {verdict(ok):4} {what}: {meas} (target {tgt})")
    gaps = [what for what, _, meas, _ in summarize(res)
            if meas.startswith("n/a") and (not only or what[0] in only)]
    if failed or gaps:
        log("some scenarios failed or produced no figure: "
            + "; ".join(gaps) + " (see the report)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
