#!/usr/bin/python3
"""A test RTSP camera: GStreamer's RTSP server (gir1.2-gst-rtsp-server-1.0, Debian's
python3-gi) serving H.264 from a live test pattern, like a store's IP camera.

usage: rtsp_camera.py PORT PATH WIDTH HEIGHT FPS KEY_INT [B_FRAMES]

With B_FRAMES > 0 the stream is H.264 Main profile with that many B-frames between
reference frames (frames sent in decode order, presented in another), as many IP
cameras send; otherwise Baseline without B-frames, low latency.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main():
    port, path, width, height, fps, key_int = sys.argv[1:7]
    b_frames = int(sys.argv[7]) if len(sys.argv) > 7 else 0
    if b_frames > 0:
        encoder = (
            f"x264enc speed-preset=ultrafast bframes={b_frames} b-adapt=false key-int-max={key_int} "
            f"! video/x-h264,profile=main"
        )
    else:
        encoder = f"x264enc speed-preset=ultrafast tune=zerolatency key-int-max={key_int}"
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate={fps}/1 "
        f"! {encoder} "
        f"! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(True)
    server.get_mount_points().add_factory(path, factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    print(f"rtsp://127.0.0.1:{port}{path}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
