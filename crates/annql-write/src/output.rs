//! Output paths: a write goes into a temporary sibling of the output, renamed into place only
//! when complete, so a failed, cancelled or killed write leaves nothing at the output path.
//!
//! The temporary sibling of `dir/out.h5ad` is `dir/.out.h5ad.annql-tmp-<pid>`: recognisable by
//! name, so the next write to the same output removes what a killed write left behind (a leftover
//! whose process is still alive is another write in progress and is left alone).

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const TMP_MARK: &str = ".annql-tmp-";

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
        if fs::symlink_metadata(out).is_ok() && !overwrite {
            return Err(Error::Exists(out.to_path_buf()));
        }
        let prefix = tmp_prefix(name);
        remove_leftovers(&dir, &prefix)?;
        let mut tmp_name = prefix;
        tmp_name.push(std::process::id().to_string());
        Ok(Staged {
            out: out.to_path_buf(),
            tmp: dir.join(tmp_name),
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
        if fs::symlink_metadata(&self.out).is_ok() {
            if !self.overwrite {
                return Err(Error::Exists(self.out.clone()));
            }
            // Move the old output aside first, so the new one appears in one rename.
            let mut old = self.tmp.clone().into_os_string();
            old.push(".old");
            let old = PathBuf::from(old);
            fs::rename(&self.out, &old).map_err(|e| io(&self.out, e))?;
            fs::rename(&self.tmp, &self.out).map_err(|e| io(&self.out, e))?;
            remove_path(&old).map_err(|e| io(&old, e))?;
        } else {
            fs::rename(&self.tmp, &self.out).map_err(|e| io(&self.out, e))?;
        }
        self.committed = true;
        Ok(self.out.clone())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: the write already failed (that error is what the caller sees), and a
            // temporary left behind is removed by the next write to the same output.
            let _ = remove_path(&self.tmp);
        }
    }
}

/// `.out.h5ad.annql-tmp-` for `out.h5ad`.
fn tmp_prefix(name: &std::ffi::OsStr) -> OsString {
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(TMP_MARK);
    prefix
}

/// Removes temporaries of earlier writes to the same output whose process is gone.
fn remove_leftovers(dir: &Path, prefix: &OsString) -> Result<()> {
    let prefix = prefix.to_string_lossy();
    let entries = fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    // An entry that cannot be read is not ours to clean up; skipping it only leaves it in place.
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(rest) = name.strip_prefix(prefix.as_ref()) else {
            continue;
        };
        let pid = rest.strip_suffix(".old").unwrap_or(rest);
        let alive = pid.parse::<u32>().is_ok_and(|pid| {
            pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
        });
        if !alive {
            let path = entry.path();
            remove_path(&path).map_err(|source| Error::Io { path, source })?;
        }
    }
    Ok(())
}

fn remove_path(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
