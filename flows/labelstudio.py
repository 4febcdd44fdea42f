"""Label Studio in the agile loop: the client the ``label`` / ``harvest`` steps use.

- :class:`Labelling` talks to any Label Studio (local or remote) through label-studio-sdk 2.x:
  one project per model (``ensure_project``), uploaded inferences become tasks with the edge's
  prediction as a pre-annotation (``send``, idempotent by upload id), finished annotations come back
  as ``(upload id, label)`` pairs (``harvest``). What a task shows a person (a header with the device and
  time range, the window's features by channel or its raw readings charted, the image with the edge's box,
  never the model's own answer, which is the pre-selected choice) is flows.labelviews.
The server as a child process (``edgeloop up``, the demo, the tests) is
:class:`edgeloop.devkit.labelstudio.LabelStudioServer`; the SIMULATED annotator of demos and tests is
:func:`edgeloop.devkit.annotator.simulated_annotator`: never part of the real loop.

Images travel inside the task as ``data:image/jpeg;base64,...`` URIs, which Label Studio's Image tag
shows as they are: no file storage has to be shared between the hub and Label Studio, and a remote
Label Studio works the same as a local one (Label Studio itself hands images out this way from GCS
storage without presigned URLs). Edge uploads are small JPEG crops or frames; the cost is that every
task listing carries the images, so ``send`` (which lists a project's ids) slows down with very large
image projects: keep a project per model and label what the loop selects, not everything.

label_studio_sdk is imported lazily (inside methods): importing this module stays fast.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import math
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from .labelviews import (
    EXPERT_INSTRUCTION,
    FROM_NAME,
    KINDS,
    TO_NAME,
    VIEWS,
    box_result,
    display_data,
    hidden_fields,
    label_config,
    parse_config,
    view_of,
)

__all__ = ["FROM_NAME", "ID_FIELD", "KINDS", "TO_NAME", "LabelStudioUnavailable", "Labelling", "LabellingError",
           "decode_image", "healthy", "label_config", "parse_config"]

log = logging.getLogger(__name__)
START_HINT = ("`edgeloop up` starts it; or by hand: LABEL_STUDIO_USERNAME=<email> LABEL_STUDIO_PASSWORD=<password> "
              "LABEL_STUDIO_USER_TOKEN=<40 hex> LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true "
              ".venv-ls/bin/label-studio start --no-browser --host 127.0.0.1 --port <port>")

#: the task data field that keeps the upload id (the key of idempotent ``send``)
ID_FIELD = "edgeloop_id"
PROJECT_PREFIX = "edgeloop: "
IMPORT_BATCH = 100  # tasks per import request (an image task is a few tens of kB)


class LabellingError(RuntimeError):
    """Label Studio answered, but not as expected (bad token, rejected config or import, ...)."""


class LabelStudioUnavailable(LabellingError):
    """Label Studio cannot be reached at its URL (not started, wrong port, or stopped)."""

    def __init__(self, url: str, cause: object = None) -> None:
        why = f" ({cause})" if cause else ""
        super().__init__(f"Label Studio is not reachable at {url}{why}: is it running? {START_HINT}")
        self.url = url


# -- projects, tasks, annotations -----------------------------------------------------------------------


def image_uri(jpeg: bytes) -> str:
    """A JPEG as the data URI Label Studio's Image tag shows."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def decode_image(uri: str) -> bytes:
    """The JPEG bytes of a task's ``image`` field (the inverse of :func:`image_uri`)."""
    head, sep, payload = uri.partition(",")
    if not sep or not head.startswith("data:") or not head.endswith(";base64"):
        raise ValueError(f"not a base64 data URI: {uri[:40]!r}")
    return base64.b64decode(payload)


