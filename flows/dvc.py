"""DVC in the loop's workspace: the loop's commands (``dvc add``/``push`` of the labels, ``dvc repro``, ``dvc commit``)
run with this venv's Python, and the lock that serialises DVC's bookkeeping when several models retrain at once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .config import LoopConfig, LoopError

__all__ = ["env", "run", "run_locked", "is_dvc_repo", "version_data", "dvc_lock", "stage_outs"]


def env(cfg: LoopConfig) -> dict[str, str]:
    """The environment DVC runs the pipeline's stages in: this venv first on PATH, the workspace importable."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "BENTOML_DO_NOT_TRACK": "true",
            "PYTHONPATH": os.pathsep.join(p for p in (str(cfg.root), os.environ.get("PYTHONPATH", "")) if p)}


def run(cfg: LoopConfig, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cfg.root, capture_output=True, text=True,
                          env=env(cfg), timeout=timeout)


def is_dvc_repo(cfg: LoopConfig) -> bool:
    return (cfg.root / ".dvc").is_dir()


def version_data(cfg: LoopConfig, folder: str = "data/labelled") -> str | None:
    """``dvc add <folder>`` (+ push to the default remote): the data version is the .dvc file's md5. ``folder``:
    the loop's labels merged into generated data (data/labelled), or a model's field data (data/field/<model>)."""
    if not is_dvc_repo(cfg):
        from models.common import digest_dir

        return digest_dir(cfg.root / folder)
    added = run(cfg, "add", "-q", folder)
    if added.returncode != 0:
        raise LoopError(f"dvc add {folder} failed: {added.stderr[-2000:]}")
    pushed = run(cfg, "push", "-q", f"{folder}.dvc")
    if pushed.returncode != 0:
        raise LoopError(f"dvc push failed (is a default remote configured?): {pushed.stderr[-2000:]}")
    import yaml

    meta = yaml.safe_load((cfg.root / f"{folder}.dvc").read_text())
    return str(meta["outs"][0]["md5"])


@contextmanager
def dvc_lock(cfg: LoopConfig) -> Iterator[None]:
    """An exclusive lock on the workspace's DVC bookkeeping (flock on ``var/loop/dvc-bookkeeping.lock``: held
    until the holder lets go, released if it dies); every DVC command of a parallel retraining runs under it."""
    import fcntl

    path = cfg.root / "var" / "loop" / "dvc-bookkeeping.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_locked(cfg: LoopConfig, *args: str) -> None:
    with dvc_lock(cfg):
        done = run(cfg, *args)
    if done.returncode != 0:
        raise LoopError(f"dvc {' '.join(args)} failed: {(done.stdout + done.stderr)[-3000:]}")


def stage_outs(cfg: LoopConfig, stage: str) -> list[Path]:
    """The outputs dvc.yaml declares for ``stage`` (``train@<model>``: a foreach stage's ``${key}`` filled in)."""
    import yaml

    group, _, key = stage.partition("@")
    spec = yaml.safe_load((cfg.root / "dvc.yaml").read_text())["stages"][group]
    if key:
        spec = spec["do"]
    outs = [next(iter(o)) if isinstance(o, dict) else o for o in spec.get("outs") or []]
    return [cfg.root / o.replace("${key}", key) for o in outs]
