"""Regions of a clip from a detector run through GStreamer, as a regions CSV
(`frame,x,y,width,height`): `filesrc ! decodebin ! videoconvert ! DETECTOR ! fakesink`.

The detector posts one element message per frame whose structure lists the frame's objects as
structures with x, y, width and height (OpenCV's `facedetect`: a `faces` list; the field is named
by --field). The k-th message of the detector is frame k. Run by `distill --detector` with a
Python that has PyGObject (Debian's /usr/bin/python3 with python3-gi), so this file imports
nothing of the training package:

    /usr/bin/python3 gst_detect.py CLIP "facedetect min-size-width=24" OUT.csv [--field faces]
"""
import argparse
import sys


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("clip")
    ap.add_argument("detector", help="gst-launch syntax of the detector element and its properties")
    ap.add_argument("out")
    ap.add_argument("--field", default="faces", help="the message field listing the objects")
    ap.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: all)")
    a = ap.parse_args(argv)

    import gi
    gi.require_version("Gst", "1.0")
    from gi.repository import Gst
    Gst.init(None)
    try:
        pipeline = Gst.parse_launch(
            "filesrc name=src ! decodebin ! videoconvert ! " + a.detector + " name=cachenet_detector "
            "! fakesink sync=false")
    except gi.repository.GLib.Error as e:
        sys.exit(f"--detector {a.detector!r}: {e.message}")
    pipeline.get_by_name("src").set_property("location", a.clip)
    bus = pipeline.get_bus()
    pipeline.set_state(Gst.State.PLAYING)
    rows, frame = [], 0
    try:
        while True:
            m = bus.timed_pop_filtered(
                60 * Gst.SECOND, Gst.MessageType.ELEMENT | Gst.MessageType.EOS | Gst.MessageType.ERROR)
            if m is None:
                sys.exit(f"{a.clip}: the detector posted nothing for 60 s")
            if m.type == Gst.MessageType.ERROR:
                err, debug = m.parse_error()
                sys.exit(f"{a.clip}: {err.message} ({debug})")
            if m.type == Gst.MessageType.EOS:
                break
            s = m.get_structure()
            if m.src.get_name() != "cachenet_detector" or s is None or not s.has_field(a.field):
                continue
            for obj in s.get_value(a.field) or []:
                box = [obj.get_value(k) for k in ("x", "y", "width", "height")]
                if None not in box and box[2] > 0 and box[3] > 0:
                    rows.append((frame, *box))
            frame += 1
            if a.max_frames and frame >= a.max_frames:
                break
    finally:
        pipeline.set_state(Gst.State.NULL)
    if frame == 0:
        sys.exit(f"{a.clip}: the detector posted no message with a {a.field!r} field")
    with open(a.out, "w") as f:
        f.write("frame,x,y,width,height\n")
        for r in rows:
            f.write(",".join(str(int(v)) for v in r) + "\n")
    print(f"{a.clip}: {frame} frames, {len(rows)} regions")


if __name__ == "__main__":
    main()