def _dump(obj: Any) -> Any:
    """SDK models (pydantic) to plain dicts/lists."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, list):
        return [_dump(x) for x in obj]
    return obj


def _choice(result: Any) -> str | None:
    """The chosen label of an annotation/prediction result (our Choices control), else None."""
    for r in _dump(result) or []:
        if isinstance(r, dict) and r.get("from_name") == FROM_NAME and r.get("type") == "choices":
            chosen = (r.get("value") or {}).get("choices") or []
            if chosen:
                return str(chosen[0])
    return None


def choice_result(kind_to_name: str, label: str) -> list[dict[str, Any]]:
    """The annotation/prediction result choosing ``label``."""
    return [{"from_name": FROM_NAME, "to_name": kind_to_name, "type": "choices", "value": {"choices": [label]}}]


def _image_size(jpeg: bytes, uid: str) -> tuple[int, int]:
    """(width, height) of a JPEG."""
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f"upload {uid}: its image does not decode as a JPEG")
    return int(img.shape[1]), int(img.shape[0])


def healthy(url: str, timeout: float = 2.0) -> bool:
    """True when Label Studio at ``url`` answers ``/health``."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as r:  # noqa: S310 - our own http URL
            return r.status == 200
    except (OSError, urllib.error.URLError):
        return False


