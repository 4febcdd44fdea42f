"""Synthetic street-camera scenes with a drain and illegal-dumping events, drawn with OpenCV (no real footage).

A fixed camera looks at a building wall, a pavement, a kerb and a road with a drain grate just below the
kerb.  Passers-by (articulated stick-and-blob people, some carrying buckets) walk along the back of the
pavement; cars pass in the far lane.  A *dumping event* is a person who walks to the drain, stops, raises and
tips a bucket, pours a liquid stream into the grate for a number of frames, and walks away.

Ground truth per frame (:class:`FrameTruth`): ``person_at_drain`` (someone's feet are in the drain zone),
``dumping`` (liquid is flowing), ``event_id`` (the dumping event whose actor is at the drain), the actor's
``person_bbox``, all ``persons`` boxes and the ``drain_roi`` box; boxes are ``(x0, y0, x1, y1)`` pixels,
end exclusive.  Variants: ``day``, ``night`` (dark, sodium lamp, sensor noise, headlights), ``rain``
(streaks, wet reflections on the road) and ``other_bucket`` (a red jerrycan instead of a grey pail).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

VARIANTS: tuple[str, ...] = ("day", "night", "rain", "other_bucket")
Box = tuple[int, int, int, int]
Color = tuple[int, int, int]


@dataclass(frozen=True)
class PersonPose:
    """One person in one frame: feet at ``(x, y)``, ``height`` pixels tall, walk ``phase`` in radians."""

    x: float
    y: float
    height: float
    phase: float = 0.0
    facing: int = 1  # +1 walks/looks right, -1 left
    walking: bool = True
    shirt: Color = (60, 60, 160)
    trousers: Color = (70, 50, 40)
    skin: Color = (120, 160, 200)
    bucket: str | None = None  # None, "carry" or "pour"
    tilt: float = 0.0  # 0 upright .. 1 fully tipped (only for "pour")
    liquid: bool = False  # liquid is flowing out of the bucket
    event_id: int | None = None  # the dumping event this person acts in


@dataclass(frozen=True)
class Car:
    """A car in the far lane: left edge ``x``, body colour, headlights on the leading side."""

    x: float
    direction: int
    color: Color


@dataclass(frozen=True)
class SceneParams:
    """Everything :func:`render_scene` needs to draw one frame."""

    width: int = 640
    height: int = 480
    variant: str = "day"
    layout_seed: int = 0
    index: int = 0
    persons: tuple[PersonPose, ...] = ()
    cars: tuple[Car, ...] = ()


@dataclass
class FrameTruth:
    """Ground truth of one frame."""

    index: int
    person_at_drain: bool
    dumping: bool
    event_id: int | None
    person_bbox: Box | None
    drain_roi: Box
    persons: list[Box] = field(default_factory=list)
    variant: str = "day"


@dataclass(frozen=True)
class Layout:
    """The static geometry of a clip, derived from its size and layout seed."""

    kerb_y: int
    drain: Box
    roi: Box
    zone: Box  # a person whose feet are in here is "at the drain"
    background: np.ndarray  # BGR uint8, unlit albedo
    light: np.ndarray  # HxWx3 float32 gain (lighting and tint)
    noise: float


@functools.lru_cache(maxsize=16)
def layout(width: int, height: int, variant: str, seed: int) -> Layout:
    """Draw the static street for a clip (cached: every frame of a clip shares it)."""
    rng = np.random.default_rng(seed)
    w, h = width, height
    kerb_y, road_y = int(0.55 * h), int(0.58 * h)
    img = np.empty((h, w, 3), np.uint8)
    img[: int(0.30 * h)] = rng.integers(60, 140, 3)  # building wall
    for x in range(int(rng.integers(10, 40)), w, int(0.2 * w)):  # windows
        cv2.rectangle(img, (x, int(0.05 * h)), (x + int(0.09 * w), int(0.22 * h)), (70, 60, 50), -1)
    img[int(0.30 * h): kerb_y] = (150, 155, 160)  # pavement with slab joints
    for y in range(int(0.30 * h), kerb_y, int(0.05 * h)):
        cv2.line(img, (0, y), (w, y), (125, 130, 135), 1)
    img[kerb_y:road_y] = (185, 185, 185)
    img[road_y:] = (70, 72, 75)
    for x in range(0, w, int(0.16 * w)):  # dashed centre line
        cv2.line(img, (x, int(0.80 * h)), (x + int(0.08 * w), int(0.80 * h)), (200, 220, 230), max(2, h // 120))
    tex = rng.normal(0.0, 6.0, (h, w, 1)).astype(np.float32)
    img = np.clip(img + tex, 0, 255).astype(np.uint8)
    cx, dw, dh = int(rng.uniform(0.4, 0.6) * w), int(0.14 * w), int(0.05 * h)
    drain = (cx - dw // 2, road_y + 2, cx + dw // 2, road_y + 2 + dh)
    cv2.rectangle(img, drain[:2], (drain[2] - 1, drain[3] - 1), (30, 30, 30), -1)
    for x in range(drain[0] + 4, drain[2] - 2, max(3, dw // 12)):  # grate bars
        cv2.line(img, (x, drain[1] + 2), (x, drain[3] - 3), (95, 95, 100), max(1, dw // 40))
    roi = (max(0, cx - int(0.15 * w)), max(0, drain[1] - int(0.30 * h)), min(w, cx + int(0.15 * w)),
           min(h, drain[3] + int(0.04 * h)))
    zone = (drain[0] - int(0.06 * w), kerb_y - int(0.04 * h), drain[2] + int(0.06 * w), drain[3])
    light = np.ones((h, w, 3), np.float32)
    if variant == "night":
        yy, xx = _grid(h, w)
        lx = rng.uniform(0.2, 0.8) * w
        glow = np.exp(-(((xx - lx) / (0.35 * w)) ** 2 + ((yy - 0.35 * h) / (0.45 * h)) ** 2))
        light = (0.12 + 0.5 * glow)[..., None] * np.array([0.7, 0.9, 1.15], np.float32)  # sodium orange
    elif variant == "rain":
        refl = cv2.GaussianBlur(cv2.flip(img[max(0, 2 * road_y - h): road_y], 0), (15, 15), 0).astype(np.float32)
        fade = np.linspace(0.35, 0.0, refl.shape[0], dtype=np.float32)[:, None, None]  # mirror-like near the kerb
        img[road_y: road_y + refl.shape[0]] = (img[road_y: road_y + refl.shape[0]] * (1 - fade) + refl * fade).astype(np.uint8)
        light *= np.array([0.75, 0.7, 0.65], np.float32)  # overcast, bluish
    else:
        light *= np.float32(rng.uniform(0.9, 1.1))
    noise = {"night": 9.0, "rain": 4.0}.get(variant, 2.5)
    img.setflags(write=False)
    return Layout(kerb_y, drain, roi, zone, img, light, noise)


def _rot(p: tuple[float, float], c: tuple[float, float], a: float) -> tuple[float, float]:
    s, k = math.sin(a), math.cos(a)
    return c[0] + (p[0] - c[0]) * k - (p[1] - c[1]) * s, c[1] + (p[0] - c[0]) * s + (p[1] - c[1]) * k


def _draw_person(img: np.ndarray, p: PersonPose, drain: Box, other_bucket: bool) -> Box:
    """Draw a person (and bucket, and liquid); return the bounding box of the person with the bucket."""
    s, f = p.height, p.facing
    hip, sh = (p.x, p.y - 0.5 * s), (p.x, p.y - 0.82 * s)
    swing = 0.45 * math.sin(p.phase) if p.walking else 0.0
    pts: list[tuple[float, float]] = []
    th, tl = max(2, int(0.06 * s)), max(2, int(0.11 * s))

    def limb(a: tuple[float, float], ang: float, bend: float, l1: float, l2: float, col: Color) -> tuple[float, float]:
        m = (a[0] + f * l1 * math.sin(ang), a[1] + l1 * math.cos(ang))
        e = (m[0] + f * l2 * math.sin(ang + bend), m[1] + l2 * math.cos(ang + bend))
        cv2.line(img, (int(a[0]), int(a[1])), (int(m[0]), int(m[1])), col, th, cv2.LINE_AA)
        cv2.line(img, (int(m[0]), int(m[1])), (int(e[0]), int(e[1])), col, th, cv2.LINE_AA)
        pts.extend([a, m, e])
        return e

    for sgn in (1, -1):
        limb(hip, sgn * swing, -0.3 * max(0.0, sgn * swing), 0.26 * s, 0.25 * s, p.trousers)
    cv2.line(img, (int(hip[0]), int(hip[1])), (int(sh[0]), int(sh[1])), p.shirt, tl, cv2.LINE_AA)
    hr = 0.075 * s
    cv2.circle(img, (int(sh[0] + f * 0.02 * s), int(sh[1] - 0.11 * s)), max(2, int(hr)), p.skin, -1, cv2.LINE_AA)
    pts += [(sh[0] - hr, sh[1] - 0.11 * s - hr), (sh[0] + hr, sh[1] - 0.11 * s - hr)]
    if p.bucket == "pour":
        arm = 0.2 + 1.0 * min(1.0, p.tilt + 0.3)  # arms raised forward
        hand = limb(sh, arm, 0.2, 0.17 * s, 0.16 * s, p.shirt)
        limb(sh, arm + 0.15, 0.1, 0.17 * s, 0.16 * s, p.shirt)
    else:
        hand = limb(sh, -swing if p.bucket is None else 0.05, 0.1, 0.17 * s, 0.16 * s, p.shirt)
        limb(sh, swing, 0.1, 0.17 * s, 0.16 * s, p.shirt)
    if p.bucket is not None:
        b = 0.14 * s
        if other_bucket:  # red jerrycan: tall box with a spout
            poly = [(-0.35 * b, 0), (0.35 * b, 0), (0.35 * b, 1.3 * b), (-0.35 * b, 1.3 * b)]
            col: Color = (30, 50, 200)
        else:  # grey-blue pail: trapezoid, wider at the top
            poly = [(-0.5 * b, 0.1 * b), (0.5 * b, 0.1 * b), (0.4 * b, b), (-0.4 * b, b)]
            col = (150, 125, 100)
        ang = f * p.tilt * math.radians(115) if p.bucket == "pour" else 0.0
        body = [_rot((hand[0] + f * x, hand[1] + y), hand, -ang) for x, y in poly]
        cv2.fillPoly(img, [np.array(body, np.int32)], col, cv2.LINE_AA)
        lip = body[1]
        if other_bucket:
            cv2.line(img, (int(lip[0]), int(lip[1])), (int(lip[0] + f * 0.2 * b), int(lip[1] - 0.2 * b)), col, 3)
        else:
            cv2.ellipse(img, (int(hand[0]), int(hand[1] + 0.1 * b)), (int(0.5 * b), int(0.4 * b)), 0, 180, 360,
                        (60, 60, 60), 1, cv2.LINE_AA)
        pts += body
        if p.liquid:  # a falling, slightly curved stream into the grate, a splash on it
            tgt = ((drain[0] + drain[2]) / 2, (drain[1] + drain[3]) / 2)
            ts = np.linspace(0.0, 1.0, 12)
            xs = lip[0] + (tgt[0] - lip[0]) * ts ** 0.7
            ys = lip[1] + (tgt[1] - lip[1]) * ts ** 1.6
            stream = np.stack([xs, ys], 1).astype(np.int32)
            cv2.polylines(img, [stream], False, (45, 85, 110), max(2, int(0.035 * s)), cv2.LINE_AA)
            cv2.ellipse(img, (int(tgt[0]), int(tgt[1])), (int(0.12 * s), int(0.035 * s)), 0, 0, 360,
                        (60, 100, 125), -1, cv2.LINE_AA)
    xy = np.array(pts)
    x0, y0 = xy.min(0) - th / 2
    x1, y1 = xy.max(0) + th / 2 + 1
    h, w = img.shape[:2]
    return (max(0, int(x0)), max(0, int(y0)), min(w, int(x1)), min(h, int(y1)))


@functools.lru_cache(maxsize=4)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return yy, xx


def _draw_car(img: np.ndarray, c: Car, h: int, glow: np.ndarray | None) -> None:
    w = img.shape[1]
    cw, ch, bottom = int(0.30 * w), int(0.12 * h), int(0.93 * h)
    x0 = int(c.x)
    cv2.rectangle(img, (x0, bottom - ch), (x0 + cw, bottom - ch // 4), c.color, -1)
    cv2.rectangle(img, (x0 + cw // 5, bottom - ch - ch // 2), (x0 + 4 * cw // 5, bottom - ch), c.color, -1)
    cv2.rectangle(img, (x0 + cw // 4, bottom - ch - ch // 3), (x0 + 3 * cw // 4, bottom - ch), (90, 70, 60), -1)
    for wx in (x0 + cw // 5, x0 + 4 * cw // 5):
        cv2.circle(img, (wx, bottom - ch // 4), ch // 3, (20, 20, 20), -1)
    if glow is not None:  # headlights: an additive glow ahead of the leading edge
        hx = x0 + cw if c.direction > 0 else x0
        yy, xx = _grid(h, w)
        beam = np.exp(-(((xx - hx - c.direction * 0.08 * w) / (0.12 * w)) ** 2 + ((yy - bottom + ch / 2) / (0.05 * h)) ** 2))
        glow += 230.0 * beam[..., None]


def render_scene(params: SceneParams, rng: np.random.Generator) -> tuple[np.ndarray, FrameTruth]:
    """Draw one frame (BGR uint8, ``height x width x 3``) and its ground truth; ``rng`` draws only noise/rain."""
    lay = layout(params.width, params.height, params.variant, params.layout_seed)
    h, w = params.height, params.width
    img = lay.background.copy()
    glow = np.zeros((h, w, 1), np.float32) if params.variant == "night" else None
    for c in params.cars:
        _draw_car(img, c, h, glow)
    boxes, at_drain, event, actor = [], False, None, None
    zx0, zy0, zx1, zy1 = lay.zone
    for p in sorted(params.persons, key=lambda q: q.y):  # far people first
        box = _draw_person(img, p, lay.drain, params.variant == "other_bucket")
        if box[2] > box[0] and box[3] > box[1]:  # (partly) in view
            boxes.append(box)
        if zx0 <= p.x < zx1 and zy0 <= p.y < zy1:
            at_drain = True
            if actor is None or p.event_id is not None:
                actor, event = box, p.event_id
    dumping = any(p.liquid for p in params.persons)
    out = img.astype(np.float32) * lay.light
    if glow is not None:
        out += glow
    if params.variant == "rain":  # streaks: short bright slanted lines, new each frame
        streaks = np.zeros((h, w), np.uint8)
        for x, y, ln in zip(rng.integers(0, w, 180), rng.integers(0, h, 180), rng.integers(8, 25, 180)):
            cv2.line(streaks, (int(x), int(y)), (int(x - ln // 4), int(y + ln)), 90, 1)
        out += streaks[..., None].astype(np.float32)
    out += rng.standard_normal((h, w, 1), dtype=np.float32) * np.float32(lay.noise)
    frame = np.clip(out, 0, 255).astype(np.uint8)
    truth = FrameTruth(params.index, at_drain, dumping, event if at_drain else None, actor, lay.roi, boxes, params.variant)
    return frame, truth


def _script(n: int, w: int, h: int, fps: float, rng: np.random.Generator, drain: Box, kerb_y: int
            ) -> tuple[list[list[PersonPose]], list[list[Car]]]:
    """Place passers-by, cars and dumping events on the clip's timeline."""
    people: list[list[PersonPose]] = [[] for _ in range(n)]
    cars: list[list[Car]] = [[] for _ in range(n)]

    def height_at(y: float) -> float:
        return h * (0.30 + 0.55 * (y / h - 0.45))

    def colours() -> dict[str, Color]:
        return {k: tuple(int(v) for v in rng.integers(lo, hi, 3)) for k, lo, hi in  # type: ignore[misc]
                (("shirt", 30, 230), ("trousers", 20, 120), ("skin", 60, 200))}

    def walk(f0: int, x0: float, y: float, d: int, extra: dict) -> None:
        ht, col = height_at(y), colours()
        v = rng.uniform(1.1, 1.6) * ht / 1.7 / fps  # metres per second, ~1.7 m per person height
        for k in range(max(0, f0), n):
            x = x0 + d * v * (k - f0)
            if not -0.1 * w < x < 1.1 * w:
                break
            people[k].append(PersonPose(x, y, ht, phase=0.9 * (k - f0), facing=d, **col, **extra))

    for f0 in np.flatnonzero(rng.random(n + int(4 * fps)) < 1.0 / (6 * fps)) - int(4 * fps):  # passers-by
        d = int(rng.choice([-1, 1]))
        walk(int(f0), -0.08 * w if d > 0 else 1.08 * w, rng.uniform(0.36, 0.49) * h, d,
             {"bucket": "carry"} if rng.random() < 0.2 else {})
    for f0 in np.flatnonzero(rng.random(n) < 1.0 / (8 * fps)):
        d = int(rng.choice([-1, 1]))
        car = (int(f0), d, tuple(int(v) for v in rng.integers(30, 220, 3)), rng.uniform(25, 45) * 10 / fps)
        for k in range(car[0], n):
            x = (-0.3 * w if d > 0 else w) + d * car[3] * (k - car[0])
            if not -0.35 * w < x < 1.05 * w:
                break
            cars[k].append(Car(x, d, car[2]))  # type: ignore[arg-type]
    n_events = max(1, round(n / (20 * fps))) if n >= 20 else 0
    seg = n / max(1, n_events)
    cx, y = (drain[0] + drain[2]) / 2, kerb_y - 0.01 * h
    for ev in range(n_events):
        ht, col, d = height_at(y), colours(), int(rng.choice([-1, 1]))
        v = rng.uniform(1.1, 1.5) * ht / 1.7 / fps
        pre, post = int(rng.integers(4, 9)), int(rng.integers(3, 7))
        pour = int(min(rng.uniform(1.5, 3.5) * fps, max(3, seg - 4)))
        start = int(ev * seg + rng.uniform(0.2, 0.8) * max(0, seg - pour))
        stand = cx - d * 0.07 * w
        approach = int(math.ceil(abs(stand - (-0.08 * w if d > 0 else 1.08 * w)) / v))
        stop0, stop1 = start - pre, start + pour + post
        for k in range(max(0, stop0 - approach), min(n, stop1 + approach)):
            if k < stop0:
                x, walking, bucket, tilt = stand - d * v * (stop0 - k), True, "carry", 0.0
            elif k < stop1:
                x, walking, bucket = stand, False, "pour"
                tilt = min((k - stop0 + 1) / pre, 1.0) if k < start else (1.0 if k < start + pour else
                                                                          max(0.0, 1 - (k - start - pour + 1) / post))
            else:
                x, walking, bucket, tilt = stand + d * v * (k - stop1), True, "carry", 0.0
            people[k].append(PersonPose(x, y, ht, phase=0.9 * k, facing=d, walking=walking, bucket=bucket, tilt=tilt,
                                        liquid=start <= k < start + pour, event_id=ev + 1, **col))
    return people, cars


