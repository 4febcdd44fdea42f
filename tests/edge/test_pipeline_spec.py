"""Pipeline specs: YAML and the fluent builder give one plan; bad specs name file, line, step and field."""

from __future__ import annotations

import json

import pytest

from edge_runtime.operators.base import SpecError
from edge_runtime.pipeline import ParamValueError, Pipeline, load_pipeline, parse_pipeline
from tests.kit.cli import edgeloop

OVERHEAT = """\
name: pump-overheat
product: pump
steps:
  - device_input: {properties: [temperature, vibration]}
  - filter: "temperature > 80"
  - time_window: {size: 10s}
  - aggregate: {temperature: mean, vibration: max}
  - custom_function: {set: {temp_f: "temperature_mean * 9 / 5 + 32"}}
  - filter: "vibration_max > 0.5"
  - alert: {level: WARN, message: "pump {device} looks anomalous"}
"""


def test_yaml_and_builder_produce_the_same_plan(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(OVERHEAT)
    from_yaml = load_pipeline(f)
    built = (Pipeline.named("pump-overheat").product("pump")
             .device_input(properties=["temperature", "vibration"])
             .filter("temperature > 80")
             .time_window(size="10s")
             .aggregate(temperature="mean", vibration="max")
             .custom_function(set={"temp_f": "temperature_mean * 9 / 5 + 32"})
             .filter("vibration_max > 0.5")
             .alert(level="WARN", message="pump {device} looks anomalous")
             .build())
    assert built.to_dict() == from_yaml.to_dict()
    assert [s.op for s in built.steps] == [s.op for s in from_yaml.steps]


@pytest.mark.parametrize(("text", "line", "expected"), [
    ("name: p\nsteps:\n  - device_input: {}\n  - filtr: 'x > 1'\n", 4, "unknown operator 'filtr'"),
    ("name: p\nsteps:\n  - device_input: {}\n  - filter: 'x >'\n", 4, "syntax error"),
    ("name: p\nsteps:\n  - device_input: {}\n  - filter: '__import__(\"os\")'\n", 4, "not allowed"),
    ("name: p\nsteps:\n  - device_input: {}\n  - time_window: {size: ten}\n", 4, "field 'size'"),
    ("name: p\nsteps:\n  - device_input: {}\n  - aggregate: {t: mean}\n", 4, "needs a time_window"),
    ("name: p\nsteps:\n  - device_input: {}\n  - time_window: 1s\n  - aggregate: {t: median}\n", 5,
     "unknown aggregate function 'median'"),
    ("name: p\nsteps:\n  - filter: 'x > 1'\n", 3, "first step must be an input"),
    ("name: p\nsteps:\n  - device_input: {}\n  - sample: {every: 0}\n", 4, "field 'every'"),
    ("name: p\nsteps:\n  - device_input: {}\n  - sample: {every: 2, interval: 1s}\n", 4, "exactly one"),
    ("name: p\nsteps:\n  - device_input: {colour: red}\n", 3, "unknown parameter 'colour'"),
    ("name: p\nsteps: []\n", 2, "non-empty list of steps"),
    ("name: p\nsteps:\n  - device_input: {}\n    filter: 'x'\n", 3, "exactly one operator"),
    ("name: p\nsteps:\n  - device_input: {\n", 4, "invalid YAML"),
    ("name: p\nproduct: pump\nsteps:\n  - device_input: {}\n  - custom_function: {set: {f: 'open(1)'}}\n", 5,
     "function 'open' is not allowed"),
])
def test_bad_specs_name_file_line_and_field(tmp_path, text, line, expected):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(SpecError) as err:
        load_pipeline(f)
    msg = str(err.value)
    assert f"bad.yaml:{line}" in msg, msg
    assert expected in msg, msg


def test_builder_error_points_at_the_call():
    b = Pipeline.named("p").device_input()
    with pytest.raises(SpecError, match=r"step #2 filter.*syntax error"):
        b.filter("temperature >")
    with pytest.raises(SpecError, match="unknown operator 'fliter'"):
        b.fliter("x > 1")
    assert len(b.build().steps) == 1  # the bad calls left nothing behind


def test_cli_replay_writes_outputs_in_order_and_counts_bad_lines(tmp_path):
    spec = tmp_path / "p.yaml"
    spec.write_text(OVERHEAT)
    lines = []
    for i in range(40):
        lines.append(json.dumps({"device": f"pump-{i % 2}", "product": "pump", "ts": 100.0 + i,
                                 "values": {"temperature": 85.0 + i % 3, "vibration": 0.9}}))
    lines.insert(5, "{broken")
    lines.insert(9, json.dumps({"device": "pump-0", "ts": "noon", "values": {}}))
    lines.insert(12, json.dumps({"device": "pump-0", "ts": 111.5, "values": {"vibration": 1.0}}))
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    dead = tmp_path / "dead.jsonl"
    alerts = tmp_path / "alerts.jsonl"
    proc = edgeloop("pipeline", "run", str(spec), "--input", str(inp), "--output", str(out),
                   "--dead-letters", str(dead), "--alerts", str(alerts))
    assert proc.returncode == 0, proc.stderr
    assert "2 bad input lines" in proc.stderr
    got = [json.loads(x) for x in out.read_text().splitlines()]
    # windows of 10 s per device: [100,110) [110,120) ... each device has 5 records per window at 85..87
    assert [(r["device"], r["ts"]) for r in got] == [
        ("pump-0", 110.0), ("pump-1", 110.0), ("pump-0", 120.0), ("pump-1", 120.0),
        ("pump-0", 130.0), ("pump-1", 130.0), ("pump-0", 140.0), ("pump-1", 140.0)]
    assert got[0]["values"]["count"] == 5 and got[0]["values"]["window_start"] == 100.0
    assert got[0]["values"]["temp_f"] == pytest.approx(got[0]["values"]["temperature_mean"] * 9 / 5 + 32)
    dls = [json.loads(x) for x in dead.read_text().splitlines()]
    reasons = [d["reason"] for d in dls]
    assert any("malformed JSON" in r for r in reasons)
    assert any("'ts' must be a number" in r for r in reasons)
    assert any("missing field 'temperature'" in r for r in reasons)
    assert {d["source"] for d in dls} >= {"input:6", "input:10"}
    assert len(alerts.read_text().splitlines()) == 8


def test_cli_bad_spec_exits_2_with_the_error_on_stderr(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: p\nsteps:\n  - device_input: {}\n  - filter: {expr: 'a ** '}\n")
    inp = tmp_path / "in.jsonl"
    inp.write_text("")
    proc = edgeloop("pipeline", "run", str(spec), "--input", str(inp), "--output", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 2
    assert "bad.yaml:4" in proc.stderr and "step #2 filter" in proc.stderr and "field 'expr'" in proc.stderr
    missing = edgeloop("pipeline", "validate", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr


def test_replay_from_stdin_to_stdout(tmp_path):
    spec = tmp_path / "p.yaml"
    spec.write_text("name: p\nsteps:\n  - device_input: {}\n  - change_trigger: {fields: [state]}\n")
    recs = [{"device": "d", "ts": float(i), "values": {"state": s}} for i, s in enumerate("aabbba")]
    proc = edgeloop("pipeline", "run", str(spec), "-i", "-", "-o", "-",
                   stdin="".join(json.dumps(r) + "\n" for r in recs))
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(x)["values"]["state"] for x in proc.stdout.splitlines()] == ["a", "b", "a"]


def test_parse_rejects_non_mapping_and_bad_names():
    with pytest.raises(SpecError, match="must be a mapping"):
        parse_pipeline(["not", "a", "mapping"])
    with pytest.raises(SpecError, match="field 'name'"):
        parse_pipeline({"name": "bad/name", "steps": [{"device_input": {}}]})


# -- templates: declared params, an instance's values -------------------------------------------------------
TEMPLATE = """\
name: overheat
product: pump
params: {limit: 80, level: WARN, keep: [temperature]}
steps:
  - device_input: {properties: "${keep}"}
  - filter: "temperature > ${limit}"
  - alert: {level: "${level}", message: "{device} over ${limit} degC, costs $${budget}"}
"""


def test_a_pipeline_is_a_template_whose_instances_bring_their_own_values(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text(TEMPLATE)
    plain = load_pipeline(f)
    assert plain.params == {"limit": 80, "level": "WARN", "keep": ["temperature"]}
    assert [s.params for s in plain.steps] == [
        {"properties": ["temperature"]},  # a whole "${keep}" is the value, typed
        "temperature > 80",  # inside text: written in
        {"level": "WARN", "message": "{device} over 80 degC, costs ${budget}"}]  # $${ is a literal ${
    hot = load_pipeline(f, params={"limit": 92.5, "level": "ERROR"})
    assert hot.steps[1].params == "temperature > 92.5" and hot.steps[2].params["level"] == "ERROR"
    assert hot != plain and plain.bind({"limit": 92.5, "level": "ERROR"}) == hot and plain.bind(None) is plain
    assert plain.to_dict() == hot.to_dict()  # the template, as the hub stores and digests it
    built = (Pipeline.named("overheat").product("pump").params(limit=80, level="WARN", keep=["temperature"])
             .device_input(properties="${keep}").filter("temperature > ${limit}")
             .alert(level="${level}", message="{device} over ${limit} degC, costs $${budget}"))
    assert built.build() == plain and built.build(limit=92.5, level="ERROR") == hot


@pytest.mark.parametrize(("params", "expected", "value_error"), [
    ({"limt": 1}, "field 'params.limt': unknown parameter 'limt' (hint: the pipeline declares: keep, level, limit)",
     True),
    ({"limit": "abc"}, "field 'params.limit': parameter 'limit': expected a number like its default 80, got 'abc'",
     True),
    ({"level": "LOUD"}, "t.yaml:7, step #3 alert, field 'level': expected one of INFO, WARN, ERROR, got 'LOUD'",
     False),  # valid as a value, refused by the step it lands in
    ({"limit": None}, "field 'params.limit': parameter 'limit': no value given", True),
    ({"limit": float("inf")}, "field 'params.limit': parameter 'limit': inf is not a finite number", True),
    (5, "field 'params': expected a mapping of parameter values, got int", True),
])
def test_bad_instance_values_are_refused_naming_the_parameter(tmp_path, params, expected, value_error):
    f = tmp_path / "t.yaml"
    f.write_text(TEMPLATE)
    with pytest.raises(SpecError) as err:
        load_pipeline(f, params=params)
    assert str(err.value).endswith(expected), str(err.value)
    assert isinstance(err.value, ParamValueError) is value_error  # located where the values were given


@pytest.mark.parametrize(("change", "expected"), [
    (lambda t: t.replace("level: WARN,", "level: null,"), "field 'params.level': parameter 'level' needs a default"),
    (lambda t: t.replace("limit: 80,", "1limit: 80,"), "field 'params.1limit': parameter '1limit': expected a name"),
    (lambda t: t + "  - filter: \"vibration > ${vib}\"\n", "t.yaml:8, step #4 filter: ${vib} is not a declared parameter"),
    (lambda t: t.replace("{device} over", "{device} ${degC} over"),
     "t.yaml:7, step #3 alert, field 'message': ${degC} is not a declared parameter"),
    (lambda t: t + "uplink: {blur: [[0, 0, 10, 10]], drop: [x, \"${who}\"]}\n",
     "t.yaml:8, field 'uplink.drop[1]': ${who} is not a declared parameter"),
    (lambda t: t.replace("limit: 80,", "limit: .nan,"), "field 'params.limit': parameter 'limit': nan is not a finite"),
    (lambda t: t.replace("params: {limit: 80, level: WARN, keep: [temperature]}\n", ""), "is not a declared parameter"),
])
def test_bad_templates_are_refused_naming_where(tmp_path, change, expected):
    f = tmp_path / "t.yaml"
    f.write_text(change(TEMPLATE))
    with pytest.raises(SpecError) as err:
        load_pipeline(f)
    assert expected in str(err.value), str(err.value)
    with pytest.raises(SpecError, match="the pipeline declares none"):
        parse_pipeline({"name": "p", "steps": [{"device_input": {}}]}, params={"limit": 1})


def test_cli_runs_and_validates_a_template_with_param_values(tmp_path):
    spec = tmp_path / "t.yaml"
    spec.write_text(TEMPLATE)
    recs = [{"device": "pump-1", "ts": float(i), "values": {"temperature": t}} for i, t in enumerate([79, 85, 91, 95])]
    stdin = "".join(json.dumps(r) + "\n" for r in recs)
    default = edgeloop("pipeline", "run", str(spec), "-i", "-", "-o", "-", stdin=stdin)
    hot = edgeloop("pipeline", "run", str(spec), "-i", "-", "-o", "-", "--param", "limit=90", "-p", "level=ERROR",
                  stdin=stdin)
    assert default.returncode == hot.returncode == 0, default.stderr + hot.stderr
    assert [json.loads(x)["values"]["temperature"] for x in default.stdout.splitlines()] == [85, 91, 95]
    assert [json.loads(x)["values"]["temperature"] for x in hot.stdout.splitlines()] == [91, 95]
    bad = edgeloop("pipeline", "validate", str(spec), "--param", "limit=hot")
    assert bad.returncode == 2 and "parameter 'limit': expected a number like its default 80, got 'hot'" in bad.stderr
    malformed = edgeloop("pipeline", "validate", str(spec), "--param", "limit")
    assert malformed.returncode == 2 and "--param 'limit': expected NAME=VALUE" in malformed.stderr
