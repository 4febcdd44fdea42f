"""Real data, fetched by package at set-up (never committed), named as real with its source.

- :func:`vtest`: OpenCV's vtest.avi (a real street video) from Debian's opencv-doc package;
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


# -- a real street video ---------------------------------------------------------------------------------------------
OPENCV_DOC = "opencv-doc"
VTEST = "./usr/share/doc/opencv-doc/examples/data/vtest.avi"


def vtest() -> Path:
    """REAL street video: OpenCV's ``vtest.avi`` (a fixed camera over a road with pedestrians, 768x576, 10 fps,
    795 frames, MSMPEG4v3) from Debian's opencv-doc package (fetched with ``apt-get download``, 95.7 MB; BSD-3
    like OpenCV's samples; no ground truth ships with it). RuntimeError says why it cannot be had."""
    dest = cache_dir() / OPENCV_DOC / "vtest.avi"
    if dest.is_file():
        return dest
    import shutil

    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise RuntimeError("vtest.avi comes from Debian's opencv-doc package: apt-get and dpkg-deb are needed")
    with tempfile.TemporaryDirectory(prefix="edgeloop-opencv-doc-") as tmp:
        got = subprocess.run(["apt-get", "download", OPENCV_DOC], cwd=tmp, capture_output=True, text=True,
                             timeout=900)
        if got.returncode != 0 and os.geteuid() == 0:  # a fresh machine may have no package lists yet
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True, timeout=900)
            got = subprocess.run(["apt-get", "download", OPENCV_DOC], cwd=tmp, capture_output=True, text=True,
                                 timeout=900)
        debs = sorted(Path(tmp).glob(f"{OPENCV_DOC}_*.deb"))
        if got.returncode != 0 or not debs:
            raise RuntimeError(f"apt-get download {OPENCV_DOC} failed: {got.stderr.strip()[-500:]}")
        import tarfile

        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_suffix(".part")
        with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[0])], stdout=subprocess.PIPE) as deb:
            assert deb.stdout is not None
            with tarfile.open(fileobj=deb.stdout, mode="r|") as tar:
                for member in tar:
                    if member.name == VTEST and member.isfile():
                        src = tar.extractfile(member)
                        assert src is not None
                        part.write_bytes(src.read())
                        break
            deb.stdout.close()
            deb.kill()
        if not part.is_file():
            raise RuntimeError(f"{debs[0].name} has no {VTEST}")
        part.replace(dest)
    return dest


def vtest_frames(every: int = 1) -> tuple[Path, int]:
    """vtest.avi's frames as JPEG files (``frame-%04d.jpg``, quality 95; a GStreamer RTSP server plays them: the
    MSMPEG4v3 decoder is not among Debian's base GStreamer plugins), every ``every``-th frame. ``(folder,
    frames)``."""
    import cv2

    folder = cache_dir() / OPENCV_DOC / f"frames-{every}"
    done = folder / "count"
    if done.is_file():
        return folder, int(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(vtest()))
    n = i = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if i % every == 0:
                cv2.imwrite(str(folder / f"frame-{n:04d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
                n += 1
            i += 1
    finally:
        cap.release()
    done.write_text(str(n))
    return folder, n


def main() -> int:
    for member, what in SOURCES.items():
        print(f"{river_file(member)}: REAL, {what}")
    print(f"{vtest()}: REAL, OpenCV's vtest.avi from Debian's {OPENCV_DOC} package")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
