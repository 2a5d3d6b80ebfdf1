//! Cargo feature `analytics` (GStreamer >= 1.24): results also go to the buffer's analytics
//! relation meta (`GstAnalyticsRelationMeta`), where GStreamer's analytics elements and
//! applications built on the analytics library read them next to the results of other analysers
//! of the same frame (an upstream detector's meta is extended, not replaced):
//!
//! - a whole frame's result is a classification (`GstAnalyticsClsMtd`) with the full class vector:
//!   every label as a quark with its probability, the most likely first;
//! - with `regions=roi`, the object detections (`GstAnalyticsODMtd`) of the relation meta are the
//!   regions (when the buffer has any; else its ROI metas are): each classified detection gets its
//!   own classification, related to it as GStreamer's analytics elements relate them (the
//!   detection `CONTAIN`s the classification, which `IS_PART_OF` it); a `GstAnalyticsTrackingMtd`
//!   related to a detection gives the object's tracking id;
//! - cargo feature `tensor-meta` (GStreamer >= 1.26, checked at run time): a frame's class
//!   probabilities are also a `GstTensorMeta` (one float32 tensor `1 x N`, id `cachenet/probabilities`)
//!   for tensor decoders.
//!
//! ```no_run
//! # fn f(buffer: &gst::BufferRef) {
//! if let Some((label, confidence)) = gstcachenet::analytics::classification(buffer) {
//!     println!("{label} ({confidence:.2})");
//! }
//! # }
//! ```

use gst::glib;
use gst_analytics::prelude::*;
use gst_analytics::{
    AnalyticsClassificationMtd, AnalyticsODMtd, AnalyticsRelationMeta, AnalyticsTrackingMtd,
    RelTypes,
};

use crate::runtime::FrameResult;

/// One object detection of the relation meta: its mtd id, type, rectangle and tracking id.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub mtd_id: u32,
    pub obj_type: String,
    pub rect: crate::objects::Bounds,
    /// The tracking id of a tracking mtd related to the detection (0 when none).
    pub tracking_id: u64,
}

/// The object detections of the buffer's relation meta (clipped to non-negative coordinates).
pub fn detections(buffer: &gst::BufferRef) -> Vec<Detection> {
    let Some(meta) = buffer.meta::<AnalyticsRelationMeta>() else {
        return Vec::new();
    };
    let tracks: Vec<(u32, u64)> = meta
        .iter::<AnalyticsTrackingMtd>()
        .map(|t| (t.id(), t.info().0))
        .collect();
    meta.iter::<AnalyticsODMtd>()
        .filter_map(|od| {
            let loc = od.location().ok()?;
            let (x0, y0) = (loc.x.max(0), loc.y.max(0));
            let (x1, y1) = (loc.x.saturating_add(loc.w), loc.y.saturating_add(loc.h));
            (x1 > x0 && y1 > y0).then(|| {
                let id = od.id();
                let tracking_id = tracks
                    .iter()
                    .find(|(t, _)| {
                        meta.relation(*t, id) != RelTypes::NONE
                            || meta.relation(id, *t) != RelTypes::NONE
                    })
                    .map_or(0, |(_, tid)| *tid);
                Detection {
                    mtd_id: id,
                    obj_type: od
                        .obj_type()
                        .map_or_else(String::new, |q| q.as_str().to_string()),
                    rect: (x0 as u32, y0 as u32, (x1 - x0) as u32, (y1 - y0) as u32),
                    tracking_id,
                }
            })
        })
        .collect()
}

/// The result's class vector, most likely first.
fn classes(result: &FrameResult, labels: &[String]) -> (Vec<f32>, Vec<glib::Quark>) {
    let mut order: Vec<usize> = (0..result.probabilities.len().min(labels.len())).collect();
    order.sort_by(|&a, &b| result.probabilities[b].total_cmp(&result.probabilities[a]));
    if order.is_empty() {
        // An answer without probabilities (none are expected): its class alone.
        return (
            vec![result.confidence],
            vec![glib::Quark::from_str(&result.label)],
        );
    }
    (
        order.iter().map(|&i| result.probabilities[i]).collect(),
        order
            .iter()
            .map(|&i| glib::Quark::from_str(&labels[i]))
            .collect(),
    )
}

fn relation_meta(
    buffer: &mut gst::BufferRef,
) -> Result<gst::MetaRefMut<'_, AnalyticsRelationMeta, gst::meta::Standalone>, glib::BoolError> {
    if buffer.meta::<AnalyticsRelationMeta>().is_none() {
        AnalyticsRelationMeta::add(buffer);
    }
    buffer
        .meta_mut::<AnalyticsRelationMeta>()
        .ok_or_else(|| glib::bool_error!("no analytics relation meta on the buffer"))
}

