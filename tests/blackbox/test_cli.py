"""Contract: the command line (version, check-config, send, healthcheck,
--help), the embedded default config, and environment overrides."""

import json
import re

from ferrylib import (base_config, cli_output, free_port, http_peer, http_request, make_event,
                      run_cli, wait_for)


def _write(tmp_path, name, cfg):
    p = tmp_path / name
    p.write_text(json.dumps(cfg) if not isinstance(cfg, str) else cfg)
    return p


def test_version(tmp_path):
    cp = run_cli(["version"])
    assert cp.returncode == 0, f"ferry version exit {cp.returncode}: {cli_output(cp)}"
    assert re.search(r"\d+\.\d+\.\d+", cli_output(cp)), f"no version number in {cli_output(cp)!r}"


def test_help(tmp_path):
    cp = run_cli(["--help"])
    assert cp.returncode == 0, f"ferry --help exit {cp.returncode}: {cli_output(cp)}"
    out = cli_output(cp)
    for word in ("serve", "check-config", "healthcheck", "send", "version"):
        assert word in out, f"--help does not mention {word}: {out}"
    for cmd in ("send", "check-config", "healthcheck"):
        cp = run_cli([cmd, "--help"])
        assert cp.returncode == 0, f"ferry {cmd} --help exit {cp.returncode}: {cli_output(cp)}"
    cp = run_cli(["no-such-command"])
    assert cp.returncode == 2, f"unknown command: expected exit 2, got {cp.returncode}"


def test_check_config_good(tmp_path, peer):
    p = peer()
    cfg = base_config({"inventory": http_peer(p), "console": {"type": "stdout"},
                       "audit": {"type": "file", "path": str(tmp_path / "audit.jsonl")}},
                      routes=[{"name": "payments",
                               "filter": {"prefix": {"type": "com.example.payment."}},
                               "to": ["inventory", "audit"], "ordering": "partitionkey"},
                              {"name": "rest", "to": ["console"]}])
    path = _write(tmp_path, "good.json", cfg)
    cp = run_cli(["check-config", "-c", path])
    assert cp.returncode == 0, f"check-config of a good file exit {cp.returncode}: {cli_output(cp)}"


def test_check_config_undefined_peer(tmp_path, peer):
    p = peer()
    cfg = base_config({"inventory": http_peer(p)},
                      routes=[{"name": "r", "to": ["inventory", "shiping"]}])
    path = _write(tmp_path, "bad.json", cfg)
    cp = run_cli(["check-config", "-c", path])
    assert cp.returncode == 2, f"expected exit 2, got {cp.returncode}: {cli_output(cp)}"
    assert 'routes[0].to[1]: no peer named "shiping"' in cli_output(cp), cli_output(cp)
    # serve refuses it too
    cp = run_cli(["serve", "-c", path], timeout=10)
    assert cp.returncode == 2, f"serve with a bad config: expected exit 2, got {cp.returncode}"


def test_check_config_unknown_keys(tmp_path, peer):
    p = peer()
    cfg = base_config({"inventory": http_peer(p)})
    cfg["listne"] = "127.0.0.1:1"
    cfg["retry"]["max_attemps"] = 3
    path = _write(tmp_path, "bad.json", cfg)
    cp = run_cli(["check-config", "-c", path])
    out = cli_output(cp)
    assert cp.returncode == 2, f"expected exit 2, got {cp.returncode}: {out}"
    assert "listne" in out, f"unknown top-level key not named: {out}"
    assert "retry.max_attemps" in out, f"unknown nested key not reported with its path: {out}"


def test_check_config_wrong_type_and_invalid_json(tmp_path, peer):
    p = peer()
    cfg = base_config({"inventory": http_peer(p)})
    cfg["retry"]["max_attempts"] = "twelve"
    cp = run_cli(["check-config", "-c", _write(tmp_path, "t.json", cfg)])
    assert cp.returncode == 2, f"wrong type: expected exit 2, got {cp.returncode}: {cli_output(cp)}"
    assert "retry.max_attempts" in cli_output(cp), cli_output(cp)
    cp = run_cli(["check-config", "-c", _write(tmp_path, "j.json", '{"listen": ')])
    assert cp.returncode == 2, f"invalid JSON: expected exit 2, got {cp.returncode}: {cli_output(cp)}"


