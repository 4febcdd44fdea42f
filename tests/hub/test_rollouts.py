"""Model rollouts: canaries, promotion, automatic rollback, offline nodes, the API's refusals and the CLI.

A real hub process (its rollout controller runs in it) and SIMULATED in-process nodes (edgeloop.devkit.simfleet): each
has a real :class:`edge_runtime.modelstore.ModelStore` that downloads signed bundles from the hub's warehouse,
verifies, loads and health-checks them, and a small loop that reconciles toward the node's desired state and
sends heartbeats (and, where a test wants them, inference records) like the agent does. The bundles are tiny
scikit-learn models packed the way ``edgeloop model package`` packs them, signed with a trusted key, or with
a key the nodes do not trust for the bad version.
The unit tests at the end exercise :func:`hub.rollouts.decision.decide` without I/O.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from typer.testing import CliRunner

from edge_runtime.hubclient import HubClient, HubError
from edge_runtime.operators.base import SpecError, parse_duration
from edge_runtime.signing import init_keys
from edgeloop.devkit import simfleet
from hub.client import start_rollout, wait_rollout
from hub.rollout_cli import rollout_app
from hub.rollouts.decision import Checks, NodeObs, decide, observe_pipeline, select_canaries, tally_confidence
from tests.kit.hub import ADMIN, DATABASES, HubProcess, PgDatabase, pg_available, wait_for

MODEL = "rmodel"


# -- bundles and nodes (edgeloop.devkit.simfleet: SIMULATED nodes with real model stores) ---------------------------
def sim_node(hub: HubProcess, admin: HubClient, name: str, group: str, root: Path, keys: Path) -> simfleet.SimNode:
    return simfleet.SimNode(hub.url, admin, name, group, root, keys, model=MODEL)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The nodes' key, a rogue key and the bundles (versions 1 and 2 for the nodes' key, 66 for the rogue one):
    made once for both database kinds."""
    tmp = tmp_path_factory.mktemp("rollout-bundles")
    keys, rogue = tmp / "keys", tmp / "rogue"
    init_keys(keys)
    init_keys(rogue)
    made = {version: (simfleet.make_bundle(tmp, MODEL, version, seed), key)
            for version, seed, key in (("1", 1, keys), ("2", 2, keys), ("66", 3, rogue))}
    return {"keys": keys, "bundles": made}


@pytest.fixture(scope="module", params=DATABASES)
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
        bundles: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One hub process per database kind; versions 1 and 2 signed with the nodes' key, 66 with a rogue key."""
    pg = None
    if request.param == "postgresql":
        reason = pg_available()
        if reason:
            pytest.skip(reason)
        pg = PgDatabase()
    tmp = tmp_path_factory.mktemp("rollouts")
    keys = bundles["keys"]
    # nodes are offline after 6 s without a heartbeat (a loaded 2-core CI machine can starve a node's thread for seconds)
    hub = HubProcess(tmp / "hub", heartbeat=2.0, db_url=pg and pg.url).start()
    admin = hub.admin()
    for version, (archive, key) in bundles["bundles"].items():
        simfleet.publish(admin, archive, MODEL, version, key)
    nodes: list[simfleet.SimNode] = []
    try:
        yield {"hub": hub, "admin": admin, "keys": keys, "tmp": tmp, "nodes": nodes}
    finally:
        for n in nodes:
            n.stop()
        hub.stop()
        if pg is not None:
            pg.drop()


