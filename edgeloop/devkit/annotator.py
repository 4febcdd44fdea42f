"""A SIMULATED annotator for demos and tests: it labels Label Studio tasks from ground truth through Label
Studio's API, as a person would in its UI. Never part of the real loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flows.labelstudio import FROM_NAME, Labelling, LabellingError

__all__ = ["simulated_annotator"]


def simulated_annotator(labelling: Labelling, project_id: int, truth: Callable[[dict[str, Any]], str | None],
                        limit: int | None = None) -> int:
    """A SIMULATED annotator, for demos and tests only: label unlabelled tasks from ground truth.

    A real loop waits for people in Label Studio's UI. This stands in for them: for each task of the
    project without an annotation, ``truth(task data)`` gives the label (None: leave the task), and an
    annotation is created through Label Studio's API (annotations.create), as a person's would be.
    Labels outside the project's raise ValueError. Returns the number of annotations made (at most
    ``limit``).
    """
    to_name, labels = labelling.project_labels(project_id)
    if to_name is None:
        raise LabellingError(f"project {project_id} has no Choices named {FROM_NAME!r}")
    made = 0
    for task in list(labelling.tasks(project_id)):
        if limit is not None and made >= limit:
            break
        if any(not a.get("was_cancelled") for a in task.get("annotations") or []):
            continue
        label = truth(task.get("data") or {})
        if label is None:
            continue
        if label not in labels:
            raise ValueError(f"simulated annotator: truth gave {label!r} for task {task['id']}, "
                             f"not one of the project's labels {labels}")
        labelling.annotate(int(task["id"]), label, to_name)
        made += 1
    return made
