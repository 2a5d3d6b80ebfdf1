//! `cache-dir`: downloaded submodels persisted by sha256 (and the edge's manifest), reused after
//! a restart without the network. A corrupt file is ignored, removed and fetched again.

use std::path::{Path, PathBuf};

use cachenet_core::manifest::Manifest;
use cachenet_core::sha256_hex;

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// Write to a temporary name unique to this process and call, then rename: two elements (or a
/// restarted one and a late worker) never write the same temporary file.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("{}-{n}.part", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

impl Store {
    /// `cache_dir/<set>`, created if missing. A folder that cannot be written (read-only, full,
    /// not a folder) still serves what it holds: the second value says why downloads will not
    /// be kept.
    pub fn open(cache_dir: &Path, set: &str) -> (Store, Option<String>) {
        let dir = cache_dir.join(set);
        let probe = dir.join(".write-test");
        let problem = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&probe, b"ok"))
            .err();
        let _ = std::fs::remove_file(probe);
        let why = problem.map(|e| {
            format!(
                "cache-dir {} cannot be written ({e}): submodels are fetched but not kept",
                cache_dir.display()
            )
        });
        (Store { dir }, why)
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{}.onnx", sha256.to_ascii_lowercase()))
    }

    /// Whether a file for `sha256` is stored (not checked: [`Store::load`] checks).
    pub fn has(&self, sha256: &str) -> bool {
        self.path(sha256).is_file()
    }

    /// Bytes free for this store on its file system (None when the system does not say).
    pub fn available(&self) -> Option<u64> {
        fs4::available_space(&self.dir).ok()
    }

    /// The stored bytes of `sha256`, if present and intact.
    pub fn load(&self, sha256: &str) -> Option<Vec<u8>> {
        let path = self.path(sha256);
        let bytes = std::fs::read(&path).ok()?;
        if sha256_hex(&bytes).eq_ignore_ascii_case(sha256) {
            Some(bytes)
        } else {
            let _ = std::fs::remove_file(&path);
            None
        }
    }

    pub fn save(&self, sha256: &str, bytes: &[u8]) -> Result<(), String> {
        write_atomic(&self.path(sha256), bytes).map_err(|e| format!("cache-dir: {e}"))
    }

    /// Mark `sha256` as recently used (its mtime orders the warm start).
    pub fn touch(&self, sha256: &str) {
        if let Ok(f) = std::fs::File::options()
            .append(true)
            .open(self.path(sha256))
        {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
    }

    /// Stored submodel hashes, most recently used first.
    pub fn recent(&self) -> Vec<String> {
        let mut v: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let sha = name.strip_suffix(".onnx")?.to_string();
                Some((e.metadata().ok()?.modified().ok()?, sha))
            })
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.0));
        v.into_iter().map(|(_, s)| s).collect()
    }

    pub fn save_manifest(&self, json: &[u8]) -> Result<(), String> {
        write_atomic(&self.dir.join("manifest.json"), json).map_err(|e| format!("cache-dir: {e}"))
    }

    /// The cached manifest and its bytes (for a `manifest-sha256` pin).
    pub fn load_manifest(&self) -> Option<(Manifest, Vec<u8>)> {
        let bytes = std::fs::read(self.dir.join("manifest.json")).ok()?;
        Manifest::from_json(&bytes).ok().map(|m| (m, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_files_are_dropped() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), "set").0;
        let sha = sha256_hex(b"model");
        s.save(&sha, b"model").unwrap();
        assert_eq!(s.load(&sha).unwrap(), b"model");
        assert_eq!(s.recent(), vec![sha.clone()]);
        std::fs::write(d.path().join("set").join(format!("{sha}.onnx")), b"junk").unwrap();
        assert!(s.load(&sha).is_none());
        assert!(s.recent().is_empty(), "the corrupt file is removed");
    }

    #[test]
    fn unwritable_dir_says_why_and_keeps_nothing() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        // Under a regular file: not writable, whoever runs it (root included).
        let (s, why) = Store::open(&file, "set");
        let why = why.unwrap();
        assert!(
            why.starts_with("cache-dir") && why.contains("not kept"),
            "{why}"
        );
        let sha = sha256_hex(b"model");
        assert!(s.save(&sha, b"model").is_err());
        assert!(s.load(&sha).is_none() && s.recent().is_empty());
        assert!(Store::open(d.path(), "set").1.is_none());
    }
}
