"""Output JSON does not depend on the micro-batch size: an integer that shares a batch with floats
still leaves as an integer (pass-through fields, first/last/min/max/sum/mode of whole numbers)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.pipeline import parse_pipeline
from edge_runtime.replay import replay_records
from tests.kit import examples

values = st.one_of(st.integers(-1000, 1000), st.floats(-1000, 1000, allow_nan=False).map(lambda x: round(x, 3)))
records = st.lists(st.tuples(st.sampled_from(["a", "b"]), values, st.integers(0, 3)), min_size=1, max_size=40)

PIPELINES = [
    [{"device_input": {}}, {"filter": "v > -500"}],
    [{"device_input": {}}, {"sample": {"every": 2}}],
    [{"device_input": {}}, {"change_trigger": {"fields": ["v"]}}],
    [{"device_input": {}}, {"time_window": {"size": 2}},
     {"aggregate": {"v": ["first", "last", "min", "max", "sum", "mode", "count"]}}],
    [{"device_input": {}}, {"time_window": {"size": 2}}],
]


def as_records(rows):
    return [{"device": d, "product": "p", "ts": float(i // 2 + gap), "values": {"v": v}}
            for i, (d, v, gap) in enumerate(rows)]


@settings(max_examples=examples(80), deadline=None)
@given(records, st.sampled_from(range(len(PIPELINES))))
def test_json_output_is_the_same_for_every_batch_size(rows, which):
    recs = sorted(as_records(rows), key=lambda r: r["ts"])
    plan = parse_pipeline({"name": "t", "steps": PIPELINES[which]})
    outs = {bs: json.dumps(replay_records(plan, recs, batch_size=bs)[0]) for bs in (1, 3, 4096)}
    assert outs[1] == outs[3] == outs[4096]


def test_pass_through_keeps_integers():
    plan = parse_pipeline({"name": "t", "steps": [{"device_input": {}}, {"filter": "v >= 0"}]})
    recs = [{"device": "a", "ts": 1.0, "values": {"v": 3}}, {"device": "a", "ts": 2.0, "values": {"v": 3.5}}]
    out, _ = replay_records(plan, recs, batch_size=10)
    assert json.dumps([r["values"]["v"] for r in out]) == "[3, 3.5]"
