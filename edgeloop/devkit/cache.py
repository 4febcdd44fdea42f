"""Trained things worth keeping between runs (the demo's CNNs, the tests' trained workspace, Label Studio's
migrated database), cached on disk under a key that changes whenever what they were made from changes: the
parameters, the code that trains them (``models/``, ``edge_runtime/modelkit.py``) and the versions of the
libraries that do. The cache is ``$EDGELOOP_CACHE``, else ``~/.cache/edgeloop`` (``$XDG_CACHE_HOME``): shared
by every checkout on the machine, as pip's and PyTorch's caches are.

:func:`cached` builds at most once for a key, whoever asks (several test workers, the demo and a benchmark at
the same time): the first caller builds into a temporary folder under a file lock and renames it into place
when done, the others wait for the lock and reuse it. A build that fails leaves nothing behind; an older
entry of the same name is removed when a new key is built.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["ROOT", "CACHE", "fingerprint", "cached", "lookup", "keep", "copy_of", "relocate"]

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("EDGELOOP_CACHE")
             or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgeloop")
#: the code a trained model depends on: a change in any of these trains again
TRAINING_CODE = ("models", "edge_runtime/modelkit.py")
TRAINING_LIBS = ("numpy", "scikit-learn", "torch", "mlflow", "opencv-python-headless")
BUILT_AT = ".built-at"  # the folder an entry was built in: absolute paths inside it name that folder


def fingerprint(params: Any, *, code: tuple[str, ...] = TRAINING_CODE, libs: tuple[str, ...] = TRAINING_LIBS,
                extra: str = "") -> str:
    """A short hash of ``params`` (JSON), the Python files under ``code`` and the installed versions of ``libs``."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode() + extra.encode())
    for part in code:
        base = ROOT / part
        files = sorted(base.rglob("*.py")) if base.is_dir() else [base]
        for f in files:
            h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    for lib in libs:
        with contextlib.suppress(metadata.PackageNotFoundError):
            h.update(f"{lib}=={metadata.version(lib)}".encode())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached(name: str, key: str, build: Callable[[Path], Any], *, cache: Path = CACHE) -> Path:
    """The folder ``cache/name-key``, made by ``build(folder)`` the first time it is asked for."""
    entry = cache / f"{name}-{key}"
    with _locked(cache / f"{name}.lock"):
        if (entry / BUILT_AT).exists():
            return entry
        tmp = cache / f".{name}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir(parents=True)
            build(tmp)
            (tmp / BUILT_AT).write_text(str(tmp))
            for old in cache.glob(f"{name}-*"):  # older keys: never used again
                shutil.rmtree(old, ignore_errors=True)
            tmp.rename(entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return entry


def lookup(name: str, key: str, *, cache: Path = CACHE) -> Path | None:
    """The cached folder ``cache/name-key`` if it is there (complete), else None."""
    entry = cache / f"{name}-{key}"
    return entry if (entry / BUILT_AT).exists() else None


def keep(name: str, key: str, folder: Path, *, cache: Path = CACHE) -> Path:
    """Put a copy of ``folder`` (something made in the course of other work) into the cache as ``name-key``,
    unless it is there already; for :func:`copy_of` later."""
    with _locked(cache / f"{name}.lock"):
        entry = cache / f"{name}-{key}"
        if (entry / BUILT_AT).exists():
            return entry
        tmp = cache / f".{name}-{uuid.uuid4().hex[:8]}"
        try:
            shutil.copytree(folder, tmp, symlinks=True)
            (tmp / BUILT_AT).write_text(str(folder))
            for old in cache.glob(f"{name}-*"):
                shutil.rmtree(old, ignore_errors=True)
            tmp.rename(entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return entry


def relocate(folder: Path, old: str) -> None:
    """Rewrite absolute paths naming ``old`` to name ``folder`` instead: in the text columns of the SQLite
    databases (MLflow's store keeps its artifact locations absolute) and in the JSON files under ``folder``."""
    new = str(folder)
    if old == new:
        return
    for f in folder.rglob("*.json"):
        text = f.read_text(errors="strict") if f.stat().st_size < (8 << 20) else ""
        if old in text:
            f.write_text(text.replace(old, new))
    for db in folder.rglob("*.db"):
        with contextlib.closing(sqlite3.connect(db)) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for t in tables:
                cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{t}")') if "CHAR" in r[2].upper()
                        or "TEXT" in r[2].upper() or r[2] == ""]
                for c in cols:
                    conn.execute(f'UPDATE "{t}" SET "{c}" = replace("{c}", ?, ?) WHERE instr("{c}", ?) > 0',  # noqa: S608 - names from the database's own schema
                                 (old, new, old))
            conn.commit()


def copy_of(entry: Path, dest: Path) -> Path:
    """A private copy of a cached folder at ``dest``, its absolute paths pointing into the copy."""
    shutil.copytree(entry, dest, symlinks=True)
    relocate(dest, (entry / BUILT_AT).read_text())
    (dest / BUILT_AT).write_text(str(dest))
    return dest
