"""Multimedia operators on real frames (SYNTHETIC street scenes): regions, rates, stacks, codecs, files, alerts
with images, and bad input as dead letters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_runtime.instance import Instance, MemorySinks
from edge_runtime.operators.base import SpecError
from edge_runtime.operators.video_inputs import frames_batch
from edge_runtime.pipeline import parse_pipeline
from models.synth import generate_clip


@pytest.fixture(scope="module")
def clip() -> tuple[list[np.ndarray], list[Any]]:
    return generate_clip(40, seed=3)


def run(steps: list[dict[str, Any]], frames: list[tuple[np.ndarray, float]], device: str = "cam-1",
        **kw: Any) -> tuple[Instance, Any]:
    inst = Instance("t", parse_pipeline({"name": "t", "steps": [{"device_input": {}}, *steps]}), **kw)
    return inst, inst.push(frames_batch(device, None, frames))


def test_region_of_interest_crops_boxes_and_polygons(clip: Any) -> None:
    frames, truth = clip
    roi = list(truth[0].drain_roi)
    inst, out = run([{"region_of_interest": {"regions": {"drain": roi, "kerb": {"polygon": [[0, 300], [100, 300],
                                                                                           [50, 350]]}},
                                             "size": 64}}], [(f, float(i)) for i, f in enumerate(frames[:3])])
    recs = out.to_records()
    assert [(r["values"]["roi"], r["ts"]) for r in recs] == [(n, t) for t in (0.0, 1.0, 2.0) for n in ("drain", "kerb")]
    x0, y0, x1, y1 = roi
    want = cv2.resize(frames[0][y0:y1, x0:x1], (64, 64), interpolation=cv2.INTER_AREA)
    assert np.array_equal(recs[0]["values"]["crop"], want) and recs[0]["values"]["roi_box"] == roi
    kerb = recs[1]["values"]["crop"]
    assert kerb.shape == (64, 64, 3) and kerb[-1, 0].sum() == kerb[-1, -1].sum() == 0  # outside: black
    assert kerb[2, 32].sum() > 0  # inside the triangle: the picture
    assert recs[1]["values"]["roi_box"] == [0, 300, 101, 351]


def test_pixel_regions_partly_outside_are_clipped_and_wholly_outside_refused_naming_camera_and_size(
        clip: Any, caplog: pytest.LogCaptureFixture) -> None:
    frames, truth = clip
    roi = list(truth[0].drain_roi)
    regions = {"drain": roi, "far": [600, 400, 700, 500], "gone": [700, 0, 800, 10]}
    with caplog.at_level("WARNING", logger="edgeloop.operators"):
        inst, out = run([{"region_of_interest": {"regions": regions}}], [(frames[0], 0.0), (frames[1], 1.0)])
    recs = out.to_records()
    assert [r["values"]["roi"] for r in recs] == ["drain", "far", "drain", "far"]  # the others go on
    assert recs[1]["values"]["roi_box"] == [600, 400, 640, 480]  # clipped to the frame
    assert np.array_equal(recs[1]["values"]["crop"], frames[0][400:480, 600:640])
    reasons = [d["reason"] for d in inst.dead_letters.items]
    assert reasons == ["region_of_interest: region 'gone' [700, 0, 800, 10] lies outside camera cam-1's 640x480 "
                       "frames"] * 2
    assert "frame" not in inst.dead_letters.items[0]["record"]["values"]  # frames never go into dead letters
    said = [r.getMessage() for r in caplog.records]  # each said once for the camera and size, not per frame
    assert len(said) == 2 and "'far' [600, 400, 700, 500] clipped to camera cam-1's 640x480" in said[0]
    assert "'gone'" in said[1] and "640x480" in said[1]


def test_regions_in_fractions_fit_every_camera_size(clip: Any) -> None:
    frames, _ = clip
    big = cv2.resize(frames[0], (768, 576))  # vtest.avi's size; the synthetic cameras are 640x480
    region = {"drain": [0.4, 0.25, 0.7, 0.75], "kerb": {"polygon": [[0.0, 0.5], [0.5, 0.5], [0.25, 1.0]]}}
    inst, out = run([{"region_of_interest": {"regions": region}}], [(frames[0], 0.0), (big, 1.0)])
    boxes = {(r["ts"], r["values"]["roi"]): r["values"]["roi_box"] for r in out.to_records()}
    assert boxes == {(0.0, "drain"): [256, 120, 448, 360], (1.0, "drain"): [307, 144, 538, 432],
                     (0.0, "kerb"): [0, 240, 320, 480], (1.0, "kerb"): [0, 288, 384, 576]}
    assert inst.dead_letters.items == []
    crop = next(r["values"]["crop"] for r in out.to_records() if r["ts"] == 1.0 and r["values"]["roi"] == "drain")
    assert np.array_equal(crop, big[144:432, 307:538])


@pytest.mark.parametrize(("region", "field", "says"), [
    ([0.5, 0.1, 0.4, 0.9], "regions.a", "within 0..1"),
    ([0.5, 0.1, 1.5, 0.9], "regions.a", "within 0..1"),
    ({"pixels": [0, 0, 10.5, 10]}, "regions.a.pixels", "whole pixels"),
    ({"fraction": [0, 0, 2, 1]}, "regions.a.fraction", "within 0..1"),
    ([0, 0, float("nan"), 1], "regions.a", "pixels or fractions"),
    ({"polygon": [[0.1, 0.1], [0.5, 0.2], [1.5, 0.3]]}, "regions.a.polygon", "within 0..1"),
])
def test_bad_regions_are_spec_errors_naming_the_field(region: Any, field: str, says: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_pipeline({"name": "r", "steps": [{"device_input": {}},
                                               {"region_of_interest": {"regions": {"a": region}}}]})
    assert err.value.field.endswith(field) and says in str(err.value), (err.value.field, str(err.value))


@pytest.mark.parametrize(("spec", "field"), [
    ({"regions": {"a": [10, 10, 5, 20]}}, "regions.a"),
    ({"regions": {"a": [0, 0, 10]}}, "regions.a"),
    ({"regions": {"a": {"polygon": [[0, 0], [1, 1]]}}}, "regions.a.polygon"),
    ({"regions": {}}, "regions"),
    ({"regions": {"a": [0, 0, 10, 10]}, "size": 0}, "size"),
])
def test_bad_regions_are_refused_at_validation(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_pipeline({"name": "t", "steps": [{"device_input": {}}, {"region_of_interest": spec}]})
    assert err.value.field == field


def test_frame_rate_stacks_and_resolution(clip: Any) -> None:
    frames, _ = clip
    stamped = [(f, i * 0.04) for i, f in enumerate(frames)]  # 25 fps
    _, out = run([{"frame_rate": 10}], stamped)
    kept = out.ts.tolist()
    times = [t for _, t in stamped]  # 10 per second of event time: the first frame at or after each 0.1 s tick
    assert kept == [min(t for t in times if t >= k * 0.1 - 1e-6) for k in range(16)]
    _, out = run([{"resolution": {"width": 64, "height": 48}},
                  {"frame_stack": {"frames": 4, "field": "frame", "output": "clip"}}], stamped[:10])
    clips = [r["values"]["clip"] for r in out.to_records()]
    assert len(clips) == 7 and clips[0].shape == (4, 48, 64, 3)
    assert np.array_equal(clips[1][0], clips[0][1])  # a sliding window, oldest first
    gap = stamped[:3] + [(frames[3], 5.0)] + [(f, 5.0 + 0.04 * k) for k, f in enumerate(frames[4:7], 1)]
    _, out = run([{"frame_stack": {"frames": 3, "field": "frame", "max_gap": "1s"}}], gap)
    assert out.ts.tolist() == [0.08, 5.08, 5.12]  # the gap restarted the stack


def test_encode_decode_round_trip_and_garbage(clip: Any) -> None:
    frames, _ = clip
    inst, out = run([{"encode": {"quality": 90}}, {"decode": {"field": "frame_jpeg", "output": "back"}}],
                    [(frames[0], 0.0)])
    rec = out.to_records()[0]["values"]
    assert isinstance(rec["frame_jpeg"], bytes) and len(rec["frame_jpeg"]) < frames[0].nbytes / 5
    assert np.abs(rec["back"].astype(int) - frames[0].astype(int)).mean() < 4
    b = frames_batch("cam-1", None, [(np.zeros((2, 2, 3), np.uint8), 0.0), (np.zeros((2, 2, 3), np.uint8), 1.0)])
    b.set_column("image", np.array([b"\xff\xd8 not really", "@@not base64@@"], dtype=object))
    inst = Instance("d", parse_pipeline({"name": "d", "steps": [{"device_input": {}}, {"decode": {}}]}))
    assert len(inst.push(b)) == 0
    reasons = [d["reason"] for d in inst.dead_letters.items]
    assert reasons[0].startswith("decode: not a decodable image") and "base64" in reasons[1]


def _read_all(path: Path) -> tuple[list[np.ndarray], str]:
    """The frames as OpenCV decodes them, and the stream's codec as FFmpeg (PyAV) names it."""
    import av

    with av.open(str(path)) as container:
        codec = container.streams.video[0].codec_context.name
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            return out, codec
        out.append(f)


