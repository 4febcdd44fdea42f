"""The model operator: ``apply_model`` runs a model from the node's model store over records."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from ..records import Batch
from .base import Operator, SpecError, register
from .images import annotate as annotated_copy
from .params import names

__all__ = ["ApplyModel"]


@register
class ApplyModel(Operator):
    """Run a model on the node over each record: its prediction, confidence and model tag go into the record.

    Inputs are numeric fields (``inputs``, in the model's feature order) or one field holding an image or
    a clip as a uint8 array (``image``: frames and crops from the multimedia operators). Rows are sent to
    the model ``batch_size`` at a time. The model comes from the node's model store (``name`` for the
    active version, ``name:version`` to pin one); a batch is served wholly by one version, so a hot swap
    never mixes versions inside a batch. Written fields: ``<output>``, ``<output>_confidence`` (or
    ``confidence``) and ``<output>_model`` (``name:version``).

    A version whose bundle has a drift profile counts what it scores against it (:mod:`edge_runtime.drift`);
    the node reports the scores in its heartbeats.

    ``select`` marks records for the agile loop (set ``<mark>`` to the reason; ``upload: {when: ...}``
    sends only those): ``low_confidence`` (below this confidence), ``disagree`` (another model's
    prediction field that differs from this one) and ``random`` (a seeded share of the rest).
    """

    name = "apply_model"
    params = {"model": "model name (optionally name:version)", "inputs": "numeric input fields, in order",
              "image": "a field holding an image/clip array (instead of inputs)",
              "output": "field for the prediction (default: prediction)",
              "confidence": "field for the confidence (default: <output>_confidence)",
              "batch_size": "rows per model call (default 4096 for inputs, 32 for images)",
              "select": "{low_confidence: 0-1, disagree: field, random: 0-1, seed: int}: mark for upload",
              "mark": "field the selection reason goes into (default: select)",
              "annotate": "{frame, box, output}: draw the box and the prediction on a copy of the frame"}
    required = ("model",)

    def configure(self, model: Any, inputs: Any = None, image: Any = None, output: Any = "prediction",
                  confidence: Any = None, batch_size: Any = None, select: Any = None, mark: Any = "select",
                  annotate: Any = None) -> None:
        if not isinstance(model, str) or not model or model.count(":") > 1 or "" in model.split(":"):
            raise SpecError(f"expected a model name (or name:version), got {model!r}", field="model")
        self.model = model
        if (inputs is None) == (image is None):
            raise SpecError("give exactly one of 'inputs' (numeric fields) or 'image' (an array field)",
                            field="inputs")
        self.inputs = names(inputs, "inputs") or [] if inputs is not None else []
        if image is not None and (not isinstance(image, str) or not image):
            raise SpecError("expected the name of the field holding the image", field="image")
        self.image = image
        for name, value in (("output", output), ("mark", mark)):
            if not isinstance(value, str) or not value:
                raise SpecError("expected a field name", field=name)
        self.output = output
        self.confidence = confidence or f"{output}_confidence"
        self.tag_field = f"{output}_model"
        self.mark = mark
        if batch_size is None:  # table models are fastest on large calls; images cost memory per row
            batch_size = 32 if image is not None else 4096
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise SpecError(f"expected a whole number >= 1, got {batch_size!r}", field="batch_size")
        self.batch_size = batch_size
        self.select = self._selection(select)
        if annotate is not None:
            if annotate is True:
                annotate = {}
            if not isinstance(annotate, dict) or set(annotate) - {"frame", "box", "output"}:
                raise SpecError("expected true or {frame, box, output}", field="annotate")
            annotate = {"frame": "frame", "box": "roi_box", "output": "annotated", **annotate}
        self.annotate = annotate
        self.rng = np.random.default_rng(self.select.get("seed"))

    @staticmethod
    def _selection(select: Any) -> dict[str, Any]:
        if select is None:
            return {}
        if not isinstance(select, dict):
            raise SpecError("expected {low_confidence, disagree, random, seed}", field="select")
        unknown = set(select) - {"low_confidence", "disagree", "random", "seed"}
        if unknown:
            raise SpecError(f"unknown key(s) {', '.join(sorted(map(str, unknown)))}", field="select",
                            hint="select has: low_confidence, disagree, random, seed")
        for key in ("low_confidence", "random"):
            v = select.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1):
                raise SpecError(f"expected a number from 0 to 1, got {v!r}", field=f"select.{key}")
        if select.get("disagree") is not None and not isinstance(select["disagree"], str):
            raise SpecError("expected the field of another model's prediction", field="select.disagree")
        seed = select.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise SpecError("expected an integer seed", field="select.seed")
        return dict(select)

    def _table(self, batch: Batch) -> tuple[Batch, NDArray[Any]]:
        n = len(batch)
        ok = np.ones(n, dtype=bool)
        reasons: dict[int, str] = {}
        for f in self.inputs:
            has = batch.has(f)
            for i in np.flatnonzero(~has & ok).tolist():
                reasons[i] = f"apply_model: missing input '{f}'"
            ok &= has
            col = batch.cols.get(f)
            if col is not None and col.data.dtype.kind not in "iuf":
                numeric = np.array([isinstance(v, (int, float)) and not isinstance(v, bool)
                                    for v in col.data.tolist()], dtype=bool) if col.data.dtype == object \
                    else np.zeros(len(col.data), dtype=bool)
                for i in np.flatnonzero(~numeric & ok).tolist():
                    reasons[i] = f"apply_model: input '{f}' is not a number"
                ok &= numeric
        batch = self._drop(batch, ok, reasons)
        if not self.inputs or not len(batch):  # every row dead-lettered: an input column may not exist at all
            return batch, np.zeros((len(batch), len(self.inputs)))
        return batch, np.column_stack([np.asarray(batch.cols[f].data, dtype=np.float64) for f in self.inputs])

    def _images(self, batch: Batch, shape: tuple[int, ...] | None) -> tuple[Batch, NDArray[Any]]:
        image = cast(str, self.image)
        col = batch.cols.get(image)
        values = col.data.tolist() if col is not None and col.data.dtype == object else [None] * len(batch)
        has = batch.has(image)
        ok = np.zeros(len(batch), dtype=bool)
        reasons: dict[int, str] = {}
        for i, v in enumerate(values):
            if not has[i]:
                reasons[i] = f"apply_model: missing image field '{self.image}'"
            elif not isinstance(v, np.ndarray) or v.dtype != np.uint8:
                reasons[i] = f"apply_model: '{self.image}' is not a uint8 image array"
            elif shape and v.shape != shape:
                reasons[i] = f"apply_model: '{self.image}' has shape {v.shape}, the model takes {shape}"
            else:
                ok[i] = True
        batch = self._drop(batch, ok, reasons)
        arrays = [v for v, good in zip(values, ok) if good]
        return batch, (np.stack(arrays) if arrays else np.zeros((0, *(shape or ())), dtype=np.uint8))

    def _drop(self, batch: Batch, ok: NDArray[Any], reasons: dict[int, str]) -> Batch:
        if ok.all():
            return batch
        bad = np.flatnonzero(~ok)
        self.ctx.dead_letter(batch.take(bad), [reasons[i] for i in bad.tolist()])
        return batch.take(ok)

    def process(self, batch: Batch) -> Batch:
        if not len(batch):
            return batch
        models = self.ctx.models
        fn = models.get(self.model) if models is not None else None  # once per batch: one version serves it
        if fn is None:
            self.ctx.dead_letter(batch, f"apply_model: model '{self.model}' is not loaded on this node")
            return Batch.empty()
        if self.image is not None:
            shape = tuple(getattr(fn, "shape", ()) or ()) or None
            batch, X = self._images(batch, shape)
        else:
            batch, X = self._table(batch)
        if not len(batch):
            return batch
        preds, confs = [], []
        try:
            for a in range(0, len(X), self.batch_size):
                res = fn(X[a:a + self.batch_size])
                p, c = res if isinstance(res, tuple) else (res, None)
                preds.append(np.asarray(p).reshape(-1))
                confs.append(None if c is None else np.asarray(c, dtype=np.float64).reshape(-1))
            pred = np.concatenate(preds)
            if len(pred) != len(batch):
                raise ValueError(f"returned {len(pred)} predictions for {len(batch)} inputs")
        except Exception as exc:  # a failing model must not stop the pipeline
            self.ctx.dead_letter(batch, f"apply_model: model '{self.model}' failed: {exc!r}")
            return Batch.empty()
        n = len(batch)
        out = Batch(batch.codes, batch.product, batch.ts, dict(batch.cols))
        out.set_column(self.output, pred)
        conf = np.concatenate([c for c in confs if c is not None]) if all(c is not None for c in confs) else None
        if conf is not None:
            out.set_column(self.confidence, conf)
        tag = getattr(fn, "tag", None) or f"{self.model.split(':')[0]}:{getattr(fn, 'version', 'local')}"
        out.set_column(self.tag_field, np.full(n, tag, dtype=object))
        monitor = getattr(fn, "drift", None)
        if monitor is not None and conf is not None:  # P(positive) from the binary prediction and its confidence
            monitor.update(X, np.where(pred == 1, conf, 1.0 - conf))
        if self.select:
            self._mark(out, pred, conf)
        if self.annotate:
            self._annotate(out, pred, conf)
        return out

    def _annotate(self, out: Batch, pred: NDArray[Any], conf: NDArray[Any] | None) -> None:
        a = self.annotate
        frames, boxes = out.cols.get(a["frame"]), out.cols.get(a["box"])
        if frames is None:
            return
        drawn = np.empty(len(out), dtype=object)
        for i, f in enumerate(frames.data):
            if isinstance(f, np.ndarray):
                label = f"{self.output} {pred[i]}" + ("" if conf is None else f" {conf[i]:.2f}")
                drawn[i] = annotated_copy(f, None if boxes is None else boxes.data[i], label, bool(pred[i]))
        out.set_column(a["output"], drawn, np.array([v is not None for v in drawn], dtype=bool))

    def snapshot(self) -> dict[str, Any] | None:
        """With ``select: {random: ...}``: the random generator's position (its 128-bit numbers as text), so that
        the share drawn after a restart goes on from where it was; otherwise no state."""
        if not self.select.get("random"):
            return None
        st = self.rng.bit_generator.state
        return {"rng": {"bit_generator": st["bit_generator"], "state": {k: str(v) for k, v in st["state"].items()},
                        "has_uint32": st["has_uint32"], "uinteger": st["uinteger"]}}

    def restore(self, state: dict[str, Any] | None) -> None:
        if state is None:
            return
        st = state["rng"]
        if st["bit_generator"] != type(self.rng.bit_generator).__name__:
            raise ValueError(f"state of a {st['bit_generator']} generator, this one is "
                             f"{type(self.rng.bit_generator).__name__}")
        self.rng.bit_generator.state = {**st, "state": {k: int(v) for k, v in st["state"].items()}}

    def _mark(self, out: Batch, pred: NDArray[Any], conf: NDArray[Any] | None) -> None:
        n = len(out)
        reason = np.full(n, None, dtype=object)
        low = self.select.get("low_confidence")
        if low is not None and conf is not None:
            reason[conf < low] = "low_confidence"
        other = self.select.get("disagree")
        if other is not None and other in out.cols:
            col = out.cols[other]
            differ = out.has(other) & (col.data.astype(object) != pred.astype(object))
            reason[differ & (reason == None)] = "disagreement"  # noqa: E711 - elementwise on an object array
        share = self.select.get("random")
        if share:
            pick = self.rng.random(n) < share
            reason[pick & (reason == None)] = "random"  # noqa: E711
        present = reason != None  # noqa: E711
        prev = out.cols.get(self.mark)
        if prev is not None:  # an earlier model's selection stands
            keep = out.has(self.mark)
            reason[keep] = prev.data[keep]
            present |= keep
        out.set_column(self.mark, reason, present)
