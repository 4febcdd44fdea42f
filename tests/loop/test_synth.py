"""The synthetic data generators: deterministic, labelled consistently with the signal, and fast."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.records import validate_record
from models.synth import FAULTS, crops, generate_clip, generate_telemetry, windows, write_video
from models.synth.telemetry import Telemetry

N_FRAMES = 100


@pytest.fixture(scope="module")
def telemetry() -> Telemetry:
    return generate_telemetry(6, 72, rate_hz=1 / 30, seed=7)


@pytest.fixture(scope="module")
def day() -> tuple[list[np.ndarray], list]:
    return generate_clip(N_FRAMES, seed=11, variant="day")


def test_telemetry_is_deterministic(telemetry: Telemetry) -> None:
    again = generate_telemetry(6, 72, rate_hz=1 / 30, seed=7)
    other = generate_telemetry(6, 72, rate_hz=1 / 30, seed=8)
    for name, col in telemetry.columns().items():
        np.testing.assert_array_equal(col, again.columns()[name])
    assert telemetry.events == again.events
    assert not np.array_equal(telemetry.temperature, other.temperature)


def test_records_fit_the_record_format(telemetry: Telemetry) -> None:
    records, labels = telemetry.records_and_labels()
    assert len(records) == len(labels) == len(telemetry) == 6 * 72 * 120
    for rec in records[:50]:
        assert validate_record(rec) == rec
        assert rec["product"] == "pump" and set(rec["values"]) == {"temperature", "vibration", "current"}
    assert np.all(np.diff(telemetry.ts) >= 0)


def test_every_fault_kind_is_present_and_labelled(telemetry: Telemetry) -> None:
    assert {e.kind for e in telemetry.events} == set(FAULTS[1:])
    for e in telemetry.events:
        inside = (telemetry.device == e.device) & (telemetry.ts >= e.start) & (telemetry.ts < e.end)
        assert np.all(telemetry.label[inside] == FAULTS.index(e.kind))
    assert 0.03 < np.mean(telemetry.label > 0) < 0.6


def test_window_labels_agree_with_the_signal(telemetry: Telemetry) -> None:
    w = windows(telemetry, window_s=1800)
    assert w["count"].sum() == len(telemetry)
    normal = w["fault"] == 0
    assert np.array_equal(normal, ~w["anomalous"])

    def mean(feature: str, kind: str) -> float:
        return float(w[feature][w["fault"] == FAULTS.index(kind)].mean())

    base_vib, base_temp = float(w["vibration_mean"][normal].mean()), float(w["temperature_mean"][normal].mean())
    assert mean("vibration_mean", "bearing_wear") > base_vib + 1.0
    assert mean("temperature_max", "overheating") > base_temp + 10.0
    assert mean("current_std", "cavitation") > 2 * float(w["current_std"][normal].mean())
    assert mean("vibration_mean", "cavitation") > base_vib + 1.5
    # A stuck sensor reads the same value for the whole window, somewhere.
    stuck = w["fault"] == FAULTS.index("sensor_stuck")
    assert any(w[f"{ch}_std"][stuck].min() == 0 for ch in ("temperature", "vibration", "current"))


def test_ageing_drift_shifts_the_distribution() -> None:
    base = generate_telemetry(4, 96, rate_hz=1 / 60, seed=3, faults=())
    aged = generate_telemetry(4, 96, rate_hz=1 / 60, seed=3, faults=(), drift="ageing")
    assert not base.label.any() and not aged.label.any()
    late = base.ts >= base.ts[0] + 72 * 3600
    assert aged.temperature[late].mean() > base.temperature[late].mean() + 3.0
    assert aged.vibration[late].mean() > base.vibration[late].mean() * 1.05
    early = base.ts < base.ts[0] + 3600
    assert abs(aged.temperature[early].mean() - base.temperature[early].mean()) < 1.0
    with pytest.raises(ValueError, match="drift"):
        generate_telemetry(1, 1, seed=0, drift="rust")


def test_clips_are_deterministic(day: tuple[list[np.ndarray], list]) -> None:
    frames, truths = generate_clip(N_FRAMES, seed=11, variant="day")
    for a, b in zip(frames, day[0], strict=True):
        np.testing.assert_array_equal(a, b)
    assert truths == day[1]
    other, _ = generate_clip(N_FRAMES, seed=12, variant="day")
    assert not np.array_equal(other[0], frames[0])
    assert frames[0].shape == (480, 640, 3) and frames[0].dtype == np.uint8


def test_scene_truth_is_consistent(day: tuple[list[np.ndarray], list]) -> None:
    frames, truths = day
    dumping = [t.index for t in truths if t.dumping]
    assert dumping, "a clip has at least one dumping event"
    assert all(truths[i].person_at_drain for i in dumping)
    for ev, group in itertools.groupby((t for t in truths if t.dumping), key=lambda t: t.event_id):
        idx = [t.index for t in group]
        assert ev is not None and idx == list(range(idx[0], idx[-1] + 1))  # one event, consecutive frames
    roi = truths[0].drain_roi
    for t in truths:
        assert t.drain_roi == roi
        if t.person_at_drain:
            x0, y0, x1, y1 = t.person_bbox
            assert x0 < roi[2] and roi[0] < x1 and y0 < roi[3] and roi[1] < y1  # the actor overlaps the ROI
    # Pouring shows in the ROI: the stream and the splash cover the grate (the ROI's bottom quarter).
    idle = [t.index for t in truths if not t.person_at_drain]
    grate = (roi[0], roi[3] - (roi[3] - roi[1]) // 4, roi[2], roi[3])

    def change(i: int) -> float:
        return float(np.abs(crops(frames[i], grate).astype(int) - crops(frames[idle[0]], grate)).mean())

    assert change(dumping[-1]) > 1.5 * change(idle[-1])  # well above the sensor noise between idle frames


@pytest.mark.parametrize("variant", ["night", "rain", "other_bucket"])
def test_variants(variant: str, day: tuple[list[np.ndarray], list]) -> None:
    frames, truths = generate_clip(N_FRAMES, seed=11, variant=variant)
    assert [t.dumping for t in truths] == [t.dumping for t in day[1]]  # same script, other look
    mean = float(np.mean([f.mean() for f in frames]))
    day_mean = float(np.mean([f.mean() for f in day[0]]))
    if variant == "night":
        assert mean < 0.5 * day_mean
    elif variant == "rain":
        assert mean < day_mean
    with pytest.raises(ValueError, match="variant"):
        generate_clip(1, seed=0, variant="fog")


def test_crops_shape(day: tuple[list[np.ndarray], list]) -> None:
    frames, truths = day
    c = crops(frames[0], truths[0].drain_roi)
    assert c.shape == (128, 128, 3) and c.dtype == np.uint8
    assert crops(frames[0], truths[0].drain_roi, size=64).shape == (64, 64, 3)


def test_write_video_reads_back(tmp_path: Path, day: tuple[list[np.ndarray], list]) -> None:
    path = tmp_path / "clip.mp4"
    assert write_video(path, day[0][:25], fps=10) == 25
    cap = cv2.VideoCapture(str(path))
    try:
        assert cap.isOpened()
        n = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            assert frame.shape == (480, 640, 3)
            n += 1
    finally:
        cap.release()
    assert n == 25
