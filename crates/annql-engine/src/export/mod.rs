//! Exports: parts of an attached dataset written as new AnnData stores.
//!
//! Every front end (SQL `COPY atlas TO …` ([`sql`]), the pipeline language's `write`, `annql
//! export`) builds a request and calls [`export_subset`] ([`subset`]: the cells and genes the
//! obs/var predicates keep) or [`aggregate::export_aggregate`] (a group-by aggregate, as scanpy
//! returns it). This module holds what they share: where a session may write
//! ([`WritePolicy`]: anywhere for the CLI, nowhere or inside one directory for the server), how
//! the output's format is chosen ([`ExportChoices`]) and the one-row summary they answer with.
//!
//! Exports take the session as a [`QueryContext`], so they sit below [`crate::session`], which
//! calls [`sql::execute_copy`] for `COPY`.

pub mod aggregate;
/// A collection written as one AnnData.
pub mod collection;
pub mod sql;
mod subset;

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use annql_write::sink::Chunking;
use annql_write::{ExportOptions, ExportSummary, Format};
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

pub use self::subset::{ExportRequest, export_subset};
use crate::context::QueryContext;
use crate::error::{Error, Result};

/// Where a session may write new stores.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum WritePolicy {
    /// Anywhere the process may (the CLI, the REPL, batch runs, embedders).
    #[default]
    Anywhere,
    /// Nowhere: every write is refused (a server started without a writable directory).
    ReadOnly,
    /// Only inside this directory (canonical): relative outputs are taken from it, and a path
    /// that leaves it (`..`, a symlink) is refused.
    Inside(PathBuf),
}

impl WritePolicy {
    /// Writes confined to `dir`, which must exist (it is canonicalised now, once).
    pub fn inside(dir: &Path) -> Result<WritePolicy> {
        let canonical = dir.canonicalize().map_err(|e| Error::WriteRefused {
            path: dir.to_path_buf(),
            reason: format!("the writable directory cannot be opened: {e}"),
        })?;
        if !canonical.is_dir() {
            return Err(Error::WriteRefused {
                path: dir.to_path_buf(),
                reason: "the writable directory is not a directory".into(),
            });
        }
        Ok(WritePolicy::Inside(canonical))
    }

    /// The path an output `out` is written at, or why it may not be.
    pub fn resolve(&self, out: &Path) -> Result<PathBuf> {
        let refuse = |reason: &str| Error::WriteRefused {
            path: out.to_path_buf(),
            reason: reason.into(),
        };
        let dir = match self {
            WritePolicy::Anywhere => return Ok(out.to_path_buf()),
            WritePolicy::ReadOnly => return Err(Error::ReadOnly(out.to_path_buf())),
            WritePolicy::Inside(dir) => dir,
        };
        if out.components().any(|c| c == Component::ParentDir) {
            return Err(refuse("'..' is not allowed in an output path"));
        }
        let joined = dir.join(out);
        let name = joined
            .file_name()
            .ok_or_else(|| refuse("the output path has no file name"))?;
        let parent = joined.parent().unwrap_or(dir);
        let parent = parent.canonicalize().map_err(|e| Error::WriteRefused {
            path: out.to_path_buf(),
            reason: format!("its directory cannot be opened: {e}"),
        })?;
        let outside = || {
            refuse(&format!(
                "it is outside the writable directory {}",
                dir.display()
            ))
        };
        if !parent.starts_with(dir) {
            return Err(outside());
        }
        let target = parent.join(name);
        // An existing output that is a symlink is followed: it must stay inside too.
        if std::fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink()) {
            let followed = target.canonicalize().map_err(|_| outside())?;
            if !followed.starts_with(dir) {
                return Err(outside());
            }
        }
        Ok(target)
    }
}

/// How a front end names the output's format and chunking (SQL `WITH (…)`, CLI flags), before
/// they are checked against each other and the output's name by [`ExportChoices::to_options`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportChoices {
    /// `h5ad`, `zarr` (v3 unless `zarr_version` says 2), `zarr2`, `zarr3`.
    pub format: Option<String>,
    /// 2 or 3 (zarr only).
    pub zarr_version: Option<u32>,
    /// Replace an existing output.
    pub overwrite: bool,
    /// Elements per chunk.
    pub chunk_len: Option<u64>,
    /// Chunks per shard (zarr v3; 0 writes unsharded arrays).
    pub shard_chunks: Option<u64>,
    /// Elements left out on purpose (`obsm/awk`): what annql cannot write is otherwise an error.
    pub exclude: Vec<String>,
}

