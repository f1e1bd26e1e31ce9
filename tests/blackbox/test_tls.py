"""TLS: the main and admin listeners over HTTPS, and deliveries to HTTPS
peers (CA to trust, certificate checks, mTLS).  Every certificate is made
at test time with the openssl CLI (ferrylib.TestPKI)."""

import http.client
import json
import signal
import socket
import ssl

import pytest

from ferrylib import (TestPKI, TlsPeer, base_config, http_peer, http_request,
                      make_event, metric_value, scaled, wait_for)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The test CA with a server certificate for 127.0.0.1/localhost and a
    client certificate; a second, unrelated CA ("other") with its own
    server certificate; and a certificate of the test CA for another host."""
    d = tmp_path_factory.mktemp("pki")
    ca = TestPKI(d / "ca")
    ca.server = ca.issue("server", dns=["localhost"], ips=["127.0.0.1"])
    ca.client = ca.issue("client", usage="clientAuth")
    ca.elsewhere = ca.issue("elsewhere", dns=["other.example"])
    other = TestPKI(d / "other", name="Some Other CA")
    other.server = other.issue("server", dns=["localhost"], ips=["127.0.0.1"])
    ca.other = other
    return ca


@pytest.fixture
def tls_peer():
    peers = []

    def make(ctx, status=200, name=None):
        p = TlsPeer(ctx, status, name=name or f"tlspeer{len(peers) + 1}")
        peers.append(p)
        return p

    yield make
    for p in peers:
        try:
            p.stop()
        except Exception:  # noqa: BLE001
            pass


def start_tls_ferry(ferry, cfg, ctx):
    """Start Ferry with TLS listeners, its requests trusting `ctx`; skip
    while this ferry serve still refuses "tls" (until the lead enables it)."""
    f = ferry(cfg, start=False)
    f.ssl_context = ctx
    f.start(wait_ready=False)

    def up_or_exited():
        if f.proc.poll() is not None:
            return "exited"
        try:
            return http_request("GET", f.url("/readyz"), timeout=2,
                                context=ctx).status == 200 and "up"
        except OSError:
            return False
    state = wait_for(up_or_exited, 10, msg=lambda: f.stderr_tail())
    if state == "exited":
        f.expected_rcs = (2,)
        if "tls: not supported" in f.stderr_tail():
            pytest.skip("this ferry serve still refuses tls")
        raise AssertionError(f"ferry exited {f.proc.returncode}:\n{f.stderr_tail()}")
    return f


def rewrite(f, config):
    """Replace the running instance's config file (same ports and spool)."""
    config["listen"] = f.config["listen"]
    config["admin"] = {**f.config["admin"], **config.get("admin", {})}
    config["spool"] = f.config["spool"]
    f.config_path.write_text(json.dumps(config, indent=2))


def sighup_and_wait(f):
    before = f.stderr_path.read_text().count('"msg":"reload')
    f.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: f.stderr_path.read_text().count('"msg":"reload') >= before + 2,
             10, msg=lambda: f"no reload outcome logged:\n{f.stderr_tail(20)}")
    assert '"msg":"reloaded"' in f.stderr_path.read_text(), f.stderr_tail(20)


def failed_attempts(f, peer_name):
    """The "delivery attempt failed" records of a peer, as dicts."""
    out = []
    for line in f.stderr_path.read_text().splitlines():
        if '"delivery attempt failed"' in line and f'"peer":"{peer_name}"' in line:
            out.append(json.loads(line))
    return out


def tls_https_peer(p, pki_ca=None, **tls):
    cfg = http_peer(p, url=p.url())
    if pki_ca is not None:
        tls.setdefault("ca_file", pki_ca)
    if tls:
        cfg["tls"] = tls
    return cfg


# ---------------------------------------------------------------------------
# listeners


def test_ingest_over_https_is_accepted_and_delivered(ferry, peer, pki):
    out = peer(name="out")
    cfg = base_config({"out": http_peer(out)},
                      tls={"cert_file": pki.server.cert, "key_file": pki.server.key})
    f = start_tls_ferry(ferry, cfg, pki.client_context())
    assert f.events_url.startswith("https://")
    ev = make_event()
    r = f.post(ev)
    assert r.status == 202, r
    assert r.json() == {"accepted": 1}
    out.wait_ids([ev["id"]])
    # health and metrics are on the same (HTTPS) listener
    assert http_request("GET", f.url("/healthz"), context=f.ssl_context).status == 200
    assert metric_value(f.metrics(), "ferry_events_received_total", mode="structured") >= 1

    # The hostname is checked too: "localhost" is in the certificate's SANs.
    host_url = f.events_url.replace("127.0.0.1", "localhost")
    r = http_request("POST", host_url, json.dumps(make_event()),
                     {"Content-Type": "application/cloudevents+json"},
                     context=f.ssl_context)
    assert r.status == 202, r