def test_send_structured_and_binary(ferry, peer):
    p = peer()
    f = ferry(base_config({"p": http_peer(p)}))
    cp = run_cli(["send", "--url", f.events_url, "--type", "t", "--source", "s",
                  "--id", "cli-1", "--subject", "sub", "--data", '{"a":1}'])
    assert cp.returncode == 0, f"ferry send exit {cp.returncode}: {cli_output(cp)}"
    cp = run_cli(["send", "--url", f.events_url, "--type", "t2", "--source", "s",
                  "--id", "cli-2", "--data", '{"a":2}', "--binary"])
    assert cp.returncode == 0, f"ferry send --binary exit {cp.returncode}: {cli_output(cp)}"
    p.wait_ids(["cli-1", "cli-2"])
    e1 = p.requests_for("cli-1")[0]
    assert e1.headers.get("ce-type") == "t" and e1.headers.get("ce-source") == "s"
    assert e1.headers.get("ce-subject") == "sub"
    assert json.loads(e1.body) == {"a": 1}, e1
    e2 = p.requests_for("cli-2")[0]
    assert e2.headers.get("ce-type") == "t2"
    assert json.loads(e2.body) == {"a": 2}, e2
    m = f.metrics()
    from ferrylib import metric_value
    assert (metric_value(m, "ferry_events_received_total", mode="binary") or 0) >= 1, \
        f"send --binary did not arrive as binary mode:\n{m}"
    assert (metric_value(m, "ferry_events_received_total", mode="structured") or 0) >= 1, m


def test_send_data_from_file_and_generated_id(ferry, peer, tmp_path):
    p = peer()
    f = ferry(base_config({"p": http_peer(p)}))
    data = tmp_path / "d.json"
    data.write_text('{"from": "file"}')
    cp = run_cli(["send", "--url", f.events_url, "--type", "file.t", "--source", "s",
                  "--data", f"@{data}"])
    assert cp.returncode == 0, f"exit {cp.returncode}: {cli_output(cp)}"
    p.wait_requests(1)
    r = p.snapshot()[0]
    assert r.headers.get("ce-type") == "file.t"
    assert r.headers.get("ce-id"), "send without --id must generate one"
    assert json.loads(r.body) == {"from": "file"}


def test_send_failure_exit_code(tmp_path):
    port = free_port()
    cp = run_cli(["send", "--url", f"http://127.0.0.1:{port}/v1/events", "--type", "t",
                  "--source", "s"])
    assert cp.returncode == 1, f"send to nothing listening: expected exit 1, got {cp.returncode}"
    cp = run_cli(["send", "--url", f"http://127.0.0.1:{port}/v1/events", "--source", "s"])
    assert cp.returncode == 2, f"send without --type: expected exit 2, got {cp.returncode}"


def test_healthcheck(ferry, peer):
    p = peer()
    f = ferry(base_config({"p": http_peer(p)}))
    cp = run_cli(["healthcheck", "--url", f.url("/readyz")])
    assert cp.returncode == 0, f"healthcheck while up: exit {cp.returncode}: {cli_output(cp)}"
    port = free_port()
    cp = run_cli(["healthcheck", "--url", f"http://127.0.0.1:{port}/readyz"])
    assert cp.returncode != 0, "healthcheck with nothing listening must fail"
    cp = run_cli(["healthcheck", "--url", f.url("/nope")])
    assert cp.returncode != 0, "healthcheck against a 404 must fail"


def _embedded(ferry, tmp_path, args=None):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    port = free_port()
    env = {"FERRY_LISTEN": f"127.0.0.1:{port}", "FERRY_ADMIN_LISTEN": f"127.0.0.1:{free_port()}"}
    f = ferry(None, env=env, cwd=cwd, args=args, log_level=None)
    return f, cwd


