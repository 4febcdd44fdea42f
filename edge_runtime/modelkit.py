"""Model artifacts the edge can load: a directory with ``edgeloop-model.json``, weights and a health sample.

The same loader serves the training process (evaluation), the BentoML service and the node, so a node's
predictions are the training process's predictions on the same inputs. An artifact directory holds::

    edgeloop-model.json   the descriptor (below)
    model.joblib          kind "sklearn": a fitted estimator with predict_proba (pickle: load only verified bundles)
    weights.pt            kind "torch-cnn": a state_dict, loaded with ``weights_only=True`` (no pickle of code)
    model.onnx            kind "onnx": a model trained elsewhere, run by onnxruntime (no pickle of code)
    sample.npz            inputs and the outputs they must give: the health check before activation
    drift-profile.json    optional: the training inputs' histograms, for drift at the node (:mod:`edge_runtime.drift`)

Descriptor::

    {"format": 1, "name": "intrusion", "kind": "torch-cnn", "input": "image" | "clip" | "table",
     "features": [...]            # table: column order
     "shape": [128, 128, 3]       # image: HxWxC uint8 BGR; clip: [T, H, W, C]
     "labels": ["clear", "person"], "threshold": 0.5,   # binary: class 1 when P(1) >= threshold
     "arch": {"channels": [16, 32, 64, 64], "pool": 1},   # torch-cnn only
     "onnx": {"output": "probabilities", "softmax": false, "threads": 1}}   # onnx only, all optional

An ONNX model takes float32 ``(n, k)`` rows (table), or images and clips as float32 NCHW in [0, 1] with a clip's
frames stacked on C (as the torch CNNs), or as they come (uint8 NHWC) when its input is declared uint8. Its
class probabilities are the output named by ``onnx.output`` (default: one called ``probabilities``, else the
last 2-D float output; scikit-learn classifiers converted by skl2onnx with ``zipmap: False`` have it), or logits
when ``onnx.softmax`` is true.

A predictor is called with a batch (``(n, k)`` floats, or ``(n, H, W, C)`` / ``(n, T, H, W, C)`` uint8) and
returns ``(predictions int64, confidences float64)``; the confidence is the probability of the predicted
class. ``scikit-learn``, ``joblib``, ``torch`` and ``onnxruntime`` are imported only when a model of that kind is
loaded.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

DESCRIPTOR = "edgeloop-model.json"
SAMPLE = "sample.npz"
FORMAT = 1
KINDS = ("sklearn", "torch-cnn", "onnx")
INPUTS = ("table", "image", "clip")


def model_outputs(values: Mapping[str, Any], model: str) -> Iterator[tuple[str, str]]:
    """``(output, version)`` for each field ``apply_model`` wrote with ``model``: it tags its output
    ``<output>_model`` = ``model:version`` next to ``<output>`` and ``<output>_confidence`` (the default
    confidence field). The hub's rollouts and the agile loop read uploaded records through this."""
    prefix = f"{model}:"
    for key, tag in values.items():
        if key.endswith("_model") and isinstance(tag, str) and tag.startswith(prefix):
            yield key[: -len("_model")], tag[len(prefix):]


class ModelError(ValueError):
    """A model artifact that cannot be used: what is wrong and where."""


