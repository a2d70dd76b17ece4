//! Output paths: a write goes into a temporary sibling of the output, renamed into place only
//! when complete, so a failed, cancelled or killed write leaves nothing at the output path.
//!
//! The temporary sibling of `dir/out.h5ad` is `dir/.out.h5ad.annql-tmp-<pid>-<n>` (`n` counts the
//! writes of one process, so two writes of one process to one output never share a temporary):
//! recognisable by name, so the next write to the same output removes what a killed write left
//! behind. A leftover of another live process is another write in progress and is left alone; one
//! named with this process's id that no write of this process holds is a leftover of a dead
//! process whose id was reused (common in containers, where a CLI often gets the same small id).

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::error::{Error, Result};

const TMP_MARK: &str = ".annql-tmp-";

/// Numbers the writes of this process.
static NEXT_WRITE: AtomicU64 = AtomicU64::new(0);

/// The names of the temporaries this process's writes hold, so leftover cleanup never takes a
/// live one (names, not paths: one directory can be spelled several ways).
static IN_USE: Mutex<Option<HashSet<OsString>>> = Mutex::new(None);

fn in_use<R>(f: impl FnOnce(&mut HashSet<OsString>) -> R) -> R {
    // The set is only inserted into and removed from: a panic elsewhere cannot leave it torn.
    let mut guard = IN_USE.lock().unwrap_or_else(PoisonError::into_inner);
    f(guard.get_or_insert_with(HashSet::new))
}

/// A write in progress: the temporary sibling the sink writes, and the path it becomes.
#[derive(Debug)]
pub struct Staged {
    out: PathBuf,
    tmp: PathBuf,
    overwrite: bool,
    committed: bool,
}

impl Staged {
    /// Checks that `out` may be written (it does not exist, or `overwrite`), removes leftovers of
    /// killed writes to it, and reserves the temporary sibling (not created: the sink creates it).
    pub fn begin(out: &Path, overwrite: bool) -> Result<Staged> {
        let io = |path: &Path, source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let name = out.file_name().ok_or_else(|| {
            io(
                out,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"),
            )
        })?;
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let meta = fs::metadata(&dir).map_err(|e| io(&dir, e))?;
        if !meta.is_dir() {
            return Err(io(
                &dir,
                std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            ));
        }
        if exists(out)? {
            if !overwrite {
                return Err(Error::Exists(out.to_path_buf()));
            }
            check_replaceable(out)?;
        }
        let prefix = tmp_prefix(name);
        let mut tmp_name = prefix.clone();
        let n = NEXT_WRITE.fetch_add(1, Ordering::Relaxed);
        tmp_name.push(format!("{}-{n}", std::process::id()));
        in_use(|set| set.insert(tmp_name.clone()));
        let tmp = dir.join(tmp_name);
        remove_leftovers(&dir, &prefix);
        Ok(Staged {
            out: out.to_path_buf(),
            tmp,
            overwrite,
            committed: false,
        })
    }

    /// Where the sink writes.
    pub fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// The final path.
    pub fn out(&self) -> &Path {
        &self.out
    }

    /// Moves the finished output into place (replacing the old one when overwriting).
    pub fn commit(mut self) -> Result<PathBuf> {
        let io = |path: &Path, source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        if exists(&self.out)? {
            if !self.overwrite {
                return Err(Error::Exists(self.out.clone()));
            }
            check_replaceable(&self.out)?;
            // Move the old output aside first, so the new one appears in one rename.
            let mut old = self.tmp.clone().into_os_string();
            old.push(".old");
            let old = PathBuf::from(old);
            fs::rename(&self.out, &old).map_err(|e| io(&self.out, e))?;
            if let Err(e) = fs::rename(&self.tmp, &self.out) {
                // Put the old output back: a failed write leaves the output as it was.
                if let Err(back) = fs::rename(&old, &self.out) {
                    log::error!(
                        "the previous {} is at {} (moving it back failed: {back})",
                        self.out.display(),
                        old.display()
                    );
                }
                return Err(io(&self.out, e));
            }
            self.committed = true;
            if let Err(e) = remove_path(&old) {
                // The new output is in place; the old copy is a leftover the next write to
                // this output removes, not a failed write.
                log::warn!("cannot remove the replaced {}: {e}", old.display());
            }
        } else {
            fs::rename(&self.tmp, &self.out).map_err(|e| io(&self.out, e))?;
            self.committed = true;
        }
        Ok(self.out.clone())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed
            && let Err(e) = remove_path(&self.tmp)
        {
            // The write already failed (that error is what the caller sees), and a temporary
            // left behind is removed by the next write to the same output.
            log::warn!("cannot remove {}: {e}", self.tmp.display());
        }
        if let Some(name) = self.tmp.file_name() {
            in_use(|set| set.remove(name));
        }
    }
}

/// Whether `path` exists (a dangling symlink does); an error other than "not found" is reported.
fn exists(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(Error::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Overwriting replaces a file, a symlink or a zarr store, never any other directory: a typo in
/// an output path must not delete a home directory.
fn check_replaceable(out: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(out).map_err(|source| Error::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let zarr = ["zarr.json", ".zgroup", ".zarray"]
        .iter()
        .any(|m| out.join(m).is_file());
    if meta.is_dir() && !zarr {
        return Err(Error::Io {
            path: out.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a directory that is not a zarr store is never replaced",
            ),
        });
    }
    Ok(())
}

/// `.out.h5ad.annql-tmp-` for `out.h5ad`.
fn tmp_prefix(name: &std::ffi::OsStr) -> OsString {
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(TMP_MARK);
    prefix
}

/// Removes temporaries of earlier writes to the same output whose writer is gone. Cleanup is
/// best effort: a leftover that cannot be listed or removed is logged and left, since it does
/// not stop this write (its temporary has another name).
fn remove_leftovers(dir: &Path, prefix: &OsString) {
    let prefix = prefix.to_string_lossy();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            log::warn!("cannot list {} for leftovers: {e}", dir.display());
            return;
        }
    };
    // An entry that cannot be read is not ours to clean up; skipping it only leaves it in place.
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(rest) = name.strip_prefix(prefix.as_ref()) else {
            continue;
        };
        let path = entry.path();
        let pid = rest.split(['-', '.']).next().unwrap_or(rest);
        let writing = match pid.parse::<u32>() {
            Ok(pid) if pid == std::process::id() => {
                let own = name.strip_suffix(".old").unwrap_or(&name);
                in_use(|set| set.contains(&OsString::from(own)))
            }
            Ok(pid) => Path::new(&format!("/proc/{pid}")).exists(),
            Err(_) => false,
        };
        if !writing && let Err(e) = remove_path(&path) {
            log::warn!("cannot remove the leftover {}: {e}", path.display());
        }
    }
}

fn remove_path(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
