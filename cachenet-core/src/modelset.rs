//! A model set loaded from disk: manifest validated, every file verified, every model loaded.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::{Engine, LoadTimings, Model};
use crate::manifest::{Manifest, ModelFile, read_verified};
use crate::maths::Classification;
use crate::selector::{self, Selection};
use crate::{CoreError, Result};

/// One submodel of a loaded set: its ONNX bytes (served to devices) and the loaded model.
#[derive(Debug, Clone)]
pub struct LoadedSubmodel {
    pub id: u32,
    pub sha256: String,
    pub bytes: Arc<[u8]>,
    pub model: Model,
}

/// A fully validated model set.
#[derive(Debug, Clone)]
pub struct ModelSet {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// `manifest.json` as read (its sha256 is what a device pins).
    pub manifest_bytes: Vec<u8>,
    /// None when the full model runs elsewhere ([`ModelSet::load_serving`] without it).
    pub full: Option<Model>,
    pub selector: Model,
    pub submodels: Vec<LoadedSubmodel>,
}

/// Load submodel `id` of `manifest` (its own input, the set's labels) on `engine`.
pub fn load_submodel(
    manifest: &Manifest,
    id: u32,
    name: &str,
    bytes: &[u8],
    engine: &Engine,
) -> Result<Model> {
    load_submodel_timed(manifest, id, name, bytes, engine).map(|(m, _)| m)
}

/// [`load_submodel`], with the time spent parsing and optimising.
pub fn load_submodel_timed(
    manifest: &Manifest,
    id: u32,
    name: &str,
    bytes: &[u8],
    engine: &Engine,
) -> Result<(Model, LoadTimings)> {
    let shape = manifest.submodel_input(id).shape();
    Model::load(name, bytes, shape, manifest.labels.len(), engine)
}

fn load_file(
    dir: &Path,
    entry: &ModelFile,
    shape: [usize; 4],
    output_len: usize,
    engine: &Engine,
) -> Result<Model> {
    let bytes = read_verified(dir, entry)?;
    let name = dir.join(&entry.file).display().to_string();
    Model::load(&name, &bytes, shape, output_len, engine).map(|(m, _)| m)
}

/// Load the full model of the set in `dir` (its size and sha256 checked against the manifest).
pub fn load_local_full(dir: &Path, manifest: &Manifest, engine: &Engine) -> Result<Model> {
    let shape = manifest.full_input().shape();
    load_file(
        dir,
        &manifest.full_model.model_file(),
        shape,
        manifest.labels.len(),
        engine,
    )
}

/// Load submodel `id` of the set in `dir` (checked like [`load_local_full`]). A device loads
/// only the models its mode runs.
pub fn load_local_submodel(
    dir: &Path,
    manifest: &Manifest,
    id: u32,
    engine: &Engine,
) -> Result<Model> {
    let spec = manifest.submodel(id).ok_or_else(|| CoreError::Manifest {
        path: dir.join(crate::manifest::MANIFEST_FILE),
        message: format!("no submodel {id}"),
    })?;
    let shape = manifest.submodel_input(id).shape();
    load_file(
        dir,
        &spec.model_file(),
        shape,
        manifest.labels.len(),
        engine,
    )
}

impl ModelSet {
    /// Load `dir`: manifest, sha256 and size of every file, ONNX shapes (the default engine).
    pub fn load(dir: &Path) -> Result<ModelSet> {
        Self::load_on(dir, &Engine::default())
    }

    /// [`ModelSet::load`] on `engine` (the full model and the submodels; the selector, a few
    /// multiply-adds, on the default engine).
    pub fn load_on(dir: &Path, engine: &Engine) -> Result<ModelSet> {
        Self::load_serving(dir, engine, true)
    }

    /// [`ModelSet::load_on`], with the full model (`with_full`) or without it (it runs on an
    /// inference server; its file is still verified against the manifest when present).
    pub fn load_serving(dir: &Path, engine: &Engine, with_full: bool) -> Result<ModelSet> {
        let (manifest, manifest_bytes) = Manifest::load_with_bytes(dir)?;
        let classes = manifest.labels.len();
        let full = if with_full {
            Some(load_file(
                dir,
                &manifest.full_model.model_file(),
                manifest.full_input().shape(),
                classes,
                engine,
            )?)
        } else {
            None
        };
        let selector = load_file(
            dir,
            &manifest.selector.model_file(),
            manifest.selector_shape(),
            2,
            &Engine::default(),
        )?;
        let mut submodels = Vec::with_capacity(manifest.submodels.len());
        for spec in &manifest.submodels {
            let bytes = read_verified(dir, &spec.model_file())?;
            let name = dir.join(&spec.file).display().to_string();
            let model = load_submodel(&manifest, spec.id, &name, &bytes, engine)?;
            submodels.push(LoadedSubmodel {
                id: spec.id,
                sha256: spec.sha256.to_ascii_lowercase(),
                bytes: bytes.into(),
                model,
            });
        }
        Ok(ModelSet {
            dir: dir.to_path_buf(),
            manifest,
            manifest_bytes,
            full,
            selector,
            submodels,
        })
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// The full model's classification of a normalised input tensor at its input.
    pub fn classify_full(&self, input: &[f32]) -> Result<Classification> {
        let full = self.full.as_ref().ok_or_else(|| CoreError::Inference {
            name: self.manifest.full_model.file.clone(),
            message: "this set was loaded without its full model".into(),
        })?;
        Ok(Classification::from_logits(&full.run(input)?))
    }

    /// The selector's choice of submodel for a frame whose full-model classification is
    /// `full`. `image`: the frame as the selector's normalised input tensor (at
    /// [`Manifest::selector_image_input`]); unused by the class-consistent selector, which
    /// takes the full model's probabilities.
    pub fn select(&self, image: &[f32], full: &Classification) -> Result<Selection> {
        let z = match self.manifest.selector_image_input() {
            Some(_) => self.selector.run(image)?,
            None => self.selector.run(&full.probabilities)?,
        };
        if z.len() != 2 || !z.iter().all(|v| v.is_finite()) {
            return Err(CoreError::Inference {
                name: self.selector.name().into(),
                message: format!("selector output {z:?} is not a finite 2-D point"),
            });
        }
        let s = &self.manifest.selector;
        Ok(selector::select([z[0], z[1]], s.k, s.sigma))
    }

    pub fn submodel(&self, id: u32) -> Option<&LoadedSubmodel> {
        self.submodels.get(id as usize)
    }
}
