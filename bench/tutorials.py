"""The tutorials' targets (issue 16): from a CSV of telemetry, or a model trained elsewhere, to a model serving on
an edge node in at most 10 minutes of machine time and 12 commands, measured by running each script in
docs/tutorials from a clean folder with a Mosquitto of its own, on REAL data (NASA shuttle sensor readings from
river 0.26.1's wheel; the ONNX model: a gradient-boosting classifier trained on them and exported with skl2onnx).

    python -m bench.tutorials

Writes bench/results/tutorials.json. The model package is installed into a folder of its own (the script's
PIP_INSTALL), not into the venv.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "docs" / "tutorials"


def run(script: str, args: list[str], tmp: Path, broker: int, extra: dict[str, str] | None = None) -> dict[str, Any]:
    from edge_runtime.ports import free_port

    env = {**os.environ, "BROKER": f"127.0.0.1:{broker}", "HUB_PORT": str(free_port()), "WORK": str(tmp / "ws"),
           "BENTOML_HOME": str(tmp / "bentoml"), "BENTOML_DO_NOT_TRACK": "true",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **(extra or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    commands = len(re.findall(r"^## \d+:", (TUTORIALS / script).read_text(), re.M))
    t = time.perf_counter()
    proc = subprocess.Popen(["bash", str(TUTORIALS / script), *args], cwd=tmp, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=900)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the hub and node the script leaves running
        proc.wait(30)
    took = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed: {out[-3000:]}")
    return {"commands": commands, "seconds": round(took, 1), "target_commands": 12, "target_seconds": 600}


def main() -> int:
    import numpy as np
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingClassifier

    from edgeloop.devkit import realdata
    from edgeloop.devkit.broker import Mosquitto

    features, X, y = realdata.shuttle(3000)
    results: dict[str, Any] = {}
    broker = Mosquitto().start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-own-data-") as d:
            tmp = Path(d)
            with (tmp / "export.csv").open("w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["ts", "device", *features, "label"])
                for i, (row, label) in enumerate(zip(X[:2000], y[:2000])):
                    w.writerow([1.7e9 + i // 4, f"unit-{i % 4}", *row, ["normal", "anomaly"][label]])
            site = tmp / "site"
            results["own-data"] = run("own-data.sh", [str(tmp / "export.csv"), ",".join(features), "shuttle_model"],
                                      tmp, broker.port, {
                                          "PIP_INSTALL": f"{sys.executable} -m pip install -q --no-deps "
                                                         f"--no-build-isolation --target {site}",
                                          "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])})
        with tempfile.TemporaryDirectory(prefix="bench-own-model-") as d:
            tmp = Path(d)
            Xa, ya = np.asarray(X, dtype=np.float32), np.asarray(y)
            gbm = GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0).fit(Xa[:2000], ya[:2000])
            (tmp / "theirs.onnx").write_bytes(to_onnx(gbm, Xa[:1], options={id(gbm): {"zipmap": False}},
                                                      target_opset=17).SerializeToString())
            results["own-model"] = run("own-model.sh", [str(tmp / "theirs.onnx"), ",".join(features),
                                                        "normal,anomaly", "theirs"], tmp, broker.port)
    finally:
        broker.stop()
    path = common.write_results("tutorials", {
        "data": "REAL: NASA shuttle sensor readings (UCI Statlog Shuttle, ODDS version) from river 0.26.1's wheel",
        "what": "docs/tutorials scripts from a clean folder to a model serving on a node (wall seconds, commands a "
                "person types); REAL data: NASA shuttle sensors from river 0.26.1's wheel",
        "results": results})
    common.print_table([[k, v["commands"], v["seconds"], "yes" if v["seconds"] <= 600 and v["commands"] <= 12
                         else "no"] for k, v in results.items()], ["tutorial", "commands", "seconds", "on target"])
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