def test_embedded_default_prints_to_stdout(ferry, tmp_path):
    f, cwd = _embedded(ferry, tmp_path)
    ev = make_event(data={"hello": "world"}, datacontenttype="application/json")
    f.post_ok(ev)

    def printed():
        for line in f.stdout_text().splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and obj.get("id") == ev["id"]:
                return obj
        return None
    obj = wait_for(printed, 10, msg=lambda: f"event not printed to stdout; stdout:\n{f.stdout_text()[-2000:]}")
    assert obj["type"] == ev["type"] and obj["source"] == ev["source"]
    assert obj.get("specversion") == "1.0" and obj.get("data") == {"hello": "world"}, obj
    assert (cwd / "ferry-data").is_dir(), f"no ./ferry-data spool in {list(cwd.iterdir())}"
    assert (cwd / "ferry-data" / "spool.db").exists()
    # binary in, structured out on stdout
    eid = "emb-bin-1"
    from ferrylib import post_binary
    r = post_binary(f.events_url, {"specversion": "1.0", "id": eid, "source": "/b", "type": "t"},
                    b'{"x": 1}', content_type="application/json")
    assert r.status == 202, r
    ev2 = wait_for(lambda: next((o for o in (_try_json(l) for l in f.stdout_text().splitlines())
                                 if isinstance(o, dict) and o.get("id") == eid), None), 10,
                   msg="binary event not printed")
    assert ev2.get("data") == {"x": 1}, f"binary JSON data as structured: {ev2}"


def _try_json(line):
    try:
        return json.loads(line)
    except ValueError:
        return None


def test_bare_ferry_is_serve(ferry, tmp_path):
    """`ferry` with no command runs `serve`."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {"FERRY_LISTEN": f"127.0.0.1:{free_port()}",
           "FERRY_ADMIN_LISTEN": f"127.0.0.1:{free_port()}"}
    f = ferry(None, env=env, cwd=cwd, start=False, log_level=None)
    f.command = lambda: [__import__("ferrylib").ferry_bin()]
    f.start()
    assert http_request("GET", f.url("/healthz")).status == 200


def test_env_overrides(ferry, peer, tmp_path):
    p = peer()
    cfg = base_config({"p": http_peer(p)})
    file_port = free_port()
    cfg["listen"] = f"127.0.0.1:{file_port}"
    env_port = free_port()
    spool = tmp_path / "env-spool"
    f = ferry(cfg, env={"FERRY_LISTEN": f"127.0.0.1:{env_port}", "FERRY_SPOOL_DIR": str(spool),
                        "FERRY_INGEST_TOKEN": "tok"})
    assert f.listen == f"127.0.0.1:{env_port}"
    assert http_request("GET", f"http://127.0.0.1:{env_port}/readyz").status == 200
    try:
        r = http_request("GET", f"http://127.0.0.1:{file_port}/readyz", timeout=2)
        raise AssertionError(f"the file's listen address still answers ({r.status}); FERRY_LISTEN must win")
    except OSError:
        pass
    ev = make_event()
    assert f.post(ev).status == 401, "FERRY_INGEST_TOKEN must require a token"
    assert f.post(ev, headers={"Authorization": "Bearer tok"}).status == 202
    p.wait_ids([ev["id"]])
    assert (spool / "spool.db").exists(), "FERRY_SPOOL_DIR not used"


def test_serve_flags_override(ferry, peer, tmp_path):
    """--listen and --spool on the command line."""
    p = peer()
    cfg = base_config({"p": http_peer(p)})
    port = free_port()
    spool = tmp_path / "flag-spool"
    f = ferry(cfg, args=["--listen", f"127.0.0.1:{port}", "--spool", str(spool)], start=False)
    f.listen = f"127.0.0.1:{port}"
    f.start()
    ev = make_event()
    f.post_ok(ev)
    p.wait_ids([ev["id"]])
    assert (spool / "spool.db").exists(), "--spool not used"