@pytest.mark.parametrize("codec", ["h264", "mp4v"])
def test_file_output_encodes_and_muxes_mp4_per_device(tmp_path: Path, clip: Any, codec: str) -> None:
    frames, _ = clip
    inst, _ = run([{"file_output": {"path": str(tmp_path / "{device}.mp4"), "fps": 10, "codec": codec}}],
                  [(f, float(i)) for i, f in enumerate(frames[:12])])
    inst.flush()
    back, fourcc = _read_all(tmp_path / "cam-1.mp4")
    assert len(back) == 12
    assert fourcc == ("h264" if codec == "h264" else "mpeg4")  # H.264 from PyAV's libx264 (installed here)
    for a, b in zip(frames[:12], back):
        mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
        assert 10 * np.log10(255 ** 2 / mse) > 30  # PSNR: the same pictures


def test_h264_is_smaller_than_mpeg4_part2(tmp_path: Path, clip: Any) -> None:
    frames, _ = clip
    sizes = {}
    for codec in ("h264", "mp4v"):
        inst, _ = run([{"file_output": {"path": str(tmp_path / f"{codec}.mp4"), "fps": 10, "codec": codec}}],
                      [(f, float(i)) for i, f in enumerate(frames)])
        inst.flush()
        sizes[codec] = (tmp_path / f"{codec}.mp4").stat().st_size
    assert sizes["h264"] < sizes["mp4v"] * 0.7, sizes