@pytest.fixture
def fleet(env: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The module's hub; the nodes a test starts are stopped after it (the machine has few cores)."""
    yield env
    for n in env["nodes"]:
        n.stop()
    env["nodes"].clear()


def group_of(env: dict[str, Any], group: str, names: list[str], *, start: bool = True,
             version: str | None = "1") -> dict[str, simfleet.SimNode]:
    """Nodes of a new group (started unless ``start`` is false), serving ``version`` (the group's deployment)."""
    admin = env["admin"]
    nodes = {n: sim_node(env["hub"], admin, n, group, env["tmp"] / "nodes", env["keys"]) for n in names}
    env["nodes"].extend(nodes.values())
    if version:
        admin.put(f"/api/v1/models/{MODEL}/deployments/group:{group}", {"version": version})
    if start:
        for n in nodes.values():
            n.start()
        if version:
            wait_for(lambda: all(n.serving() == version for n in nodes.values()), 30, f"{group} to serve {version}")
        wait_for(lambda: {n["name"] for n in admin.get("/api/v1/nodes") if n["online"]} >= set(nodes), 30,
                 f"{group} online at the hub")
    return nodes


def by_node(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["node"]: n for n in r["nodes"]}


def until_state(admin: HubClient, rid: int, states: tuple[str, ...], timeout: float = 30) -> dict[str, Any]:
    def now() -> Any:
        r = admin.get(f"/api/v1/rollouts/{rid}")
        return r if r["state"] in states else None

    return wait_for(now, timeout, f"rollout {rid} to be {' or '.join(states)}")


# -- end to end --------------------------------------------------------------------------------------------
def test_a_canary_that_refuses_the_version_rolls_back_and_the_group_never_sees_it(fleet: dict[str, Any]) -> None:
    env = fleet
    admin = env["admin"]
    nodes = group_of(env, "g1", ["a1", "a2", "a3"])
    t = time.monotonic()
    r = start_rollout(admin, MODEL, "66", "g1", canary=1, watch_s=0.5)
    assert (r["state"], r["canaries"], r["previous"]) == ("canary", ["a1"], "1")
    assert {k: v["status"] for k, v in by_node(r).items() if k != "a1"} == {"a2": "pending", "a3": "pending"}
    done = wait_rollout(admin, r["id"], timeout=30)
    took = time.monotonic() - t
    assert done["state"] == "rolled_back", done
    assert "canary node a1 failed" in done["reason"] and "unknown key id" in done["reason"], done["reason"]
    assert by_node(done)["a1"]["status"] == "failed" and done["finished_at"]
    # the canary serves the previous version, by its desired state too; the others never had 66 desired
    assert admin.get("/api/v1/nodes/a1/desired")["models"] == {MODEL: {"version": "1"}}
    time.sleep(0.6)  # a few more reconcile rounds
    assert nodes["a1"].serving() == "1" and nodes["a1"].store.installed(MODEL) == ["1"]
    assert nodes["a2"].seen == nodes["a3"].seen == {"1"}
    assert [d["target"] for d in admin.get(f"/api/v1/models/{MODEL}/deployments")
            if d["target"].endswith(("a1", "a2", "a3", "g1"))] == ["group:g1"]
    assert took < 15, f"the rollback took {took:.1f} s"


def test_a_good_version_goes_canary_then_all_then_done_with_the_cli(fleet: dict[str, Any]) -> None:
    env = fleet
    admin = env["admin"]
    nodes = group_of(env, "g2", ["b3", "b1", "b2"])
    runner = CliRunner()
    common = ["--hub", env["hub"].url, "--token", ADMIN]
    res = runner.invoke(rollout_app, ["start", f"{MODEL}:2", "--to", "group:g2", "--canary", "1", "--watch", "4s",
                                      *common])
    assert res.exit_code == 0, res.output
    assert "canaries b1 (previous 1)" in res.output
    rid = admin.get(f"/api/v1/rollouts?model={MODEL}&limit=1")[0]["id"]
    # the canary phase: b1 gets 2, b2 and b3 wait on 1
    canary = wait_for(lambda: (r := admin.get(f"/api/v1/rollouts/{rid}"))["state"] == "canary"
                      and by_node(r)["b1"]["status"] == "serving" and r, 20, "the canary to serve 2")
    assert by_node(canary)["b2"]["status"] == by_node(canary)["b3"]["status"] == "pending"
    assert nodes["b2"].serving() == nodes["b3"].serving() == "1" and nodes["b1"].serving() == "2"
    res = runner.invoke(rollout_app, ["status", str(rid), "--wait", "--timeout", "30", *common])
    assert res.exit_code == 0, res.output
    done = until_state(admin, rid, ("done",))
    assert done["reason"] == "every node of the group serves 2" and done["waiting"] == []
    assert {n["status"] for n in done["nodes"]} == {"serving"}
    assert all(n.serving() == "2" for n in nodes.values())
    deployments = {d["target"]: d["version"] for d in admin.get(f"/api/v1/models/{MODEL}/deployments")}
    assert deployments["group:g2"] == "2" and "node:b1" not in deployments  # the canary follows the group again
    assert canary["healthy_since"] and done["updated_at"] - canary["healthy_since"] >= 4
    res = runner.invoke(rollout_app, ["history", "--model", MODEL, *common], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "done" in res.output, res.output
    assert admin.get("/api/v1/rollouts")[0]["id"] == rid  # newest first
    res = runner.invoke(rollout_app, ["promote", str(rid), *common])
    assert res.exit_code == 2 and "only a canary rollout can be promoted (409)" in res.output


def test_an_offline_node_waits_and_is_never_counted_done_even_across_a_hub_restart(fleet: dict[str, Any]) -> None:
    env = fleet
    admin, hub = env["admin"], env["hub"]
    nodes = group_of(env, "g3", ["c1", "c2", "c3"], start=False, version=None)  # no previous version
    nodes["c1"].start()
    nodes["c2"].start()
    wait_for(lambda: all(n["online"] for n in admin.get("/api/v1/nodes") if n["name"] in ("c1", "c2")), 10,
             "c1 and c2 online")
    r = start_rollout(admin, MODEL, "2", "g3", canary=2, watch_s=0.3)
    assert r["canaries"] == ["c1", "c2"] and r["previous"] is None  # online nodes first: c3 is offline
    settled = wait_rollout(admin, r["id"], timeout=30)
    assert settled["state"] == "done_with_offline" and settled["waiting"] == ["c3"], settled
    assert by_node(settled)["c3"] == {"node": "c3", "canary": False, "status": "offline", "reason": "waiting: offline"}
    assert "waiting for c3" in settled["reason"]
    res = CliRunner().invoke(rollout_app, ["status", "--hub", hub.url, "--token", ADMIN], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "waiting for offline node(s): c3" in res.output, res.output
    hub.stop()  # the state is in the database: a restarted hub's controller carries on
    restarted = time.time()
    hub.start()
    after = wait_for(lambda: (x := admin.get(f"/api/v1/rollouts/{r['id']}"))["updated_at"] > restarted + 0.5 and x,
                     30, "the restarted hub's controller to evaluate the rollout")
    assert after["state"] == "done_with_offline"  # not done while c3 is away
    nodes["c3"].start()
    done = until_state(admin, r["id"], ("done",))
    assert done["waiting"] == [] and nodes["c3"].serving() == "2"


def test_a_confidence_drop_on_the_canary_rolls_back_to_the_serving_previous_version(fleet: dict[str, Any]) -> None:
    env = fleet
    admin = env["admin"]
    nodes = group_of(env, "g4", ["d1", "d2"])
    for n in nodes.values():
        n.confidence = {"1": 0.9, "2": 0.55}
    wait_for(lambda: len(admin.all_uploads(node="d2")) >= 25, 20, "records of version 1")
    r = start_rollout(admin, MODEL, "2", "g4", canary=1, watch_s=60,
                      checks={"min_records": 10, "max_confidence_drop": 0.2})
    done = wait_rollout(admin, r["id"], timeout=30)
    assert done["state"] == "rolled_back" and "mean confidence on the canaries 0.550" in done["reason"], done
    assert done["confidence"]["previous"]["mean"] == pytest.approx(0.9)
    # the canary served 2 when it rolled back: the rollout's view must not keep saying so
    canary = next(n for n in done["nodes"] if n["canary"])
    assert canary["status"] == "rolled_back" and canary["reason"] == "back to 1 (it was serving)", done["nodes"]
    assert not [n for n in done["nodes"] if n["status"] == "serving"], done["nodes"]
    wait_for(lambda: nodes["d1"].serving() == "1", 10, "the canary to serve version 1 again")
    assert nodes["d2"].seen == {"1"}


def test_the_api_refuses_what_it_cannot_do(fleet: dict[str, Any]) -> None:
    env = fleet
    admin, hub = env["admin"], env["hub"]
    nodes = group_of(env, "g5", ["e1", "e2"], start=False)

    def refused(body: dict[str, Any], client: HubClient = admin) -> tuple[int, str]:
        with pytest.raises(HubError) as err:
            client.post("/api/v1/rollouts", body)
        return err.value.status, err.value.detail

    base = {"model": MODEL, "version": "2", "group": "g5"}
    assert refused({**base, "version": "9"}) == (404, f"no model '{MODEL}' version '9' in the warehouse: upload it "
                                                     "first (edgeloop model package)")
    assert refused({**base, "model": "nope"})[0] == 404
    assert refused({**base, "canary": 3}) == (422, "canary 3 is more than the 2 node(s) of group 'g5'")
    assert refused({**base, "group": "empty"}) == (422, "canary 1 is more than the 0 node(s) of group 'empty'")
    status, detail = refused({**base, "checks": {"max_error_rat": 1}})
    assert status == 422 and "checks: unknown 'max_error_rat'" in detail
    assert refused({**base, "version": "1"}) == (409, f"group 'g5' is already deployed {MODEL}:1")
    node = HubClient(hub.url, nodes["e1"].client.token)
    assert refused(base, node) == (403, "this needs the admin token")
    for path in ("/api/v1/rollouts", "/api/v1/rollouts/1"):
        with pytest.raises(HubError) as err:
            node.get(path)
        assert err.value.status == 403
    r = start_rollout(admin, MODEL, "2", "g5", canary=1, watch_s=600)
    assert refused(base)[0] == 409  # one active rollout per model and group
    with pytest.raises(HubError) as err:
        admin.get("/api/v1/rollouts/99999")
    assert (err.value.status, err.value.detail) == (404, "no rollout 99999")
    back = admin.post(f"/api/v1/rollouts/{r['id']}/rollback")
    assert back["state"] == "rolled_back" and back["reason"] == "rolled back by hand"
    assert admin.get("/api/v1/nodes/e1/desired")["models"] == {MODEL: {"version": "1"}}
    with pytest.raises(HubError) as err:
        admin.post(f"/api/v1/rollouts/{r['id']}/promote")
    assert err.value.status == 409
    # pipelines: a version at the hub, and the group's instances of it pinned to one other version
    pipe = {"pipeline": "flt", "version": "2", "group": "g5"}
    assert refused({**pipe, "model": MODEL}) == refused({"version": "2", "group": "g5"}) == (
        422, "name either a model or a pipeline to roll out")
    assert refused({**pipe, "version": "two"}) == (422, "pipeline versions are whole numbers, got 'two'")
    assert refused(pipe) == (404, "no pipeline 'flt' version 2 at the hub: put it first (POST /api/v1/pipelines)")
    spec = {"name": "flt", "product": "pump", "steps": [{"device_input": {}}, {"filter": "temperature > 1"}]}
    admin.post("/api/v1/pipelines", spec)
    admin.post("/api/v1/pipelines", {**spec, "steps": [{"device_input": {}}, {"filter": "temperature > 2"}]})
    assert refused(pipe) == (404, "group 'g5' runs no instance of pipeline 'flt': assign one first "
                                  "(PUT /api/v1/assignments/group:g5/<instance>)")
    admin.put("/api/v1/assignments/group:g5/f1", {"pipeline": "flt", "version": 1})
    admin.put("/api/v1/assignments/group:g5/f2", {"pipeline": "flt", "version": 2})
    assert refused(pipe) == (409, "group 'g5''s instances of pipeline 'flt' are pinned to different versions (1, 2): "
                                  "pin them to one first")
    admin.put("/api/v1/assignments/group:g5/f1", {"pipeline": "flt", "version": 2})
    assert refused(pipe) == (409, "group 'g5' already runs flt:2")
    admin.put("/api/v1/assignments/node:e2/f1", {"pipeline": "flt", "version": 1})  # e2's own: the group cannot reach it
    assert refused({**pipe, "version": "1"}) == (
        409, "node e2 of group 'g5' has its own assignment of instance 'f1' (flt), which the group's version does not "
             "reach: remove it (DELETE /api/v1/assignments/node:e2/f1) first")
    admin.delete("/api/v1/assignments/node:e2/f1")
    assert refused({**pipe, "version": "99999999999999999999"})[0] == 422
    admin.post("/api/v1/pipelines", {**spec, "params": {"limit": 3}, "steps": [  # version 3 takes a limit
        {"device_input": {}}, {"filter": "temperature > ${limit}"}]})
    for inst in ("f1", "f2"):
        admin.put(f"/api/v1/assignments/group:g5/{inst}", {"pipeline": "flt", "version": 3, "params": {"limit": 9}})
    status, detail = refused({**pipe, "version": "1"})  # version 1 declares no params
    assert status == 422 and detail.startswith("instance 'f1' of group 'g5' with params {'limit': 9} cannot run "
                                               "flt:1: ") and "unknown parameter(s) 'limit'" in detail, detail
    assert refused({**pipe, "version": "1", "canary": 3})[0] == 422
    for inst in ("f1", "f2"):
        admin.delete(f"/api/v1/assignments/group:g5/{inst}")
    res = CliRunner().invoke(rollout_app, ["start", "--pipeline", "flt:v2", "--to", "g5", "--token", ADMIN,
                                           "--hub", hub.url])
    assert res.exit_code == 2 and "'flt:v2': pipeline versions are whole numbers" in res.output, res.output
    res = CliRunner().invoke(rollout_app, ["start", "nocolon", "--to", "g5", "--token", ADMIN, "--hub", hub.url])
    assert res.exit_code == 2 and "expected MODEL:VERSION" in res.output
    res = CliRunner().invoke(rollout_app, ["start", f"{MODEL}:2", "--to", "g5", "--watch", "soon",
                                           "--token", ADMIN, "--hub", hub.url])
    assert res.exit_code == 2 and "--watch: expected a duration like 500ms" in res.output and "'soon'" in res.output
    res = CliRunner().invoke(rollout_app, ["status", "1", "--token", ADMIN, "--hub", "http://127.0.0.1:9"])
    assert res.exit_code == 1 and "hub unreachable" in res.output


# -- the pure decision -------------------------------------------------------------------------------------
def obs(name: str, *, online: bool = True, active: str | None = "2", error: str | None = None, hb: int = 10,
        dead: int = 0) -> NodeObs:
    return NodeObs(name, online, active, error, hb, dead)


def run(state: str = "canary", nodes: list[NodeObs] | None = None, **kw: Any) -> Any:
    nodes = nodes if nodes is not None else [obs("n1"), obs("n2", active="1"), obs("n3", active="1")]
    args: dict[str, Any] = {"name": "m", "version": "2", "state": state, "canaries": ["n1"],
                            "nodes": {n.name: n for n in nodes}, "watch_s": 10.0, "checks": Checks(), "now": 100.0}
    return decide(**(args | kw))


def test_decide_promotes_after_the_watch_window_and_not_before() -> None:
    first = run()
    assert (first.state, first.action, first.healthy_since) == ("canary", None, 100.0)
    assert {k: v["status"] for k, v in first.nodes.items()} == {"n1": "serving", "n2": "pending", "n3": "pending"}
    assert run(healthy_since=95.0).action is None
    later = run(healthy_since=90.0)
    assert (later.state, later.action) == ("rolling", "promote")
    installing = run(nodes=[obs("n1", active="1")], healthy_since=50.0)  # not serving: the window restarts
    assert (installing.state, installing.healthy_since, installing.nodes["n1"]["status"]) == ("canary", None,
                                                                                              "installing")


def test_decide_rolls_back_on_a_refusal_naming_the_version_only() -> None:
    bad = run(nodes=[obs("n1", active="1", error="model m:2 not installed (verify): unknown key id 'ab'")])
    assert (bad.state, bad.action) == ("rolled_back", "rollback") and "canary node n1 failed" in bad.reason
    # a refusal heard before this rollout began (a node restarted since, trusting the key now) is not about it
    stale = NodeObs("n1", True, "1", "model m:2 not installed (verify): unknown key id 'ab'", 10, 0, seen=40.0)
    assert run(nodes=[stale], started=50.0).action is None and run(nodes=[stale], started=30.0).action == "rollback"
    old = run(nodes=[obs("n1", error="model m:1x not installed (health): differs")])  # another version's error
    assert old.action is None and old.nodes["n1"]["status"] == "serving"


def test_decide_error_rate_trigger() -> None:
    first = run()  # the baseline is taken when the node is first seen serving the version
    assert first.baselines == {"n1": {"heartbeats": 10, "dead_letters": 0}} and first.action is None
    base = first.baselines
    calm = run(nodes=[obs("n1", hb=14, dead=4)], baselines=base)  # 1.0 per heartbeat: at the limit
    assert calm.action is None
    bad = run(nodes=[obs("n1", hb=14, dead=5)], baselines=base)
    assert bad.action == "rollback" and "error rate 1.25 dead letters per heartbeat (5 in 4)" in bad.reason
    early = run(nodes=[obs("n1", hb=11, dead=9)], baselines=base)  # one heartbeat: fewer than min_heartbeats
    assert early.action is None
    strict = run(nodes=[obs("n1", hb=11, dead=9)], baselines=base, checks=Checks(min_heartbeats=1))
    assert strict.action == "rollback"
    restarted = run(nodes=[obs("n1", hb=2, dead=0)], baselines=base)  # counters went back: a new baseline
    assert restarted.action is None and restarted.baselines["n1"] == {"heartbeats": 2, "dead_letters": 0}
    rolling = run("rolling", nodes=[obs("n1"), obs("n2", hb=20, dead=30)],
                  baselines={**base, "n2": {"heartbeats": 10, "dead_letters": 0}})
    assert rolling.action == "rollback" and rolling.reason.startswith("node n2: error rate 3.00")


def test_decide_confidence_drop_trigger() -> None:
    chk = Checks(max_confidence_drop=0.1, min_records=20)
    ok = run(checks=chk, canary_confidence=[0.85 * 40, 40], previous_confidence=[0.9 * 100, 100])
    assert ok.action is None
    bad = run(checks=chk, canary_confidence=[0.7 * 40, 40], previous_confidence=[0.9 * 100, 100])
    assert bad.action == "rollback" and "mean confidence on the canaries 0.700 (40 records) is 0.200 below" in bad.reason
    few = run(checks=chk, canary_confidence=[0.1 * 5, 5], previous_confidence=[0.9 * 100, 100])
    assert few.action is None  # too few records to judge
    nobase = run(checks=chk, canary_confidence=[0.1 * 50, 50], previous_confidence=None)
    assert nobase.action is None
    rolling = run("rolling", nodes=[obs("n1")], checks=chk, canary_confidence=[0.1 * 50, 50],
                  previous_confidence=[0.9 * 100, 100])
    assert rolling.state == "done"  # judged during the canary phase only


def test_decide_offline_nodes_wait_and_are_never_done() -> None:
    d = run("rolling", nodes=[obs("n1"), obs("n2"), obs("n3", online=False, active="2")])
    assert d.state == "done_with_offline" and d.action is None
    assert d.nodes["n3"] == {"canary": False, "status": "offline",
                             "reason": "waiting: offline (last seen serving the version)"}
    assert run("done_with_offline", nodes=[obs("n1"), obs("n2"), obs("n3", active="1")]).state == "rolling"
    assert run("done_with_offline", nodes=[obs("n1"), obs("n2"), obs("n3")]).state == "done"
    gone = run("canary", nodes=[obs("n2")])  # the canary was deleted
    assert gone.nodes["n1"]["status"] == "offline" and gone.action is None
    assert run("done").nodes == {} and run("rolled_back").state == "rolled_back"


def test_checks_canaries_tallies_and_durations() -> None:
    assert Checks.from_dict({"min_records": 5}).min_records == 5
    for bad in ({"min_records": 1.5}, {"max_error_rate": -1}, {"max_error_rate": True}, {"x": 1}):
        with pytest.raises(ValueError):
            Checks.from_dict(bad)
    assert select_canaries([obs("b"), obs("a", online=False), obs("c")], 2) == ["b", "c"]
    assert select_canaries([obs("b", online=False), obs("a", online=False)], 3) == ["a", "b"]
    items = [{"values": {"y_model": "m:2", "y_confidence": 0.5}}, {"values": {"y_model": "m:2", "y_confidence": 0.7}},
             {"values": {"y_model": "m:1", "y_confidence": 0.9, "z_model": "other:1", "z_confidence": 0.1}},
             {"values": {"y_model": "m:2"}}, {"y_model": "m:1", "y_confidence": 0.8},
             # as a node's uplink sends them (the upload operator's item): the record nested
             {"kind": "record", "pipeline": "p", "device": "d", "ts": 1.0,
              "record": {"device": "d", "ts": 1.0, "values": {"y_model": "m:2", "y_confidence": 0.3}}}]
    t = tally_confidence(items, "m")
    assert t["1"] == [pytest.approx(1.7), 2] and t["2"] == [pytest.approx(1.5), 3]
    # one duration grammar for specs and the command line (--watch reads it too, zero allowed there)
    assert [parse_duration(x, "w") for x in ("60s", "2m", "5min", "90", "500ms", "1.5h", "1d")] == \
        [60, 120, 300, 90, 0.5, 5400, 86400]
    assert parse_duration("0s", "--watch", zero=True) == 0
    for bad in ("1 week", "0s", "-1s"):
        with pytest.raises(SpecError):
            parse_duration(bad, "w")


def test_a_pipeline_canary_waiting_on_a_model_download_is_pending_not_refused() -> None:
    """A node that could not fetch an instance's pinned model because the hub was away says so with
    ``retry``: the rollout waits for it; a refusal of the version is an error the rollout acts on."""
    base = {"name": "n1", "online": True, "instances": [{"instance": "f1", "pipeline": "flt", "version": 1, "source": "hub"}],
            "counters": {"dead_letters": 0}}
    pending = {**base, "errors": [{"instance": "f1", "pipeline": "flt", "version": 2, "retry": True,
                                   "error": "model m:3 cannot be served here: hub unreachable"}]}
    refused = {**base, "errors": [{"instance": "f1", "pipeline": "flt", "version": 2,
                                   "error": "model m:3 cannot be served here: signature refused"}]}
    assert observe_pipeline(pending, "flt", ["f1"]).error is None
    assert observe_pipeline(pending, "flt", ["f1"]).active == "1"
    assert "flt:2 instance f1: model m:3 cannot be served here: signature refused" in \
        observe_pipeline(refused, "flt", ["f1"]).error