impl ExportChoices {
    /// The writer's options for an output at `out`: the format named, or the one its extension
    /// implies (`.h5ad`, `.zarr`).
    pub fn to_options(&self, out: &Path) -> Result<ExportOptions> {
        let bad = |why: String| Error::Statement(why);
        let name = match &self.format {
            Some(f) => f.to_ascii_lowercase(),
            None => match out.extension().and_then(|e| e.to_str()) {
                Some("h5ad") => "h5ad".into(),
                Some("zarr") => "zarr".into(),
                _ => {
                    return Err(bad(format!(
                        "cannot tell the format of '{}' from its name: end it with .h5ad or \
                         .zarr, or give FORMAT 'h5ad' | 'zarr' | 'zarr2' | 'zarr3'",
                        out.display()
                    )));
                }
            },
        };
        let version = match (name.as_str(), self.zarr_version) {
            ("h5ad", None) => None,
            ("h5ad", Some(_)) => {
                return Err(bad("ZARR_VERSION applies to zarr outputs, not h5ad".into()));
            }
            ("zarr", v) => Some(v.unwrap_or(3)),
            ("zarr2", None | Some(2)) => Some(2),
            ("zarr3", None | Some(3)) => Some(3),
            ("zarr2" | "zarr3", Some(v)) => {
                return Err(bad(format!("FORMAT '{name}' contradicts ZARR_VERSION {v}")));
            }
            (other, _) => {
                return Err(bad(format!(
                    "unknown format '{other}' (expected h5ad, zarr, zarr2 or zarr3)"
                )));
            }
        };
        let format = match version {
            None => Format::H5ad,
            Some(2) => Format::ZarrV2,
            Some(3) => Format::ZarrV3 {
                sharded: self.shard_chunks != Some(0),
            },
            Some(v) => return Err(bad(format!("ZARR_VERSION must be 2 or 3, not {v}"))),
        };
        if self.shard_chunks.is_some() && !matches!(format, Format::ZarrV3 { .. }) {
            return Err(bad("SHARD_CHUNKS applies to zarr v3 outputs only".into()));
        }
        let mut chunking = Chunking::default();
        match self.chunk_len {
            Some(0) => return Err(bad("CHUNK_LEN must be at least 1".into())),
            Some(n) => {
                chunking.chunk_len = n;
                chunking.target_chunk_elements = n;
            }
            None => {}
        }
        if let Some(n @ 1..) = self.shard_chunks {
            chunking.chunks_per_shard = n;
        }
        Ok(ExportOptions {
            format: Some(format),
            overwrite: self.overwrite,
            chunking,
            exclude: self.exclude.clone(),
            ..ExportOptions::default()
        })
    }
}

/// The name a format is reported under (`h5ad`, `zarr2`, `zarr3`, `zarr3-sharded`).
pub fn format_name(format: &Format) -> &'static str {
    match format {
        Format::H5ad => "h5ad",
        Format::ZarrV2 => "zarr2",
        Format::ZarrV3 { sharded: false } => "zarr3",
        Format::ZarrV3 { sharded: true } => "zarr3-sharded",
    }
}

/// `out` as the session's write policy resolves it, refused up front when it exists and
/// `overwrite` is off. The writer checks again when it starts; checking here too means the
/// predicates and aggregates do not run for nothing.
pub(crate) fn writable_output(
    session: &dyn QueryContext,
    out: &Path,
    overwrite: bool,
) -> Result<PathBuf> {
    let out = session.resolve_output(out)?;
    if !overwrite && std::fs::symlink_metadata(&out).is_ok() {
        return Err(annql_write::Error::Exists(out).into());
    }
    Ok(out)
}

/// The columns of an export's result: `path, format, n_obs, n_vars`.
pub fn summary_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("format", DataType::Utf8, false),
        Field::new("n_obs", DataType::Int64, false),
        Field::new("n_vars", DataType::Int64, false),
    ]))
}

