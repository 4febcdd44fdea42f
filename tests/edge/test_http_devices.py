"""HTTP devices on a real node: readings pushed to it (tokens, batches, refusals) and polled from a real HTTP
server started by the test (garbage, errors, an outage and the device coming back)."""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from edge_runtime.node import Node, load_node_config
from edge_runtime.operators.base import SpecError
from edge_runtime.ports import free_port
from edge_runtime.testing import wait_for
from tests.kit.nodes import write_node

pytestmark = pytest.mark.broker

PRODUCTS = [{"name": "meter",
             "properties": {"power": {"type": "number", "min": 0, "max": 1000}, "on": {"type": "boolean"}},
             "services": {"reset": {"args": {"to": {"type": "integer"}}}}}]


class Device:
    """A polled HTTP/JSON device: answers what ``body`` says (or ``status``), counts requests; stoppable."""

    def __init__(self) -> None:
        self.body: bytes = b'{"p": 1.5, "t": 1800000000}'
        self.status = 200
        self.requests = 0
        self.posts: list[tuple[str, Any]] = []
        self.port = free_port()
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> Device:
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.requests += 1
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def do_POST(self) -> None:  # noqa: N802 - a service call
                outer.posts.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def write(tmp: Path, broker: int, devices: list[dict[str, Any]], steps: list[Any] | None = None, **extra: Any) -> Path:
    """Node edge-h with the meters ``devices``, running ``steps`` (default: their readings) as instance all."""
    return write_node(tmp, "edge-h", broker_port=broker, products=PRODUCTS, devices=devices, pipelines={
        "all": {"name": "all", "product": "meter", "steps": steps or [{"device_input": {}}]}}, **extra)


