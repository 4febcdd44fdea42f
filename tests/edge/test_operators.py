"""Shared promises of every operator (a conformance suite), and user operators through entry points."""

from __future__ import annotations

import copy
import sys
import textwrap

import numpy as np
import pytest

from edge_runtime.engine import Instance, MemorySinks
from edge_runtime.operators import REGISTRY, StepContext, load_entry_points
from edge_runtime.operators.base import SpecError
from edge_runtime.pipeline import parse_pipeline
from edge_runtime.records import Batch

# a valid parameter set per built-in operator, used to exercise the shared promises
EXAMPLES = {
    "device_input": {}, "event_input": ["overheat"], "time_series_input": {"since": "1h"}, "filter": "t > 20",
    "sample": {"every": 2}, "time_window": {"size": "10s"}, "aggregate": {"t": ["mean", "max"]},
    "change_trigger": {"fields": ["t"]}, "custom_function": {"set": {"f": "t * 2"}},
    "notification": {"level": "INFO", "message": "{device} {t}"}, "alert": {"message": "{device} hot"}, "upload": {"every": 1},
    "device_output": {"set": {"speed": "t + 1"}}, "apply_model": {"model": "double", "inputs": ["t"]},
    # multimedia: these records hold no frames, so the frame steps dead-letter them (with reasons)
    "decode": {"field": "t"}, "encode": {"field": "t"}, "resolution": {"width": 8, "height": 8, "field": "t"},
    "frame_rate": {"fps": 2}, "region_of_interest": {"regions": {"a": [0, 0, 2, 2]}, "field": "t"},
    "frame_stack": {"frames": 2, "field": "t"}, "file_output": {"path": "/nonexistent/{device}.mp4", "field": "t"},
    "file_input": {"file": "clip.mp4"}, "stream_input": {"url": "rtsp://127.0.0.1:1/cam"},
    "usb_camera_input": {"usb": 0},
}


def records():
    out = []
    for i in range(30):
        values = {"t": 15.0 + i} if i % 7 else {"u": 1.0}  # every 7th record lacks the field
        out.append({"device": f"d{i % 3}", "product": "p", "ts": 100.0 + i, "values": values})
    out.append({"device": "d0", "product": "p", "ts": 200.0, "values": {"t": "text"}})  # wrong type
    out.append({"device": "d1", "product": "p", "ts": 201.0,  # a product event (only event_input takes it)
                "values": {"event": "overheat", "level": "WARN", "t": 99.0}})
    return out


def test_every_builtin_has_an_example_here():
    assert set(EXAMPLES) <= set(REGISTRY)
    assert {n for n, c in REGISTRY.items() if c.__module__.startswith("edge_runtime")} == set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_operator_promises(name):
    cls = REGISTRY[name]
    assert cls.__doc__ and cls.__doc__.strip(), "an operator documents itself"
    assert isinstance(cls.params, dict) and cls.params, "an operator declares its parameter schema"
    steps = [{"device_input": {}}]
    if name == "aggregate":
        steps.append({"time_window": {"size": 10}})
    if name not in ("device_input", "event_input", "time_series_input", "file_input", "stream_input",
                    "usb_camera_input"):
        steps.append({name: copy.deepcopy(EXAMPLES[name])})
    else:
        steps = [{name: copy.deepcopy(EXAMPLES[name])}]
    plan = parse_pipeline({"name": "conf", "product": "p", "steps": steps})
    sinks = MemorySinks()
    inst = Instance("conf", plan, sinks=sinks, models={"double": lambda x: x[:, 0] * 2})
    recs = records()
    batch = Batch.from_records(recs)
    before = copy.deepcopy(batch.to_records())
    out = inst.push(batch)  # must not raise, whatever the bad rows
    out_flush = inst.flush()
    assert batch.to_records() == before, "operators never mutate their input"
    total_dead = len(inst.dead_letters.items)
    for item in inst.dead_letters.items:
        assert item["reason"] and item["record"] is not None, "dead letters carry the record and a reason"
    produced = len(out) + len(out_flush)
    assert produced + total_dead >= 1
    # the same rows one at a time give the same result (micro-batch size never changes output)
    inst2 = Instance("conf2", plan, sinks=MemorySinks(), models={"double": lambda x: x[:, 0] * 2})
    single = [inst2.push(Batch.from_records([r])) for r in recs] + [inst2.flush()]
    got_single = [r for b in single for r in b.to_records()]
    got_batch = out.to_records() + out_flush.to_records()
    assert _norm(got_single) == _norm(got_batch)


