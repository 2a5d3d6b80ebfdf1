//! Publishing one frame's outcome: the result as a ROI param and a Rust meta on the buffer
//! (and the analytics classification with that feature), `cachenet-result` and
//! `cachenet-swap` bus messages bounded by the outbox, warnings and errors, and the `stats`
//! structure.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use gst::prelude::*;
use gst::subclass::prelude::*;

use super::imp::{CAT, CacheNetClassify, State};
use super::process::Classified;
use crate::outbox::{Admit, Outbox};
use crate::remote::SwapTimings;
use crate::result::{AUDIT_MESSAGE, RESULT_MESSAGE, RESULT_STRUCTURE, ROI_TYPE};
use crate::runtime::{AuditEvent, FRAME_OBJECT, FrameEvents, Stats, SwapEvent};

pub(super) fn stats_structure(s: &Stats) -> gst::Structure {
    let b = gst::Structure::builder("cachenet-stats")
        .field("frames", s.frames)
        .field("hits", s.hits)
        .field("misses", s.misses)
        .field("offloads", s.offloads)
        .field("offload-failures", s.offload_failures)
        .field("swaps", s.swaps)
        .field("evictions", s.evictions)
        .field("bytes-up", s.bytes_up)
        .field("bytes-down", s.bytes_down)
        .field("device-time-us", s.device_time_us)
        .field("edge-time-us", s.edge_time_us)
        .field("hit-rate", s.hit_rate())
        .field("active-submodel", s.active_submodel)
        .field("fetches", s.fetches)
        .field("plan-reuses", s.plan_reuses)
        .field("prefetches", s.prefetches)
        .field("objects", s.objects)
        .field("objects-dropped", s.objects_dropped)
        .field("deferred", s.deferred)
        .field("reused", s.reused)
        .field("audits-sent", s.audits_sent)
        .field("audits", s.audits)
        .field("audit-agree", s.audit_agree)
        .field("audits-dropped", s.audits_dropped)
        .field("audits-failed", s.audits_failed)
        .field("threshold", s.threshold as f64)
        .field("plans", gst::Array::new(s.plans.iter().map(String::as_str)))
        .field("edge", &*s.edge)
        .field("edges", gst::Array::new(s.edges.iter().map(String::as_str)))
        .field("failovers", s.failovers)
        .field("edge-returns", s.edge_returns)
        .field(
            "submodels",
            gst::List::new(s.agreements.iter().map(|a| {
                gst::Structure::builder("cachenet-agreement")
                    .field("submodel", a.submodel)
                    .field("audits", a.audits)
                    .field("agree", a.agree)
                    .field("window", a.window)
                    .field("agreement", a.agreement)
                    .field("agreement-low", a.low)
                    .field("agreement-high", a.high)
                    .field("threshold", a.threshold as f64)
                    .build()
            })),
        );
    swap_fields(b, "swap-", &s.swap, s.swap_wait_us).build()
}

/// The `cachenet-audit` message of an answered audit (`object-id` only for a region).
pub(super) fn audit_message(e: &AuditEvent, labels: &[String]) -> gst::Structure {
    let label = |c: i32| {
        labels
            .get(c as usize)
            .map_or(String::new(), |l| l.to_string())
    };
    let mut b = gst::Structure::builder(AUDIT_MESSAGE)
        .field("frame", e.frame)
        .field("submodel", e.submodel)
        .field("local-class", e.local_class)
        .field("local-label", label(e.local_class))
        .field("edge-class", e.edge_class)
        .field("edge-label", label(e.edge_class))
        .field("agree", e.agree)
        .field("threshold", e.threshold as f64);
    if e.object != FRAME_OBJECT {
        b = b.field("object-id", e.object);
    }
    b.build()
}

/// The swap phases (and the wait) as `{prefix}download-us`, ... fields.
fn swap_fields(
    b: gst::structure::Builder,
    prefix: &str,
    t: &SwapTimings,
    wait_us: u64,
) -> gst::structure::Builder {
    [
        ("download", t.download_us),
        ("verify", t.verify_us),
        ("store", t.store_us),
        ("parse", t.parse_us),
        ("optimise", t.optimise_us),
        ("first-run", t.first_run_us),
        ("cpu", t.cpu_us),
        ("wait", wait_us),
    ]
    .into_iter()
    .fold(b, |b, (name, v)| b.field(format!("{prefix}{name}-us"), v))
}

pub(super) fn swap_message(e: &SwapEvent) -> gst::Structure {
    let b = gst::Structure::builder("cachenet-swap")
        .field("submodel", e.submodel)
        .field("fetched", e.fetched)
        .field("bytes", e.bytes);
    swap_fields(b, "", &e.timings, e.wait_us).build()
}

