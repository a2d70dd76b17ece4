//! The sidecar store: a zarr v3 store next to the source (`<source>.annql-index`) holding a CSC
//! copy of each indexed matrix at the matrix's own path (`X`, `layers/counts`), each with the
//! record of what it was built from ([`Provenance`]). The source is never written; the sidecar is
//! written into a temporary sibling and renamed into place, so a killed build leaves no sidecar
//! that would be used. A lock file beside it keeps two builds from racing.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use annql_store::{AnnDataStore, Encoding, ReadStats, StorageOptions};

use crate::error::{Error, Result};
use crate::provenance::{Provenance, RECORD_ATTR};

/// The extension a sidecar's name adds to its source's.
pub const SIDECAR_SUFFIX: &str = ".annql-index";

/// Where the index of a local source lives by default: `<source>.annql-index` beside it. None
/// for a URL (a remote source names its index explicitly).
pub fn default_location(source: &str) -> Option<PathBuf> {
    if annql_store::object::is_remote(source) {
        return None;
    }
    let trimmed = source.trim_end_matches('/');
    let trimmed = if trimmed.is_empty() { source } else { trimmed };
    Some(PathBuf::from(format!("{trimmed}{SIDECAR_SUFFIX}")))
}

/// An opened sidecar.
#[derive(Debug, Clone)]
pub struct GeneIndex {
    location: String,
    store: Arc<AnnDataStore>,
}

/// One CSC copy in a sidecar, with its record.
#[derive(Debug, Clone)]
pub struct IndexedCopy {
    /// The sidecar's store.
    pub store: Arc<AnnDataStore>,
    /// Where the sidecar is (path or URL).
    pub location: String,
    /// The copy's path in the sidecar (the matrix's path in the source).
    pub path: String,
    /// What it was built from.
    pub provenance: Provenance,
}

impl GeneIndex {
    /// Opens the sidecar at `location` (a path or a URL); None if there is none.
    pub fn open(location: &str, options: &StorageOptions) -> Result<Option<GeneIndex>> {
        if !annql_store::object::is_remote(location) && !Path::new(location).exists() {
            return Ok(None);
        }
        let store = AnnDataStore::open_with(location, options)?;
        if !store.root().attrs.contains_key(RECORD_ATTR) {
            return Err(Error::BadSidecar {
                path: PathBuf::from(location),
                reason: format!("its root group has no '{RECORD_ATTR}' attribute"),
            });
        }
        Ok(Some(GeneIndex {
            location: location.to_string(),
            store: Arc::new(store),
        }))
    }

    /// Where the sidecar is.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The paths of the matrices indexed here.
    pub fn matrices(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![self.store.root()];
        while let Some(e) = stack.pop() {
            if e.encoding == Encoding::CscMatrix && e.attrs.contains_key(RECORD_ATTR) {
                out.push(e.path.clone());
            } else {
                stack.extend(e.children.iter());
            }
        }
        out.sort();
        out
    }

    /// The copy of the matrix at `matrix`, if this sidecar has one.
    pub fn copy_of(&self, matrix: &str) -> Result<Option<IndexedCopy>> {
        let Ok(element) = self.store.element(matrix) else {
            return Ok(None);
        };
        if element.encoding != Encoding::CscMatrix {
            return Ok(None);
        }
        let Some(record) = element.attrs.get(RECORD_ATTR) else {
            return Ok(None);
        };
        let provenance = Provenance::from_json(record, Path::new(&self.location))?;
        Ok(Some(IndexedCopy {
            store: self.store.clone(),
            location: self.location.clone(),
            path: matrix.to_string(),
            provenance,
        }))
    }
}

impl IndexedCopy {
    /// Why this copy must not stand in for `matrix` of `source` (opened from `location`) as the
    /// source is now, if it must not; reading the source's `indptr` to check it.
    pub fn stale(&self, source: &AnnDataStore, location: &str) -> Result<Option<String>> {
        // Provenance compares the shape too; the source's own shape sizes the `indptr` read.
        let (rows, _) = source.sparse_dims(source.element(&self.path)?)?;
        let indptr = source.read_offsets(
            &format!("{}/indptr", self.path),
            0..rows + 1,
            &ReadStats::new_shared(),
        )?;
        let current = Provenance::of(source, location, &self.path, &indptr)?;
        let local = !annql_store::object::is_remote(location);
        if let Some(why) = self.provenance.difference(&current, local) {
            return Ok(Some(why));
        }
        // The copy itself must be whole: the shape and entries its own metadata declares.
        let copy = self.store.element(&self.path)?;
        let (major, minor) = self.store.sparse_dims(copy)?;
        let copy_nnz = self
            .store
            .sparse_nnz(&self.path, 0..major, &ReadStats::new_shared())?;
        if (minor, major) != self.provenance.shape || copy_nnz != self.provenance.nnz {
            return Ok(Some(format!(
                "the copy holds {minor}×{major} with {copy_nnz} entries, not what its record says"
            )));
        }
        Ok(None)
    }
}

/// The lock a build holds on a sidecar: `<sidecar>.lock`, holding the builder's process id,
/// removed when the build ends. A lock whose process is gone is taken over.
#[derive(Debug)]
pub struct BuildLock {
    path: PathBuf,
}

impl BuildLock {
    /// Takes the lock of `sidecar`, or says which process holds it.
    pub fn take(sidecar: &Path) -> Result<BuildLock> {
        let mut name = sidecar.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(std::process::id().to_string().as_bytes())
                        .map_err(|source| Error::io("write", &path, source))?;
                    return Ok(BuildLock { path });
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let pid = std::fs::read_to_string(&path)
                        .map_err(|source| Error::io("read", &path, source))?;
                    let pid = pid.trim().to_string();
                    let alive = pid.parse::<u32>().is_ok_and(|p| {
                        p != std::process::id() && Path::new(&format!("/proc/{p}")).exists()
                    });
                    if alive || pid.parse::<u32>().ok() == Some(std::process::id()) {
                        return Err(Error::Locked {
                            sidecar: sidecar.to_path_buf(),
                            lock: path,
                            pid,
                        });
                    }
                    log::warn!(
                        "taking over the lock {} of process {pid}, which is gone",
                        path.display()
                    );
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(source) => return Err(Error::io("remove", &path, source)),
                    }
                }
                Err(source) => return Err(Error::io("create", &path, source)),
            }
        }
        Err(Error::Locked {
            sidecar: sidecar.to_path_buf(),
            lock: path,
            pid: "another".into(),
        })
    }
}

impl Drop for BuildLock {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            // The build is over either way; a lock left behind names a process that is gone,
            // which the next build takes over.
            log::warn!("cannot remove the lock {}: {e}", self.path.display());
        }
    }
}

/// Removes the sidecar at `sidecar` (under its lock).
pub fn drop_index(sidecar: &Path) -> Result<()> {
    if !sidecar.exists() {
        return Err(Error::Missing(sidecar.to_path_buf()));
    }
    let location = sidecar.to_string_lossy();
    // Only an annql index is removed: a typo must not delete another store.
    GeneIndex::open(&location, &StorageOptions::default())?;
    let _lock = BuildLock::take(sidecar)?;
    std::fs::remove_dir_all(sidecar).map_err(|source| Error::io("remove", sidecar, source))
}
