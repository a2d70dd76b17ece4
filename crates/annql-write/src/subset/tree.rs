//! The walk: every element of an AnnData cut along the axis (or axes) it lies on, as anndata's
//! `adata[obs, var]` cuts it, and `uns` copied whole (its `<column>_colors` trimmed with the
//! categories they color).

use std::collections::BTreeSet;
use std::sync::Arc;

use annql_store::arrow::array::{ArrayRef, BooleanArray};
use annql_store::{AnnDataStore, DType, Element, Encoding};

use super::emit::{Emitter, encoding};
use super::frame::{Used, array_kind, cut_column, cut_frame, malformed};
use super::matrix::{cut_dense, cut_sparse};
use super::plan::{check_rows, take};
use crate::error::{Error, Result};
use crate::select::{Rows, Selection};
use crate::sink::ArraySpec;

/// The source paths of the elements the caller leaves out.
struct Excluded(BTreeSet<String>);

impl Excluded {
    /// Resolves `exclude` (paths inside the AnnData) to source paths; each must exist, so a typo
    /// is an error rather than an element silently written.
    fn new(store: &AnnDataStore, anndata: &Element, exclude: &[String]) -> Result<Excluded> {
        let mut paths = BTreeSet::new();
        for rel in exclude {
            let rel = rel.trim_matches('/');
            let path = join(&anndata.path, rel);
            store.element(&path)?;
            if rel == "obs" || rel == "var" {
                return Err(Error::Refused {
                    element: path,
                    reason: "obs and var cannot be left out of an AnnData".into(),
                });
            }
            paths.insert(path);
        }
        Ok(Excluded(paths))
    }

