//! Per-frame processing on the streaming thread: the frame (or each region of interest) scaled
//! to the model input and classified by the runtime. What comes out is published by
//! [`super::publish`].

use std::collections::hash_map::Entry;

use gst::subclass::prelude::*;
use gst_video::prelude::*;

use super::Regions;
use super::imp::{CacheNetClassify, State};
use crate::frame::{InputScalers, buffer_planes, crop_rect};
use crate::objects::Region;
use crate::result::ROI_TYPE;
use crate::runtime::{FRAME_OBJECT, ObjectKey, Outcome};

/// Crop sizes whose scalers are kept (regions=roi).
const SCALERS_KEPT: usize = 64;

/// One classification of a frame: the region it was of (None: the whole frame) and what it
/// gave.
pub(super) type Classified = (Option<(Region, ObjectKey)>, Outcome);

impl CacheNetClassify {
    /// Whether downstream's last QoS event says this buffer will be late.
    pub(super) fn is_late(&self, buf: &gst::BufferRef) -> bool {
        let Some(earliest) = *self.qos_earliest.lock().unwrap() else {
            return false;
        };
        let segment = self.obj().segment();
        let Some(seg) = segment.downcast_ref::<gst::ClockTime>() else {
            return false;
        };
        buf.pts()
            .and_then(|pts| seg.to_running_time(pts))
            .is_some_and(|rt| rt <= earliest)
    }
    /// A buffer whose frame cannot be read (not readable, or smaller than its planes).
    fn map_error(&self, why: &str) -> gst::FlowError {
        gst::element_imp_error!(
            self,
            gst::StreamError::Format,
            ("cannot read the video frame: {}", why)
        );
        gst::FlowError::Error
    }

    /// Classify the frame, or each of its regions with `regions=roi`. `late`: downstream says
    /// the frame will be late (with `skip-late`, the last results are reused).
    pub(super) fn classify(
        &self,
        state: &mut State,
        buf: &gst::BufferRef,
        late: bool,
    ) -> Result<Vec<Classified>, gst::FlowError> {
        if state.video.is_none() {
            return Err(gst::FlowError::NotNegotiated);
        }
        let late = late && state.skip_late;
        match state.regions {
            Regions::Frame => Ok(vec![(None, self.classify_frame(state, buf, late)?)]),
            Regions::Roi => self.classify_regions(state, buf, late),
        }
    }

    /// The whole frame as one object.
    fn classify_frame(
        &self,
        state: &mut State,
        buf: &gst::BufferRef,
        late: bool,
    ) -> Result<Outcome, gst::FlowError> {
        if let Some(r) = state.runtime.reuse(FRAME_OBJECT, late) {
            return Ok(Outcome::reused(r));
        }
        let (info, pre) = state.video.as_mut().expect("negotiated");
        let map = buf
            .map_readable()
            .map_err(|_| self.map_error("not readable"))?;
        let planes = buffer_planes(&map, buf, info).map_err(|e| self.map_error(&e))?;
        let mut px = pre.pixels(planes);
        Ok(state
            .runtime
            .process_object(FRAME_OBJECT, &mut px, state.max_offloads > 0))
    }

    /// Every region of interest of the frame that the filter accepts, each as its object:
    /// cropped and scaled straight from the mapped frame, at most `max-offloads` misses
    /// offloaded.
    fn classify_regions(
        &self,
        state: &mut State,
        buf: &gst::BufferRef,
        late: bool,
    ) -> Result<Vec<Classified>, gst::FlowError> {
        // With the analytics feature, the relation meta's object detections when there are any.
        #[cfg(feature = "analytics")]
        let detections: Vec<Region> = crate::analytics::detections(buf)
            .into_iter()
            .filter(|d| state.filter.accepts(&d.obj_type, d.rect.2, d.rect.3))
            .map(|d| Region {
                index: usize::MAX,
                detection: Some(d.mtd_id),
                roi_type: d.obj_type,
                id: d.tracking_id as i64,
                rect: d.rect,
            })
            .collect();
        #[cfg(not(feature = "analytics"))]
        let detections: Vec<Region> = Vec::new();
        let regions: Vec<Region> = if !detections.is_empty() {
            detections
        } else {
            buf.iter_meta::<gst_video::VideoRegionOfInterestMeta>()
                .enumerate()
                .filter_map(|(index, m)| {
                    let roi_type = m.roi_type();
                    let rect = m.rect();
                    (roi_type != ROI_TYPE && state.filter.accepts(roi_type, rect.2, rect.3)).then(
                        || Region {
                            index,
                            detection: None,
                            roi_type: roi_type.to_string(),
                            id: m.id() as i64,
                            rect,
                        },
                    )
                })
                .collect()
        };
        let keys = state.associator.assign(&regions);
        if regions.is_empty() {
            return Ok(Vec::new());
        }
        let (info, _) = state.video.as_ref().expect("negotiated");
        let map = buf
            .map_readable()
            .map_err(|_| self.map_error("not readable"))?;
        let planes = buffer_planes(&map, buf, info).map_err(|e| self.map_error(&e))?;
        let mut budget = state.max_offloads;
        let mut out = Vec::with_capacity(regions.len());
        for (region, key) in regions.into_iter().zip(keys) {
            if let Some(r) = state.runtime.reuse(key, late) {
                out.push((Some((region, key)), Outcome::reused(r)));
                continue;
            }
            let Some(rect) = crop_rect(info.format(), region.rect, info.width(), info.height())
            else {
                continue; // wholly outside the frame
            };
            if state.scalers.len() >= SCALERS_KEPT && !state.scalers.contains_key(&(rect.w, rect.h))
            {
                state.scalers.clear();
            }
            let pre = match state.scalers.entry((rect.w, rect.h)) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(
                    InputScalers::new(info, rect.w, rect.h, &state.runtime.manifest().inputs())
                        .map_err(|e| {
                            gst::element_imp_error!(self, gst::StreamError::Format, ("{}", e));
                            gst::FlowError::NotNegotiated
                        })?,
                ),
            };
            let crop = planes.crop(pre.layout(), rect);
            let r = state
                .runtime
                .process_object(key, &mut pre.pixels(crop), budget > 0);
            if r.offloaded {
                budget = budget.saturating_sub(1);
            }
            out.push((Some((region, key)), r));
        }
        Ok(out)
    }
}
