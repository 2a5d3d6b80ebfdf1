//! Cargo feature `analytics` (GStreamer >= 1.24): the frame's classification is also added to the
//! buffer's analytics relation meta (`GstAnalyticsRelationMeta`) as a classification
//! (`GstAnalyticsClsMtd`): one class, the label as a quark, the confidence as its level. GStreamer's
//! analytics elements and applications built on the analytics library read it there, next to the
//! results of other analysers of the same frame (an upstream detector's meta is extended, not
//! replaced).
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
use gst_analytics::{AnalyticsClassificationMtd, AnalyticsRelationMeta};

use crate::runtime::FrameResult;

/// Add `result` as a classification to the buffer's analytics relation meta (created when the
/// buffer has none). Frames that nothing classified (class id -1) get no classification.
/// Returns the id of the new classification in the relation meta.
pub fn attach(
    buffer: &mut gst::BufferRef,
    result: &FrameResult,
) -> Result<Option<u32>, glib::BoolError> {
    if result.class_id < 0 {
        return Ok(None);
    }
    if buffer.meta::<AnalyticsRelationMeta>().is_none() {
        AnalyticsRelationMeta::add(buffer);
    }
    let mut meta = buffer
        .meta_mut::<AnalyticsRelationMeta>()
        .ok_or_else(|| glib::bool_error!("no analytics relation meta on the buffer"))?;
    let mtd = meta.add_one_cls_mtd(result.confidence, glib::Quark::from_str(&result.label))?;
    Ok(Some(mtd.id()))
}

/// The last classification on the buffer's analytics relation meta, as (top label, level).
pub fn classification(buffer: &gst::BufferRef) -> Option<(String, f32)> {
    let meta = buffer.meta::<AnalyticsRelationMeta>()?;
    let cls = meta.iter::<AnalyticsClassificationMtd>().last()?;
    (!cls.is_empty()).then(|| (cls.quark(0).as_str().to_string(), cls.level(0)))
}
