//! `cachenetclassify` implementation: the element's vfuncs. Its properties are in
//! [`super::settings`], what `start()` builds in [`super::startup`], the per-frame work in
//! [`super::process`] and [`super::publish`], the latency it reports in [`super::latency`]; the
//! CacheNet logic itself lives in [`crate::runtime`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;

use super::latency::LatencyMeter;
use super::settings::{self, Settings};
use super::{Regions, publish};
use crate::frame::{FORMATS, InputScalers};
use crate::objects::{Associator, Filter};
use crate::outbox::Outbox;
use crate::runtime::{Runtime, Stats};
use crate::worker::Generation;

pub(super) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "cachenetclassify",
        gst::DebugColorFlags::empty(),
        Some("CacheNet classifier"),
    )
});

pub(super) struct State {
    pub(super) runtime: Runtime,
    /// The negotiated video and the whole frame's scalers to the set's inputs.
    pub(super) video: Option<(gst_video::VideoInfo, InputScalers)>,
    pub(super) frame: u64,
    pub(super) regions: Regions,
    pub(super) filter: Filter,
    pub(super) max_offloads: u32,
    pub(super) unique_id: u32,
    pub(super) skip_late: bool,
    /// Scalers of region crops, by crop size (regions=roi).
    pub(super) scalers: HashMap<(usize, usize), InputScalers>,
    pub(super) associator: Associator,
    pub(super) latency: LatencyMeter,
    pub(super) outbox: Outbox,
}

#[derive(Default)]
pub struct CacheNetClassify {
    pub(super) settings: Mutex<Settings>,
    pub(super) state: Mutex<Option<State>>,
    /// Snapshot for the `stats` property, readable without waiting on the streaming thread.
    pub(super) stats: Mutex<Stats>,
    /// Flush generation: a flush-start moves it, which cancels waits and background work.
    pub(super) generation: Generation,
    /// Running time up to which buffers are late (from downstream QoS events).
    pub(super) qos_earliest: Mutex<Option<gst::ClockTime>>,
    /// The latency the element adds, in ns (answered to latency queries).
    pub(super) latency_ns: AtomicU64,
    /// Messages not posted because `max-pending-messages` were waiting on the bus.
    pub(super) messages_dropped: AtomicU64,
}

#[glib::object_subclass]
impl ObjectSubclass for CacheNetClassify {
    const NAME: &'static str = "GstCacheNetClassify";
    type Type = super::CacheNetClassify;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for CacheNetClassify {
    fn properties() -> &'static [glib::ParamSpec] {
        settings::properties()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        if !self.settings.lock().unwrap().set(pspec.name(), value) {
            gst::warning!(CAT, imp = self, "unknown property {}", pspec.name());
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "swaps-pending" => (self.generation.swaps_pending() as u32).to_value(),
            "stats" => self.stats_structure().to_value(),
            name => self
                .settings
                .lock()
                .unwrap()
                .get(name)
                .expect("only registered, readable properties are asked for"),
        }
    }
}

impl GstObjectImpl for CacheNetClassify {}

impl ElementImpl for CacheNetClassify {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "CacheNet classifier",
                "Filter/Analyzer/Video",
                "Classifies frames with a cached specialised ONNX submodel and offloads \
                 uncertain frames to a CacheNet edge server, which also sends the submodel to cache",
                "CacheNet developers <cachenet@example.org>",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_video::VideoCapsBuilder::new()
                .format_list(FORMATS)
                .build();
            vec![
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("valid template"),
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("valid template"),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        // Before the pads are deactivated (which waits for the streaming thread): a sync wait
        // for the edge and the background work in flight are cancelled at once.
        if transition == gst::StateChange::PausedToReady {
            self.generation.bump();
        }
        self.parent_change_state(transition)
    }
}

