//! The model-set format: a directory holding `manifest.json` and ONNX files.
//!
//! ```json
//! {
//!   "schema_version": 1,
//!   "name": "fashion-mnist", "version": "1.0.0",
//!   "labels": ["T-shirt/top", "..."],
//!   "input": {"width": 28, "height": 28, "channels": 1, "color": "gray", "layout": "NCHW",
//!             "mean": [0.286], "std": [0.353]},
//!   "full_model": {"file": "full.onnx", "sha256": "...", "size": 123},
//!   "selector": {"file": "selector.onnx", "sha256": "...", "size": 45,
//!                "k": 4, "sigma": 0.658, "tau": 0.3, "gamma": 0.3},
//!   "submodels": [{"id": 0, "file": "submodel-0.onnx", "sha256": "...", "size": 67}],
//!   "threshold": 0.3
//! }
//! ```
//! Classifier models (full and submodels) take `1xCxHxW` f32 and output `1xN` logits, N the
//! number of labels. The selector outputs the 2-D point `1x2`; its `input` says what it takes:
//! `"image"` (the default, the paper's S-InfoVAE encoder: the same input as the classifiers) or
//! `"probabilities"` (the class-consistent selector: the full model's softmax as `1xNx1x1`).
//!
//! Schema version 2 lets the models of one set take different inputs (a teacher at 224x224, its
//! specialists at 112x112): `full_model` and each submodel may carry an `input` object of their
//! own, and the selector's `input` may be such an object (an image selector at its own size).
//! The top-level `input` is the default of every model that has none; version-1 manifests are
//! read as before, and a newer version than this build reads is refused with a clear error.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{CoreError, Result, sha256_hex};

/// The newest manifest schema version this build reads (it reads 1 and 2).
pub const SCHEMA_VERSION: u32 = 2;
/// File name of the manifest inside a model-set directory.
pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    Gray,
    Rgb,
}