    fn contains(&self, element: &Element) -> bool {
        self.0.contains(&element.path)
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// Writes the AnnData `anndata` cut along `selection`; returns the cells and genes written.
pub(crate) fn write_anndata(
    em: &mut Emitter,
    store: &AnnDataStore,
    anndata: &Element,
    selection: &Selection,
    exclude: &[String],
) -> Result<(u64, u64)> {
    let excluded = Excluded::new(store, anndata, exclude)?;
    let frame = |name: &str| {
        anndata.child(name).ok_or_else(|| Error::Refused {
            element: join(&anndata.path, name),
            reason: "the AnnData has no such dataframe (annql writes AnnData with obs and var)"
                .into(),
        })
    };
    let (obs, var) = (frame("obs")?, frame("var")?);
    let n_obs = obs.shape.first().copied().unwrap_or(0);
    let n_vars = var.shape.first().copied().unwrap_or(0);
    let (rows, cols) = (&selection.obs, &selection.var);
    check_rows("obs", rows, n_obs)?;
    check_rows("var", cols, n_vars)?;

    em.group("", encoding("anndata", "0.1.0"))?;
    // obs and var first: the categories their kept rows use decide how uns colors are trimmed.
    let mut used = cut_frame(em, store, obs, "obs", rows, true)?;
    used.extend(cut_frame(em, store, var, "var", cols, true)?);
    for child in &anndata.children {
        if excluded.contains(child) {
            continue;
        }
        let name = child.name();
        match name {
            "obs" | "var" => {}
            "X" => cut_matrix(em, store, child, "X", (rows, n_obs), (cols, n_vars))?,
            "layers" => dict_of(em, child, "layers", &excluded, |em, c, out| {
                cut_matrix(em, store, c, out, (rows, n_obs), (cols, n_vars))
            })?,
            "obsm" => dict_of(em, child, "obsm", &excluded, |em, c, out| {
                cut_axis(em, store, c, out, rows, n_obs)
            })?,
            "varm" => dict_of(em, child, "varm", &excluded, |em, c, out| {
                cut_axis(em, store, c, out, cols, n_vars)
            })?,
            "obsp" => dict_of(em, child, "obsp", &excluded, |em, c, out| {
                cut_matrix(em, store, c, out, (rows, n_obs), (rows, n_obs))
            })?,
            "varp" => dict_of(em, child, "varp", &excluded, |em, c, out| {
                cut_matrix(em, store, c, out, (cols, n_vars), (cols, n_vars))
            })?,
            "uns" => copy_uns(em, store, child, &excluded, &used)?,
            "raw" => cut_raw(em, store, child, rows, n_obs, &excluded)?,
            _ => {
                return Err(Error::Refused {
                    element: child.path.clone(),
                    reason: "not an element of the AnnData spec (anndata does not read it); \
                             leave it out with exclude"
                        .into(),
                });
            }
        }
    }
    em.done()?;
    Ok((rows.count(n_obs), cols.count(n_vars)))
}

/// A `dict` group whose children are each written by `each` (at `out/<name>`).
fn dict_of(
    em: &mut Emitter,
    group: &Element,
    out: &str,
    excluded: &Excluded,
    mut each: impl FnMut(&mut Emitter, &Element, &str) -> Result<()>,
) -> Result<()> {
    if group.encoding != Encoding::Dict {
        return Err(refused(group, "a group of elements (dict)"));
    }
    em.group(out, encoding("dict", "0.1.0"))?;
    for child in &group.children {
        if !excluded.contains(child) {
            each(em, child, &format!("{out}/{}", child.name()))?;
        }
    }
    Ok(())
}

/// Refuses `element` (found where `expected` belongs), naming why annql cannot copy it.
fn refused(element: &Element, expected: &str) -> Error {
    let reason = match &element.encoding {
        Encoding::RecArray => "a rec-array (structured array): annql cannot copy structured \
                               arrays yet; leave it out with exclude"
            .to_string(),
        Encoding::AwkwardArray => "an awkward array: annql cannot cut awkward arrays; leave it \
                                   out with exclude"
            .to_string(),
        Encoding::Unknown(e) => {
            format!("encoding '{e}' is unknown to annql; leave it out with exclude")
        }
        other => format!(
            "a {} element where {expected} belongs; leave it out with exclude",
            other.name()
        ),
    };
    Error::Refused {
        element: element.path.clone(),
        reason,
    }
}

/// Checks that `element` (a matrix or an array along an axis) has `want` rows (and columns).
fn check_shape(
    store: &AnnDataStore,
    element: &Element,
    rows: u64,
    cols: Option<u64>,
) -> Result<()> {
    let ok = element.shape.first() == Some(&rows)
        && cols.is_none_or(|c| element.shape.len() == 2 && element.shape[1] == c);
    if ok {
        return Ok(());
    }
    let want = match cols {
        Some(c) => format!("{rows} × {c}"),
        None => format!("{rows} rows"),
    };
    Err(malformed(
        store,
        &element.path,
        &format!(
            "shape {:?} does not fit the AnnData (expected {want})",
            element.shape
        ),
    ))
}

/// A matrix over two axes (X, a layer, obsp, varp, raw/X): sparse or dense.
fn cut_matrix(
    em: &mut Emitter,
    store: &AnnDataStore,
    matrix: &Element,
    out: &str,
    (rows, n_rows): (&Rows, u64),
    (cols, n_cols): (&Rows, u64),
) -> Result<()> {
    match matrix.encoding {
        Encoding::CsrMatrix | Encoding::CscMatrix => {
            check_shape(store, matrix, n_rows, Some(n_cols))?;
            cut_sparse(em, store, matrix, out, rows, cols)
        }
        Encoding::Array => {
            check_shape(store, matrix, n_rows, Some(n_cols))?;
            let attrs = encoding("array", "0.2.0");
            cut_dense(em, store, &matrix.path, out, rows, Some(cols), attrs)
        }
        _ => Err(refused(
            matrix,
            "a matrix (csr_matrix, csc_matrix or array)",
        )),
    }
}

/// An element along one axis (obsm, varm, raw/varm): rows `rows` of `n` kept, other axes whole.
fn cut_axis(
    em: &mut Emitter,
    store: &AnnDataStore,
    element: &Element,
    out: &str,
    rows: &Rows,
    n: u64,
) -> Result<()> {
    match element.encoding {
        Encoding::Array | Encoding::StringArray => {
            check_shape(store, element, n, None)?;
            let kind = array_kind(element.dtype.as_ref());
            cut_dense(
                em,
                store,
                &element.path,
                out,
                rows,
                None,
                encoding(kind, "0.2.0"),
            )
        }
        Encoding::DataFrame => {
            check_shape(store, element, n, None)?;
            cut_frame(em, store, element, out, rows, false).map(drop)
        }
        Encoding::CsrMatrix | Encoding::CscMatrix => {
            check_shape(store, element, n, None)?;
            cut_sparse(em, store, element, out, rows, &Rows::All)
        }
        _ => Err(refused(element, "an array, dataframe or sparse matrix")),
    }
}

/// `raw`: its X keeps the kept cells and every gene; its var and varm are copied whole.
fn cut_raw(
    em: &mut Emitter,
    store: &AnnDataStore,
    raw: &Element,
    rows: &Rows,
    n_obs: u64,
    excluded: &Excluded,
) -> Result<()> {
    if raw.encoding != Encoding::Raw {
        return Err(refused(raw, "raw"));
    }
    em.group("raw", encoding("raw", "0.1.0"))?;
    let n_vars = raw
        .child("var")
        .and_then(|v| v.shape.first().copied())
        .or_else(|| raw.child("X").and_then(|x| x.shape.get(1).copied()))
        .unwrap_or(0);
    for child in &raw.children {
        if excluded.contains(child) {
            continue;
        }
        match child.name() {
            "X" => cut_matrix(
                em,
                store,
                child,
                "raw/X",
                (rows, n_obs),
                (&Rows::All, n_vars),
            )?,
            "var" => {
                if child.encoding != Encoding::DataFrame {
                    return Err(refused(child, "a dataframe"));
                }
                cut_frame(em, store, child, "raw/var", &Rows::All, false)?;
            }
            "varm" => dict_of(em, child, "raw/varm", excluded, |em, c, out| {
                cut_axis(em, store, c, out, &Rows::All, n_vars)
            })?,
            _ => {
                return Err(Error::Refused {
                    element: child.path.clone(),
                    reason: "not an element of raw (anndata reads X, var and varm); leave it \
                             out with exclude"
                        .into(),
                });
            }
        }
    }
    Ok(())
}

/// `uns`, copied whole; `uns["<column>_colors"]` of a categorical column of obs or var is
/// trimmed to the categories kept, as anndata's views trim it.
fn copy_uns(
    em: &mut Emitter,
    store: &AnnDataStore,
    uns: &Element,
    excluded: &Excluded,
    used: &[Used],
) -> Result<()> {
    if uns.encoding != Encoding::Dict {
        return Err(refused(uns, "uns (a dict)"));
    }
    em.group("uns", encoding("dict", "0.1.0"))?;
    for child in &uns.children {
        if excluded.contains(child) {
            continue;
        }
        let out = format!("uns/{}", child.name());
        let colored: Vec<&Used> = child
            .name()
            .strip_suffix("_colors")
            .map(|column| used.iter().filter(|u| u.column == column).collect())
            .unwrap_or_default();
        if colored.is_empty() {
            copy_element(em, store, child, &out, excluded)?;
        } else {
            copy_colors(em, store, child, &out, &colored)?;
        }
    }
    Ok(())
}

/// Copies an element of `uns` whole, in its own encoding.
fn copy_element(
    em: &mut Emitter,
    store: &AnnDataStore,
    element: &Element,
    out: &str,
    excluded: &Excluded,
) -> Result<()> {
    let path = &element.path;
    let whole = &Rows::All;
    match &element.encoding {
        Encoding::Dict => dict_of(em, element, out, excluded, |em, c, out| {
            copy_element(em, store, c, out, excluded)
        }),
        Encoding::Array | Encoding::StringArray | Encoding::NumericScalar | Encoding::String => {
            let attrs = if element.shape.is_empty() {
                // A 0-d array is a scalar to anndata, whatever it was written as.
                match element.dtype {
                    Some(DType::String) => encoding("string", "0.2.0"),
                    _ => encoding("numeric-scalar", "0.2.0"),
                }
            } else {
                encoding(array_kind(element.dtype.as_ref()), "0.2.0")
            };
            cut_dense(em, store, path, out, whole, None, attrs)
        }
        Encoding::DataFrame => cut_frame(em, store, element, out, whole, false).map(drop),
        Encoding::Categorical
        | Encoding::LegacyCategorical
        | Encoding::NullableInteger
        | Encoding::NullableBoolean
        | Encoding::NullableStringArray => {
            let n = element.shape.first().copied().unwrap_or(0);
            cut_column(em, store, element, out, whole, n, false).map(drop)
        }
        Encoding::CsrMatrix | Encoding::CscMatrix => {
            cut_sparse(em, store, element, out, whole, whole)
        }
        Encoding::Null => {
            let spec = ArraySpec {
                dtype: DType::Bool,
                inner: Vec::new(),
                scalar: true,
                len_hint: Some(1),
            };
            let handle = em.open(out, spec, encoding("null", "0.1.0"))?;
            em.append(
                handle,
                Arc::new(BooleanArray::from(vec![false])) as ArrayRef,
            )?;
            em.close(handle)
        }
        _ => Err(refused(element, "an element annql copies")),
    }
}

/// What anndata's `_remove_unused_categories` leaves of `uns["<column>_colors"]`, applied for
/// each categorical column of that name (obs's, then var's).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Colors {
    /// Deleted: its length did not match the categories.
    Deleted,
    /// These rows of it (`scalar`: a 0-d value made a 1-element array first).
    Rows { scalar: bool, rows: Vec<u64> },
}

fn trim_colors(shape: &[u64], used: &[&Used]) -> Colors {
    let mut colors = match shape.first() {
        None => Colors::Rows {
            scalar: true,
            rows: Vec::new(),
        },
        Some(&n) => Colors::Rows {
            scalar: false,
            rows: (0..n).collect(),
        },
    };
    let mut first = true;
    for u in used {
        colors = match colors {
            Colors::Deleted => Colors::Deleted,
            Colors::Rows { scalar: true, .. } if first => Colors::Rows {
                scalar: true,
                rows: vec![0],
            },
            Colors::Rows { scalar, rows } if rows.len() == u.used.len() => Colors::Rows {
                scalar,
                rows: rows
                    .into_iter()
                    .zip(&u.used)
                    .filter_map(|(r, &keep)| keep.then_some(r))
                    .collect(),
            },
            Colors::Rows { .. } => Colors::Deleted,
        };
        first = false;
    }
    colors
}

/// Writes `uns["<column>_colors"]` trimmed (or not at all, when anndata deletes it).
fn copy_colors(
    em: &mut Emitter,
    store: &AnnDataStore,
    element: &Element,
    out: &str,
    used: &[&Used],
) -> Result<()> {
    if !matches!(
        element.encoding,
        Encoding::Array | Encoding::StringArray | Encoding::NumericScalar | Encoding::String
    ) {
        return Err(refused(element, "an array of colors"));
    }
    let kind = encoding(array_kind(element.dtype.as_ref()), "0.2.0");
    match trim_colors(&element.shape, used) {
        Colors::Deleted => Ok(()),
        Colors::Rows {
            scalar: false,
            rows,
        } => cut_dense(em, store, &element.path, out, &Rows::Some(rows), None, kind),
        Colors::Rows { scalar: true, rows } => {
            let value = store.read_array(&element.path, 0..1, &em.stats)?;
            let spec = ArraySpec {
                dtype: element.dtype.clone().unwrap_or(DType::String),
                inner: Vec::new(),
                scalar: false,
                len_hint: Some(rows.len() as u64),
            };
            let handle = em.open(out, spec, kind)?;
            em.append(handle, take(&value, rows)?)?;
            em.close(handle)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(flags: &[bool]) -> Used {
        Used {
            column: "c".into(),
            used: flags.to_vec(),
        }
    }

    #[test]
    fn colors_follow_the_categories_kept_or_are_deleted() {
        let u = used(&[true, false, true]);
        assert_eq!(
            trim_colors(&[3], &[&u]),
            Colors::Rows {
                scalar: false,
                rows: vec![0, 2]
            }
        );
        // A length that does not match the categories: anndata deletes the colors.
        assert_eq!(trim_colors(&[4], &[&u]), Colors::Deleted);
        // A 0-d color becomes a 1-element array.
        assert_eq!(
            trim_colors(&[], &[&u]),
            Colors::Rows {
                scalar: true,
                rows: vec![0]
            }
        );
        // obs's then var's column of the same name: applied in turn.
        let v = used(&[false, true]);
        assert_eq!(
            trim_colors(&[3], &[&u, &v]),
            Colors::Rows {
                scalar: false,
                rows: vec![2]
            }
        );
    }
}
