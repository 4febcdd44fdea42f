"""The admin CLI against a real hub: nodes, tokens, products, pipelines; clear errors and exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge_runtime.hubclient import HubClient, HubError
from tests.kit.hub import ADMIN, ROOT, HubProcess, drift_point, env

APP = ROOT / "apps" / "pump_monitoring"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    h = HubProcess(tmp_path_factory.mktemp("hub")).start()
    yield h
    h.stop()


def cli(hub: HubProcess, *args: str, token: str | None = ADMIN) -> subprocess.CompletedProcess[str]:
    e = {**env(), "EDGELOOP_HUB_URL": hub.url, "COLUMNS": "200"}
    e.pop("EDGELOOP_TOKEN", None)
    e.pop("EDGELOOP_HUB_TOKEN", None)
    if token:
        e["EDGELOOP_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "edgeloop", *args], cwd=ROOT, env=e, capture_output=True,
                          text=True, timeout=60)


def test_nodes_and_tokens(hub):
    out = cli(hub, "node", "create", "edge-c1", "--group", "line-2")
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert HubClient(hub.url, token).post("/api/v1/nodes/edge-c1/heartbeat", {})["changed"] is True
    ls = cli(hub, "node", "ls")
    assert ls.returncode == 0 and "edge-c1" in ls.stdout and "line-2" in ls.stdout and "online" in ls.stdout
    again = cli(hub, "node", "create", "edge-c1")
    assert again.returncode == 2 and "exists" in again.stderr
    second = cli(hub, "node", "token", "create", "edge-c1", "--note", "rotation")
    assert second.returncode == 0
    tid = int(second.stderr.split("token id ")[1].split()[0])
    tokens = cli(hub, "node", "token", "ls")
    assert "rotation" in tokens.stdout and ADMIN not in tokens.stdout and token not in tokens.stdout
    assert cli(hub, "node", "token", "revoke", str(tid)).returncode == 0
    with pytest.raises(HubError) as err:
        HubClient(hub.url, second.stdout.strip()).post("/api/v1/nodes/edge-c1/heartbeat", {})
    assert err.value.status == 401
    assert HubClient(hub.url, token).post("/api/v1/nodes/edge-c1/heartbeat", {})  # the first one still works


def test_products_and_pipelines(hub):
    assert cli(hub, "node", "create", "edge-c2").returncode == 0
    out = cli(hub, "product", "apply", "-f", str(APP / "products.yaml"))
    assert out.returncode == 0 and "product pump v1" in out.stdout, out.stderr
    out = cli(hub, "pipeline", "apply", "-f", str(APP / "pipelines" / "overheat.yaml"), "--to", "edge-c2",
              "--devices", "pump-1,pump-2")
    assert out.returncode == 0, out.stderr
    assert "v1 (new version)" in out.stdout and "-> node:edge-c2" in out.stdout
    again = cli(hub, "pipeline", "apply", "-f", str(APP / "pipelines" / "overheat.yaml"))
    assert "(unchanged)" in again.stdout
    ls = cli(hub, "pipeline", "ls")
    assert ls.returncode == 0 and "pump-overheat" in ls.stdout and "node:edge-c2" in ls.stdout
    strict = cli(hub, "pipeline", "apply", "-f", str(APP / "pipelines" / "overheat.yaml"), "--to", "edge-c2",
                 "--instance", "overheat-strict", "--param", "hot_c=70")
    assert strict.returncode == 0 and "(unchanged)" in strict.stdout, strict.stderr
    ls = cli(hub, "pipeline", "ls")
    assert "hot_c=70" in ls.stdout, ls.stdout  # the instance's own value, beside it
    desired = hub.admin().get("/api/v1/nodes/edge-c2/desired")
    assert [(i["instance"], i["devices"], i.get("params")) for i in desired["instances"]] == [
        ("overheat-strict", None, {"hot_c": 70}), ("pump-overheat", ["pump-1", "pump-2"], None)]
    assert [p["name"] for p in desired["products"]] == ["pump"]
    wrong = cli(hub, "pipeline", "apply", "-f", str(APP / "pipelines" / "overheat.yaml"), "--to", "edge-c2",
                "--param", "hot=70")
    assert wrong.returncode == 2 and "unknown parameter 'hot'" in wrong.stderr, wrong.stderr
    nowhere = cli(hub, "pipeline", "apply", "-f", str(APP / "pipelines" / "overheat.yaml"), "--param", "hot_c=70")
    assert nowhere.returncode == 2 and "give --to" in nowhere.stderr, nowhere.stderr


def test_bad_spec_exits_2_with_location(hub, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: broken\nsteps:\n  - device_input: {}\n  - filter: 'temperature >'\n")
    out = cli(hub, "pipeline", "apply", "-f", str(bad), "--to", "edge-c2")
    assert out.returncode == 2
    assert f"{bad}:4" in out.stderr and "filter" in out.stderr
    assert "broken" not in cli(hub, "pipeline", "ls").stdout  # nothing reached the hub


def test_no_token_and_unreachable_hub(hub):
    out = cli(hub, "node", "ls", token=None)
    assert out.returncode == 2 and "EDGELOOP_TOKEN" in out.stderr
    out = cli(hub, "node", "ls", token="ela_wrong")
    assert out.returncode == 1 and "invalid, expired or revoked token (401)" in out.stderr
    e = {**env(), "EDGELOOP_HUB_URL": "http://127.0.0.1:9", "EDGELOOP_TOKEN": ADMIN}
    out = subprocess.run([sys.executable, "-m", "edgeloop", "node", "ls"], cwd=ROOT, env=e,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "hub unreachable" in out.stderr


def test_model_drift_shows_each_node_and_changes_the_settings(hub):
    admin = HubClient(hub.url, ADMIN)
    token = admin.post("/api/v1/nodes", {"name": "drifty", "group": "d"})["token"]
    node = HubClient(hub.url, token)
    for score in (0.02, 0.31, 0.42):
        drift_point(admin, node, "drifty", "pump", "3",
                    {"score": score, "worst": "temp_mean", "rows": 2000, "psi": {"temp_mean": score}})
    out = cli(hub, "model", "drift", "pump")
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if "drifty" in line)
    assert "0.420" in row and "temp_mean" in row and "over, not yet sustained" in row, out.stdout  # default 120 s
    assert "threshold 0.25 for 120 s, the default" in out.stdout
    out = cli(hub, "model", "drift", "pump", "--threshold", "0.3", "--sustain", "0s")
    row = next(line for line in out.stdout.splitlines() if "drifty" in line)
    assert out.returncode == 0 and "DRIFT since" in row, out.stdout
    assert admin.get("/api/v1/models/pump/drift")["threshold"] == 0.3
    bad = cli(hub, "model", "drift", "pump", "--sustain", "soon")
    assert bad.returncode == 2 and "--sustain" in bad.stderr
    empty = cli(hub, "model", "drift", "nothing-here")
    assert empty.returncode == 0 and "no drift reported for nothing-here" in empty.stdout