impl Color {
    pub fn channels(self) -> usize {
        match self {
            Color::Gray => 1,
            Color::Rgb => 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub color: Color,
    pub layout: String,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl InputSpec {
    /// Tensor shape `[1, C, H, W]`.
    pub fn shape(&self) -> [usize; 4] {
        [1, self.channels, self.height, self.width]
    }
    /// Number of u8 pixels values (= f32 tensor elements) of one frame.
    pub fn len(&self) -> usize {
        self.width * self.height * self.channels
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    pub file: String,
    pub sha256: String,
    pub size: u64,
}

/// The full model's entry: its file and, in schema version 2, its own input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullModelSpec {
    pub file: String,
    pub sha256: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputSpec>,
}

impl FullModelSpec {
    pub fn model_file(&self) -> ModelFile {
        ModelFile {
            file: self.file.clone(),
            sha256: self.sha256.clone(),
            size: self.size,
        }
    }
}

/// What the selector network takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SelectorInput {
    /// The frame, normalised like the classifiers' input (the paper's S-InfoVAE encoder).
    #[default]
    Image,
    /// The full model's class probabilities, `1xNx1x1`.
    Probabilities,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorSpec {
    pub file: String,
    pub sha256: String,
    pub size: u64,
    /// Number of submodels (sectors).
    pub k: usize,
    /// Decay of the soft codes (eq 13).
    pub sigma: f64,
    /// Partition threshold tau.
    pub tau: f64,
    /// Overlap ratio gamma.
    pub gamma: f64,
    /// What the selector takes (absent: the image at the set's input; an object: the image
    /// at that input, schema version 2).
    #[serde(default)]
    pub input: SelectorTakes,
}

/// The selector's `input`: a kind, or (schema version 2) the image input of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, try_from = "serde_json::Value")]
pub enum SelectorTakes {
    Kind(SelectorInput),
    Image(InputSpec),
}

impl TryFrom<serde_json::Value> for SelectorTakes {
    type Error = serde_json::Error;

    fn try_from(v: serde_json::Value) -> std::result::Result<Self, Self::Error> {
        if v.is_object() {
            serde_json::from_value(v).map(SelectorTakes::Image)
        } else {
            serde_json::from_value(v).map(SelectorTakes::Kind)
        }
    }
}

impl Default for SelectorTakes {
    fn default() -> Self {
        SelectorTakes::Kind(SelectorInput::Image)
    }
}

impl SelectorSpec {
    pub fn model_file(&self) -> ModelFile {
        ModelFile {
            file: self.file.clone(),
            sha256: self.sha256.clone(),
            size: self.size,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmodelSpec {
    pub id: u32,
    pub file: String,
    pub sha256: String,
    pub size: u64,
    /// Its own input (schema version 2); absent: the set's input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputSpec>,
}

impl SubmodelSpec {
    pub fn model_file(&self) -> ModelFile {
        ModelFile {
            file: self.file.clone(),
            sha256: self.sha256.clone(),
            size: self.size,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema_version: u32,
    pub name: String,
    pub version: String,
    pub labels: Vec<String>,
    /// The default input of every model without one of its own.
    pub input: InputSpec,
    pub full_model: FullModelSpec,
    pub selector: SelectorSpec,
    pub submodels: Vec<SubmodelSpec>,
    /// Default entropy threshold T in nats: a hit iff H < T.
    pub threshold: f32,
}

/// A valid model-set or submodel name: ASCII letters, digits, `-`, `_`, `.`, not starting
/// with `.` (so never a path, never `..`).
pub fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl Manifest {
    /// Parse and validate `dir/manifest.json` (structure only; files are checked by
    /// [`read_verified`]).
    pub fn load(dir: &Path) -> Result<Manifest> {
        Manifest::load_with_bytes(dir).map(|(m, _)| m)
    }

    /// [`Manifest::load`], with the file's bytes (served verbatim, so that devices can pin
    /// their sha256).
    pub fn load_with_bytes(dir: &Path) -> Result<(Manifest, Vec<u8>)> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).map_err(|e| CoreError::io(&path, e))?;
        let m =
            Manifest::from_json(&bytes).map_err(|message| CoreError::Manifest { path, message })?;
        Ok((m, bytes))
    }

    /// Parse and validate a manifest received as JSON (from a file, the edge or a cache).
    pub fn from_json(bytes: &[u8]) -> std::result::Result<Manifest, String> {
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Structural checks that need no file access.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.schema_version == 0 || self.schema_version > SCHEMA_VERSION {
            return Err(format!(
                "schema_version {} is not supported (this build reads 1 to {SCHEMA_VERSION}; a \
                 newer CacheNet reads it)",
                self.schema_version
            ));
        }
        if !is_safe_name(&self.name) {
            return Err(format!(
                "name {:?} must be letters, digits, - _ .",
                self.name
            ));
        }
        if self.labels.len() < 2 {
            return Err("labels: at least two classes are needed".into());
        }
        validate_input("input", &self.input)?;
        let own = [
            (
                "full_model.input".to_string(),
                self.full_model.input.as_ref(),
            ),
            (
                "selector.input".to_string(),
                match &self.selector.input {
                    SelectorTakes::Image(i) => Some(i),
                    SelectorTakes::Kind(_) => None,
                },
            ),
        ]
        .into_iter()
        .chain(
            self.submodels
                .iter()
                .map(|m| (format!("submodels[{}].input", m.id), m.input.as_ref())),
        );
        for (field, input) in own {
            let Some(input) = input else { continue };
            if self.schema_version < 2 {
                return Err(format!(
                    "{field}: a model's own input needs schema_version 2 (this manifest says {})",
                    self.schema_version
                ));
            }
            validate_input(&field, input)?;
        }
        let s = &self.selector;
        if s.k == 0 {
            return Err("selector: k must be at least 1".into());
        }
        if s.k != self.submodels.len() {
            return Err(format!(
                "K mismatch: selector.k is {} but {} submodels are listed",
                s.k,
                self.submodels.len()
            ));
        }
        let valid = s.sigma > 0.0 && s.tau > 0.0 && s.tau < 1.0 && s.gamma >= 0.0;
        if !valid {
            return Err("selector: need sigma > 0, 0 < tau < 1, gamma >= 0".into());
        }
        for (i, sm) in self.submodels.iter().enumerate() {
            if sm.id as usize != i {
                return Err(format!(
                    "submodels: entry {i} has id {}; ids must be 0..K in order",
                    sm.id
                ));
            }
        }
        let valid = self.threshold > 0.0 && self.threshold.is_finite();
        if !valid {
            return Err("threshold must be a positive number of nats".into());
        }
        for f in self.files() {
            if !is_safe_name(&f.file) {
                return Err(format!("file name {:?} must be a plain file name", f.file));
            }
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("{}: sha256 must be 64 hex digits", f.file));
            }
        }
        Ok(())
    }

    /// Every model file the manifest lists: full, selector, submodels.
    pub fn files(&self) -> Vec<ModelFile> {
        let mut v = vec![self.full_model.model_file(), self.selector.model_file()];
        v.extend(self.submodels.iter().map(SubmodelSpec::model_file));
        v
    }

    pub fn submodel(&self, id: u32) -> Option<&SubmodelSpec> {
        self.submodels.get(id as usize)
    }

    /// The full model's input.
    pub fn full_input(&self) -> &InputSpec {
        self.full_model.input.as_ref().unwrap_or(&self.input)
    }

    /// Submodel `id`'s input (the set's input for an unknown id).
    pub fn submodel_input(&self, id: u32) -> &InputSpec {
        self.submodel(id)
            .and_then(|m| m.input.as_ref())
            .unwrap_or(&self.input)
    }

    /// The selector's image input, when it takes an image.
    pub fn selector_image_input(&self) -> Option<&InputSpec> {
        match &self.selector.input {
            SelectorTakes::Kind(SelectorInput::Image) => Some(&self.input),
            SelectorTakes::Kind(SelectorInput::Probabilities) => None,
            SelectorTakes::Image(own) => Some(own),
        }
    }

    /// The selector's input tensor shape: its image input, or the full model's probabilities
    /// as `1xNx1x1`.
    pub fn selector_shape(&self) -> [usize; 4] {
        self.selector_image_input()
            .map_or([1, self.labels.len(), 1, 1], InputSpec::shape)
    }

    /// Every distinct input the set's models take (full model first, then the submodels',
    /// then the selector's image input).
    pub fn inputs(&self) -> Vec<&InputSpec> {
        let mut v: Vec<&InputSpec> = vec![self.full_input()];
        let rest = self
            .submodels
            .iter()
            .map(|m| self.submodel_input(m.id))
            .chain(self.selector_image_input());
        for i in rest {
            if !v.contains(&i) {
                v.push(i);
            }
        }
        v
    }
}

/// Checks of one input object; `field` names it in the error.
fn validate_input(field: &str, i: &InputSpec) -> std::result::Result<(), String> {
    if i.width == 0 || i.height == 0 {
        return Err(format!("{field}: width and height must be positive"));
    }
    if i.width > 8192 || i.height > 8192 {
        return Err(format!("{field}: width and height must be at most 8192"));
    }
    if i.channels != i.color.channels() {
        return Err(format!(
            "{field}: color {:?} has {} channel(s), channels says {}",
            i.color,
            i.color.channels(),
            i.channels
        ));
    }
    if i.layout != "NCHW" {
        return Err(format!(
            "{field}: layout {:?} is not supported (NCHW)",
            i.layout
        ));
    }
    if i.mean.len() != i.channels || i.std.len() != i.channels {
        return Err(format!("{field}: mean and std need one value per channel"));
    }
    if !i.std.iter().all(|s| *s > 0.0 && s.is_finite()) || !i.mean.iter().all(|m| m.is_finite()) {
        return Err(format!(
            "{field}: std values must be positive, mean values finite"
        ));
    }
    Ok(())
}

/// Read `dir/file` and check its size and sha256 against the manifest entry.
pub fn read_verified(dir: &Path, entry: &ModelFile) -> Result<Vec<u8>> {
    let path: PathBuf = dir.join(&entry.file);
    let bytes = std::fs::read(&path).map_err(|e| CoreError::io(&path, e))?;
    if bytes.len() as u64 != entry.size {
        return Err(CoreError::Size {
            path,
            expected: entry.size,
            actual: bytes.len() as u64,
        });
    }
    let actual = sha256_hex(&bytes);
    if !actual.eq_ignore_ascii_case(&entry.sha256) {
        return Err(CoreError::Checksum {
            path,
            expected: entry.sha256.clone(),
            actual,
        });
    }
    Ok(bytes)
}
