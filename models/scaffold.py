"""``edgeloop model init NAME --kind tabular|image``: a model plug-in package of the user's own, outside EdgeLoop's tree.

It writes ``<dest>/<name>/`` with ``pyproject.toml`` (registering the model under ``edgeloop.models``), the plug-in
module (``<name>_model/__init__.py``: NAME, LABELS, INPUT, DEFAULTS, prepare, fit, following
:mod:`models.plugins`), a test of it, and a README; ``pip install -e`` it into EdgeLoop's environment. With a
workspace it also adds the model to the workspace's params.yaml (its stages in dvc.yaml run over that list: the
model's ``data`` folder and its ``code``, this package) with its parameters, makes its data folders, and writes
the pipeline (dvc.yaml, the project's own) where there is none.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from models.plugins import NAME

KINDS = ("tabular", "image")

_PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "edgeloop-model-@DIST@"
version = "0.1.0"
description = "@NAME@: a model plug-in for EdgeLoop"
requires-python = ">=3.11"
dependencies = []  # runs inside EdgeLoop's environment (pip install -e . there)

# How EdgeLoop finds the model (models/plugins.py in EdgeLoop: the contract)
[project.entry-points."edgeloop.models"]
@NAME@ = "@PKG@"

[tool.setuptools]
packages = ["@PKG@"]
'''

_TABULAR = '''\
"""``@NAME@``: a table model for EdgeLoop (scaffolded by ``edgeloop model init @NAME@ --kind tabular``).

