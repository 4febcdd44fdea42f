"""What a person sees in Label Studio: the labelling views of EdgeLoop projects and the display data of a task.

A person labels the record the edge model decided on, not the model's answer:

- **table models** (a telemetry window's features): a header with the device and the window's time range,
  short instructions, the window's features as one compact table, a row per channel (``temperature``:
  mean, std, min, max, with the product's unit) rounded to 3 significant digits (:func:`sig3`); the raw
  readings as a chart (Label Studio's TimeSeries, a channel each, with units) when the upload carries them
  (``series``, the ``series`` view);
- **image models**: the uploaded image (the crop or frame the model saw) under the same header, and the
  edge's box drawn as a pre-annotated rectangle where the upload has one in the image's pixels.

The edge's output (the prediction, its confidence, its ``<output>_model`` tag, the ``select`` mark) is never
displayed: it is the pre-selected choice (a Label Studio prediction), which a person keeps or changes.

Every view labels the same object name per kind (``values`` for tables, ``image`` for images) with the same
Choices (``label``): annotations made under one view stay valid under another, so a project's view can be
changed (:func:`view_of` tells which one a project has) without losing work.
"""

from __future__ import annotations

import html
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import quoteattr

__all__ = ["FROM_NAME", "KINDS", "TO_NAME", "VIEWS", "box_result", "channels_of", "display_data", "hidden_fields",
           "label_config", "parse_config", "sig3", "view_of"]

KINDS = ("image", "table")
VIEWS = {"image": ("image",), "table": ("features", "series")}  # the views of each kind; the first: its default
FROM_NAME = "label"  # the Choices control of every EdgeLoop project
TO_NAME = {"image": "image", "table": "values"}  # the object tag each kind labels
BOX_NAME = "edge_box"  # the rectangle control that shows the edge's box on an image
MARK_FIELDS = ("select",)  # apply_model's selection mark (the reason a record was chosen for labelling)
#: aggregate's functions, in the order the features table shows them (``<channel>_<fn>`` feature names)
FUNCTIONS = ("mean", "std", "min", "max", "first", "last", "sum", "mode")
TIME_FIELDS = ("window_start",)  # shown in the header, not in the table
INSTRUCTIONS = {
    "table": "Is this window what the label says? The edge model's answer is pre-selected: keep it if it is right, "
             "click the other label if it is wrong, then Submit.",
    "image": "Does the image show what the label says? The edge model's answer is pre-selected (its box, where it "
             "has one, is drawn): keep it if it is right, click the other label if it is wrong, then Submit.",
}
EXPERT_INSTRUCTION = (
    "<p>EdgeLoop sends what the edge models decided on: their hard examples and a random share.</p>"
    "<p>Label what the data shows, not what the model said: its answer is only pre-selected to save clicks. "
    "Table windows show a row per sensor channel (its unit in brackets), rounded to 3 significant digits; the "
    "raw readings are charted where the edge uploaded them.</p>"
    "<p>Skip a task you cannot decide: skipped tasks are not used for training.</p>")


def _check(kind: str, labels: list[str]) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown project kind {kind!r}: expected one of {', '.join(KINDS)}")
    if not labels or len(set(labels)) != len(labels) or not all(isinstance(x, str) and x for x in labels):
        raise ValueError(f"labels must be distinct non-empty strings, got {labels!r}")


def label_config(kind: str, labels: list[str], *, view: str | None = None,
                 channels: Mapping[str, str | None] | None = None) -> str:
    """The labelling interface of an EdgeLoop project of ``kind`` (``image`` or ``table``) with ``labels``.

    ``view``: one of :data:`VIEWS` of the kind (default: its first). The ``series`` view charts ``channels``
    (name -> unit or None, in order), which it needs."""
    _check(kind, labels)
    view = view or VIEWS[kind][0]
    if view not in VIEWS[kind]:
        raise ValueError(f"unknown {kind} view {view!r}: expected one of {', '.join(VIEWS[kind])}")
    lines = ['  <Header value="$header" size="4"/>',
             f'  <Header value={quoteattr(INSTRUCTIONS[kind])} size="6" underline="false"/>']
    if view == "image":
        lines += ['  <Image name="image" value="$image" zoom="true" zoomControl="true"/>',
                  f'  <Rectangle name="{BOX_NAME}" toName="image" strokeColor="#e53935" strokeWidth="2" '
                  'canRotate="false"/>']
    elif view == "features":
        lines.append('  <HyperText name="values" value="$view" inline="true"/>')
    else:
        if not channels:
            raise ValueError("the series view charts channels: give their names (and units)")
        lines.append('  <TimeSeries name="values" value="$series" valueType="json" timeColumn="t" '
                     'timeDisplayFormat=",.1f" durationDisplayFormat=",.1f">')
        for ch, unit in channels.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", ch):
                raise ValueError(f"channel {ch!r}: a chart channel is a field name (letters, digits, _ . -)")
            units = f" units={quoteattr(unit)}" if unit else ""
            lines.append(f'    <Channel column={quoteattr(ch)} legend={quoteattr(ch)}{units} displayFormat=",.3~r" '
                         'height="120"/>')
        lines += ["  </TimeSeries>", '  <HyperText name="features" value="$view" inline="true"/>']
    choices = "\n".join(f"    <Choice value={quoteattr(x)}/>" for x in labels)
    lines.append(f'  <Choices name="{FROM_NAME}" toName="{TO_NAME[kind]}" choice="single" showInline="true" '
                 f'required="true">\n{choices}\n  </Choices>')
    return "<View>\n" + "\n".join(lines) + "\n</View>"