/// The one-row result of an export ([`summary_schema`]).
pub fn summary_batch(summary: &ExportSummary) -> Result<RecordBatch> {
    let schema = summary_schema();
    let count = |n: u64| i64::try_from(n).map_err(|_| Error::Internal(format!("{n} rows")));
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec![summary.path.display().to_string()])),
            Arc::new(StringArray::from(vec![format_name(&summary.format)])),
            Arc::new(Int64Array::from(vec![count(summary.n_obs)?])),
            Arc::new(Int64Array::from(vec![count(summary.n_vars)?])),
        ],
    )
    .map_err(datafusion::error::DataFusionError::from)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choices(format: Option<&str>) -> ExportChoices {
        ExportChoices {
            format: format.map(String::from),
            ..ExportChoices::default()
        }
    }

    #[test]
    fn formats_from_names_and_extensions() -> Result<()> {
        let f = |c: &ExportChoices, out: &str| c.to_options(Path::new(out)).map(|o| o.format);
        assert_eq!(f(&choices(None), "a.h5ad")?, Some(Format::H5ad));
        assert_eq!(
            f(&choices(None), "a.zarr")?,
            Some(Format::ZarrV3 { sharded: true })
        );
        assert_eq!(f(&choices(Some("ZARR2")), "a.out")?, Some(Format::ZarrV2));
        let v2 = ExportChoices {
            zarr_version: Some(2),
            ..choices(None)
        };
        assert_eq!(f(&v2, "a.zarr")?, Some(Format::ZarrV2));
        let unsharded = ExportChoices {
            shard_chunks: Some(0),
            ..choices(Some("zarr"))
        };
        assert_eq!(f(&unsharded, "a")?, Some(Format::ZarrV3 { sharded: false }));
        for (c, out, needle) in [
            (choices(None), "a.parquet", "cannot tell the format"),
            (choices(Some("csv")), "a.zarr", "unknown format 'csv'"),
            (v2.clone(), "a.h5ad", "ZARR_VERSION applies to zarr"),
            (
                ExportChoices {
                    zarr_version: Some(3),
                    ..choices(Some("zarr2"))
                },
                "a",
                "contradicts",
            ),
            (
                ExportChoices {
                    shard_chunks: Some(4),
                    ..choices(Some("h5ad"))
                },
                "a",
                "SHARD_CHUNKS",
            ),
            (
                ExportChoices {
                    chunk_len: Some(0),
                    ..choices(None)
                },
                "a.h5ad",
                "CHUNK_LEN",
            ),
        ] {
            let err = f(&c, out).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(needle), "{c:?} {out}: {err}");
        }
        Ok(())
    }

    #[test]
    fn chunking_options() -> Result<()> {
        let c = ExportChoices {
            chunk_len: Some(1000),
            shard_chunks: Some(8),
            overwrite: true,
            ..choices(None)
        };
        let o = c.to_options(Path::new("a.zarr"))?;
        assert!(o.overwrite);
        assert_eq!(o.chunking.chunk_len, 1000);
        assert_eq!(o.chunking.chunks_per_shard, 8);
        Ok(())
    }

    #[test]
    fn write_policy_confines_outputs() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        let root = tmp
            .path()
            .canonicalize()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let inside = root.join("w");
        let outside = root.join("elsewhere");
        for d in [&inside, &outside, &inside.join("sub")] {
            std::fs::create_dir_all(d).map_err(|e| Error::Internal(e.to_string()))?;
        }
        std::os::unix::fs::symlink(&outside, inside.join("escape"))
            .map_err(|e| Error::Internal(e.to_string()))?;
        std::os::unix::fs::symlink(outside.join("x.h5ad"), inside.join("link.h5ad"))
            .map_err(|e| Error::Internal(e.to_string()))?;
        let policy = WritePolicy::inside(&inside)?;
        assert_eq!(policy.resolve(Path::new("a.h5ad"))?, inside.join("a.h5ad"));
        assert_eq!(
            policy.resolve(&inside.join("sub/a.zarr"))?,
            inside.join("sub/a.zarr")
        );
        for bad in [
            PathBuf::from("../a.h5ad"),
            PathBuf::from("sub/../../a.h5ad"),
            PathBuf::from("escape/a.h5ad"),
            outside.join("a.h5ad"),
            PathBuf::from("missing/a.h5ad"),
            PathBuf::from("/"),
        ] {
            assert!(
                matches!(policy.resolve(&bad), Err(Error::WriteRefused { .. })),
                "{bad:?} was allowed"
            );
        }
        // A dangling link to outside: refused as well (it cannot be followed inside).
        assert!(policy.resolve(Path::new("link.h5ad")).is_err());
        assert!(WritePolicy::ReadOnly.resolve(Path::new("a.h5ad")).is_err());
        assert!(WritePolicy::inside(&root.join("nope")).is_err());
        Ok(())
    }
}