It learns from field data: CSV files in the workspace's ``data/field/@NAME@/`` (columns ``ts``, ``device``, the
FEATURES below and ``label``: one of LABELS, empty when nobody labelled the row), as ``edgeloop data pull``
writes them or as a team exports them. Its holdouts are honest: the most recent period, and devices the model
never trained on (``models.kit.split``). Edit FEATURES, LABELS, DEFAULTS and the estimator in ``fit``; the node
feeds the model the same features by name (``apply_model``'s ``inputs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models import kit

NAME = "@NAME@"
LABELS = @LABELS@
INPUT = "table"
FEATURES = @FEATURES@
DATA = "field data (data/field/@NAME@)"
DEFAULTS: dict[str, Any] = {
    "recent": 0.2,  # the latest share of the labelled rows: the holdout the gate wants improved
    "holdout_devices": 0.2,  # the share of devices kept out of training: the holdout it must not lose on
    "max_iter": 100,
    "learning_rate": 0.1,
    "threshold": 0.5,  # class LABELS[1] when its probability is at least this
}


def prepare(raw: Path, out: Path, params: dict[str, Any]) -> None:
    """The labelled rows under ``raw`` split by time and device into ``out/<split>.npz``."""
    data = kit.read_table(raw, FEATURES, LABELS)
    kit.write_splits(out, data, kit.split(data["ts"], data["device"], recent=params["recent"],
                                          holdout_devices=params["holdout_devices"]))


def fit(prepared: Path, out: Path, params: dict[str, Any], seed: int, progress: Any = None) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    estimator = HistGradientBoostingClassifier(max_iter=params["max_iter"], learning_rate=params["learning_rate"],
                                               early_stopping=False, random_state=seed)
    return kit.fit_table(prepared, out, estimator, name=NAME, features=FEATURES, labels=LABELS,
                         threshold=params["threshold"], seed=seed, data=DATA)
'''

_IMAGE = '''\
"""``@NAME@``: an image model for EdgeLoop (scaffolded by ``edgeloop model init @NAME@ --kind image``).

It learns from field data: ``data/field/@NAME@/labels.csv`` (``file,ts,device,label``) and the images it names, as
``edgeloop data pull`` writes them from what nodes upload and people label. Its holdouts are honest: the most
recent period, and cameras the model never trained on (``models.kit.split``). The network is EdgeLoop's small
CNN (``models.kit.fit_cnn``); the node feeds it the frames (or regions) of its pipeline, resized to ``size``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models import kit

NAME = "@NAME@"
LABELS = @LABELS@
INPUT = "image"
DATA = "field data (data/field/@NAME@)"
DEFAULTS: dict[str, Any] = {
    "size": 64,  # images are resized to size x size, 3 channels (BGR, as OpenCV decodes them)
    "channels": [16, 32, 48, 64],  # one stride-2 convolution block each
    "epochs": 8,
    "min_steps": 300,  # at least this many batches: a first model from a few dozen labels still learns
    "lr": 0.005,
    "batch_size": 32,
    "recent": 0.2,
    "holdout_devices": 0.2,
}


def prepare(raw: Path, out: Path, params: dict[str, Any]) -> None:
    data = kit.read_images(raw, LABELS, [params["size"], params["size"], 3])
    kit.write_splits(out, data, kit.split(data["ts"], data["device"], recent=params["recent"],
                                          holdout_devices=params["holdout_devices"]))


def fit(prepared: Path, out: Path, params: dict[str, Any], seed: int, progress: Any = None) -> dict[str, Any]:
    return kit.fit_cnn(prepared, out, params, seed, progress, name=NAME, labels=LABELS, input="image",
                       shape=[params["size"], params["size"], 3], data=DATA)
'''

_TEST = '''\
"""The plug-in follows EdgeLoop's model contract and learns a plain rule from a small SYNTHETIC field set."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

import @PKG@ as plugin
from edge_runtime.modelkit import Predictor
from models.plugins import check


def test_it_follows_the_contract() -> None:
    p = check(plugin, "@PKG@")
    assert p.name == "@NAME@" and p.input == plugin.INPUT


def test_it_learns_from_field_data(tmp_path: Path) -> None:
    raw, prepared, out = tmp_path / "field", tmp_path / "prepared", tmp_path / "artifact"
    rng = np.random.default_rng(0)
    write_field_set(raw, rng)
    params = dict(plugin.DEFAULTS)
    plugin.prepare(raw, prepared, params)
    plugin.fit(prepared, out, params, 0)
    d = np.load(prepared / "holdout_drifted.npz")
    pred, _ = Predictor(out)(d["X"])
    assert (pred == d["y"]).mean() >= 0.9


def write_field_set(raw: Path, rng: np.random.Generator, n: int = 400) -> None:
    """SYNTHETIC rows (or images) whose class follows a plain rule, from five devices over time."""
    raw.mkdir(parents=True)
    if plugin.INPUT == "table":
        with (raw / "synthetic.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["ts", "device", *plugin.FEATURES, "label"])
            for i in range(n):
                x = rng.normal(size=len(plugin.FEATURES))
                w.writerow([1.7e9 + 60 * i, f"d{i % 5}", *x.round(4), plugin.LABELS[int(x[0] > 0)]])
        return
    import cv2

    with (raw / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "ts", "device", "label"])
        for i in range(n // 2):
            k = i % 2
            img = rng.integers(0, 60, (48, 48, 3), dtype=np.uint8) + (150 if k else 0)
            cv2.imwrite(str(raw / f"{i}.jpg"), img.astype(np.uint8))
            w.writerow([f"{i}.jpg", 1.7e9 + 60 * i, f"cam{i % 5}", plugin.LABELS[k]])
'''

_README = '''\
# @NAME@: a model plug-in for EdgeLoop

Scaffolded by `edgeloop model init @NAME@ --kind @KIND@`. EdgeLoop finds it through the `edgeloop.models`
entry point in `pyproject.toml`; the loop then trains, gates, packages and rolls it out like its own models.

    pip install -e .                       # into EdgeLoop's environment
    pytest tests/                          # the contract, and a fit on a small SYNTHETIC set
    edgeloop model plugins                 # lists @NAME@
    edgeloop data pull @NAME@ ...          # field data into data/field/@NAME@ (or copy your export there)
    edgeloop model train @NAME@            # or `dvc repro evaluate@@NAME@` in the workspace

The workspace's `params.yaml` lists it under `models:` (its data folder and this package's path: the
dependencies of its DVC stages) and holds its parameters under `@NAME@:`.
'''


def init(name: str, kind: str, dest: Path, *, labels: list[str], features: list[str] | None = None,
         workspace: Path | None = None, uploads: str | None = None) -> dict[str, Any]:
    """Write the package for model ``name`` under ``dest``; ValueError says what is wrong."""
    if not NAME.match(name):
        raise ValueError(f"model name {name!r}: lower-case letters, digits and _, starting with a letter")
    if uploads is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", uploads):
        raise ValueError(f"--uploads {uploads!r}: a pipeline name (letters, digits, _ . -)")
    if kind not in KINDS:
        raise ValueError(f"--kind {kind!r}: expected one of {', '.join(KINDS)}")
    if len(labels) != 2 or len(set(labels)) != 2 or not all(labels):
        raise ValueError(f"--labels {','.join(labels)!r}: two distinct class names, the negative first")
    if kind == "tabular":
        if not features:
            raise ValueError("--features: a tabular model needs its input columns, e.g. --features flow,pressure")
        bad = [f for f in features if not re.match(r"^[A-Za-z_][A-Za-z0-9_.]*$", f)]
        if bad:
            raise ValueError(f"--features: {bad}: names of letters, digits, _ and .")
    if workspace is not None:
        _free_in(workspace, name)  # before anything is written
    root = dest / name
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} exists and is not empty: choose another --dir or remove it")
    pkg = f"{name}_model"
    subs = {"@NAME@": name, "@PKG@": pkg, "@DIST@": name.replace("_", "-"), "@KIND@": kind,
            "@LABELS@": repr(list(labels)), "@FEATURES@": repr(list(features or []))}

    def render(text: str) -> str:
        for k, v in subs.items():
            text = text.replace(k, v)
        return text

    files = {"pyproject.toml": _PYPROJECT, f"{pkg}/__init__.py": _TABULAR if kind == "tabular" else _IMAGE,
             f"tests/test_{name}.py": _TEST, "README.md": _README}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(render(text))
    out: dict[str, Any] = {"package": str(root), "files": sorted(files)}
    if workspace is not None:
        out["params"] = add_to_workspace(workspace, name, root / pkg, _defaults(root / pkg / "__init__.py"),
                                         uploads)
    return out


def _defaults(module: Path) -> dict[str, Any]:
    """The DEFAULTS of the plug-in module just written (it is not installed yet)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_edgeloop_scaffold_{module.parent.name}", module)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return dict(mod.DEFAULTS)


def _free_in(workspace: Path, name: str) -> str:
    """The workspace's params.yaml text; ValueError when it already has model ``name`` or does not parse."""
    import yaml

    params_file = workspace / "params.yaml"
    text = params_file.read_text() if params_file.exists() else ""
    try:
        params = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{params_file}: not YAML: {exc}") from None
    if not isinstance(params, dict):
        raise ValueError(f"{params_file}: expected a mapping of params")
    if name in (params.get("models") or {}):
        raise ValueError(f"{params_file}: models.{name} is there already")
    if name in params:
        raise ValueError(f"{params_file}: a section {name}: is there already")
    return text


def add_to_workspace(workspace: Path, name: str, code: Path, defaults: dict[str, Any], uploads: str | None = None
                     ) -> str:
    """``name`` in the workspace's params.yaml (``models.<name>``: its data folder and code, and ``uploads``, the
    pipeline whose uploads feed it before it exists, for the cold start; ``<name>:`` its parameters, the
    plug-in's defaults) and its data folders. Returns the params file's path."""
    import yaml

    params_file = workspace / "params.yaml"
    text = _free_in(workspace, name)
    code = code.resolve()
    try:
        code_ref = str(code.relative_to(workspace.resolve()))
    except ValueError:
        code_ref = str(code)  # outside the workspace: DVC tracks it by its absolute path
    extra = f", uploads: {uploads}" if uploads else ""
    entry = f"  {name}: {{data: data/field/{name}, code: {code_ref}{extra}}}\n"
    # edited as text, not re-dumped: the file's comments and order stay as its authors wrote them
    lines = text.splitlines(keepends=True)
    at = next((i for i, ln in enumerate(lines) if re.match(r"^models:\s*(#.*)?$", ln)), None)
    if at is None:
        lines += ["\n" if lines and not lines[-1].endswith("\n") else "", "models:\n", entry]
    else:
        end = at + 1
        while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end].strip()):
            end += 1
        while end > at + 1 and not lines[end - 1].strip():
            end -= 1
        lines.insert(end, entry)
    section = yaml.safe_dump({name: defaults}, sort_keys=False, default_flow_style=None)
    text = "".join(lines).rstrip("\n") + f"\n\n# the {name} model's parameters (edgeloop model init)\n" + section
    check = yaml.safe_load(text)
    assert check["models"][name]["code"] == code_ref and check[name] == defaults, "params.yaml edit went wrong"
    assert check["models"][name].get("uploads") == uploads, "params.yaml edit went wrong"
    params_file.write_text(text)
    for folder in (f"data/field/{name}", f"data/labelled/{name}"):
        (workspace / folder).mkdir(parents=True, exist_ok=True)
    if not (workspace / "dvc.yaml").exists():  # the pipeline every workspace runs: stages for each listed model
        (workspace / "dvc.yaml").write_text((Path(__file__).parent / "workspace.dvc.yaml").read_text())
    return str(params_file)
