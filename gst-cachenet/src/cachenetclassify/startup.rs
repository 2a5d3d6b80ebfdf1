//! What `start()` builds from the settings: the model set (local, from the edge or from
//! `cache-dir`, pinned by `manifest-sha256`), the edge client, the submodels to start with and
//! the runtime. Bad settings fail here with a message naming the setting.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use cachenet_core::engine::Engine;
use cachenet_core::manifest::Manifest;
use cachenet_core::modelset::{load_local_full, load_local_submodel, load_submodel};
use gst::subclass::prelude::*;

use super::Mode;
use super::imp::{CAT, CacheNetClassify, State};
use super::latency::LatencyMeter;
use super::settings::Settings;
use crate::audit::AuditConfig;
use crate::edge::EdgeClient;
use crate::objects::{Associator, Filter};
use crate::outbox::Outbox;
use crate::runtime::{self, Runtime};
use crate::store::Store;

fn settings_error(msg: impl std::fmt::Display) -> gst::ErrorMessage {
    gst::error_msg!(gst::ResourceError::Settings, ("{}", msg))
}

/// With a `manifest-sha256` pin, manifest bytes from `source` must hash to it.
pub(super) fn check_pin(pin: Option<&str>, bytes: &[u8], source: &str) -> Result<(), String> {
    let Some(pin) = pin else { return Ok(()) };
    let got = cachenet_core::sha256_hex(bytes);
    if got.eq_ignore_ascii_case(pin) {
        Ok(())
    } else {
        Err(format!(
            "{source}: the manifest's sha256 is {got}, manifest-sha256 pins {pin}: refusing a \
             model set that is not the pinned one"
        ))
    }
}