impl BaseTransformImpl for CacheNetClassify {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        let state = self.build_state(&settings)?;
        self.messages_dropped.store(0, Ordering::Relaxed);
        *self.stats.lock().unwrap() = state.runtime.stats();
        *self.state.lock().unwrap() = Some(state);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock().unwrap() = None;
        *self.qos_earliest.lock().unwrap() = None;
        Ok(())
    }

    fn query(&self, direction: gst::PadDirection, query: &mut gst::QueryRef) -> bool {
        let ok = BaseTransformImplExt::parent_query(self, direction, query);
        if ok
            && direction == gst::PadDirection::Src
            && let gst::QueryViewMut::Latency(q) = query.view_mut()
        {
            // The time one frame spends in this element (measured), added to upstream's.
            let (live, min, max) = q.result();
            let ours = gst::ClockTime::from_nseconds(self.latency_ns.load(Ordering::Relaxed));
            gst::debug!(CAT, imp = self, "adding {ours} of latency");
            q.set(live, min + ours, max.map(|m| m + ours));
        }
        ok
    }

    fn src_event(&self, event: gst::Event) -> bool {
        if let gst::EventView::Qos(q) = event.view() {
            // Buffers whose running time is not after timestamp + diff arrive late downstream.
            let (_, _, diff, timestamp) = q.get();
            *self.qos_earliest.lock().unwrap() = match timestamp {
                Some(t) if diff > 0 => Some(t + gst::ClockTime::from_nseconds(diff as u64)),
                _ => None,
            };
        }
        self.parent_src_event(event)
    }

    fn set_caps(&self, incaps: &gst::Caps, _outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let info = gst_video::VideoInfo::from_caps(incaps)
            .map_err(|_| gst::loggable_error!(CAT, "cannot parse caps {incaps}"))?;
        let mut guard = self.state.lock().unwrap();
        let state = guard
            .as_mut()
            .ok_or_else(|| gst::loggable_error!(CAT, "caps before start"))?;
        let pre = InputScalers::new(
            &info,
            info.width() as usize,
            info.height() as usize,
            &state.runtime.manifest().inputs(),
        )
        .map_err(|e| gst::loggable_error!(CAT, "{e}"))?;
        state.video = Some((info, pre));
        // The region scalers were built for the previous caps (format, colorimetry).
        state.scalers.clear();
        Ok(())
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let started = Instant::now();
        let post = self.settings.lock().unwrap().post_messages;
        // The state leaves the lock while the frame is processed (a sync miss waits for the
        // edge): no lock is held across that wait. Only this streaming thread uses the state
        // between start() and stop().
        let mut state = self
            .state
            .lock()
            .unwrap()
            .take()
            .ok_or(gst::FlowError::Flushing)?;
        let late = self.is_late(buf);
        let classified = self.classify(&mut state, buf, late);
        *self.stats.lock().unwrap() = state.runtime.stats();
        let events = state.runtime.end_frame();
        let out = match classified {
            Ok(results) => {
                self.publish(&mut state, buf, &results, &events, post, started);
                Ok(gst::FlowSuccess::Ok)
            }
            Err(e) => {
                self.post_events(&mut state.outbox, &events, post);
                Err(e)
            }
        };
        if state.latency.record(started.elapsed(), &self.latency_ns) {
            let _ = self
                .obj()
                .post_message(gst::message::Latency::builder().src(&*self.obj()).build());
        }
        *self.state.lock().unwrap() = Some(state);
        out
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        match event.view() {
            // The run's counters, for applications that read the bus only (gst-launch -m).
            gst::EventView::Eos(_) if self.settings.lock().unwrap().post_messages => {
                let s = self.stats_structure();
                let _ = self
                    .obj()
                    .post_message(gst::message::Element::builder(s).src(&*self.obj()).build());
            }
            // Out of band: cancels a sync wait and background work in flight.
            gst::EventView::FlushStart(_) => self.generation.bump(),
            // Serialized, on the streaming thread: nothing asked before the flush is pending.
            gst::EventView::FlushStop(_) => {
                *self.qos_earliest.lock().unwrap() = None;
                if let Some(st) = self.state.lock().unwrap().as_mut() {
                    st.runtime.flushed();
                    st.associator.reset();
                }
            }
            _ => {}
        }
        self.parent_sink_event(event)
    }
}

impl CacheNetClassify {
    /// The `stats` property's structure (`cachenet-stats`), also posted at end of stream.
    fn stats_structure(&self) -> gst::Structure {
        let mut st = publish::stats_structure(&self.stats.lock().unwrap());
        st.set(
            "messages-dropped",
            self.messages_dropped.load(Ordering::Relaxed),
        );
        st
    }
}
