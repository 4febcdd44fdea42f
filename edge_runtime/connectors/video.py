"""Cameras bound to a product (``connector: video``): frames into the pipelines, PTZ as product services.

A binding names one source (``file``, ``url``, ``usb`` or an ``onvif`` camera, see video_source.py) and the
product's video/image ``property`` the frames fill (default: the product's first one). Each camera runs a
:class:`~edge_runtime.connectors.video_source.VideoSource` on its own thread; its frames go straight to the
engine (frames stay in the process, they never cross the Device Bus): a file waits for the pipelines
(nothing lost), a live camera drops a frame a pipeline is too busy to take, and counts it.

An ONVIF camera's bindings map product services to PTZ actions (onvif.py)::

    services:
      look_left: {ptz: continuous_move, pan: -0.5, timeout: 1s}
      go_to: {ptz: goto_preset, preset: $name}
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..operators.base import SpecError, parse_duration
from .base import BindingCheck, Connector, NodeContext, substitute

if TYPE_CHECKING:
    from ..devices.catalog import DeviceBinding
    from .video_source import VideoSource

__all__ = ["VideoConnector"]


class VideoConnector(Connector):
    """Cameras and video files bound to products: decoded frames into the pipelines; ONVIF PTZ services."""

    name = "video"
    options: ClassVar[dict[str, str]] = {
        "file": "video file (looped when loop: true)", "url": "stream URL (rtsp://, rtmp://, http://)",
        "usb": "V4L2 camera index or /dev/videoN", "fps": "pace/limit (frames per second)",
        "onvif": "an ONVIF camera: {host, port, profile, username_env, password_env} (stream URI and PTZ)",
        "realtime": "pace a file at its frame rate (true)", "loop": "restart a file at its end",
        "stall_timeout": "reconnect after this many seconds without a frame (5)",
        "backoff": "first reconnect wait, s (0.5)", "max_backoff": "longest reconnect wait, s (10)",
        "property": "the product's video/image property the frames fill (default: the first one)"}
    service_keys = frozenset({"ptz", "pan", "tilt", "zoom", "timeout", "preset"})
    service_required = ("ptz",)

    @classmethod
    def check(cls, b: BindingCheck) -> None:
        from .video_source import parse_source

        options, prod = b.options, b.product
        media = [p for p, pr in prod.properties.items() if pr.type in ("video", "image")]
        prop = options.pop("property", None) or (media[0] if media else None)
        if prop not in media:
            raise b.error(f"product '{prod.name}' has no video/image property {prop!r}" if prop else
                          f"product '{prod.name}' declares no video or image property for the frames", "property",
                          at="property" if "property" in b.spec else "connector")
        try:
            parse_source(options, b.item)
        except ValueError as exc:
            raise b.error(str(exc).removeprefix(f"{b.item}: ").removeprefix(f"{b.item}."), "source",
                          at=next((k for k in ("file", "url", "usb") if k in b.spec), "connector")) from None
        options["property"] = prop

    @classmethod
    def check_service(cls, b: BindingCheck, service: str, how: Any) -> Any:
        from .onvif import PTZ_ACTIONS

        how = super().check_service(b, service, how)
        fld = f"services.{service}"
        if how["ptz"] not in PTZ_ACTIONS:
            raise b.error(f"unknown PTZ action {how['ptz']!r}", f"{fld}.ptz", hint="one of " + ", ".join(PTZ_ACTIONS))
        if how["ptz"] == "goto_preset" and "preset" not in how:
            raise b.error("goto_preset needs 'preset' (a preset token, or $argument)", f"{fld}.preset")
        for key in ("pan", "tilt", "zoom"):
            v = how.get(key, 0)
            if not (isinstance(v, str) and v.startswith("$")) and (
                    isinstance(v, bool) or not isinstance(v, (int, float)) or not -1 <= v <= 1):
                raise b.error(f"expected a number in [-1, 1] or $argument, got {v!r}", f"{fld}.{key}")
        if "timeout" in how:
            try:
                how["timeout"] = parse_duration(how["timeout"], "timeout")
            except SpecError as exc:
                raise b.error(exc.problem, f"{fld}.timeout") from None
        b.check_placeholders(service, [how.get(k) for k in ("pan", "tilt", "zoom", "preset")])
        if "onvif" not in b.options:
            raise b.error("PTZ services need an ONVIF camera (onvif: {host, ...})", fld)
        return how

    def __init__(self, ctx: NodeContext, bindings: list[DeviceBinding]) -> None:
        super().__init__(ctx, bindings)
        self.cameras: dict[str, VideoSource] = {}
        #: frames a live camera dropped because a pipeline was behind, per device
        self.dropped: dict[str, int] = {}

    def start(self) -> None:
        for b in self.bindings.values():
            self._start_camera(b)

    def _start_camera(self, b: DeviceBinding) -> None:
        from ..operators.video_inputs import frames_batch
        from .video_source import VideoSource, parse_source

        opts = {k: v for k, v in b.options.items() if k != "property"}
        if isinstance(opts.get("file"), str) and b.file and not Path(opts["file"]).is_absolute():
            opts["file"] = str(Path(b.file).parent / opts["file"])  # relative to the devices file
        prop, product = b.options["property"], b.product
        engine, dropped = self.ctx.engine, self.dropped
        spec = parse_source(opts, f"device '{b.id}'")

        def on_frame(frame: Any, ts: float, index: int) -> None:
            batch = frames_batch(b.id, product, [(frame, ts)], prop, [index])
            if not spec.live:
                engine.submit(batch)  # a file waits for the pipelines: nothing lost
            elif engine.offer(batch):
                dropped[b.id] = dropped.get(b.id, 0) + 1  # a pipeline was behind: live video drops, never waits

        self.cameras[b.id] = VideoSource(b.id, spec, on_frame).start()

    def stop(self) -> None:
        for cam in self.cameras.values():
            cam.stop()

    def heartbeat(self) -> dict[str, dict[str, Any]]:
        return {"video": {d: {**v.stats(), "dropped": self.dropped.get(d, 0)} for d, v in self.cameras.items()}}

    def call_service(self, device: str, service: str, args: dict[str, Any], how: Any) -> None:
        onvif = self.bindings[device].options.get("onvif")
        if not how or not onvif:
            super().call_service(device, service, args, how)  # raises: what the protocol cannot do
            return
        from .onvif import ptz

        ptz(onvif, substitute(how, args))