@pytest.mark.parametrize("spec, field", [
    ({"path": "x.mp4", "codec": "x"}, "codec"),
    ({"path": "x.avi", "codec": "h264"}, "codec"),
    ({"path": "x.mp4", "crf": 60}, "crf"),
])
def test_bad_file_output_specs_are_refused(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_pipeline({"name": "t", "steps": [{"device_input": {}}, {"file_output": spec}]})
    assert err.value.field == field


def test_alert_attaches_a_jpeg_and_raises_once_per_event(clip: Any) -> None:
    frames, _ = clip
    sinks = MemorySinks()
    # positives at t = 0..2 s (one event), a quiet gap, then 6..7 s (a second event)
    ts = [0.0, 0.5, 1.0, 1.5, 2.0, 6.0, 6.5, 7.0]
    inst, _ = run([{"alert": {"message": "dumping at {device}", "image": "frame", "until_quiet": "3s"}}],
                  [(frames[i], t) for i, t in enumerate(ts)], sinks=sinks)
    assert [a["ts"] for a in sinks.alerts] == [0.0, 6.0]
    a = sinks.alerts[0]
    assert a["image"]["content_type"] == "image/jpeg" and a["_image"][:2] == b"\xff\xd8"
    assert a["message"] == "dumping at cam-1" and "frame" not in a["record"]["values"]
    assert a["record"]["media"] == ["frame"]
    assert inst.ops[-1].suppressed == 6


def test_apply_model_on_crops_draws_an_annotated_copy(clip: Any) -> None:
    frames, truth = clip

    class Dark:
        version, shape = "1", (32, 32, 3)

        def __call__(self, x: np.ndarray) -> Any:
            return (x.mean(axis=(1, 2, 3)) < 100).astype(np.int64), np.full(len(x), 0.9)

    roi = list(truth[0].drain_roi)
    _, out = run([{"region_of_interest": {"regions": {"drain": roi}, "size": 32}},
                  {"apply_model": {"model": "dark", "image": "crop", "output": "dark", "annotate": True}}],
                 [(frames[0], 0.0)], models={"dark": Dark()})
    v = out.to_records()[0]["values"]
    drawn = v["annotated"]
    assert drawn.shape == frames[0].shape and not np.array_equal(drawn, frames[0])
    assert np.array_equal(v["frame"], frames[0])  # a copy: the frame itself is untouched
    x0, y0 = roi[0], roi[1]
    assert tuple(drawn[y0 + 5, x0]) in ((0, 0, 255), (0, 200, 0))  # the box's edge


def test_a_blur_band_in_fractions_covers_any_camera_edge_to_edge() -> None:
    from edge_runtime.desensitise import Desensitiser

    rng = np.random.default_rng(0)
    d = Desensitiser({"blur": [[0, 0, 1.0, 0.25]]})  # the sewage app's band: the top quarter
    for w, h in ((640, 480), (768, 576), (1920, 1080)):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out = d.blur_image(img)
        band, rest = out[: h // 4], out[h // 4 + 1:]
        assert all(np.ptp(band[y:y + 16, x:x + 16].reshape(-1, 3), axis=0).max() == 0
                   for y in range(0, h // 4 - 15, 16) for x in range(0, w - 15, 16)), (w, h)
        # the rightmost pixels too: no unblurred strip at the edge (the 640-pixel band left 128 on a 768 camera)
        assert np.ptp(out[: h // 4, w - 8:].reshape(-1, 3), axis=0).max() < np.ptp(img[: h // 4, w - 8:]), (w, h)
        assert np.array_equal(rest, img[h // 4 + 1:])  # below the band: untouched
    with pytest.raises(SpecError) as err:
        Desensitiser({"blur": [[0, 0, 1.5, 0.25]]})
    assert err.value.field == "uplink.blur[0]" and "within 0..1" in str(err.value)


def test_alert_images_are_blurred_where_the_pipeline_says_before_they_are_encoded(clip: Any) -> None:
    frames, _ = clip
    sinks = MemorySinks()
    plan = parse_pipeline({"name": "b", "uplink": {"blur": [[0, 0, 640, 120]]}, "steps": [
        {"device_input": {}}, {"alert": {"image": "frame", "quality": 95}}]})
    before = frames[0].copy()
    Instance("b", plan, sinks=sinks).push(frames_batch("cam-1", None, [(frames[0], 0.0)]))
    img = cv2.imdecode(np.frombuffer(sinks.alerts[0]["_image"], np.uint8), cv2.IMREAD_COLOR)
    top, below = img[16:32, 16:32].astype(int), img[200:216, 16:32].astype(int)
    assert np.abs(top - top.mean(axis=(0, 1))).max() <= 8  # one colour per 16 px cell
    assert np.abs(below - below.mean(axis=(0, 1))).max() > 8  # untouched outside the region
    assert np.array_equal(frames[0], before)  # the frame itself is not modified


def test_upload_attaches_the_crop_as_a_blurred_jpeg_for_labelling(clip: Any) -> None:
    """``upload: {image: crop}``: the record goes with its crop as JPEG media (what Label Studio shows), the
    array itself never travels in the record, and the pipeline's uplink blur applies to it too."""
    frames, truth = clip
    sinks = MemorySinks()
    roi = list(truth[0].drain_roi)
    plan = parse_pipeline({"name": "u", "uplink": {"blur": [[0, 0, 640, 480]]}, "steps": [
        {"device_input": {}}, {"region_of_interest": {"regions": {"drain": roi}, "size": 64}},
        {"upload": {"every": 2, "image": "crop", "quality": 95}}]})
    Instance("u", plan, sinks=sinks).push(frames_batch("cam-1", None, [(frames[i], float(i)) for i in range(4)]))
    assert [u["ts"] for u in sinks.uploads] == [0.0, 2.0]
    u = sinks.uploads[0]
    assert u["image"] == {"content_type": "image/jpeg", "size": len(u["_image"])}
    assert "crop" not in u["record"]["values"] and "frame" not in u["record"]["values"]
    img = cv2.imdecode(np.frombuffer(u["_image"], np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (64, 64, 3)
    cells = [img[y + 3:y + 13, x + 3:x + 13].astype(int) for y in (0, 16, 32, 48) for x in (0, 16, 32, 48)]
    spread = max(np.abs(c - c.mean(axis=(0, 1))).max() for c in cells)  # inside each 16 px cell, off its edges
    assert spread <= 12, spread  # pixelated: the whole frame is a blur region (JPEG adds a little ringing)
    with pytest.raises(SpecError) as err:
        parse_pipeline({"name": "t", "steps": [{"device_input": {}}, {"upload": {"image": 3}}]})
    assert err.value.field == "image"


def test_upload_of_a_clip_sends_one_filmstrip_jpeg_oldest_frame_first(clip: Any) -> None:
    """``upload: {image: clip}`` after ``frame_stack``: the clip goes as one JPEG, its frames side by side, the
    oldest on the left (what a person labels and the agile loop cuts back into the clip)."""
    frames, _ = clip
    steps = [{"resolution": {"width": 64, "height": 48}}, {"frame_stack": {"frames": 3, "field": "frame", "output": "clip"}}]
    picked = [(frames[i], k * 0.1) for k, i in enumerate((0, 19, 39))]  # far apart: frames that differ
    _, out = run(steps, picked)
    (want,) = [r["values"]["clip"] for r in out.to_records()]
    sinks = MemorySinks()
    plan = parse_pipeline({"name": "c", "steps": [{"device_input": {}}, *steps, {"upload": {"image": "clip", "quality": 95}}]})
    Instance("c", plan, sinks=sinks).push(frames_batch("cam-1", None, picked))
    (u,) = sinks.uploads
    strip = cv2.imdecode(np.frombuffer(u["_image"], np.uint8), cv2.IMREAD_COLOR)
    assert strip.shape == (48, 3 * 64, 3) and "clip" not in u["record"]["values"]
    for k in range(3):  # each third is its own frame, in order
        errs = [np.abs(strip[:, j * 64:(j + 1) * 64].astype(int) - want[k].astype(int)).mean() for j in range(3)]
        assert int(np.argmin(errs)) == k and errs[k] < 4, (k, errs)