/// Add a frame's `result` as a classification (the full class vector, `labels` being the
/// manifest's) to the buffer's relation meta (created when the buffer has none). Results that
/// nothing classified (class id -1) get none. Returns the id of the new classification.
pub fn attach(
    buffer: &mut gst::BufferRef,
    result: &FrameResult,
    labels: &[String],
) -> Result<Option<u32>, glib::BoolError> {
    add_classification(buffer, result, labels, None)
}

/// The classification of `result` in the buffer's relation meta, related to detection
/// `od` when given; None when nothing classified it.
fn add_classification(
    buffer: &mut gst::BufferRef,
    result: &FrameResult,
    labels: &[String],
    od: Option<u32>,
) -> Result<Option<u32>, glib::BoolError> {
    if result.class_id < 0 {
        return Ok(None);
    }
    let (levels, quarks) = classes(result, labels);
    let mut meta = relation_meta(buffer)?;
    let cls = meta.add_cls_mtd(&levels, &quarks)?.id();
    if let Some(od) = od {
        meta.set_relation(RelTypes::CONTAIN, od, cls)?;
        meta.set_relation(RelTypes::IS_PART_OF, cls, od)?;
    }
    Ok(Some(cls))
}

/// Add an object's `result` as a classification related to its detection `od_id`.
pub fn attach_to_detection(
    buffer: &mut gst::BufferRef,
    od_id: u32,
    result: &FrameResult,
    labels: &[String],
) -> Result<Option<u32>, glib::BoolError> {
    add_classification(buffer, result, labels, Some(od_id))
}

/// The classification related to detection `od_id` (IS_PART_OF it), as (top label, level).
pub fn detection_classification(buffer: &gst::BufferRef, od_id: u32) -> Option<(String, f32)> {
    let meta = buffer.meta::<AnalyticsRelationMeta>()?;
    let cls = meta
        .iter::<AnalyticsClassificationMtd>()
        .find(|c| meta.relation(c.id(), od_id) == RelTypes::IS_PART_OF)?;
    (!cls.is_empty()).then(|| (cls.quark(0).as_str().to_string(), cls.level(0)))
}

/// The last classification on the buffer's analytics relation meta, as (top label, level).
pub fn classification(buffer: &gst::BufferRef) -> Option<(String, f32)> {
    let meta = buffer.meta::<AnalyticsRelationMeta>()?;
    let cls = meta.iter::<AnalyticsClassificationMtd>().last()?;
    (!cls.is_empty()).then(|| (cls.quark(0).as_str().to_string(), cls.level(0)))
}

/// Id of the probabilities tensor (`tensor-meta`).
pub const TENSOR_ID: &str = "cachenet/probabilities";

/// Whether the running GStreamer has `GstTensorMeta` (1.26).
#[cfg(feature = "tensor-meta")]
pub fn tensor_meta_supported() -> bool {
    let (major, minor, _, _) = gst::version();
    (major, minor) >= (1, 26)
}

/// Add the class probabilities as a `GstTensorMeta` (float32, 1 x N, row-major), when the
/// running GStreamer has it (1.26). Returns whether it was added.
#[cfg(feature = "tensor-meta")]
pub fn attach_tensor(buffer: &mut gst::BufferRef, probabilities: &[f32]) -> bool {
    use gst_analytics::{Tensor, TensorDataType, TensorDimOrder, TensorMeta};
    if probabilities.is_empty() || !tensor_meta_supported() {
        return false;
    }
    let bytes: Vec<u8> = probabilities.iter().flat_map(|p| p.to_ne_bytes()).collect();
    let tensor = Tensor::new_simple(
        glib::Quark::from_str(TENSOR_ID),
        TensorDataType::Float32,
        gst::Buffer::from_mut_slice(bytes),
        TensorDimOrder::RowMajor,
        &[1, probabilities.len()],
    );
    let mut meta = TensorMeta::add(buffer);
    meta.set(glib::Slice::from(vec![tensor]));
    true
}

/// The probabilities tensor of the buffer (`tensor-meta`), if any.
#[cfg(feature = "tensor-meta")]
pub fn tensor(buffer: &gst::BufferRef) -> Option<Vec<f32>> {
    use gst_analytics::TensorMeta;
    let meta = buffer.meta::<TensorMeta>()?;
    let t = meta
        .as_slice()
        .iter()
        .find(|t| t.id() == glib::Quark::from_str(TENSOR_ID))?;
    let map = t.data().map_readable().ok()?;
    Some(
        map.chunks_exact(4)
            .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}
