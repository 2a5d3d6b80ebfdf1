#!/usr/bin/env python3
"""Read cachenetclassify results from Python (PyGObject, Debian's python3-gi).

Whole frames: the ROI meta on each buffer (pad probe) and the cachenet-result bus messages
  GST_PLUGIN_PATH=target/debug python3 pipelines/read_results.py models/fashion-mnist
Per object (regions=roi): facedetect finds the pedestrians of a video, each region's result
comes as a cachenet-result message with its roi-type, object-id and rectangle; --roi-type keeps
one type of region
  GST_PLUGIN_PATH=target/debug python3 pipelines/read_results.py models/fashion-mnist \\
      --regions ~/.cache/cachenet/data/vtest.avi --roi-type face --frames 50"""
import argparse
from collections import defaultdict

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import GLib, Gst, GstVideo  # noqa: E402

CASCADE = "/usr/share/opencv4/haarcascades/haarcascade_fullbody.xml"

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("model_dir", nargs="?", default="models/fashion-mnist")
ap.add_argument("--regions", metavar="VIDEO", help="per-object mode on this video (facedetect as the detector)")
ap.add_argument("--roi-type", help="only regions of this type")
ap.add_argument("--frames", type=int, default=30)
ap.add_argument("--edge-url", help="offload misses to this edge server")
a = ap.parse_args()

Gst.init(None)
edge = f" edge-url={a.edge_url}" if a.edge_url else ""
if a.regions:
    pipeline = Gst.parse_launch(
        f"filesrc location={a.regions} ! decodebin ! identity eos-after={a.frames} ! videoconvert ! "
        f"facedetect display=false min-size-width=24 min-size-height=48 profile={CASCADE} ! videoconvert ! "
        f"cachenetclassify name=c regions=roi model-dir={a.model_dir}{edge} ! fakesink name=sink")
else:
    pipeline = Gst.parse_launch(
        f"videotestsrc num-buffers={a.frames} ! video/x-raw,format=RGB,width=320,height=240 ! "
        f"cachenetclassify name=c model-dir={a.model_dir}{edge} ! fakesink name=sink")


def on_buffer(pad, info):
    buf = info.get_buffer()
    meta = GstVideo.buffer_get_video_region_of_interest_meta_id(buf, 0)
    if meta:
        s = meta.get_param("cachenet/classification")
        print(f"meta: label={s.get_string('label')} entropy={s.get_double('entropy')[1]:.3f} "
              f"hit={s.get_boolean('hit')[1]} source={s.get_string('source')}")
    return Gst.PadProbeReturn.OK


if not a.regions:
    pipeline.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, on_buffer)
loop = GLib.MainLoop()
objects = defaultdict(list)


def on_message(bus, msg):
    if msg.type == Gst.MessageType.ELEMENT and msg.get_structure().get_name() == "cachenet-result":
        s = msg.get_structure()
        if a.regions:
            if a.roi_type and s.get_string("roi-type") != a.roi_type:
                return
            obj = s.get_value("object-id")
            objects[obj].append(s.get_string("label"))
            print(f"frame={s.get_value('frame')} {s.get_string('roi-type')} #{obj} "
                  f"at ({s.get_value('x')},{s.get_value('y')} {s.get_value('width')}x{s.get_value('height')}): "
                  f"{s.get_string('label')} hit={s.get_boolean('hit')[1]} source={s.get_string('source')} "
                  f"reused={s.get_boolean('reused')[1]} deferred={s.get_boolean('deferred')[1]}")
        else:
            print(f"bus:  frame={s.get_value('frame')} label={s.get_string('label')} "
                  f"latency={s.get_value('latency-us')} us")
    elif msg.type in (Gst.MessageType.EOS, Gst.MessageType.ERROR):
        if msg.type == Gst.MessageType.ERROR:
            print(msg.parse_error())
        if a.regions:
            print(f"{len(objects)} objects; results per object: "
                  f"{sorted((len(v) for v in objects.values()), reverse=True)}")
        print(pipeline.get_by_name("c").get_property("stats").to_string())
        loop.quit()


bus = pipeline.get_bus()
bus.add_signal_watch()
bus.connect("message", on_message)
pipeline.set_state(Gst.State.PLAYING)
loop.run()
pipeline.set_state(Gst.State.NULL)