impl CacheNetClassify {
    /// The manifest from the edge (saved to cache-dir), else the one cached in cache-dir;
    /// either must match the `manifest-sha256` pin when one is set.
    fn edge_manifest(
        &self,
        edge: &EdgeClient,
        store: Option<&Store>,
        pin: Option<&str>,
        set: &str,
    ) -> Result<Manifest, gst::ErrorMessage> {
        let err = match edge.manifest() {
            Ok((m, bytes, from)) => match check_pin(pin, &bytes, "edge-url") {
                Ok(()) => {
                    edge.set_reference(&cachenet_core::sha256_hex(&bytes), Some(&from));
                    if let Some(Err(e)) = store.map(|st| st.save_manifest(&bytes)) {
                        gst::warning!(CAT, imp = self, "{e}");
                    }
                    return Ok(m);
                }
                Err(e) => e,
            },
            Err(e) => e.into(),
        };
        match store
            .and_then(Store::load_manifest)
            .filter(|(_, bytes)| check_pin(pin, bytes, "cache-dir").is_ok())
        {
            Some((m, bytes)) => {
                edge.set_reference(&cachenet_core::sha256_hex(&bytes), None);
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::Read,
                    ("edge-url: {err}; using the manifest cached in cache-dir")
                );
                Ok(m)
            }
            None => Err(settings_error(format!(
                "edge-url: cannot get the manifest of model set {set:?}: {err}"
            ))),
        }
    }

    pub(super) fn build_state(&self, s: &Settings) -> Result<State, gst::ErrorMessage> {
        let timeout = Duration::from_millis(s.timeout_ms as u64);
        let pin = s.manifest_sha256.as_deref();
        if let Some(p) = pin
            && (p.len() != 64 || !p.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(settings_error(format!(
                "manifest-sha256 {p:?} is not a sha256 (64 hex digits)"
            )));
        }
        // The local model set: its manifest now, and later only the models this mode runs (the
        // full model in device mode, the first submodel in cachenet and submodel-only modes when
        // cache-dir has none): a camera needs no more of the set than that, on disk or in memory.
        let local = match &s.model_dir {
            Some(d) => {
                let (manifest, bytes) = Manifest::load_with_bytes(Path::new(d))
                    .map_err(|e| settings_error(format!("model-dir: {e}")))?;
                check_pin(pin, &bytes, "model-dir").map_err(settings_error)?;
                Some((Path::new(d), manifest, cachenet_core::sha256_hex(&bytes)))
            }
            None => None,
        };
        if local.is_none() && s.edge_url.is_none() {
            return Err(settings_error(
                "set model-dir (a local model set) or edge-url (an edge server), or both",
            ));
        }
        let set = match (&s.model_set, &local) {
            (Some(n), Some((_, l, _))) if *n != l.name => {
                return Err(settings_error(format!(
                    "model-set {n:?} does not match the set in model-dir ({:?})",
                    l.name
                )));
            }
            (Some(n), _) => n.clone(),
            (None, Some((_, l, _))) => l.name.clone(),
            (None, None) => {
                return Err(settings_error(
                    "model-set: name the model set to ask the edge for",
                ));
            }
        };
        let edge = match &s.edge_url {
            Some(u) => {
                let ca = s.ca_file.as_deref().map(Path::new);
                let camera = s.camera_id.clone().unwrap_or_else(|| {
                    format!(
                        "{}/{}",
                        crate::edge::host_name(),
                        gst::prelude::GstObjectExt::name(&*self.obj())
                    )
                });
                let client = EdgeClient::new(u, &set, s.token.clone(), timeout, ca, &camera)
                    .map_err(settings_error)?;
                if let Some(w) = client.clear_text_warning() {
                    gst::element_imp_warning!(self, gst::ResourceError::Settings, ("{}", w));
                }
                Some(client)
            }
            None => None,
        };
        let store = s.cache_dir.as_ref().map(|d| {
            let (store, why) = Store::open(Path::new(d), &set);
            if let Some(why) = why {
                gst::element_imp_warning!(self, gst::ResourceError::OpenWrite, ("{}", why));
            }
            store
        });
        let manifest = match (&local, &edge) {
            (Some((_, l, sha)), edge) => {
                if let Some(e) = edge {
                    e.set_reference(sha, None);
                }
                l.clone()
            }
            (None, Some(e)) => self.edge_manifest(e, store.as_ref(), pin, &set)?,
            (None, None) => unreachable!("checked above"),
        };
        // Warm start: submodels persisted in cache-dir (most recent first), else submodel 0
        // of the local model set.
        // Only the modes that run submodels load any (device and edge modes never run one).
        let runs_submodels = matches!(s.mode, Mode::CacheNet | Mode::SubmodelOnly);
        let engine = Engine {
            backend: s.backend.into(),
            provider: s.execution_provider.into(),
            trt_cache_dir: s.trt_cache_dir.as_ref().map(PathBuf::from),
            library: s.onnxruntime_library.as_ref().map(PathBuf::from),
            threads: 1,
        };
        let cache_size = s.cache_size.max(1) as usize;
        let mut initial = Vec::new();
        if runs_submodels && let Some(st) = &store {
            for sha in st.recent() {
                if initial.len() == cache_size {
                    break;
                }
                let Some(spec) = manifest
                    .submodels
                    .iter()
                    .find(|m| m.sha256.eq_ignore_ascii_case(&sha))
                else {
                    continue;
                };
                if let Some(bytes) = st.load(&sha) {
                    match load_submodel(&manifest, spec.id, &spec.file, &bytes, &engine) {
                        Ok(m) => initial.push((spec.id, m)),
                        Err(e) => gst::warning!(CAT, imp = self, "cache-dir: ignoring {sha}: {e}"),
                    }
                }
            }
        }
        if runs_submodels
            && initial.is_empty()
            && let Some((dir, m, _)) = &local
            && let Some(spec) = m.submodels.first()
        {
            let model = load_local_submodel(dir, m, spec.id, &engine)
                .map_err(|e| settings_error(format!("model-dir: {e}")))?;
            initial.push((spec.id, model));
        }
        let threshold = if s.threshold >= 0.0 {
            s.threshold
        } else {
            manifest.threshold
        };
        let config = runtime::Config {
            mode: s.mode,
            offload: s.offload,
            threshold,
            cache_size,
            keep_compiled: s.keep_compiled,
            timeout,
            interval: s.interval.max(1),
            track_timeout: s.track_timeout.max(1) as u64,
            prefetch: s.prefetch,
            engine,
            audit: AuditConfig {
                interval: s.audit_interval,
                seed: s.audit_seed,
                target: (s.target_agreement >= 0.0).then_some(s.target_agreement),
            },
        };
        let full = match (&local, s.mode) {
            (Some((dir, m, _)), Mode::Device) => Some(
                load_local_full(dir, m, &config.engine)
                    .map_err(|e| settings_error(format!("model-dir: {e}")))?,
            ),
            _ => None,
        };
        let mut runtime = Runtime::new(
            manifest,
            config,
            full,
            initial,
            edge,
            store,
            self.generation.clone(),
        )
        .map_err(settings_error)?;
        gst::info!(
            CAT,
            imp = self,
            "model set {set}: threshold {threshold} nats, cache-size {cache_size}, cached {:?}",
            runtime.cached()
        );
        // First latency estimate: one model run (a sync miss may add up to timeout-ms more;
        // the measured processing times take over once frames flow).
        let first = runtime.warm_up();
        self.latency_ns
            .store(first.as_nanos() as u64, Ordering::Relaxed);
        Ok(State {
            runtime,
            video: None,
            frame: 0,
            regions: s.regions,
            filter: Filter::new(s.roi_types.as_deref(), s.min_size),
            max_offloads: s.max_offloads,
            unique_id: s.unique_id,
            skip_late: s.skip_late,
            scalers: HashMap::new(),
            associator: Associator::new(s.track_timeout.max(1) as u64),
            outbox: Outbox::new(s.max_pending_messages as usize),
            latency: LatencyMeter::default(),
        })
    }
}
