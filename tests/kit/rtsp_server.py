"""A real RTSP server for the video tests: a live GStreamer test pattern as H.264.

Run it with the SYSTEM interpreter (Debian's python3-gi, gir1.2-gst-rtsp-server-1.0 and the GStreamer
plugins; ``make deps`` installs them), not the venv's::

    /usr/bin/python3 tests/kit/rtsp_server.py --port 8554 [--path /cam] [--fps 25] [--width 640 --height 480]

``--frames DIR/frame-%04d.jpg`` plays a real video's frames instead (in a loop). It prints ``ready`` on stdout
once it listens and serves until killed (SIGTERM/SIGINT). The media factory
is shared, so several clients watch the same stream. (Serving a file is left out: the mp4v files the
tests write need an MPEG-4 part 2 decoder that only gstreamer1.0-libav has.)
"""

from __future__ import annotations

import argparse
import signal
import sys


def launch_line(args: argparse.Namespace) -> str:
    # a key frame every second and SPS/PPS with each one: a client that joins late starts decoding quickly
    encode = (f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.fps} "
              "! rtph264pay name=pay0 pt=96 config-interval=1")
    if args.frames:  # a real video, as JPEG frames (frame-%04d.jpg), played in a loop at --fps
        return (f"( multifilesrc location={args.frames} loop=true caps=image/jpeg,framerate={args.fps}/1 "
                f"! jpegdec ! videoconvert ! video/x-raw,format=I420 ! {encode} )")
    return (f"( videotestsrc is-live=true ! video/x-raw,width={args.width},height={args.height},"
            f"framerate={args.fps}/1 ! {encode} )")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/cam")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--frames", default=None, help="play these JPEG frames (a printf pattern: dir/frame-%%04d.jpg)")
    args = p.parse_args(argv)

    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtspServer
    except (ImportError, ValueError) as exc:
        print(f"rtsp_server: GStreamer RTSP server bindings missing ({exc}): run `make deps`", file=sys.stderr)
        return 2

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args))
    factory.set_shared(True)
    path = args.path if args.path.startswith("/") else "/" + args.path
    server.get_mount_points().add_factory(path, factory)
    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on port {args.port}", file=sys.stderr)
        return 1

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, lambda *_: (loop.quit(), False)[1])
    print("ready", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