class Labelling:
    """The ``label`` and ``harvest`` steps against a Label Studio at ``url`` with API ``token``.

    Constructing it does not connect; every call raises :class:`LabelStudioUnavailable` when Label
    Studio cannot be reached and :class:`LabellingError` when it refuses (bad token, bad request).
    """

    def __init__(self, url: str, token: str, *, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The label_studio_sdk.LabelStudio client (imported on first use)."""
        if self._client is None:
            from label_studio_sdk import LabelStudio

            self._client = LabelStudio(base_url=self.url, api_key=self.token, timeout=self.timeout)
        return self._client

    @contextlib.contextmanager
    def _api(self, what: str) -> Iterator[None]:
        """Turn transport failures into LabelStudioUnavailable, API errors into LabellingError."""
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        try:
            yield
        except httpx.TransportError as e:
            raise LabelStudioUnavailable(self.url, e) from e
        except ApiError as e:
            hint = (" (check the API token; Label Studio needs LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true for it)"
                    if e.status_code == 401 else "")
            raise LabellingError(f"Label Studio at {self.url} refused to {what}: HTTP {e.status_code} "
                                 f"{str(e.body)[:500]}{hint}") from e

    def check(self) -> None:
        """Raise LabelStudioUnavailable unless ``/health`` answers."""
        if not healthy(self.url, timeout=5):
            raise LabelStudioUnavailable(self.url, "no answer on /health")

    # projects

    @staticmethod
    def title(model: str) -> str:
        return f"{PROJECT_PREFIX}{model}"

    def find_project(self, model: str) -> int | None:
        """The id of the model's project, or None."""
        title = self.title(model)
        with self._api(f"list projects titled {title!r}"):
            for p in self.client.projects.list(title=title):
                if p.title == title:
                    return int(p.id)
        return None

    def ensure_project(self, model: str, kind: str, labels: list[str], *, view: str | None = None,
                       channels: dict[str, str | None] | None = None) -> int:
        """The id of the project ``edgeloop: <model>``, created when missing (idempotent by title).

        ``kind`` is ``image`` (the image under a header, the edge's box drawn) or ``table`` (a telemetry
        window: its features as a table by channel, or with ``view="series"`` its raw ``channels`` (name ->
        unit) charted too; flows.labelviews). ``view`` None keeps the view a project has (the kind's default
        for a new one). A project whose labels, view or channels differ gets the new config (Label Studio
        refuses it when a label in use would disappear); one made before views (the table of unrounded
        values) is brought up to date, its tasks given what the new view shows.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown project kind {kind!r}: expected one of {', '.join(KINDS)}")
        if view is not None and view not in VIEWS[kind]:
            raise ValueError(f"unknown {kind} view {view!r}: expected one of {', '.join(VIEWS[kind])}")
        pid = self.find_project(model)
        if pid is None:
            config = label_config(kind, labels, view=view, channels=channels)
            with self._api(f"create the project for model {model!r}"):
                p = self.client.projects.create(title=self.title(model), label_config=config,
                                                description=f"EdgeLoop uploads of model {model} ({kind})",
                                                expert_instruction=EXPERT_INSTRUCTION, show_instruction=False)
            return int(p.id)
        current = self._config(pid)
        to_name, have = parse_config(current)
        now, now_channels = view_of(current)
        keep = now if now in VIEWS[kind] and to_name == TO_NAME[kind] else None
        want = view or keep or VIEWS[kind][0]
        if want == "series" and channels is None:
            channels = now_channels
        changed = want != now or (want == "series" and channels != now_channels)
        if to_name != TO_NAME[kind] or have != list(labels) or changed:
            with self._api(f"update the labelling view of project {pid}"):
                self.client.projects.update(pid, label_config=label_config(kind, labels, view=want, channels=channels),
                                            expert_instruction=EXPERT_INSTRUCTION)
            if now is None and to_name == TO_NAME[kind]:
                self._show_old_tasks(pid, want)
        return pid

    def _config(self, project_id: int) -> str:
        with self._api(f"read project {project_id}"):
            project = self.client.projects.get(project_id)
        return str(project.label_config or "<View/>")

    def project_labels(self, project_id: int) -> tuple[str | None, list[str]]:
        """(the labelled object tag, the labels) of a project."""
        return parse_config(self._config(project_id))

    def project_view(self, project_id: int) -> tuple[str | None, dict[str, str | None]]:
        """(the view of a project: ``image``, ``features``, ``series``, None for a config from before views;
        the charted channels of a series view)."""
        return view_of(self._config(project_id))

    def _show_old_tasks(self, project_id: int, view: str) -> int:
        """Give the tasks sent under the config from before views what ``view`` shows (from the values they
        kept; their device and time are not among them); returns how many changed."""
        changed = 0
        for task in self.tasks(project_id, full=False):
            data = dict(task.get("data") or {})
            if "header" in data or ID_FIELD not in data:
                continue
            kept = data.get("values")
            values: dict[str, Any] = kept if isinstance(kept, dict) else {}
            try:
                shown = display_data({"id": data[ID_FIELD]}, values, "features" if view == "series" else view)
            except ValueError as exc:  # kept values a view cannot show: the task stays as it was
                log.warning("project %s task %s: not brought up to date: %s", project_id, task["id"], exc)
                continue
            with self._api(f"update task {task['id']} of project {project_id}"):
                self.client.tasks.update(task["id"], data={**data, **shown})
            changed += 1
        if changed:
            log.info("project %s: %d tasks from before views brought up to date", project_id, changed)
        return changed

    # tasks

    def tasks(self, project_id: int, *, full: bool = True) -> Iterator[dict[str, Any]]:
        """Every task of a project as a dict (with annotations and predictions when ``full``)."""
        with self._api(f"list the tasks of project {project_id}"):
            pager = self.client.tasks.list(project=project_id, fields="all" if full else "task_only",
                                           page_size=100)
            for task in pager:
                yield _dump(task)

    def existing_ids(self, project_id: int) -> set[str]:
        """The upload ids already in a project."""
        return {str(t["data"][ID_FIELD]) for t in self.tasks(project_id, full=False)
                if ID_FIELD in (t.get("data") or {})}

    def send(self, project_id: int, items: list[dict[str, Any]]) -> int:
        """Make tasks of uploaded inferences, the edge's prediction as a pre-annotation; return how many.

        An item is ``{"id": upload id, "image": JPEG bytes or None, "values": {name: number or str},
        "prediction": label or None, "confidence": float, "model_version": str}`` and, optionally,
        ``"device"``, ``"ts"`` (the header), ``"output"`` (the field holding the model's answer: hidden),
        ``"units"`` ({field or channel: unit}), ``"series"`` (raw readings ``{"ts": [...], channel: [...]}``,
        which a project of the series view needs), ``"box"`` ([x0, y0, x1, y1] in the image's pixels). An id
        already in the project (or twice in ``items``) is not sent again. Image projects need ``image``. The
        task keeps the values without the model's answer (as ``values``), the upload id as ``edgeloop_id``,
        the edge's output as ``edge_prediction``, and what the project's view shows (flows.labelviews). A
        prediction that is not one of the project's labels is sent without a pre-annotation (and logged):
        the loop does not stop for it.
        """
        config = self._config(project_id)
        to_name, labels = parse_config(config)
        if to_name not in TO_NAME.values():
            raise LabellingError(f"project {project_id} at {self.url} is not an EdgeLoop project "
                                 f"(no Choices named {FROM_NAME!r})")
        view = view_of(config)[0] or ("image" if to_name == TO_NAME["image"] else "features")
        have = self.existing_ids(project_id)
        tasks: list[dict[str, Any]] = []
        for item in items:
            uid = str(item["id"])
            if uid in have:
                continue
            have.add(uid)
            tasks.append(self._task(item, str(to_name), labels, view))
        for i in range(0, len(tasks), IMPORT_BATCH):
            with self._api(f"import {len(tasks[i:i + IMPORT_BATCH])} tasks into project {project_id}"):
                self.client.projects.import_tasks(project_id, request=tasks[i:i + IMPORT_BATCH],
                                                  return_task_ids=True)
        return len(tasks)

    @staticmethod
    def _task(item: dict[str, Any], to_name: str, labels: list[str], view: str) -> dict[str, Any]:
        uid = str(item["id"])
        values: dict[str, Any] = {}
        for k, v in (item.get("values") or {}).items():
            if v is not None and not isinstance(v, (int, float, str)):
                raise ValueError(f"upload {uid}: value {k!r} is {type(v).__name__}, expected a number or a string")
            # NaN/inf are not JSON: Label Studio would refuse the whole import
            values[str(k)] = None if isinstance(v, float) and not math.isfinite(v) else v
        hide = hidden_fields(values, item.get("output"))
        data: dict[str, Any] = {ID_FIELD: uid, "values": {k: v for k, v in values.items() if k not in hide},
                                **display_data(item, values, view)}
        box: list[dict[str, Any]] = []
        if to_name == TO_NAME["image"]:
            image = item.get("image")
            if not isinstance(image, (bytes, bytearray)) or not image:
                raise ValueError(f"upload {uid}: an image project needs the JPEG bytes in 'image'")
            data["image"] = image_uri(bytes(image))
            if item.get("box") is not None:
                box = box_result(item["box"], _image_size(bytes(image), uid), uid)
                if not box:
                    log.info("upload %s: its box %s is not inside its image: not drawn", uid, item["box"])
        task: dict[str, Any] = {"data": data}
        label = item.get("prediction")
        if label is not None:
            data["edge_prediction"] = str(label)
        if label is not None and str(label) not in labels:
            # not a choice of the project: the task goes without a pre-selected label (the edge's output stays
            # in its data), a person labels it from scratch
            log.warning("upload %s: predicted label %r is not one of the project's labels %s; sent without "
                        "a pre-annotation", uid, label, labels)
            label = None
        result = (choice_result(to_name, str(label)) if label is not None else []) + box
        if not result:
            return task
        prediction: dict[str, Any] = {"result": result, "model_version": str(item.get("model_version") or "unknown")}
        confidence = item.get("confidence")
        if isinstance(confidence, (int, float)) and math.isfinite(confidence):
            prediction["score"] = float(confidence)
        task["predictions"] = [prediction]
        return task

    # annotations

    def harvest(self, project_id: int) -> tuple[list[dict[str, Any]], list[str]]:
        """(labelled, problems): the finished annotations of a project.

        ``labelled`` has ``{"id": upload id, "label", "annotation_id", "task_id"}`` for every task with
        a non-cancelled annotation (the latest one wins); an annotation without a label or with a label
        that is not the project's is left out and described in ``problems``.
        """
        _, labels = self.project_labels(project_id)
        labelled: list[dict[str, Any]] = []
        problems: list[str] = []
        for task in self.tasks(project_id):
            done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
            if not done:
                continue
            latest = max(done, key=lambda a: (a.get("updated_at") or a.get("created_at") or "", a["id"]))
            uid = (task.get("data") or {}).get(ID_FIELD)
            label = _choice(latest.get("result"))
            if uid is None:
                problems.append(f"task {task['id']}: no {ID_FIELD} in its data (not imported by EdgeLoop)")
            elif label is None:
                problems.append(f"task {task['id']} (upload {uid}): annotation {latest['id']} chose no label")
            elif label not in labels:
                problems.append(f"task {task['id']} (upload {uid}): annotation {latest['id']} has label "
                                f"{label!r}, not one of {labels}")
            else:
                labelled.append({"id": str(uid), "label": label, "annotation_id": int(latest["id"]),
                                 "task_id": int(task["id"])})
        return labelled, problems

    def annotate(self, task_id: int, label: str, to_name: str) -> int:
        """Create an annotation choosing ``label`` on a task through the API; return its id (no checks)."""
        with self._api(f"annotate task {task_id}"):
            a = self.client.annotations.create(task_id, result=choice_result(to_name, label), lead_time=0.0)
        return int(a.id)
