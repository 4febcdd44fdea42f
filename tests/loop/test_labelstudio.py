"""The label / harvest steps of the agile loop against a real Label Studio (started once per session)."""

from __future__ import annotations

import uuid
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from edge_runtime.ports import free_port
from edgeloop.devkit.annotator import simulated_annotator
from edgeloop.devkit.labelstudio import LabelStudioServer
from flows.labelstudio import ID_FIELD, Labelling, LabellingError, LabelStudioUnavailable, decode_image

LABELS = ["clean", "dumping"]
PUMP_LABELS = ["normal", "overheat"]


def jpeg(seed: int) -> bytes:
    """A small real JPEG, different for each seed."""
    rng = np.random.default_rng(seed)
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    assert ok
    return buf.tobytes()


def image_items(n: int = 3) -> list[dict[str, Any]]:
    return [{"id": f"img-{i}", "image": jpeg(i), "values": {"camera": "outfall-1", "seq": i},
             "prediction": LABELS[i % 2], "confidence": 0.5 + i / 10, "model_version": "sewage-v3"}
            for i in range(n)]


def table_items(n: int = 2) -> list[dict[str, Any]]:
    return [{"id": f"win-{i}", "image": None, "values": {"temperature_mean": 80.5 + i, "vibration_max": 0.25 * i,
                                                         "device": f"pump-{i}"},
             "prediction": PUMP_LABELS[i % 2], "confidence": 0.6, "model_version": "pump-anomaly-7"}
            for i in range(n)]


@pytest.fixture
def labelling(label_studio: LabelStudioServer) -> Labelling:
    return label_studio.labelling()


@pytest.fixture
def model() -> str:
    """A model name of its own for each test (the server is shared by the session)."""
    return f"m-{uuid.uuid4().hex[:8]}"


@pytest.mark.labelstudio
def test_project_creation_is_idempotent(labelling: Labelling, model: str) -> None:
    pid = labelling.ensure_project(model, "image", LABELS)
    assert labelling.ensure_project(model, "image", LABELS) == pid
    assert labelling.find_project(model) == pid
    assert labelling.project_labels(pid) == ("image", LABELS)
    other = labelling.ensure_project(model + "-pump", "table", PUMP_LABELS)
    assert other != pid
    assert labelling.project_labels(other) == ("values", PUMP_LABELS)
    titles = [p.title for p in labelling.client.projects.list()]
    assert titles.count(f"edgeloop: {model}") == 1
    # new labels for the model: the same project, its config updated
    assert labelling.ensure_project(model, "image", [*LABELS, "unsure"]) == pid
    assert labelling.project_labels(pid) == ("image", [*LABELS, "unsure"])
    with pytest.raises(ValueError, match="unknown project kind"):
        labelling.ensure_project(model, "video", LABELS)


@pytest.mark.labelstudio
def test_send_makes_tasks_with_predictions_once(labelling: Labelling, model: str) -> None:
    images = labelling.ensure_project(model, "image", LABELS)
    windows = labelling.ensure_project(model + "-pump", "table", PUMP_LABELS)
    assert labelling.send(images, image_items(3)) == 3
    assert labelling.send(windows, table_items(2)) == 2

    tasks = {t["data"][ID_FIELD]: t for t in labelling.tasks(images)}
    assert sorted(tasks) == ["img-0", "img-1", "img-2"]
    for i, item in enumerate(image_items(3)):
        (pred,) = tasks[item["id"]]["predictions"]
        assert pred["result"][0]["value"]["choices"] == [LABELS[i % 2]]
        assert pred["result"][0]["to_name"] == "image"
        assert pred["score"] == pytest.approx(item["confidence"])
        assert pred["model_version"] == "sewage-v3"
    wins = {t["data"][ID_FIELD]: t for t in labelling.tasks(windows)}
    assert wins["win-1"]["data"]["values"] == {"temperature_mean": 81.5, "vibration_max": 0.25, "device": "pump-1"}
    (pred,) = wins["win-1"]["predictions"]
    assert pred["result"][0]["value"]["choices"] == ["overheat"]
    assert pred["model_version"] == "pump-anomaly-7"

    # the same ids again (and a duplicate inside one call): nothing new
    assert labelling.send(images, image_items(3)) == 0
    assert labelling.send(windows, table_items(2) + table_items(2)) == 0
    assert labelling.send(images, image_items(4)) == 1  # only img-3 is new
    assert len(list(labelling.tasks(images))) == 4
    assert len(list(labelling.tasks(windows))) == 2

    # a prediction outside the labels: the task, without a pre-annotation; NaN values become null
    odd = {**table_items(1)[0], "id": "odd", "prediction": "cat", "values": {"temperature_mean": float("nan")}}
    assert labelling.send(windows, [odd]) == 1
    (task,) = [t for t in labelling.tasks(windows) if t["data"][ID_FIELD] == "odd"]
    assert task["predictions"] == [] and task["data"]["edge_prediction"] == "cat"
    assert task["data"]["values"] == {"temperature_mean": None}
    with pytest.raises(ValueError, match="needs the JPEG bytes"):
        labelling.send(images, [{**image_items(1)[0], "id": "noimg", "image": None}])


