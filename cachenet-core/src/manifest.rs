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

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{CoreError, Result, sha256_hex};

/// The manifest schema version this build reads.
pub const SCHEMA_VERSION: u32 = 1;
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
    /// What the selector takes (absent: the image).
    #[serde(default)]
    pub input: SelectorInput,
}

impl SelectorSpec {
    /// The selector's input tensor shape for a manifest with `input` and `classes` labels.
    pub fn input_shape(&self, input: &InputSpec, classes: usize) -> [usize; 4] {
        match self.input {
            SelectorInput::Image => input.shape(),
            SelectorInput::Probabilities => [1, classes, 1, 1],
        }
    }

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
    pub input: InputSpec,
    pub full_model: ModelFile,
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
        if self.schema_version != SCHEMA_VERSION {
            return Err(format!(
                "schema_version {} is not supported (this build reads {SCHEMA_VERSION})",
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
        let i = &self.input;
        if i.width == 0 || i.height == 0 {
            return Err("input: width and height must be positive".into());
        }
        if i.channels != i.color.channels() {
            return Err(format!(
                "input: color {:?} has {} channel(s), channels says {}",
                i.color,
                i.color.channels(),
                i.channels
            ));
        }
        if i.layout != "NCHW" {
            return Err(format!(
                "input: layout {:?} is not supported (NCHW)",
                i.layout
            ));
        }
        if i.mean.len() != i.channels || i.std.len() != i.channels {
            return Err("input: mean and std need one value per channel".into());
        }
        if !i.std.iter().all(|s| *s > 0.0) {
            return Err("input: std values must be positive".into());
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
        let mut v = vec![self.full_model.clone(), self.selector.model_file()];
        v.extend(self.submodels.iter().map(SubmodelSpec::model_file));
        v
    }

    pub fn submodel(&self, id: u32) -> Option<&SubmodelSpec> {
        self.submodels.get(id as usize)
    }
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
