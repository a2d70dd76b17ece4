//! Cutting arrays: dense n-d arrays along their first axis (and a 2-D matrix's columns), and
//! CSR/CSC matrices along both axes, keeping their format and the type of their values.

use std::sync::Arc;

use annql_store::arrow::array::{ArrayRef, Int32Array, Int64Array};
use annql_store::{AnnDataStore, DType, Element, Encoding};
use serde_json::json;

use super::emit::{Emitter, encoding};
use super::plan::{Blocks, Remap, take, take_rows, value_bytes};
use crate::error::{Error, Result};
use crate::select::Rows;
use crate::sink::{ArraySpec, Attrs};

/// Copies the rows `rows` of the array at `src` (and, for a 2-D array, the columns `cols`) to
/// `out` with `attrs`. A 0-d array (a scalar) is copied whole.
pub(crate) fn cut_dense(
    em: &mut Emitter,
    store: &AnnDataStore,
    src: &str,
    out: &str,
    rows: &Rows,
    cols: Option<&Rows>,
    attrs: Attrs,
) -> Result<()> {
    let meta = store.array_meta(src)?;
    let (dtype, shape) = (meta.dtype.clone(), meta.shape.clone());
    if let DType::Other(name) = &dtype {
        return Err(Error::Refused {
            element: src.to_string(),
            reason: format!(
                "values of type {name}: annql copies bool, integer, float and string arrays; \
                 leave it out with exclude"
            ),
        });
    }
    if shape.is_empty() {
        let spec = ArraySpec {
            dtype,
            inner: Vec::new(),
            scalar: true,
            len_hint: Some(1),
        };
        let values = store.read_array(src, 0..1, &em.stats)?;
        let handle = em.open(out, spec, attrs)?;
        em.append(handle, values)?;
        return em.close(handle);
    }
    let n = shape[0];
    let mut inner: Vec<u64> = shape[1..].to_vec();
    let width: u64 = inner.iter().product();
    // The kept columns of a 2-D matrix (None: all of them).
    let col_ids: Option<Vec<u64>> = match cols {
        Some(Rows::Some(ids)) => {
            if let Some(first) = inner.first_mut() {
                *first = ids.len() as u64;
            }
            Some(ids.clone())
        }
        _ => None,
    };
    let spec = ArraySpec {
        dtype: dtype.clone(),
        inner,
        scalar: false,
        len_hint: Some(rows.count(n)),
    };
    let per_block = em.block_bytes / (width * value_bytes(&dtype)).max(1);
    let handle = em.open(out, spec, attrs)?;
    for block in Blocks::new(rows, n, per_block) {
        em.check_cancel()?;
        let values = store.read_array(src, block.range.clone(), &em.stats)?;
        let values = match (&block.keep, &col_ids) {
            (None, None) => values,
            _ => take_rows(&values, width, &block.kept(), col_ids.as_deref())?,
        };
        em.append(handle, values)?;
    }
    em.close(handle)
}

/// Copies the CSR or CSC matrix `matrix` to `out`, keeping the rows `rows` and the columns
/// `cols`: CSR rows (CSC columns) are read block by block, their entries filtered and their minor
/// positions renumbered.
pub(crate) fn cut_sparse(
    em: &mut Emitter,
    store: &AnnDataStore,
    matrix: &Element,
    out: &str,
    rows: &Rows,
    cols: &Rows,
) -> Result<()> {
    let path = &matrix.path;
    let (n_major, n_minor) = store.sparse_dims(matrix)?;
    let csr = matrix.encoding == Encoding::CsrMatrix;
    let (major, minor) = if csr { (rows, cols) } else { (cols, rows) };
    let (out_major, out_minor) = (major.count(n_major), minor.count(n_minor));
    let shape = if csr {
        [out_major, out_minor]
    } else {
        [out_minor, out_major]
    };
    let mut attrs = encoding(matrix.encoding.name(), "0.1.0");
    attrs.insert("shape".into(), json!(shape));
    em.group(out, attrs)?;

    let data_type = store.array_meta(&format!("{path}/data"))?.dtype.clone();
    let stored = store
        .array_meta(&format!("{path}/indices"))?
        .shape
        .first()
        .copied()
        .unwrap_or(0);
    // 32-bit indices and offsets when they fit, as scipy makes them.
    let wide = stored > i32::MAX as u64 || out_minor > i32::MAX as u64;
    let index_type = if wide { DType::Int64 } else { DType::Int32 };
    let spec = |dtype: DType, len_hint| ArraySpec {
        dtype,
        inner: Vec::new(),
        scalar: false,
        len_hint,
    };
    let data = em.open(
        &format!("{out}/data"),
        spec(data_type.clone(), None),
        Attrs::new(),
    )?;
    let indices = em.open(
        &format!("{out}/indices"),
        spec(index_type.clone(), None),
        Attrs::new(),
    )?;
    let indptr = em.open(
        &format!("{out}/indptr"),
        spec(index_type.clone(), Some(out_major + 1)),
        Attrs::new(),
    )?;
    let ints = |v: Vec<i64>| -> ArrayRef {
        if wide {
            Arc::new(Int64Array::from(v))
        } else {
            Arc::new(Int32Array::from(
                v.into_iter().map(|x| x as i32).collect::<Vec<_>>(),
            ))
        }
    };
    em.append(indptr, ints(vec![0]))?;

    let remap = Remap::new(minor, n_minor);
    let entry_bytes = value_bytes(&data_type) + 8;
    let max_entries = (em.block_bytes / entry_bytes).max(1);
    // A window's `indptr` (and kept offsets) take 16 bytes a row.
    let window_rows = em.block_bytes / 16;
    let mut offset: i64 = 0;
    for window in Blocks::new(major, n_major, window_rows) {
        em.check_cancel()?;
        let ptr = store.read_offsets(
            &format!("{path}/indptr"),
            window.range.start..window.range.end + 1,
            &em.stats,
        )?;
        let kept = window.kept();
        let mut a = 0;
        while a < kept.len() {
            // The kept rows read together: at most `max_entries` stored entries (or one row).
            let first = kept[a];
            let mut b = a + 1;
            while b < kept.len()
                && ptr[kept[b] as usize + 1].saturating_sub(ptr[first as usize]) <= max_entries
            {
                b += 1;
            }
            let last = kept[b - 1];
            let start = window.range.start + first;
            let block = store.read_sparse(path, start..window.range.start + last + 1, &em.stats)?;
            let mut positions = Vec::new();
            let mut new_indices = Vec::new();
            let mut new_ptr = Vec::with_capacity(b - a);
            for &r in &kept[a..b] {
                let r = (r - first) as usize;
                for e in block.indptr[r]..block.indptr[r + 1] {
                    if let Some(m) = remap.get(u64::from(block.indices[e as usize])) {
                        positions.push(e);
                        new_indices.push(m as i64);
                    }
                }
                new_ptr.push(offset + new_indices.len() as i64);
            }
            offset += new_indices.len() as i64;
            let values = if positions.len() == block.nnz() {
                block.data.clone()
            } else {
                take(&block.data, positions)?
            };
            em.append(data, values)?;
            em.append(indices, ints(new_indices))?;
            em.append(indptr, ints(new_ptr))?;
            a = b;
        }
    }
    em.close(data)?;
    em.close(indices)?;
    em.close(indptr)
}
