"""What a person labelling sees (flows.labelviews) in a real Label Studio: table windows by channel without the model's
answer, raw readings charted, the edge's box on an image, projects from before views brought up to date, and the
label step's collection caps reported."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from edgeloop.devkit.annotator import simulated_annotator
from edgeloop.devkit.labelstudio import LabelStudioServer
from flows.collect import label
from flows.config import LoopConfig
from flows.labelstudio import ID_FIELD, Labelling
from flows.labelviews import features_html, header, hidden_fields, label_config, sig3, view_of
from flows.state import LoopState
from tests.loop.test_labelling_browser import LABELS, T_END, window_item
from tests.loop.test_labelstudio import jpeg

#: the config every table project had before views (a paged two-column table of the raw values)
OLD_TABLE = ('<View>\n  <Header value="Telemetry window"/>\n  <Table name="values" value="$values"/>\n'
             '  <Choices name="label" toName="values" choice="single" showInLine="true" required="true">\n'
             '    <Choice value="normal"/>\n    <Choice value="anomalous"/>\n  </Choices>\n</View>')


@pytest.fixture
def labelling(label_studio: LabelStudioServer) -> Labelling:
    return label_studio.labelling()


@pytest.fixture
def model() -> str:
    return f"v-{uuid.uuid4().hex[:8]}"


# -- without Label Studio -------------------------------------------------------------------------------
@pytest.mark.parametrize(("x", "shown"), [(81.23456, "81.2"), (0.0123456, "0.0123"), (8052.7, "8050"), (7, "7"),
                                          (-3.14159, "-3.14"), (0.0, "0"), (123456, "123000"), (True, "true")])
def test_numbers_are_rounded_to_3_significant_digits(x: Any, shown: str) -> None:
    assert sig3(x) == shown


def test_the_model_answer_is_hidden_and_text_escaped() -> None:
    values = {"temperature_mean": 81.2, "anomaly": 1, "anomaly_confidence": 0.6, "anomaly_model": "m:3",
              "intrusion": 0, "intrusion_model": "intrusion:2", "intrusion_confidence": 0.9, "select": "random",
              "_media": "n/x.jpg", "site": "<b>A</b>"}
    assert hidden_fields(values) == {"anomaly", "anomaly_confidence", "anomaly_model", "intrusion", "intrusion_model",
                                     "intrusion_confidence", "select", "_media"}
    table = features_html({"site": "<b>A</b>", "t_mean": 1.0}, {"t": "<i>"})
    assert "<b>A</b>" not in table and "&lt;b&gt;A&lt;/b&gt;" in table and "t (&lt;i&gt;)" in table
    assert header("<pump>", None) == "<pump>"  # the header is a Header tag's text (Label Studio escapes it)
    assert header(None, T_END) == "unknown device · 2024-11-22 10:50:00 UTC"


def test_bad_views_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown table view 'chart'"):
        label_config("table", LABELS, view="chart")
    with pytest.raises(ValueError, match="charts channels"):
        label_config("table", LABELS, view="series")
    with pytest.raises(ValueError, match="a chart channel is a field name"):
        label_config("table", LABELS, view="series", channels={'a"b': None})
    with pytest.raises(ValueError, match="unknown project kind"):
        label_config("video", LABELS)
    assert view_of(OLD_TABLE) == (None, {})


# -- in Label Studio --------------------------------------------------------------------------------------
@pytest.mark.labelstudio
def test_a_table_task_shows_the_window_by_channel_and_preselects_the_edge(labelling: Labelling, model: str) -> None:
    pid = labelling.ensure_project(model, "table", LABELS)
    assert labelling.project_view(pid) == ("features", {})
    assert labelling.send(pid, [window_item("w1")]) == 1
    (task,) = labelling.tasks(pid)
    data = task["data"]
    assert data["header"] == "pump-2 · 2024-11-22 10:40:00 – 10:50:00 UTC (600 s)"
    assert "temperature (degC)" in data["view"] and ">81.2<" in data["view"] and ">7.89<" in data["view"]
    shown = json.dumps(data["view"]) + json.dumps(data["values"])
    for hidden in ("anomaly", "0.612", "pump_anomaly", "low_confidence", "select"):
        assert hidden not in shown
    (pred,) = task["predictions"]
    assert pred["result"][0]["value"]["choices"] == ["normal"] and pred["score"] == pytest.approx(0.6123456)
    project = labelling.client.projects.get(pid)
    assert "pre-selected" in project.label_config and "Label what the data shows" in project.expert_instruction


@pytest.mark.labelstudio
def test_raw_readings_are_charted_and_the_view_is_kept(labelling: Labelling, model: str) -> None:
    channels = {"temperature": "degC", "vibration": None}
    pid = labelling.ensure_project(model, "table", LABELS, view="series", channels=channels)
    assert labelling.project_view(pid) == ("series", channels)
    item = window_item("s1") | {"series": {"ts": [T_END - 10, T_END - 30, T_END - 20],
                                           "temperature": [80.0, 79.5, float("nan")], "vibration": [1, 2, 3]}}
    item["values"].pop("window_start")
    assert labelling.send(pid, [item]) == 1
    (task,) = labelling.tasks(pid)
    # sorted by time, seconds from the first reading, NaN a gap; the header spans the readings to the window's end
    assert task["data"]["series"] == {"t": [0.0, 10.0, 20.0], "temperature": [79.5, None, 80.0],
                                      "vibration": [2.0, 3.0, 1.0]}
    assert task["data"]["header"] == "pump-2 · 2024-11-22 10:49:30 – 10:50:00 UTC (30 s)"
    config = labelling.client.projects.get(pid).label_config
    assert '<TimeSeries name="values"' in config and 'units="degC"' in config and ',.3~r' in config
    with pytest.raises(ValueError, match="has none: send it to a project of the features view"):
        labelling.send(pid, [window_item("s2")])
    # harvest asks for the project without a view: the chart stays
    assert labelling.ensure_project(model, "table", LABELS) == pid
    assert labelling.project_view(pid) == ("series", channels)
    assert simulated_annotator(labelling, pid, lambda data: "anomalous") == 1
    assert [(x["id"], x["label"]) for x in labelling.harvest(pid)[0]] == [("s1", "anomalous")]


@pytest.mark.labelstudio
def test_the_edge_box_is_drawn_on_the_image(labelling: Labelling, model: str) -> None:
    pid = labelling.ensure_project(model, "image", ["clean", "dumping"])
    assert labelling.project_view(pid) == ("image", {})
    base = {"image": jpeg(1), "values": {"intrusion": 1, "intrusion_model": "intrusion:2", "roi": "drain"},
            "output": "intrusion", "prediction": "dumping", "confidence": 0.9, "model_version": "2",
            "device": "cam-1", "ts": T_END}
    sent = labelling.send(pid, [base | {"id": "in", "box": [16, 12, 48, 36]},  # the JPEG is 64 x 48
                                base | {"id": "out", "box": [256, 136, 448, 323]}])  # frame pixels, not the crop's
    assert sent == 2
    tasks = {t["data"][ID_FIELD]: t for t in labelling.tasks(pid)}
    (pred,) = tasks["in"]["predictions"]
    box = next(r for r in pred["result"] if r["type"] == "rectangle")
    assert box["value"] == pytest.approx({"x": 25.0, "y": 25.0, "width": 50.0, "height": 50.0, "rotation": 0})
    assert [r["type"] for r in tasks["out"]["predictions"][0]["result"]] == ["choices"]
    assert tasks["in"]["data"]["header"] == "cam-1 · 2024-11-22 10:50:00 UTC"
    assert tasks["in"]["data"]["values"] == {"roi": "drain"}
    assert simulated_annotator(labelling, pid, lambda data: "clean") == 2
    assert sorted((x["id"], x["label"]) for x in labelling.harvest(pid)[0]) == [("in", "clean"), ("out", "clean")]
    with pytest.raises(ValueError, match=r"a box is \[x0, y0, x1, y1\]"):
        labelling.send(pid, [base | {"id": "bad", "box": [1, 2]}])


@pytest.mark.labelstudio
def test_a_project_from_before_views_is_brought_up_to_date(labelling: Labelling, model: str) -> None:
    p = labelling.client.projects.create(title=labelling.title(model), label_config=OLD_TABLE)
    old = {"temperature_mean": 80.123456, "anomaly": 1, "anomaly_confidence": 0.7, "anomaly_model": "pump_anomaly:1"}
    labelling.client.projects.import_tasks(p.id, request=[{"data": {ID_FIELD: "old-1", "values": old}},
                                                          {"data": {ID_FIELD: "old-2", "values": old}}])
    tasks = {t["data"][ID_FIELD]: t["id"] for t in labelling.tasks(p.id)}
    labelling.annotate(tasks["old-1"], "anomalous", "values")  # labelled under the old view

    assert labelling.ensure_project(model, "table", LABELS) == p.id
    assert labelling.project_view(p.id) == ("features", {})
    for t in labelling.tasks(p.id):
        assert ">80.1<" in t["data"]["view"] and "anomaly" not in t["data"]["view"]
        assert t["data"]["header"] == "unknown device"
    # the old annotation still counts; new tasks and the simulated annotator work as before
    assert labelling.send(p.id, [window_item("new-1")]) == 1
    assert simulated_annotator(labelling, p.id, lambda data: "normal") == 2
    got = {x["id"]: x["label"] for x in labelling.harvest(p.id)[0]}
    assert got == {"old-1": "anomalous", "old-2": "normal", "new-1": "normal"}


@pytest.mark.labelstudio
def test_the_label_step_reports_what_the_caps_held_back(label_studio: LabelStudioServer, model: str,
                                                        tmp_path: Path) -> None:
    folder = tmp_path / "artifacts" / model
    folder.mkdir(parents=True)
    (folder / "edgeloop-model.json").write_text(json.dumps({"name": model, "labels": LABELS, "input": "table"}))
    cfg = LoopConfig(workspace=str(tmp_path), label_studio_url=label_studio.url,
                     label_studio_token=label_studio.token, label_cap_hour=3)
    batch = [window_item(f"c{i}") | {"reason": "random" if i % 2 else "low_confidence"} for i in range(5)]
    with cfg.state() as state:
        got = label(cfg, state, model, {"items": batch, "watermark": 10})
    assert got["sent"] == 3 and got["held_back"] == 2 and got["held_back_by"] == {"hour": 2}
    assert got["caps"] == {"hour": 3}
    with cfg.state() as state:  # the next run, within the hour: the cap holds
        got = label(cfg, state, model, {"items": [window_item("c9")], "watermark": 11})
        assert state.watermark(model) == 11
    assert got["sent"] == 0 and got["held_back_by"] == {"hour": 1}
    assert len(list(label_studio.labelling().tasks(got["project"]))) == 3
    with LoopState(tmp_path / "var" / "loop" / "state.db") as state:
        assert state.sent_count(model) == 3