def parse_config(config: str) -> tuple[str | None, list[str]]:
    """(the object tag name our Choices labels, the labels) of a label config."""
    root = ET.fromstring(config)  # noqa: S314 - a label config from our Label Studio, no entities
    for el in root.iter("Choices"):
        if el.get("name") == FROM_NAME:
            return el.get("toName"), [c.get("value", "") for c in el.iter("Choice")]
    return None, []


def view_of(config: str) -> tuple[str | None, dict[str, str | None]]:
    """(the view of a label config: ``image``, ``features``, ``series``, or None for any other (an EdgeLoop
    config from before views, or not EdgeLoop's); the charted channels of a ``series`` view)."""
    root = ET.fromstring(config)  # noqa: S314 - a label config from our Label Studio, no entities
    objects = {el.get("name"): el for el in root.iter() if el.get("name")}
    values, image = objects.get("values"), objects.get("image")
    if not any(el.get("value") == "$header" for el in root.iter("Header")):
        return None, {}
    if image is not None and image.tag == "Image" and objects.get(BOX_NAME) is not None:
        return "image", {}
    if values is not None and values.tag == "HyperText":
        return "features", {}
    if values is not None and values.tag == "TimeSeries":
        return "series", {str(c.get("column")): c.get("units") for c in values.iter("Channel")}
    return None, {}


# -- what a task shows ---------------------------------------------------------------------------------


def sig3(x: float | int) -> str:
    """``x`` rounded to 3 significant digits, as a person reads it: 81.234 -> 81.2, 0.012345 -> 0.0123,
    8052.7 -> 8050, 7 -> 7; NaN and infinities as they are."""
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int) and abs(x) < 1000:
        return str(x)
    x = float(x)
    if not math.isfinite(x) or x == 0:
        return "0" if x == 0 else str(x)
    r = round(x, 2 - int(math.floor(math.log10(abs(x)))))
    return f"{r:.6g}"


def hidden_fields(values: Mapping[str, Any], output: str | None = None) -> set[str]:
    """The fields of an uploaded record that are the edge model's answer, not the data: ``output`` and every
    output ``apply_model`` tagged (``<out>_model`` = ``name:version``) with its ``<out>_confidence``, the
    ``select`` mark, and the loop's own ``_``-fields (where its image is)."""
    outs = {output} if output else set()
    outs |= {k[: -len("_model")] for k, v in values.items() if k.endswith("_model") and isinstance(v, str) and ":" in v}
    hide = {k for k in values if k.startswith("_") or k in MARK_FIELDS}
    for out in outs:
        hide |= {out, f"{out}_model", f"{out}_confidence"}
    if outs:
        hide.add("confidence")  # apply_model's confidence field when it was not <out>_confidence
    return hide & set(values)


def _when(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def header(device: Any, ts: Any, start: Any = None) -> str:
    """``pump-1 · 2024-11-22 10:00:00 – 10:10:00 UTC``: the device and the window's time range (its end only
    when the record does not say when it began)."""
    dev = str(device) if device not in (None, "") else "unknown device"
    if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts):
        return dev
    end = _when(float(ts))
    if isinstance(start, (int, float)) and not isinstance(start, bool) and math.isfinite(start) and start < ts:
        begin = _when(float(start))
        tail = end.strftime("%H:%M:%S") if begin.date() == end.date() else end.strftime("%Y-%m-%d %H:%M:%S")
        return f"{dev} · {begin:%Y-%m-%d %H:%M:%S} – {tail} UTC ({sig3(ts - start)} s)"
    return f"{dev} · {end:%Y-%m-%d %H:%M:%S} UTC"


def _split(name: str) -> tuple[str, str] | None:
    base, sep, fn = name.rpartition("_")
    return (base, fn) if sep and base and fn in FUNCTIONS else None


def _unit(units: Mapping[str, str | None], *names: str) -> str:
    unit = next((units[n] for n in names if units.get(n)), None)
    return f" ({html.escape(str(unit))})" if unit else ""


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    return sig3(v) if isinstance(v, (int, float)) else html.escape(str(v))


