"""apply_model: batching, image inputs, model tags, the loop's selection rule, and bad input as dead letters."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge_runtime.instance import Instance, MemorySinks
from edge_runtime.operators.base import SpecError
from edge_runtime.pipeline import parse_pipeline
from edge_runtime.records import Batch


def plan(**params: Any) -> Any:
    return parse_pipeline({"name": "m", "steps": [{"device_input": {}}, {"apply_model": params}]})


def rows(values: list[dict[str, Any]]) -> Batch:
    return Batch.from_records([{"device": f"d{i % 3}", "ts": float(i), "values": v} for i, v in enumerate(values)])


class Model:
    """A model with a version, as the model store serves them."""

    def __init__(self, version: str = "7", conf: float | None = None) -> None:
        self.version, self.tag, self.conf, self.calls = version, f"m:{version}", conf, []

    def __call__(self, x: np.ndarray) -> Any:
        self.calls.append(x.shape)
        pred = (x.reshape(len(x), -1).mean(axis=1) > 0.5).astype(np.int64)
        conf = np.linspace(0.5, 1.0, len(x)) if self.conf is None else np.full(len(x), self.conf)
        return pred, conf


def test_selection_marks_low_confidence_disagreement_and_a_random_share() -> None:
    p = plan(model="m", inputs=["x"], output="intrusion", batch_size=3,
             select={"low_confidence": 0.6, "disagree": "other", "random": 0.5, "seed": 1})
    model = Model()
    inst = Instance("m", p, models={"m": model})
    vals = [{"x": float(i % 2), "other": 1 - (i % 2) if i in (5, 6) else i % 2} for i in range(10)]
    out = inst.push(rows(vals)).to_records()
    assert model.calls == [(3, 1), (3, 1), (3, 1), (1, 1)]
    got = {i: r["values"].get("select") for i, r in enumerate(out)}
    conf = [r["values"]["intrusion_confidence"] for r in out]
    for i, r in enumerate(out):
        assert r["values"]["intrusion_model"] == "m:7"
        if conf[i] < 0.6:
            assert got[i] == "low_confidence"
        elif i in (5, 6):
            assert got[i] == "disagreement"
        else:
            assert got[i] in (None, "random")
    assert "random" in got.values() and None in got.values()
    again = Instance("m", p, models={"m": Model()}).push(rows(vals)).to_records()
    assert [r["values"].get("select") for r in again] == list(got.values())  # seeded


def test_an_earlier_models_selection_stands_and_upload_when_sends_only_marked_records() -> None:
    p = parse_pipeline({"name": "two", "steps": [
        {"device_input": {}},
        {"apply_model": {"model": "a", "inputs": ["x"], "output": "a", "select": {"low_confidence": 0.9}}},
        {"apply_model": {"model": "b", "inputs": ["x"], "output": "b", "select": {"disagree": "a"}}},
        {"upload": {"when": "select"}}]})
    sinks = MemorySinks()
    class Flip(Model):
        def __call__(self, x: np.ndarray) -> Any:
            pred, conf = super().__call__(x)
            return 1 - pred, conf

    inst = Instance("two", p, sinks=sinks, models={"a": Model("1", conf=0.95), "b": Flip("2", conf=0.99)})
    vals = [{"x": float(i % 2)} for i in range(4)]
    out = inst.push(rows(vals)).to_records()
    assert [r["values"]["select"] for r in out] == ["disagreement"] * 4
    assert len(sinks.uploads) == 4
    quiet = Instance("q", parse_pipeline({"name": "q", "steps": [
        {"device_input": {}}, {"apply_model": {"model": "a", "inputs": ["x"], "select": {"low_confidence": 0.5}}},
        {"upload": {"when": "select"}}]}), sinks=(s2 := MemorySinks()), models={"a": Model(conf=0.95)})
    assert len(quiet.push(rows(vals))) == 4 and s2.uploads == []  # nothing marked: nothing uploaded


def test_image_inputs_are_stacked_and_bad_images_are_dead_letters() -> None:
    model = Model()
    model.shape = (4, 4, 3)
    inst = Instance("img", plan(model="m", image="crop", output="person"), models={"m": model})
    good = np.full((4, 4, 3), 200, np.uint8)
    vals = [{"crop": good}, {"crop": np.zeros((5, 4, 3), np.uint8)}, {"crop": good.astype(np.float32)},
            {"crop": "jpeg?"}, {"other": 1}, {"crop": np.zeros((4, 4, 3), np.uint8)}]
    out = inst.push(rows(vals)).to_records()
    assert [r["values"]["person"] for r in out] == [1, 0] and model.calls == [(2, 4, 4, 3)]
    reasons = [d["reason"] for d in inst.dead_letters.items]
    assert reasons == ["apply_model: 'crop' has shape (5, 4, 3), the model takes (4, 4, 3)",
                       "apply_model: 'crop' is not a uint8 image array",
                       "apply_model: 'crop' is not a uint8 image array",
                       "apply_model: missing image field 'crop'"]


def test_a_model_that_raises_or_miscounts_dead_letters_its_batch_and_the_pipeline_goes_on() -> None:
    calls = {"n": 0}

    def bad(x: np.ndarray) -> Any:
        calls["n"] += 1
        return np.zeros(len(x) + 1) if calls["n"] == 1 else np.ones(len(x))

    inst = Instance("m", plan(model="m", inputs=["x"]), models={"m": bad})
    assert len(inst.push(rows([{"x": 1.0}, {"x": 2.0}]))) == 0
    assert "returned 3 predictions for 2 inputs" in inst.dead_letters.items[0]["reason"]
    assert [r["values"]["prediction"] for r in inst.push(rows([{"x": 1.0}])).to_records()] == [1.0]
    bools = inst.push(rows([{"x": True}]))
    assert len(bools) == 0 and "is not a number" in inst.dead_letters.items[-1]["reason"]


@pytest.mark.parametrize(("params", "field"), [
    ({"model": "m"}, "inputs"),
    ({"model": "m", "inputs": ["x"], "image": "crop"}, "inputs"),
    ({"model": "a:b:c", "inputs": ["x"]}, "model"),
    ({"model": "m", "inputs": ["x"], "select": {"low_confidence": 2}}, "select.low_confidence"),
    ({"model": "m", "inputs": ["x"], "select": {"often": 1}}, "select"),
    ({"model": "m", "inputs": ["x"], "select": {"disagree": 3}}, "select.disagree"),
    ({"model": "m", "inputs": ["x"], "batch_size": 0}, "batch_size"),
])
def test_bad_apply_model_specs_name_the_field(params: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as err:
        plan(**params)
    assert err.value.field == field, str(err.value)