@pytest.mark.labelstudio
def test_image_is_served_as_label_studio_shows_it(label_studio: LabelStudioServer, labelling: Labelling,
                                                  model: str) -> None:
    pid = labelling.ensure_project(model, "image", LABELS)
    items = image_items(3)
    labelling.send(pid, items)
    for task in labelling.tasks(pid):
        # what the labelling UI fetches: GET /api/tasks/<id>, the Image tag shows data["image"]
        r = httpx.get(f"{label_studio.url}/api/tasks/{task['id']}",
                      headers={"Authorization": f"Token {label_studio.token}"}, timeout=30)
        r.raise_for_status()
        shown = r.json()["data"]["image"]
        assert shown.startswith("data:image/jpeg;base64,")
        item = next(i for i in items if i["id"] == task["data"][ID_FIELD])
        assert decode_image(shown) == item["image"]
        assert cv2.imdecode(np.frombuffer(decode_image(shown), np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)


@pytest.mark.labelstudio
def test_simulated_annotator_then_harvest(labelling: Labelling, model: str) -> None:
    pid = labelling.ensure_project(model, "image", LABELS)
    items = image_items(3)
    labelling.send(pid, items)
    assert labelling.harvest(pid) == ([], [])  # predictions are not labels

    truth = {"img-0": "dumping", "img-1": "clean", "img-2": None}  # img-2: the "person" skips it
    assert simulated_annotator(labelling, pid, lambda data: truth[data[ID_FIELD]]) == 2
    labelled, problems = labelling.harvest(pid)
    assert problems == []
    assert {x["id"]: x["label"] for x in labelled} == {"img-0": "dumping", "img-1": "clean"}
    tasks = {t["data"][ID_FIELD]: t for t in labelling.tasks(pid)}
    for x in labelled:
        assert x["task_id"] == tasks[x["id"]]["id"]
        assert x["annotation_id"] == tasks[x["id"]]["annotations"][0]["id"]
        assert tasks[x["id"]]["annotations"][0]["result"][0]["value"]["choices"] == [x["label"]]

    # labelled tasks are left alone; limit bounds the work
    assert simulated_annotator(labelling, pid, lambda data: "clean", limit=0) == 0
    assert simulated_annotator(labelling, pid, lambda data: "clean") == 1  # only img-2 was unlabelled
    assert labelling.send(pid, image_items(4)) == 1  # img-3 arrives
    with pytest.raises(ValueError, match="not one of the project's labels"):
        simulated_annotator(labelling, pid, lambda data: "cat")

    # the latest annotation wins; a cancelled (skipped) one does not count
    task0 = tasks["img-0"]["id"]
    newer = labelling.annotate(task0, "clean", "image")
    labelling.client.annotations.create(tasks["img-1"]["id"], result=[], was_cancelled=True)
    labelled, problems = labelling.harvest(pid)
    by_id = {x["id"]: x for x in labelled}
    assert by_id["img-0"]["label"] == "clean" and by_id["img-0"]["annotation_id"] == newer
    assert by_id["img-1"]["label"] == "clean"  # its earlier, non-cancelled annotation
    assert set(by_id) == {"img-0", "img-1", "img-2"} and problems == []


@pytest.mark.labelstudio
def test_unknown_label_is_skipped_and_reported(labelling: Labelling, model: str) -> None:
    pid = labelling.ensure_project(model, "table", PUMP_LABELS)
    labelling.send(pid, table_items(2))
    tasks = {t["data"][ID_FIELD]: t["id"] for t in labelling.tasks(pid)}
    labelling.client.annotations.create(tasks["win-0"], result=[
        {"from_name": "label", "to_name": "values", "type": "choices", "value": {"choices": ["exploded"]}}])
    labelling.annotate(tasks["win-1"], "normal", "values")
    labelled, problems = labelling.harvest(pid)
    assert [(x["id"], x["label"]) for x in labelled] == [("win-1", "normal")]
    assert len(problems) == 1
    assert f"task {tasks['win-0']}" in problems[0] and "'exploded'" in problems[0]


@pytest.mark.labelstudio
def test_unreachable_label_studio_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    labelling = Labelling(url, "0" * 40, timeout=5)
    with pytest.raises(LabelStudioUnavailable, match="not reachable") as e:
        labelling.ensure_project("pump-anomaly", "table", PUMP_LABELS)
    assert url in str(e.value) and "edgeloop up" in str(e.value) and "label-studio start" in str(e.value)
    with pytest.raises(LabelStudioUnavailable):
        labelling.check()


@pytest.mark.labelstudio
def test_wrong_token_is_a_clear_error(label_studio: LabelStudioServer) -> None:
    with pytest.raises(LabellingError, match="HTTP 401") as e:
        Labelling(label_studio.url, "f" * 40).find_project("pump-anomaly")
    assert label_studio.url in str(e.value) and not isinstance(e.value, LabelStudioUnavailable)


def test_missing_label_studio_names_the_make_target(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGELOOP_LABEL_STUDIO_BIN", str(tmp_path / "nowhere" / "label-studio"))
    with pytest.raises(FileNotFoundError, match="make label-studio"):
        LabelStudioServer(tmp_path).start()