def features_html(values: Mapping[str, Any], units: Mapping[str, str | None] | None = None) -> str:
    """The shown values as a small HTML table: a row per channel, a column per aggregate function (features
    named ``<channel>_<fn>``), then the other values one per row; numbers to 3 significant digits, everything
    escaped."""
    units = units or {}
    channels: dict[str, dict[str, Any]] = {}
    others: dict[str, Any] = {}
    for k, v in values.items():
        split = _split(k)
        if split:
            channels.setdefault(split[0], {})[split[1]] = v
        else:
            others[k] = v
    style = 'style="border-collapse:collapse;font-family:monospace;font-size:14px;margin:4px 0"'
    td = 'style="padding:2px 10px;border-bottom:1px solid #ddd;text-align:right"'
    th = 'style="padding:2px 10px;border-bottom:1px solid #999;text-align:left"'
    rows: list[str] = []
    if channels:
        fns = [f for f in FUNCTIONS if any(f in c for c in channels.values())]
        rows.append("<tr><th " + th + ">channel</th>" + "".join(f"<th {th}>{f}</th>" for f in fns) + "</tr>")
        for ch, got in channels.items():
            rows.append(f'<tr><th {th} class="channel">{html.escape(ch)}{_unit(units, ch)}</th>'
                        + "".join(f"<td {td}>{_cell(got.get(f))}</td>" for f in fns) + "</tr>")
    for k, v in others.items():
        rows.append(f"<tr><th {th}>{html.escape(k)}{_unit(units, k)}</th><td {td}>{_cell(v)}</td></tr>")
    return f'<table class="edgeloop-window" {style}>' + "".join(rows) + "</table>"


def channels_of(series: Mapping[str, Any] | None) -> list[str]:
    """The charted channels of raw readings ``{"ts": [epoch s...], channel: [numbers...]}``."""
    return [k for k in (series or {}) if k != "ts"]


def series_data(series: Mapping[str, Any], uid: str) -> dict[str, list[float | None]]:
    """Raw readings as the TimeSeries view takes them: ``t`` in seconds from the first reading (the header
    says when that was), sorted by time (Label Studio needs a sorted time axis), non-numbers as gaps."""
    ts = series.get("ts")
    if not isinstance(ts, list) or not ts or not all(isinstance(t, (int, float)) and not isinstance(t, bool)
                                                     for t in ts):
        raise ValueError(f"upload {uid}: raw readings need 'ts', a non-empty list of epoch seconds")
    chans = channels_of(series)
    if not chans:
        raise ValueError(f"upload {uid}: raw readings without a channel (expected ts and at least one more list)")
    for ch in chans:
        col = series[ch]
        if not isinstance(col, list) or len(col) != len(ts):
            raise ValueError(f"upload {uid}: raw readings {ch!r} must be a list as long as ts ({len(ts)})")
    order = sorted(range(len(ts)), key=lambda i: ts[i])
    t0 = float(ts[order[0]])
    out: dict[str, list[float | None]] = {"t": [round(float(ts[i]) - t0, 6) for i in order]}
    for ch in chans:
        out[ch] = [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None
                   for v in (series[ch][i] for i in order)]
    return out


def display_data(item: Mapping[str, Any], values: Mapping[str, Any], view: str) -> dict[str, Any]:
    """The task data a view shows for an uploaded inference ``item`` (its JSON-safe ``values``): ``header``,
    ``view`` (the features table), ``series`` (raw readings) as the view needs."""
    uid = str(item.get("id"))
    hide = hidden_fields(values, item.get("output")) | set(TIME_FIELDS)
    shown = {k: v for k, v in values.items() if k not in hide}
    data: dict[str, Any] = {"header": header(item.get("device"), item.get("ts"), values.get("window_start"))}
    if view == "image":
        return data
    data["view"] = features_html(shown, item.get("units"))
    if view == "series":
        series = item.get("series")
        if not isinstance(series, Mapping):
            raise ValueError(f"upload {uid}: this project charts raw readings (its series view) and the upload has "
                             "none: send it to a project of the features view")
        data["series"] = series_data(series, uid)
        if not isinstance(values.get("window_start"), (int, float)):  # the readings say when the window began
            data["header"] = header(item.get("device"), item.get("ts"), min(float(t) for t in series["ts"]))
    return data


def box_result(box: Any, size: tuple[int, int], uid: str) -> list[dict[str, Any]]:
    """The edge's box ``[x0, y0, x1, y1]`` (pixels of the image, ``size`` = (width, height)) as a rectangle
    result in Label Studio's percentages; empty (and the box not shown) when it is not inside the image."""
    w, h = size
    if (not isinstance(box, (list, tuple)) or len(box) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
        raise ValueError(f"upload {uid}: a box is [x0, y0, x1, y1] in the image's pixels, got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        return []
    return [{"from_name": BOX_NAME, "to_name": TO_NAME["image"], "type": "rectangle",
             "original_width": w, "original_height": h, "image_rotation": 0,
             "value": {"x": 100 * x0 / w, "y": 100 * y0 / h, "width": 100 * (x1 - x0) / w,
                       "height": 100 * (y1 - y0) / h, "rotation": 0}}]