def test_https_listener_refuses_untrusting_and_plain_clients(ferry, peer, pki):
    out = peer(name="out")
    cfg = base_config({"out": http_peer(out)},
                      tls={"cert_file": pki.server.cert, "key_file": pki.server.key})
    f = start_tls_ferry(ferry, cfg, pki.client_context())
    host, port = f.listen.split(":")

    # Plain HTTP to the TLS listener: the connection just closes.
    with pytest.raises((http.client.HTTPException, OSError)):
        r = http_request("GET", f"http://{f.listen}/healthz", timeout=5)
        raise AssertionError(f"plain HTTP got an answer: {r}")

    # A client that does not trust our CA refuses the handshake.
    with pytest.raises(ssl.SSLError):
        http_request("GET", f.url("/healthz"), timeout=5,
                     context=pki.other.client_context())

    # Garbage, then a half-open handshake: nothing breaks.
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x00\x05hello")
    with socket.create_connection((host, int(port)), timeout=5):
        pass

    ev = make_event()
    assert f.post(ev).status == 202
    out.wait_ids([ev["id"]])
    assert f.running()


def test_admin_over_https(ferry, peer, pki):
    out = peer(name="out")
    cfg = base_config({"out": http_peer(out)},
                      admin={"token": "s3cret",
                             "tls": {"cert_file": pki.server.cert,
                                     "key_file": pki.server.key}})
    f = ferry(cfg, start=False)
    f.ssl_context = pki.client_context()
    f.start(wait_ready=False)
    # The main listener stays plain HTTP; only the admin one is HTTPS.
    assert f.base_url.startswith("http://") and f.admin_base.startswith("https://")

    def ready_or_exited():
        if f.proc.poll() is not None:
            return "exited"
        try:
            return http_request("GET", f.url("/readyz"), timeout=2).status == 200 and "up"
        except OSError:
            return False
    if wait_for(ready_or_exited, 10, msg=lambda: f.stderr_tail()) == "exited":
        f.expected_rcs = (2,)
        if "tls: not supported" in f.stderr_tail():
            pytest.skip("this ferry serve still refuses tls")
        raise AssertionError(f.stderr_tail())

    r = f.admin("GET", "/v1/peers", token="s3cret")
    assert r.status == 200, r
    assert [p["name"] for p in r.json()["peers"]] == ["out"], r.body
    assert f.admin("GET", "/v1/peers").status == 401
    with pytest.raises((http.client.HTTPException, OSError)):
        http_request("GET", f.admin_base.replace("https://", "http://") + "/v1/peers",
                     None, {"Authorization": "Bearer s3cret"}, timeout=5)
    assert f.admin("GET", "/v1/dead-letters", token="s3cret").status == 200


@pytest.mark.parametrize("which", ["main", "admin"])
def test_bad_certificate_files_stop_the_start(ferry, pki, which, tmp_path):
    """A missing file, a key of another certificate: a clear start-up error
    naming the config path and the file, and a non-zero exit, no crash."""
    prefix = "tls" if which == "main" else "admin.tls"
    cases = [
        ({"cert_file": str(tmp_path / "nope.pem"), "key_file": pki.server.key},
         f"{prefix}.cert_file {tmp_path / 'nope.pem'}: No such file or directory"),
        ({"cert_file": pki.server.cert, "key_file": pki.client.key},
         f"{prefix}.key_file {pki.client.key}: does not match {prefix}.cert_file "
         f"{pki.server.cert}"),
    ]
    for tls, want in cases:
        cfg = base_config({"out": {"type": "stdout"}})
        if which == "main":
            cfg["tls"] = tls
        else:
            cfg["admin"] = {"tls": tls}
        f = ferry(cfg, start=False)
        f.start(wait_ready=False)
        rc = f.proc.wait(scaled(10))
        f.expected_rcs = (1, 2)
        err = f.stderr_path.read_text()
        if "tls: not supported" in err:
            pytest.skip("this ferry serve still refuses tls")
        assert rc in (1, 2), f"exit {rc}:\n{err[-2000:]}"
        assert want in err, err[-2000:]
        assert "AddressSanitizer" not in err and "runtime error" not in err


