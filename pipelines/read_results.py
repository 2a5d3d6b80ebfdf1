#!/usr/bin/env python3
"""Read cachenetclassify results from Python (PyGObject): the ROI meta on each buffer (pad
probe) and the cachenet-result bus messages.
  GST_PLUGIN_PATH=target/debug python3 pipelines/read_results.py models/fashion-mnist"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import GLib, Gst, GstVideo  # noqa: E402

Gst.init(None)
model_dir = sys.argv[1] if len(sys.argv) > 1 else "models/fashion-mnist"
pipeline = Gst.parse_launch(
    "videotestsrc num-buffers=30 ! video/x-raw,format=RGB,width=320,height=240 ! "
    f"cachenetclassify name=c model-dir={model_dir} ! fakesink name=sink")


def on_buffer(pad, info):
    buf = info.get_buffer()
    meta = GstVideo.buffer_get_video_region_of_interest_meta_id(buf, 0)
    if meta:
        s = meta.get_param("cachenet/classification")
        print(f"meta: label={s.get_string('label')} entropy={s.get_double('entropy')[1]:.3f} "
              f"hit={s.get_boolean('hit')[1]} source={s.get_string('source')}")
    return Gst.PadProbeReturn.OK


pipeline.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, on_buffer)
loop = GLib.MainLoop()


def on_message(bus, msg):
    if msg.type == Gst.MessageType.ELEMENT and msg.get_structure().get_name() == "cachenet-result":
        s = msg.get_structure()
        print(f"bus:  frame={s.get_value('frame')} label={s.get_string('label')} "
              f"latency={s.get_value('latency-us')} us")
    elif msg.type in (Gst.MessageType.EOS, Gst.MessageType.ERROR):
        if msg.type == Gst.MessageType.ERROR:
            print(msg.parse_error())
        print(pipeline.get_by_name("c").get_property("stats").to_string())
        loop.quit()


bus = pipeline.get_bus()
bus.add_signal_watch()
bus.connect("message", on_message)
pipeline.set_state(Gst.State.PLAYING)
loop.run()
pipeline.set_state(Gst.State.NULL)
