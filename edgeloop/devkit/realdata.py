"""Real data, fetched by package at set-up (never committed), named as real with its source.

- :func:`river_file`: files of the river 0.26.1 wheel from PyPI (``pip download --no-deps river==0.26.1``), e.g.
  ``river/datasets/shuttle.csv.gz``: the UCI Statlog (Shuttle) data as the ODDS benchmark casts it, NASA space
  shuttle sensor readings, 49,097 rows x 9 features, 3,511 labelled anomalies (the file's ``anomaly`` column);
  ``river/datasets/water-flow.csv``: a real water pipeline's hourly flow. The wheel is BSD-3-Clause (river's
  licence); the data files state no licence of their own: see the UCI and ODDS pages before redistributing.

Files are kept in ``~/.cache/edgeloop/real/`` (``EDGELOOP_CACHE``): ``make real-data`` fetches them once;
a test or tutorial that needs one fetches it when missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

RIVER = "0.26.1"
SOURCES = {
    "river/datasets/shuttle.csv.gz": "UCI Statlog (Shuttle), ODDS anomaly version, in river 0.26.1's wheel (PyPI)",
    "river/datasets/water-flow.csv": "a real water pipeline's hourly flow, in river 0.26.1's wheel (PyPI)",
}


def cache_dir() -> Path:
    return Path(os.environ.get("EDGELOOP_CACHE") or Path("~/.cache/edgeloop").expanduser()) / "real"


def river_file(member: str) -> Path:
    """The wheel's file ``member`` (fetched with pip and unpacked on first use); RuntimeError says why not."""
    dest = cache_dir() / f"river-{RIVER}" / member
    if dest.is_file():
        return dest
    with tempfile.TemporaryDirectory(prefix="edgeloop-river-") as tmp:
        got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                              f"river=={RIVER}", "-d", tmp], capture_output=True, text=True, timeout=600)
        wheels = sorted(Path(tmp).glob("river-*.whl"))
        if got.returncode != 0 or not wheels:
            raise RuntimeError(f"could not fetch river=={RIVER} from the package index for {member}: "
                               f"{got.stderr.strip()[-500:]}")
        with zipfile.ZipFile(wheels[0]) as z:
            if member not in z.namelist():
                raise RuntimeError(f"{wheels[0].name} has no {member}")
            for name in {member, *SOURCES}:  # one download for every file we use
                out = cache_dir() / f"river-{RIVER}" / name
                out.parent.mkdir(parents=True, exist_ok=True)
                part = out.with_suffix(out.suffix + ".part")
                part.write_bytes(z.read(name))
                part.replace(out)
    return dest


def shuttle(rows: int | None = None) -> tuple[list[str], list[list[float]], list[int]]:
    """REAL NASA shuttle sensor rows (in the file's order): ``(feature names, rows, anomaly labels)``."""
    import csv
    import gzip

    with gzip.open(river_file("river/datasets/shuttle.csv.gz"), "rt", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        X, y = [], []
        for line in reader:
            X.append([float(v) for v in line[:-1]])
            y.append(int(line[-1]))
            if rows is not None and len(y) >= rows:
                break
    return header[:-1], X, y


def main() -> int:
    for member, what in SOURCES.items():
        print(f"{river_file(member)}: REAL, {what}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
