//! Typed access for Rust applications to the results `cachenetclassify` attaches to buffers.
//!
//! ```no_run
//! # fn f(buffer: &gst::BufferRef) {
//! if let Some(r) = gstcachenet::result::Classification::from_buffer(buffer) {
//!     println!("{} ({:.3} nats, hit: {}, from {})", r.label, r.entropy, r.hit, r.source);
//! }
//! # }
//! ```

/// Roi type of the `GstVideoRegionOfInterestMeta` the element attaches.
pub const ROI_TYPE: &str = "cachenet";
/// Name of the ROI param structure.
pub const RESULT_STRUCTURE: &str = "cachenet/classification";
/// Name of the per-frame element message.
pub const RESULT_MESSAGE: &str = "cachenet-result";
/// Name of the element message of an answered audit.
pub const AUDIT_MESSAGE: &str = "cachenet-audit";

/// The `cachenet/classification` fields of `r` (ROI param, bus message and `CacheNetMeta`
/// alike), in a structure named `name`.
pub(crate) fn fields(name: &str, r: &crate::runtime::FrameResult) -> gst::structure::Builder {
    gst::Structure::builder(name)
        .field("label", r.label.as_str())
        .field("class-id", r.class_id)
        .field("confidence", r.confidence as f64)
        .field("entropy", r.entropy as f64)
        .field("source", r.source.as_str())
        .field("hit", r.hit)
        .field("submodel", r.submodel)
        .field("degraded", r.degraded)
        .field("deferred", r.deferred)
        .field("reused", r.reused)
        .field("threshold", r.threshold as f64)
}

/// One frame's classification, as attached by `cachenetclassify`.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    pub label: String,
    /// -1 when nothing could classify the frame.
    pub class_id: i32,
    pub confidence: f64,
    pub entropy: f64,
    /// `device`, `edge` or `none`.
    pub source: String,
    pub hit: bool,
    pub submodel: i32,
    pub degraded: bool,
    /// A miss kept local because the frame's offload budget was spent.
    pub deferred: bool,
    /// The object's last result again, without a model run (`interval`, a late frame).
    pub reused: bool,
    /// The entropy threshold in use for the result's submodel (calibrated with
    /// `target-agreement`).
    pub threshold: f64,
    /// The element's `unique-id`.
    pub unique_id: u32,
    /// The tracked object (regions=roi), None for a whole frame.
    pub object_id: Option<u64>,
}

impl Classification {
    /// Read from a `cachenet/classification` structure (ROI param or bus message).
    pub fn from_structure(s: &gst::StructureRef) -> Option<Classification> {
        Some(Classification {
            label: s.get("label").ok()?,
            class_id: s.get("class-id").ok()?,
            confidence: s.get("confidence").ok()?,
            entropy: s.get("entropy").ok()?,
            source: s.get("source").ok()?,
            hit: s.get("hit").ok()?,
            submodel: s.get("submodel").ok()?,
            degraded: s.get("degraded").ok()?,
            deferred: s.get("deferred").unwrap_or(false),
            reused: s.get("reused").unwrap_or(false),
            threshold: s.get("threshold").unwrap_or(f64::NAN),
            unique_id: s.get("unique-id").unwrap_or(0),
            object_id: s.get("object-id").ok(),
        })
    }

    /// The classifications of the regions of interest of `buffer` (regions=roi): each region's
    /// type and rectangle (x, y, width, height) with its result.
    pub fn regions(
        buffer: &gst::BufferRef,
    ) -> Vec<(String, crate::objects::Bounds, Classification)> {
        buffer
            .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
            .filter(|m| m.roi_type() != ROI_TYPE)
            .filter_map(|m| {
                let c = m
                    .param(RESULT_STRUCTURE)
                    .and_then(Classification::from_structure)?;
                Some((m.roi_type().to_string(), m.rect(), c))
            })
            .collect()
    }

    /// The classification attached to `buffer`, if the element saw it.
    pub fn from_buffer(buffer: &gst::BufferRef) -> Option<Classification> {
        buffer
            .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
            .filter(|m| m.roi_type() == ROI_TYPE)
            .find_map(|m| {
                m.param(RESULT_STRUCTURE)
                    .and_then(Classification::from_structure)
            })
    }

    /// From a `cachenet-result` bus message.
    pub fn from_message(msg: &gst::Message) -> Option<Classification> {
        match msg.view() {
            gst::MessageView::Element(e) => e
                .structure()
                .filter(|s| s.name() == RESULT_MESSAGE)
                .and_then(Classification::from_structure),
            _ => None,
        }
    }
}