def _read_descriptor(path: Path) -> dict[str, Any]:
    f = path / DESCRIPTOR
    try:
        d = json.loads(f.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path}: no {DESCRIPTOR}: not an EdgeLoop model artifact") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{f}: unreadable descriptor: {exc}") from None
    if not isinstance(d, dict):
        raise ModelError(f"{f}: expected a JSON object")
    if d.get("format") != FORMAT:
        raise ModelError(f"{f}: format {d.get('format')!r} is not supported (this node reads {FORMAT})")
    if d.get("kind") not in KINDS:
        raise ModelError(f"{f}: kind {d.get('kind')!r}: expected one of {', '.join(KINDS)}")
    if d.get("input") not in INPUTS:
        raise ModelError(f"{f}: input {d.get('input')!r}: expected one of {', '.join(INPUTS)}")
    if not isinstance(d.get("name"), str) or not d["name"]:
        raise ModelError(f"{f}: missing model name")
    labels = d.get("labels")
    if not (isinstance(labels, list) and len(labels) >= 2):
        raise ModelError(f"{f}: labels: expected a list of at least two class names")
    if d["input"] == "table" and not (isinstance(d.get("features"), list) and d["features"]):
        raise ModelError(f"{f}: features: a table model needs its input columns")
    if d["input"] in ("image", "clip"):
        shape = d.get("shape")
        want = 3 if d["input"] == "image" else 4
        if not (isinstance(shape, list) and len(shape) == want and all(isinstance(v, int) and v > 0 for v in shape)):
            raise ModelError(f"{f}: shape: expected {want} positive integers for an {d['input']} model")
    return d


# -- torch CNN ---------------------------------------------------------------------------------
def build_cnn(arch: dict[str, Any], in_channels: int, n_classes: int) -> Any:
    """The reference CNN: ``pool`` (average-pool factor on the input), then per entry of ``channels`` a
    3x3 stride-2 convolution + batch norm + ReLU, global average pooling and a linear head."""
    import torch.nn as nn

    layers: list[Any] = []
    pool = int(arch.get("pool", 1))
    if pool > 1:
        layers.append(nn.AvgPool2d(pool))
    c = in_channels
    for out in arch["channels"]:
        layers += [nn.Conv2d(c, int(out), 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(int(out)),
                   nn.ReLU(inplace=True)]
        c = int(out)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n_classes)]
    return nn.Sequential(*layers)


