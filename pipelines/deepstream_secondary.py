#!/usr/bin/env python3
"""DeepStream: nvinfer as the primary detector, cachenetclassify as the secondary classifier of
each detected object (like nvinfer process-mode=secondary), with per-object caching.

nvinfer keeps its objects in DeepStream's batch meta (NvDsObjectMeta), which GStreamer elements
do not read; a pad probe (pyds) copies each object into a GstVideoRegionOfInterestMeta (roi type =
the detector's label, id = the tracker's object id when nvtracker runs) before cachenetclassify,
and a second probe reads the per-object results back. Documented, not runnable without a Jetson
or a dGPU with DeepStream (6.x/7.x) and its Python bindings (pyds):
  python3 pipelines/deepstream_secondary.py file:///opt/nvidia/deepstream/samples/streams/sample_720p.mp4
"""
import os
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import GLib, Gst, GstVideo  # noqa: E402
import pyds  # noqa: E402  (DeepStream Python bindings)

DS = "/opt/nvidia/deepstream/deepstream"
Gst.init(None)
uri = sys.argv[1] if len(sys.argv) > 1 else f"file://{DS}/samples/streams/sample_720p.mp4"
pipeline = Gst.parse_launch(
    f"uridecodebin uri={uri} ! m.sink_0 nvstreammux name=m batch-size=1 width=1280 height=720 ! "
    f"nvinfer config-file-path={DS}/samples/configs/deepstream-app/config_infer_primary.txt ! "
    f"nvtracker ll-lib-file={DS}/lib/libnvds_nvmultiobjecttracker.so ! "
    "nvvideoconvert ! video/x-raw,format=RGBA ! identity name=bridge ! "
    "cachenetclassify name=c regions=roi roi-types=Person,Car min-size=32 max-offloads=2 cache-size=2 "
    f"edge-url={os.environ.get('EDGE', 'http://edge:8470')} "
    f"model-dir={os.environ.get('MODEL_DIR', '/opt/cachenet/models/fashion-mnist')} ! "
    "fakesink name=sink sync=false")


def objects_to_rois(pad, info):
    """NvDsObjectMeta -> GstVideoRegionOfInterestMeta (label as roi type, tracker id as id)."""
    buf = info.get_buffer()
    batch = pyds.gst_buffer_get_nvds_batch_meta(hash(buf))
    l_frame = batch.frame_meta_list
    while l_frame is not None:
        frame = pyds.NvDsFrameMeta.cast(l_frame.data)
        l_obj = frame.obj_meta_list
        while l_obj is not None:
            o = pyds.NvDsObjectMeta.cast(l_obj.data)
            r = o.rect_params
            roi = GstVideo.buffer_add_video_region_of_interest_meta(
                buf, o.obj_label, int(r.left), int(r.top), int(r.width), int(r.height))
            roi.id = o.object_id & 0x7FFFFFFF
            l_obj = l_obj.next
        l_frame = l_frame.next
    return Gst.PadProbeReturn.OK


def results(pad, info):
    buf = info.get_buffer()
    state = None
    while True:
        meta, state = buf.iterate_meta_filtered(state, GstVideo.VideoRegionOfInterestMeta.get_info().api), state
        if meta is None:
            break
        s = meta.get_param("cachenet/classification")
        if s:
            print(f"{GLib.quark_to_string(meta.roi_type)} #{meta.id}: {s.get_string('label')} "
                  f"(hit={s.get_boolean('hit')[1]}, source={s.get_string('source')})")
    return Gst.PadProbeReturn.OK


pipeline.get_by_name("bridge").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, objects_to_rois)
pipeline.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, results)
loop = GLib.MainLoop()
bus = pipeline.get_bus()
bus.add_signal_watch()
bus.connect("message", lambda b, m: loop.quit() if m.type in (Gst.MessageType.EOS, Gst.MessageType.ERROR) else None)
pipeline.set_state(Gst.State.PLAYING)
loop.run()
pipeline.set_state(Gst.State.NULL)
