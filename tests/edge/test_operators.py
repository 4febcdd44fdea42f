"""Shared promises of every operator (a conformance suite: edge_runtime.testing.check_operator on every built-in, and\non operators broken on purpose to show it fails), and user operators through entry points."""

from __future__ import annotations

import json
import sys
import textwrap
from typing import Any

import cv2
import numpy as np
import pytest

from edge_runtime.instance import Instance
from edge_runtime.operators import REGISTRY, Operator, StepContext, load_entry_points
from edge_runtime.operators.base import SpecError
from edge_runtime.pipeline import parse_pipeline
from edge_runtime.records import Batch
from edge_runtime.testing import OperatorCheckError, check_operator
from models.synth import generate_clip

T0 = 1_700_000_000.0


def readings() -> list[dict[str, Any]]:
    """Valid structured input: three pumps every 0.5 s for 9 s, then (after a 20 s pause) 5 s more, with a
    number ``t``, a count ``n`` and a state ``s``; two product events among them."""
    out = []
    for i in range(54):
        dev = f"pump-{i % 3}"
        ts = T0 + i * 0.5 + (20.0 if i >= 36 else 0.0)
        out.append({"device": dev, "product": "p", "ts": ts,
                    "values": {"t": 15.0 + (i * 7) % 23 + 0.25 * (i % 4), "n": i % 5, "s": ("on", "off")[i // 6 % 2]}})
    for k, i in enumerate((10, 40)):
        out.insert(i, {"device": f"pump-{k}", "product": "p", "ts": out[i]["ts"],
                       "values": {"event": "overheat", "level": "WARN", "t": 99.0, "n": 1, "s": "on"}})
    return out


def bad_readings() -> list[dict[str, Any]]:
    """Rows an operator must dead-letter or pass, never raise on: a missing field, text for a number."""
    return [{"device": "pump-0", "product": "p", "ts": T0 + i, "values": {"t": 20.0 + i, "n": i, "s": "on"}}
            for i in range(4)] + [
        {"device": "pump-1", "product": "p", "ts": T0 + 1, "values": {"u": 1.0}},
        {"device": "pump-0", "product": "p", "ts": T0 + 5, "values": {"t": "text", "n": 1, "s": "on"}},
        {"device": "pump-2", "product": "p", "ts": T0 + 6, "values": {"t": 40.0, "n": "x", "s": 3}}]


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return generate_clip(16, seed=5, width=96, height=72)[0]  # SYNTHETIC street scenes, rendered


def camera_records(frames: list[np.ndarray]) -> list[dict[str, Any]]:
    """Valid multimedia input: two cameras at 5 fps with a 3 s gap, each record a real BGR frame (``frame``)
    and the same frame as JPEG bytes (``image``)."""
    out = []
    for i in range(24):
        ts = T0 + (i // 2) * 0.2 + (3.0 if i >= 14 else 0.0)
        f = frames[i % len(frames)]
        ok, jpg = cv2.imencode(".jpg", f)
        out.append({"device": f"cam-{i % 2}", "product": "camera", "ts": ts,
                    "values": {"frame": f, "image": jpg.tobytes(), "t": float(f.mean())}})
    return out


def bad_frames(frames: list[np.ndarray]) -> list[dict[str, Any]]:
    return [{"device": "cam-0", "product": "camera", "ts": T0, "values": {"frame": frames[0]}},
            {"device": "cam-0", "product": "camera", "ts": T0 + 1, "values": {"t": 1.0}},
            {"device": "cam-1", "product": "camera", "ts": T0 + 2, "values": {"frame": "not a frame", "image": b"xx"}},
            {"device": "cam-1", "product": "camera", "ts": T0 + 3, "values": {"frame": np.zeros((4, 4), np.float32)}}]


class Dark:
    """A model over whole frames: is the picture dark (and how sure)."""

    version, shape = "1", (72, 96, 3)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (x.mean(axis=(1, 2, 3)) < 100).astype(np.int64), np.full(len(x), 0.8)


MODELS = {"double": lambda x: x[:, 0] * 2, "dark": Dark()}

# every built-in operator: (case id, parameters, input kind, options); "stateful": it keeps state between batches
CASES: dict[str, list[tuple[str, Any, str, dict[str, Any]]]] = {
    "device_input": [("all", {}, "readings", {}), ("some", {"properties": ["t"], "devices": ["pump-1"]}, "readings", {})],
    "event_input": [("events", ["overheat"], "readings", {})],
    "time_series_input": [("live", {"since": "1h"}, "readings", {})],
    "filter": [("threshold", "t > 20", "readings", {})],
    "sample": [("every", {"every": 3}, "readings", {"stateful": True}),
               ("interval", {"interval": "2s"}, "readings", {"stateful": True})],
    "change_trigger": [("state", {"fields": ["s"]}, "readings", {"stateful": True}),
                       ("threshold", {"fields": ["t"], "threshold": 5}, "readings", {"stateful": True})],
    "custom_function": [("set", {"set": {"f": "t * 9 / 5 + 32", "g": "f - n"}}, "readings", {})],
    "time_window": [("5s", {"size": "5s"}, "readings", {"stateful": True})],
    "aggregate": [("after a window", {"t": ["mean", "max", "std"], "n": ["sum", "mode"], "s": ["first", "count"]},
                   "readings", {"before": [("time_window", {"size": "4s"})]})],
    "notification": [("info", {"level": "INFO", "message": "{device} at {t:.1f}"}, "readings", {})],
    "alert": [("cooldown", {"message": "{device} hot", "cooldown": "3s"}, "readings", {"stateful": True}),
              ("until quiet", {"until_quiet": "2s"}, "readings", {"stateful": True}),
              ("with image", {"image": "frame", "until_quiet": "1s", "quality": 70}, "frames", {"stateful": True})],
    "upload": [("every 4", {"every": 4}, "readings", {"stateful": True}),
               ("frames", {"image": "frame", "quality": 60}, "frames", {"stateful": True})],
    "device_output": [("set", {"set": {"speed": "t + 1"}}, "readings", {}),
                      ("service", {"device": "pump-0", "service": "stop", "args": {"why": "s"}}, "readings", {})],
    "apply_model": [("numbers", {"model": "double", "inputs": ["t"], "batch_size": 4}, "readings", {}),
                    ("random share", {"model": "double", "inputs": ["t"], "select": {"random": 0.3, "seed": 7}},
                     "readings", {"stateful": True}),
                    ("frames", {"model": "dark", "image": "frame", "annotate": True}, "frames", {})],
    "decode": [("jpeg", {}, "frames", {})],
    "encode": [("jpeg", {"quality": 80}, "frames", {}), ("png", {"format": "png", "output": "png"}, "frames", {})],
    "resolution": [("half", {"width": 48, "height": 36}, "frames", {})],
    "frame_rate": [("2 fps", {"fps": 2}, "frames", {"stateful": True})],
    "region_of_interest": [("box and polygon", {"regions": {"a": [8, 8, 40, 30], "b": {"polygon": [[50, 10], [90, 10],
                                                                                                  [70, 60]]}},
                                                "size": 16}, "frames", {}),
                           ("per device", {"per_device": {"cam-0": {"a": [0, 0, 20, 20]}}, "regions": {"w": [0, 0, 96, 72]},
                                           "keep_frame": False}, "frames", {})],
    "frame_stack": [("3 frames", {"frames": 3, "field": "frame", "max_gap": "1s"}, "frames", {"stateful": True})],
    "file_output": [("mp4", {"path": "{tmp}/{device}.mp4", "fps": 5}, "frames", {}),
                    ("jpeg folder", {"path": "{tmp}/shots/{device}"}, "frames", {})],
    "file_input": [("file", {"file": "clip.mp4"}, "frames", {})],
    "stream_input": [("rtsp", {"url": "rtsp://127.0.0.1:1/cam"}, "frames", {})],
    "usb_camera_input": [("usb", {"usb": 0}, "frames", {})],
}


def test_every_builtin_has_a_case_here():
    assert {n for n, c in REGISTRY.items() if c.__module__.startswith("edge_runtime")} == set(CASES)


@pytest.mark.parametrize(("name", "case"), [(n, c[0]) for n, cs in CASES.items() for c in cs])
def test_every_builtin_keeps_the_operator_promises(name, case, frames, tmp_path):
    """check_operator on each built-in: no dead letters and no exceptions on valid input, no mutation of its
    input, the same output whatever the micro-batch size, state that survives snapshot/restore; bad rows are
    dead letters with reasons."""
    (example, kind, opts), = [(e, k, o) for c, e, k, o in CASES[name] if c == case]
    example = json.loads(json.dumps(example).replace("{tmp}", str(tmp_path)))
    records, bad = (readings(), bad_readings()) if kind == "readings" else (camera_records(frames), bad_frames(frames))
    report = check_operator(REGISTRY[name], example, records, before=opts.get("before", ()),
                            product="camera" if kind == "frames" else "p", models=MODELS, bad_records=bad)
    assert report.outputs or report.sink_items, "the example does something with the input"
    assert report.stateful == opts.get("stateful", False), "the operators that keep state are the ones listed"
    assert report.snapshots >= 3
    if name == "file_output":
        assert [p for p in tmp_path.rglob("*") if p.is_file() and p.stat().st_size > 0], "it wrote its files"


# -- the check fails where it should: operators broken on purpose ------------------------------------------

class AlwaysRaises(Operator):
    """Broken: raises on every batch (the engine would dead-letter each one and go on)."""

    name = "always_raises"
    params = {"field": "unused"}

    def process(self, batch):
        raise RuntimeError("boom")


class DoublesInPlace(Operator):
    """Broken: doubles ``t`` in the batch it was given instead of in a copy."""

    name = "doubles_in_place"
    params = {"field": "unused"}

    def process(self, batch):
        batch.cols["t"].data *= 2
        return batch


class DrawsOnFrames(Operator):
    """Broken: marks the frames it was given (the same arrays other pipelines see)."""

    name = "draws_on_frames"
    params = {"field": "unused"}

    def process(self, batch):
        for f in batch.cols["frame"].data:
            f[0, 0] = 255
        return batch


class FirstOfEachBatch(Operator):
    """Broken: keeps the first record of each micro-batch, so its output depends on how input is cut."""

    name = "first_of_each_batch"
    params = {"field": "unused"}

    def process(self, batch):
        return batch.take(np.array([0]))


class EverySecond(Operator):
    """Broken: keeps every second record, counting across batches, but its count is not in its snapshot."""

    name = "every_second"
    params = {"field": "unused"}

    def configure(self, field=None):
        self.seen = 0

    def process(self, batch):
        keep = (np.arange(len(batch)) + self.seen) % 2 == 0
        self.seen += len(batch)
        return batch.take(keep)


class NumpySnapshot(EverySecond):
    """Broken: its snapshot holds a numpy integer, which is not JSON."""

    name = "numpy_snapshot"

    def snapshot(self):
        return {"seen": np.int64(self.seen)}

    def restore(self, state):
        self.seen = state["seen"]


class RejectsEverything(Operator):
    """Broken: dead-letters valid records."""

    name = "rejects_everything"
    params = {"field": "unused"}

    def process(self, batch):
        self.ctx.dead_letter(batch, "rejects_everything: no reason at all")
        return Batch.empty()


class Undocumented(Operator):
    name = "undocumented"
    params = {"field": "unused"}


@pytest.mark.parametrize(("cls", "promise", "says"), [
    (AlwaysRaises, "dead letters instead of exceptions",
     ["process() of step 1:always_raises raised RuntimeError('boom') on records 0-55 (56 valid records in one batch)"]),
    (DoublesInPlace, "does not mutate its input",
     ["process() on records 0-55 (56 valid records in one batch) changed the batch it was given: input.columns.t.data",
      "56 of 56 values differ, the first at flat index 0: 30.0 after, 15.0 before"]),
    (DrawsOnFrames, "does not mutate its input",
     ["changed the batch it was given: input.columns.frame.data[0] (a uint8 array of shape (72, 96, 3))",
      "255 after"]),
    (FirstOfEachBatch, "output independent of batch size",
     ["fed 56 records in batches of 1: outputs: 56 items in batches of 1, 1 in one batch"]),
    (EverySecond, "state survives snapshot/restore",
     ["fed record 0 of 56, snapshot, then a fresh operator restored from it fed records 1-55 of 56",
      "outputs[1].device: 'pump-1' restored, 'pump-2' uninterrupted; the snapshot was None"]),
    (NumpySnapshot, "state survives snapshot/restore",
     ["after record 0 of 56, the snapshot of step 1:numpy_snapshot is not plain JSON",
      "Object of type int64 is not JSON serializable"]),
    (RejectsEverything, "no dead letters on valid input",
     ["56 dead letter(s) from 56 valid records, the first from step 1:rejects_everything: "
      "'rejects_everything: no reason at all' for {'device': 'pump-0'"]),
    (Undocumented, "documents itself", ["the class has no docstring"]),
], ids=lambda v: v.__name__ if isinstance(v, type) else None)
def test_check_operator_reports_each_broken_promise_precisely(cls, promise, says, frames):
    records = camera_records(frames) if cls is DrawsOnFrames else readings()
    with pytest.raises(OperatorCheckError) as err:
        check_operator(cls, {}, records)
    assert err.value.promise == promise and err.value.operator == f"{cls.name} {{}}"
    message = str(err.value)
    assert message.startswith(f"{cls.name} {{}} breaks the promise '{promise}': "), message
    for part in says:
        assert part in message, message


def test_check_operator_names_parameters_the_operator_refuses():
    with pytest.raises(OperatorCheckError) as err:
        check_operator("sample", {"every": 0})
    assert str(err.value) == ("sample {'every': 0} breaks the promise 'builds from its example': "
                              "field 'every': expected a whole number >= 1, got 0")


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
        check_operator(REGISTRY["clamp"], {"field": "t", "lo": 20, "hi": 30})  # what its author's tests call
    finally:
        REGISTRY.pop("clamp", None)
        sys.modules.pop("my_ops", None)


def test_step_context_counts_dead_letters():
    ctx = StepContext(pipeline="p", instance="i", step="s")
    ctx.dead_letter(Batch.from_records([{"device": "a", "ts": 1.0, "values": {}}]), "why")
    assert ctx.counters["dead"] == 1