impl CacheNetClassify {
    /// Attach the frame's results to `buf` and post its messages: the results, the swaps,
    /// warnings and errors of `events`. `started`: when the frame's processing began (for
    /// `latency-us`).
    pub(super) fn publish(
        &self,
        state: &mut State,
        buf: &mut gst::BufferRef,
        results: &[Classified],
        events: &FrameEvents,
        post: bool,
        started: Instant,
    ) {
        let frame_no = state.frame;
        state.frame += 1;
        let inference_us: u64 = results.iter().map(|(_, o)| o.model_us).sum();
        let pts = buf.pts();
        let (width, height) = {
            let (info, _) = state.video.as_ref().expect("checked above");
            (info.width(), info.height())
        };
        // Each result's fields are built once: the ROI param, the meta and the bus message
        // carry copies.
        let mut messages = Vec::new();
        let mut by_meta: HashMap<usize, gst::Structure> = HashMap::new();
        #[cfg(feature = "analytics")]
        let labels = &state.runtime.manifest().labels;
        for (region, outcome) in results {
            let result = &outcome.result;
            let mut b =
                crate::result::fields(RESULT_STRUCTURE, result).field("unique-id", state.unique_id);
            if let Some((r, key)) = region {
                b = b
                    .field("object-id", *key)
                    .field("roi-type", r.roi_type.as_str());
            }
            let fields = b.build();
            match region {
                None => {
                    let mut roi = gst_video::VideoRegionOfInterestMeta::add(
                        buf,
                        ROI_TYPE,
                        (0, 0, width, height),
                    );
                    roi.add_param(fields.clone());
                    crate::meta::CacheNetMeta::add_structure(buf, fields.clone());
                    #[cfg(feature = "analytics")]
                    if let Err(e) = crate::analytics::attach(buf, result, labels) {
                        gst::warning!(
                            CAT,
                            imp = self,
                            "cannot add the analytics classification: {e}"
                        );
                    }
                    #[cfg(feature = "tensor-meta")]
                    crate::analytics::attach_tensor(buf, &result.probabilities);
                }
                #[cfg(feature = "analytics")]
                Some((r, _)) if r.detection.is_some() => {
                    let od = r.detection.expect("matched");
                    if let Err(e) = crate::analytics::attach_to_detection(buf, od, result, labels) {
                        gst::warning!(
                            CAT,
                            imp = self,
                            "cannot add the classification of detection {od}: {e}"
                        );
                    }
                }
                Some((r, _)) => {
                    by_meta.insert(r.index, fields.clone());
                }
            }
            if post {
                let mut s = fields;
                s.set_name(RESULT_MESSAGE);
                if let Some((r, _)) = region {
                    let (x, y, w, h) = r.rect;
                    s.set("x", x);
                    s.set("y", y);
                    s.set("width", w);
                    s.set("height", h);
                }
                messages.push(s);
            }
        }
        if !by_meta.is_empty() {
            for (i, mut m) in buf
                .iter_meta_mut::<gst_video::VideoRegionOfInterestMeta>()
                .enumerate()
            {
                if let Some(fields) = by_meta.remove(&i) {
                    m.add_param(fields);
                }
            }
        }
        gst::trace!(CAT, imp = self, "frame {frame_no}: {results:?}");
        self.post_events(&mut state.outbox, events, post);
        if post {
            let labels = &state.runtime.manifest().labels;
            let audits: Vec<gst::Structure> = events
                .audits
                .iter()
                .map(|a| audit_message(a, labels))
                .collect();
            for s in audits {
                self.post_bounded(&mut state.outbox, s);
            }
        }
        if post {
            let latency_us = started.elapsed().as_micros() as u64;
            for mut s in messages {
                s.set("latency-us", latency_us);
                s.set("inference-us", inference_us);
                s.set("pts", pts.map_or(u64::MAX, |p| p.nseconds()));
                s.set("frame", frame_no);
                self.post_bounded(&mut state.outbox, s);
            }
        }
    }

    /// Post what happened in a frame besides its results: warnings and errors on the bus,
    /// and (with `post-messages`) a `cachenet-swap` message per swap.
    pub(super) fn post_events(&self, outbox: &mut Outbox, events: &FrameEvents, post: bool) {
        for w in &events.warnings {
            gst::element_imp_warning!(self, gst::ResourceError::Read, ("{}", w));
        }
        for e in &events.errors {
            // A settings error for the application; frames keep flowing with local results.
            gst::element_imp_error!(self, gst::ResourceError::NotAuthorized, ("{}", e));
        }
        if events.recovered {
            gst::info!(CAT, imp = self, "edge server answers again");
        }
        for r in &events.returns {
            gst::info!(CAT, imp = self, "{r}");
        }
        for p in &events.plans {
            gst::info!(CAT, imp = self, "plan of {p}");
        }
        for m in &events.thresholds {
            gst::info!(
                CAT,
                imp = self,
                "submodel {}: threshold {:.4} -> {:.4} nats (target-agreement)",
                m.submodel,
                m.from,
                m.to
            );
        }
        if post {
            for e in &events.swaps {
                self.post_bounded(outbox, swap_message(e));
            }
        }
    }

    /// Post an element message unless `max-pending-messages` of ours wait unread on the bus.
    pub(super) fn post_bounded(&self, outbox: &mut Outbox, s: gst::Structure) {
        let msg = gst::message::Element::builder(s).src(&*self.obj()).build();
        match outbox.admit(msg) {
            Admit::Post(m) => {
                let _ = self.obj().post_message(m);
            }
            Admit::Dropped { first } => {
                self.messages_dropped.fetch_add(1, Ordering::Relaxed);
                if first {
                    gst::element_imp_warning!(
                        self,
                        gst::ResourceError::NoSpaceLeft,
                        (
                            "{} messages of this element wait unread on the bus: dropping results \
                             messages until the application reads it (max-pending-messages)",
                            outbox.waiting()
                        )
                    );
                }
            }
        }
    }
}