def iter_clip(n_frames: int, *, seed: int, variant: str = "day", width: int = 640, height: int = 480,
              fps: float = 10) -> Iterator[tuple[np.ndarray, FrameTruth]]:
    """Yield ``(frame, truth)`` lazily; same seed and arguments, identical frames."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    ss = np.random.SeedSequence(seed)
    script_rng, noise_rng = (np.random.default_rng(s) for s in ss.spawn(2))
    layout_seed = int(script_rng.integers(2**31))
    lay = layout(width, height, variant, layout_seed)
    people, cars = _script(n_frames, width, height, fps, script_rng, lay.drain, lay.kerb_y)
    for i in range(n_frames):
        yield render_scene(SceneParams(width, height, variant, layout_seed, i, tuple(people[i]), tuple(cars[i])),
                           noise_rng)


def generate_clip(n_frames: int, *, seed: int, variant: str = "day", width: int = 640, height: int = 480,
                  fps: float = 10) -> tuple[list[np.ndarray], list[FrameTruth]]:
    """Render a whole clip: ``(frames, truths)``, one :class:`FrameTruth` per frame (see :func:`iter_clip`)."""
    pairs = list(iter_clip(n_frames, seed=seed, variant=variant, width=width, height=height, fps=fps))
    return [f for f, _ in pairs], [t for _, t in pairs]


def crops(frame: np.ndarray, roi: Box, size: int = 128) -> np.ndarray:
    """The ``roi`` region of ``frame`` resized to ``size x size`` (BGR uint8)."""
    x0, y0, x1, y1 = roi
    return cv2.resize(frame[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA)


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 10) -> int:
    """Write BGR frames to an mp4 (``mp4v``) file; return the number of frames written."""
    it = iter(frames)
    first = next(it, None)
    if first is None:
        return 0
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), float(fps), first.shape[1::-1])
    if not writer.isOpened():
        raise OSError(f"cannot open a video writer for {path}")
    n = 0
    try:
        for frame in itertools.chain([first], it):
            writer.write(frame)
            n += 1
    finally:
        writer.release()
    return n