def to_nchw(x: np.ndarray, kind: str) -> np.ndarray:
    """uint8 BGR ``(n, H, W, C)`` or ``(n, T, H, W, C)`` -> uint8 NCHW, contiguous (a clip's frames stacked on C):
    the layout the reference CNNs and ONNX image models take."""
    if kind == "clip":
        n, tt, h, w, c = x.shape
        return np.ascontiguousarray(x.transpose(0, 1, 4, 2, 3)).reshape(n, tt * c, h, w)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def to_tensor(x: np.ndarray, kind: str) -> Any:
    """uint8 BGR ``(n, H, W, C)`` or ``(n, T, H, W, C)`` -> float32 NCHW in [0, 1] (frames stacked on C): the
    layout of :func:`to_nchw`, made in torch (its permuted copy is 1.5-2x numpy's on one thread, measured)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x))
    if kind == "clip":
        n, tt, h, w, c = t.shape
        t = t.permute(0, 1, 4, 2, 3).reshape(n, tt * c, h, w)
    else:
        t = t.permute(0, 3, 1, 2)
    return t.contiguous().float().div_(255.0)  # one compact uint8 copy, then the float one


class Predictor:
    """A loaded model: call it with a batch; ``name``/``version`` say which one answered."""

    def __init__(self, path: str | Path, version: str = "local", *, drift: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.descriptor = d = _read_descriptor(self.path)
        self.name: str = d["name"]
        self.version = str(version)
        self.kind: str = d["kind"]
        self.input: str = d["input"]
        self.features: list[str] = list(d.get("features") or [])
        self.shape: tuple[int, ...] = tuple(d.get("shape") or ())
        self.labels: list[Any] = list(d["labels"])
        self.threshold = float(d.get("threshold", 0.5))
        self._lock = threading.Lock()  # torch modules are not re-entrant across threads for inference state
        from .drift import load_monitor

        #: what the node scores with this version against its training-time profile (None: no profile shipped)
        self.drift = load_monitor(self.path, **(drift or {}))
        if self.kind == "sklearn":
            self._load_sklearn()
        elif self.kind == "onnx":
            self._load_onnx()
        else:
            self._load_torch()

    @property
    def tag(self) -> str:
        return f"{self.name}:{self.version}"

    def _load_sklearn(self) -> None:
        import joblib

        f = self.path / "model.joblib"
        try:
            self.model = joblib.load(f)
        except FileNotFoundError:
            raise ModelError(f"{self.path}: model.joblib is missing") from None
        if not hasattr(self.model, "predict_proba"):
            raise ModelError(f"{f}: the estimator has no predict_proba")

    def _load_torch(self) -> None:
        import torch

        f = self.path / "weights.pt"
        arch = self.descriptor.get("arch")
        if not isinstance(arch, dict) or not isinstance(arch.get("channels"), list):
            raise ModelError(f"{self.path / DESCRIPTOR}: arch.channels missing for a torch-cnn model")
        in_ch = self.shape[-1] * (self.shape[0] if self.input == "clip" else 1)
        net = build_cnn(arch, in_ch, len(self.labels))
        try:
            state = torch.load(f, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise ModelError(f"{self.path}: weights.pt is missing") from None
        try:
            net.load_state_dict(state)
        except (RuntimeError, KeyError) as exc:
            raise ModelError(f"{f}: weights do not fit the architecture: {exc}") from None
        self.model = net.eval()

    def _load_onnx(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelError(f"{self.path}: an ONNX model needs onnxruntime: pip install 'edgeloop[onnx]'") from None
        f = self.path / "model.onnx"
        if not f.is_file():
            raise ModelError(f"{self.path}: model.onnx is missing")
        opts = self.descriptor.get("onnx") or {}
        if not isinstance(opts, dict):
            raise ModelError(f"{self.path / DESCRIPTOR}: onnx: expected an object")
        so = ort.SessionOptions()
        # one thread by default: a node runs several pipelines, each in its own thread
        so.intra_op_num_threads = so.inter_op_num_threads = int(opts.get("threads", 1))
        so.log_severity_level = 3
        try:
            self.model = ort.InferenceSession(str(f), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own errors for a bad file
            raise ModelError(f"{f}: not a model onnxruntime can run: {str(exc)[:300]}") from None
        inputs, outputs = self.model.get_inputs(), self.model.get_outputs()
        if len(inputs) != 1:
            raise ModelError(f"{f}: expected one input, the model has {[i.name for i in inputs]}")
        self._onnx_input, self._onnx_uint8 = inputs[0].name, inputs[0].type == "tensor(uint8)"
        declared = list(inputs[0].shape or ())
        # a model exported at a fixed batch size (a traced graph) takes rows that many at a time
        self._onnx_batch = declared[0] if declared and isinstance(declared[0], int) and declared[0] > 0 else None
        if self.input == "table" and len(declared) == 2 and isinstance(declared[1], int) \
                and declared[1] != len(self.features):
            raise ModelError(f"{f}: the model takes {declared[1]} input columns, the descriptor names "
                             f"{len(self.features)} ({', '.join(self.features)})")
        names = [o.name for o in outputs]
        want = opts.get("output")
        if want is None:
            shaped = [o.name for o in outputs if o.type in ("tensor(float)", "tensor(double)") and len(o.shape or ()) == 2]
            want = "probabilities" if "probabilities" in names else (shaped[-1] if shaped else None)
        if want not in names:
            raise ModelError(f"{f}: no output {want!r} with class probabilities: the model has {names} "
                             f"(name it in the descriptor's onnx.output)")
        self._onnx_output, self._onnx_softmax = want, bool(opts.get("softmax", False))

    def _onnx_proba(self, x: np.ndarray) -> np.ndarray:
        if self.input != "table" and not self._onnx_uint8:
            x = to_nchw(x, self.input).astype(np.float32) / np.float32(255.0)  # as to_tensor gives the CNNs
        try:
            k = self._onnx_batch
            if k is None or len(x) == k:
                (p,) = self.model.run([self._onnx_output], {self._onnx_input: x})
            else:
                parts = []
                for a in range(0, len(x), k):
                    chunk = x[a:a + k]
                    pad = k - len(chunk)
                    if pad:
                        chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), dtype=chunk.dtype)])
                    (q,) = self.model.run([self._onnx_output], {self._onnx_input: chunk})
                    parts.append(np.asarray(q)[: k - pad])
                p = np.concatenate(parts) if parts else np.zeros((0, len(self.labels)))
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own errors: inputs the model does not take
            raise ModelError(f"{self.tag}: the model refused the inputs {x.dtype} {x.shape}: {str(exc)[:300]}") \
                from None
        p = np.asarray(p, dtype=np.float64)
        if self._onnx_softmax:
            e = np.exp(p - p.max(axis=1, keepdims=True))
            p = e / e.sum(axis=1, keepdims=True)
        if p.ndim != 2 or p.shape[1] != len(self.labels):
            raise ModelError(f"{self.tag}: the model gave {p.shape} for {len(x)} rows, not one probability per "
                             f"label ({len(self.labels)})")
        return p

    def check_input(self, x: np.ndarray) -> np.ndarray:
        """The batch as the model needs it, or ModelError naming the mismatch."""
        if self.input == "table":
            x = np.asarray(x, dtype=np.float32)
            if x.ndim != 2 or x.shape[1] != len(self.features):
                raise ModelError(f"{self.tag}: expected (n, {len(self.features)}) inputs "
                                 f"({', '.join(self.features)}), got shape {x.shape}")
            return x
        x = np.asarray(x)
        if x.dtype != np.uint8 or tuple(x.shape[1:]) != self.shape:
            raise ModelError(f"{self.tag}: expected uint8 batches of shape (n, {', '.join(map(str, self.shape))}), "
                             f"got {x.dtype} {x.shape}")
        return x

    def proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, n_classes)``, float64."""
        x = self.check_input(x)
        if len(x) == 0:
            return np.zeros((0, len(self.labels)))
        if self.kind == "sklearn":
            return np.asarray(self.model.predict_proba(x), dtype=np.float64)
        if self.kind == "onnx":
            return self._onnx_proba(x)
        import torch

        with self._lock, torch.inference_mode():
            logits = self.model(to_tensor(x, self.input))
            return torch.softmax(logits, dim=1).double().numpy()

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.proba(x)
        if p.shape[1] == 2:
            pred = (p[:, 1] >= self.threshold).astype(np.int64)
        else:
            pred = p.argmax(axis=1).astype(np.int64)
        return pred, p[np.arange(len(p)), pred]

    def health_check(self) -> dict[str, Any]:
        """Run the bundled sample; raise ModelError unless predictions match exactly and confidences
        within 1e-5. Returns ``{"n": rows, "seconds": t}``."""
        import time

        f = self.path / SAMPLE
        try:
            with np.load(f, allow_pickle=False) as z:
                x, want_p, want_c = z["x"], z["pred"], z["conf"]
        except FileNotFoundError:
            raise ModelError(f"{self.path}: {SAMPLE} is missing: no health check possible") from None
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"{f}: unreadable health sample: {exc}") from None
        t = time.perf_counter()
        got_p, got_c = self(x)
        took = time.perf_counter() - t
        if not np.array_equal(got_p, want_p):
            n = int((got_p != want_p).sum())
            raise ModelError(f"{self.tag}: health check failed: {n} of {len(want_p)} sample predictions differ")
        if not np.allclose(got_c, want_c, atol=1e-5, rtol=0):
            worst = float(np.max(np.abs(got_c - want_c)))
            raise ModelError(f"{self.tag}: health check failed: confidences differ by up to {worst:.3g}")
        return {"n": int(len(x)), "seconds": round(took, 6)}


def write_sample(path: str | Path, x: np.ndarray) -> dict[str, Any]:
    """Store ``x`` and what the artifact at ``path`` predicts for it as the health sample."""
    path = Path(path)
    pred, conf = Predictor(path)(x)
    np.savez(path / SAMPLE, x=x, pred=pred, conf=conf)
    return {"n": int(len(x))}


def write_descriptor(path: str | Path, descriptor: dict[str, Any]) -> None:
    d = {"format": FORMAT, **descriptor}
    Path(path, DESCRIPTOR).write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")