@pytest.fixture
def pushed(tmp_path: Path, mosquitto: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    monkeypatch.setenv("NODE_HTTP_TOKEN", "node-secret")
    monkeypatch.setenv("M2_TOKEN", "m2-secret")
    cfg = write(tmp_path, mosquitto.port, [
        {"id": "m1", "product": "meter", "connector": "http", "mapping": {"power": "p", "on": "on"}, "ts_field": "t"},
        {"id": "m2", "product": "meter", "connector": "http", "token_env": "M2_TOKEN"}],
        http={"port": 0, "token_env": "NODE_HTTP_TOKEN"})
    node = Node(load_node_config(cfg))
    node.start()
    yield node
    node.stop()


def post(conn: http.client.HTTPConnection, device: str, body: Any, token: str | None,
         ctype: str = "application/json") -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": ctype, **({"Authorization": f"Bearer {token}"} if token else {})}
    conn.request("POST", f"/devices/{device}/telemetry", body=data, headers=headers)
    r = conn.getresponse()
    return r.status, json.loads(r.read())


def test_pushed_readings_need_a_valid_token_and_bad_ones_are_refused_whole(pushed: Node) -> None:
    node = pushed
    conn = http.client.HTTPConnection("127.0.0.1", node.connectors["http"].port, timeout=10)  # one kept-alive connection
    assert post(conn, "m1", {"p": 12.5, "on": True, "t": 1.8e9}, "node-secret") == (202, {"accepted": 1})
    assert post(conn, "m1", [{"p": 1, "t": 1.8e9 + i} for i in range(1, 4)], "node-secret") == (202, {"accepted": 3})
    assert post(conn, "m2", {"power": 3.0}, "m2-secret")[0] == 202
    # no record without a valid token: none, a wrong one, another device's, the node's where the device has its own
    assert post(conn, "m1", {"p": 1, "t": 1.8e9}, None)[0] == 401
    assert post(conn, "m1", {"p": 1, "t": 1.8e9}, "nope")[0] == 401
    assert post(conn, "m1", {"p": 1, "t": 1.8e9}, "m2-secret")[0] == 401
    assert post(conn, "m2", {"power": 1}, "node-secret")[0] == 401
    assert post(conn, "ghost", {"p": 1}, "node-secret")[0] == 404
    # bad readings: the whole batch refused with the reason (and a dead letter), nothing of it taken
    status, answer = post(conn, "m1", [{"p": 2, "t": 1.8e9}, {"p": 5000, "t": 1.8e9}], "node-secret")
    assert status == 422 and answer["detail"].startswith("[1]: ") and "power" in answer["detail"]
    assert post(conn, "m1", b"{not json", "node-secret")[0] == 422
    assert post(conn, "m1", {"p": 1, "t": 1.8e9}, "node-secret", ctype="text/plain")[0] == 415
    big = json.dumps({"p": 1, "t": 1.8e9, "pad": "x" * 70_000}).encode()
    assert post(http.client.HTTPConnection("127.0.0.1", node.connectors["http"].port, timeout=10), "m1", big, "node-secret")[0] == 413
    wait_for(lambda: node.bus.records_in == 5, what="the 5 accepted readings on the bus")
    assert [r["values"] for r in node.store.query(devices=["m1"])] == [
        {"power": 12.5, "on": True}, {"power": 1}, {"power": 1}, {"power": 1}]
    node.dead_letters.flush()
    reasons = [d["reason"] for d in node.store.dead_letters()]
    assert any("power" in r for r in reasons) and any("malformed JSON" in r for r in reasons), reasons
    assert node.stats()["http"]["accepted"] == 5


def test_a_polled_device_is_read_and_its_garbage_errors_and_outage_are_counted(tmp_path: Path, mosquitto: Any) -> None:
    dev = Device().start()
    slow = Device()  # never started: unreachable all along, and it must not delay the other
    cfg = write(tmp_path, mosquitto.port, [
        {"id": "p1", "product": "meter", "connector": "http", "mode": "poll", "url": f"http://127.0.0.1:{dev.port}/now",
         "interval": "100ms", "mapping": {"power": "p"}, "ts_field": "t"},
        {"id": "p2", "product": "meter", "connector": "http", "mode": "poll",
         "url": f"http://127.0.0.1:{slow.port}/x", "interval": "100ms", "timeout": "1s"}])
    node = Node(load_node_config(cfg))
    node.start()
    try:
        wait_for(lambda: node.bus.records_in >= 3, 10, "three polled readings")
        st = lambda: node.connectors["http"].poll_stats["p1"]  # noqa: E731
        dev.body = b"<html>not json</html>"
        wait_for(lambda: st()["errors"] >= 1 and "malformed JSON" in (st()["last_error"] or ""), 10, "a garbage answer")
        dev.body, dev.status = b'{"p": 1}', 500
        wait_for(lambda: "answered 500" in (st()["last_error"] or ""), 10, "an error status")
        dev.stop()
        wait_for(lambda: "unreachable" in (st()["last_error"] or ""), 10, "the outage")
        before = node.bus.records_in
        dev.status, dev.body = 200, b'[{"p": 7, "t": 1800000001}, {"p": 8, "t": 1800000002}]'
        dev.start()
        wait_for(lambda: node.bus.records_in >= before + 2, 90, "readings again once the device is back")
        assert st()["last_error"] is None
        assert node.connectors["http"].poll_stats["p2"]["errors"] >= 1 and "unreachable" in node.connectors["http"].poll_stats["p2"]["last_error"]
        node.dead_letters.flush()
        reasons = [d["reason"] for d in node.store.dead_letters(limit=1000)]
        assert any("malformed JSON" in r for r in reasons) and any("answered 500" in r for r in reasons)
        rows = node.store.query(devices=["p1"])
    finally:
        node.stop()
        dev.stop()
    assert {"power": 7} in [r["values"] for r in rows] and {r["ts"] for r in rows} >= {1800000001.0, 1800000002.0}


def test_a_service_becomes_an_http_request_to_the_device(tmp_path: Path, mosquitto: Any) -> None:
    dev = Device().start()
    gone = Device()  # never started: its service call is a dead letter with the reason
    cfg = write(tmp_path, mosquitto.port, [
        {"id": "p1", "product": "meter", "connector": "http", "mode": "poll", "url": f"http://127.0.0.1:{dev.port}/now",
         "interval": "100ms", "mapping": {"power": "p"}, "services": {"reset": {"url": "/api/reset",
                                                                               "payload": {"value": "$to"}}}},
        {"id": "p2", "product": "meter", "connector": "http", "mode": "poll", "url": f"http://127.0.0.1:{dev.port}/now",
         "interval": "100ms", "mapping": {"power": "p"},
         "services": {"reset": {"url": f"http://127.0.0.1:{gone.port}/reset"}}}],
        steps=[{"device_input": {}}, {"filter": "power > 100"}, {"sample": {"every": 1000}},
               {"device_output": {"service": "reset", "args": {"to": "power * 0"}}}])
    dev.body = b'{"p": 150}'
    node = Node(load_node_config(cfg))
    node.start()
    try:
        wait_for(lambda: dev.posts, 10, "the service call at the device")
        assert dev.posts[0] == ("/api/reset", {"value": 0})
        wait_for(lambda: any("unreachable" in d["reason"] and d["device"] == "p2"
                             for d in (node.dead_letters.flush(), node.store.dead_letters())[1]), 10,
                 "the failed call as a dead letter")
    finally:
        node.stop()
        dev.stop()
    assert len(dev.posts) == 1  # sample every 1000: one call, not one per reading


def _self_signed(folder: Path) -> tuple[Path, Path]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return folder / "cert.pem", folder / "key.pem"


def test_a_device_with_an_untrusted_certificate_is_refused_and_delays_no_other(tmp_path: Path, mosquitto: Any) -> None:
    import ssl

    ok = Device().start()
    bad = Device().start()
    cert, key = _self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    bad.server.socket = ctx.wrap_socket(bad.server.socket, server_side=True)  # https with a self-signed cert
    cfg = write(tmp_path, mosquitto.port, [
        {"id": "ok", "product": "meter", "connector": "http", "mode": "poll", "url": f"http://127.0.0.1:{ok.port}/now",
         "interval": "100ms", "mapping": {"power": "p"}},
        {"id": "tls", "product": "meter", "connector": "http", "mode": "poll", "url": f"https://127.0.0.1:{bad.port}/now",
         "interval": "100ms", "timeout": "2s", "mapping": {"power": "p"}}])
    node = Node(load_node_config(cfg))
    node.start()
    try:
        wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in (node.connectors["http"].poll_stats["tls"]["last_error"] or ""), 10,
                 "the untrusted certificate reported")
        wait_for(lambda: len(node.store.query(devices=["ok"])) >= 10, 10, "ten readings of the healthy device")
        assert node.store.query(devices=["tls"]) == [] and bad.requests == 0
    finally:
        node.stop()
        ok.stop()
        bad.stop()


def test_bad_http_bindings_are_refused_naming_the_field(tmp_path: Path) -> None:
    for i, (device, want) in enumerate((
        ({"id": "x", "product": "meter", "connector": "http", "mode": "pull"}, "expected push or poll"),
        ({"id": "x", "product": "meter", "connector": "http", "mode": "poll"}, "url"),
        ({"id": "x", "product": "meter", "connector": "http", "mode": "poll", "url": "file:///etc/passwd"}, "url"),
        ({"id": "x", "product": "meter", "connector": "http", "url": "http://a/b"}, "for polled devices"),
        ({"id": "x", "product": "meter", "connector": "http", "mapping": {"nope": "a"}}, "no property 'nope'"),
        ({"id": "x", "product": "meter", "connector": "http", "services": {"reset": {"method": "POST"}}}, "needs 'url'"),
        ({"id": "x", "product": "meter", "connector": "http", "services": {"reset": {"url": "ftp://a/b"}}}, "http"),
        ({"id": "x", "product": "meter", "connector": "http", "services": {"reset": {"url": "/r", "method": "GET"}}},
         "POST, PUT"),
    )):
        with pytest.raises(SpecError, match=want):
            load_node_config(write(tmp_path / f"case-{i}", 1883, [device]))
