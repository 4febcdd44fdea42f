"""The shipped (SYNTHETIC-trained) intrusion CNN on a REAL street video, against a teacher: the baseline a field-trained
person-in-zone model is measured against (issue 16, item 4a).

OpenCV's vtest.avi (from Debian's opencv-doc package: edgeloop.devkit.realdata), every second frame, the road zone
tests/apps/test_real_video.py uses; the teacher is OpenCV's HOG people detector on the zone (edgeloop.devkit.teacher:
it proposes labels, it is not ground truth). The intrusion model is the demo's (edgeloop.devkit.cameras: trained on
SYNTHETIC scenes of a drain), fed the zone resized to its 128x128 input as the node's region_of_interest does.

    python -m bench.real_video

Writes bench/results/real_video.json.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench import common

ZONE = [160, 100, 448, 388]


def main() -> int:
    import cv2

    from edge_runtime.modelkit import Predictor
    from edgeloop.devkit import cameras, realdata, teacher
    from models.common import binary_metrics

    folder, n = realdata.vtest_frames(every=2)
    x0, y0, x1, y1 = ZONE
    crops = [cv2.imread(str(folder / f"frame-{i:04d}.jpg"))[y0:y1, x0:x1] for i in range(n)]
    t = time.perf_counter()
    truth = np.array([teacher.person_in(c) for c in crops], dtype=np.int64)
    teacher_s = (time.perf_counter() - t) / n
    model = Predictor(Path(cameras.ensure_models()["root"]) / "artifacts" / "intrusion")
    size = model.shape[0]
    x = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops])
    pred, _ = model(x)
    got = binary_metrics(truth, model.proba(x)[:, 1], pred)
    got.pop("confusion", None)
    path = common.write_results("real_video", {
        "data": "REAL: OpenCV's vtest.avi from Debian's opencv-doc package (every second frame); labels from a "
                "teacher (OpenCV's HOG people detector), not ground truth",
        "zone": ZONE, "frames": n, "teacher_positives": int(truth.sum()), "teacher_s_per_crop": round(teacher_s, 4),
        "shipped_intrusion_vs_teacher": got,
        "field_trained_first_model_vs_teacher": {
            "measured_by": "tests/apps/test_real_video.py (2026-12-02): 40 of 400 uploads labelled, one iteration",
            "f1": 0.708, "precision": 0.755, "recall": 0.667, "roc_auc": 0.761}})
    common.print_table([["shipped intrusion (synthetic)", got["f1"], got["precision"], got["recall"], got["roc_auc"]],
                        ["field-trained, 1 iteration", 0.708, 0.755, 0.667, 0.761]],
                       ["model vs teacher", "f1", "precision", "recall", "roc_auc"])
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