# ---------------------------------------------------------------------------
# peers


def test_delivery_to_https_peer_trusting_ca_file(ferry, tls_peer, pki):
    p = tls_peer(pki.server_context(pki.server), name="secure")
    f = ferry(base_config({"secure": tls_https_peer(p, pki.ca)}))
    ev = make_event()
    f.post_ok(ev)
    p.wait_ids([ev["id"]])
    assert not failed_attempts(f, "secure")


def test_https_peer_with_untrusted_certificate_retries_until_fixed(ferry, tls_peer, pki):
    """Trusting the wrong CA: each attempt fails with curl's TLS error and
    is retried (never dead-lettered on the spot, never a crash); a reload
    with the right ca_file delivers it."""
    p = tls_peer(pki.server_context(pki.server), name="secure")
    cfg = base_config({"secure": tls_https_peer(p, pki.other.ca)})
    f = ferry(cfg)
    ev = make_event()
    f.post_ok(ev)
    wait_for(lambda: len(failed_attempts(f, "secure")) >= 2, 10,
             msg=lambda: f"no failed attempts logged:\n{f.stderr_tail(20)}")
    rec = failed_attempts(f, "secure")[0]
    assert "certificate" in rec.get("error", "").lower(), rec
    assert p.delivered_ids() == [], "a request got through an untrusted TLS connection"
    assert p.handshake_errors, "the peer saw no failed handshake"
    retries = metric_value(f.metrics(), "ferry_deliveries_total", peer="secure", outcome="retry")
    assert retries and retries >= 1
    assert not metric_value(f.metrics(), "ferry_deliveries_total", peer="secure", outcome="dead")

    rewrite(f, base_config({"secure": tls_https_peer(p, pki.ca)}))
    sighup_and_wait(f)
    p.wait_ids([ev["id"]], timeout=15)
    assert f.query("SELECT count(*) AS n FROM dead_letters")[0]["n"] == 0


def test_https_peer_with_wrong_hostname_is_a_failed_attempt(ferry, tls_peer, pki):
    """A certificate of our CA, but for another host: refused (hostname
    verification is on), retried, logged."""
    p = tls_peer(pki.server_context(pki.elsewhere), name="imposter")
    f = ferry(base_config({"imposter": tls_https_peer(p, pki.ca)}))
    f.post_ok(make_event())
    wait_for(lambda: failed_attempts(f, "imposter"), 10,
             msg=lambda: f"no failed attempt logged:\n{f.stderr_tail(20)}")
    err = failed_attempts(f, "imposter")[0].get("error", "")
    assert "127.0.0.1" in err or "name" in err.lower(), err
    assert p.delivered_ids() == []
    assert f.running()


def test_mtls_peer_needs_the_client_certificate(ferry, tls_peer, pki):
    p = tls_peer(pki.server_context(pki.server, require_client_cert=True), name="mtls")
    f = ferry(base_config({"mtls": tls_https_peer(p, pki.ca)}))
    ev = make_event()
    f.post_ok(ev)
    wait_for(lambda: failed_attempts(f, "mtls"), 10,
             msg=lambda: f"no failed attempt logged:\n{f.stderr_tail(20)}")
    assert p.delivered_ids() == [], "delivered without a client certificate"

    rewrite(f, base_config({"mtls": tls_https_peer(p, pki.ca, cert_file=pki.client.cert,
                                                   key_file=pki.client.key)}))
    sighup_and_wait(f)
    p.wait_ids([ev["id"]], timeout=15)


def test_missing_peer_tls_file_stops_the_start(ferry, tls_peer, pki, tmp_path):
    p = tls_peer(pki.server_context(pki.server), name="secure")
    missing = str(tmp_path / "missing-ca.pem")
    f = ferry(base_config({"secure": tls_https_peer(p, missing)}), start=False)
    f.start(wait_ready=False)
    rc = f.proc.wait(scaled(10))
    f.expected_rcs = (1, 2)
    err = f.stderr_path.read_text()
    assert rc in (1, 2), err[-2000:]
    assert f"peers.secure.tls.ca_file {missing}: No such file or directory" in err, err[-2000:]
    assert "AddressSanitizer" not in err and "runtime error" not in err