def _norm(recs):
    return [(r["device"], r["ts"], {k: (round(v, 9) if isinstance(v, float) else v) for k, v in r["values"].items()})
            for r in recs]


def test_unknown_parameter_is_rejected_with_the_schema_as_hint():
    with pytest.raises(SpecError) as err:
        parse_pipeline({"name": "x", "steps": [{"device_input": {}}, {"sample": {"evry": 2}}]})
    assert "unknown parameter 'evry'" in str(err.value) and "every, interval" in str(err.value)


def test_an_operator_that_raises_dead_letters_its_batch_and_the_pipeline_goes_on():
    calls = {"n": 0}

    def flaky(x):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("model crashed")
        return x[:, 0]

    plan = parse_pipeline({"name": "m", "steps": [{"device_input": {}},
                                                   {"apply_model": {"model": "m", "inputs": ["t"]}}]})
    inst = Instance("m", plan, models={"m": flaky})
    first = inst.push(Batch.from_records([{"device": "a", "ts": 1.0, "values": {"t": 1.0}}]))
    second = inst.push(Batch.from_records([{"device": "a", "ts": 2.0, "values": {"t": 2.0}}]))
    assert len(first) == 0 and "model crashed" in inst.dead_letters.items[0]["reason"]
    assert second.to_records()[0]["values"]["prediction"] == 2.0


def test_apply_model_writes_prediction_and_confidence():
    plan = parse_pipeline({"name": "m", "steps": [{"device_input": {}}, {"apply_model": {
        "model": "clf", "inputs": ["a", "b"], "output": "anomaly", "batch_size": 2}}]})
    sizes = []

    def clf(x):
        sizes.append(len(x))
        return (x[:, 0] > x[:, 1]).astype(int), np.full(len(x), 0.75)

    inst = Instance("m", plan, models={"clf": clf})
    out = inst.push(Batch.from_records([{"device": "a", "ts": float(i), "values": {"a": i, "b": 2}} for i in range(5)]))
    vals = [r["values"] for r in out.to_records()]
    assert [v["anomaly"] for v in vals] == [0, 0, 0, 1, 1]
    assert all(v["anomaly_confidence"] == 0.75 for v in vals)
    assert sizes == [2, 2, 1]
    missing = Instance("m2", plan, models={})
    missing.push(Batch.from_records([{"device": "a", "ts": 1.0, "values": {"a": 1, "b": 2}}]))
    assert "not loaded on this node" in missing.dead_letters.items[0]["reason"]


def test_user_operator_registers_through_an_entry_point(tmp_path, monkeypatch):
    pkg = tmp_path / "my_ops"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        from edge_runtime.operators import Operator

        class Clamp(Operator):
            """Clamp a field into [lo, hi]."""
            name = "clamp"
            params = {"field": "field to clamp", "lo": "lower bound", "hi": "upper bound"}
            required = ("field", "lo", "hi")

            def configure(self, field, lo, hi):
                self.field, self.lo, self.hi = field, lo, hi

            def process(self, batch):
                import numpy as np
                from edge_runtime.records import Batch
                out = Batch(batch.codes, batch.product, batch.ts, dict(batch.cols))
                out.set_column(self.field, np.clip(batch.cols[self.field].data, self.lo, self.hi))
                return out
    '''))
    dist = tmp_path / "my_ops-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-ops\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[edgeloop.operators]\nclamp = my_ops:Clamp\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert "clamp" in load_entry_points(force=True)
        plan = parse_pipeline({"name": "u", "steps": [{"device_input": {}}, {"clamp": {"field": "t", "lo": 0, "hi": 10}}]})
        out = Instance("u", plan).push(Batch.from_records([{"device": "a", "ts": 1.0, "values": {"t": 50}}]))
        assert out.to_records()[0]["values"]["t"] == 10
    finally:
        REGISTRY.pop("clamp", None)
        sys.modules.pop("my_ops", None)


def test_step_context_counts_dead_letters():
    ctx = StepContext(pipeline="p", instance="i", step="s")
    ctx.dead_letter(Batch.from_records([{"device": "a", "ts": 1.0, "values": {}}]), "why")
    assert ctx.counters["dead"] == 1
