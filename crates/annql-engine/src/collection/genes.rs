//! The collection's genes: the union of the datasets' genes, aligned on a key (the var index, or
//! a column such as `gene_ids`), numbered in order of first appearance (the first dataset's genes
//! in its order, then each later dataset's new genes in its order).

use std::collections::HashMap;
use std::sync::Arc;

use annql_store::arrow::array::{Array, AsArray, RecordBatch};
use annql_store::arrow::compute::cast;
use annql_store::arrow::datatypes::DataType;
use annql_store::{ReadStats, SparseCarry};

use crate::error::{Error, Result};
use crate::table::AnnTable;

/// Marks a collection gene a dataset did not measure.
pub(crate) const ABSENT: u32 = u32::MAX;

/// The genes of a collection and each dataset's map onto them.
#[derive(Debug)]
pub(crate) struct GeneAxis {
    /// Genes in the collection.
    pub(crate) len: u64,
    /// Per dataset: the collection gene of each of its genes.
    pub(crate) to_global: Vec<Arc<Vec<i64>>>,
    /// Per dataset: its gene for each collection gene, or [`ABSENT`].
    pub(crate) to_local: Vec<Arc<Vec<u32>>>,
    /// Per collection gene: the first dataset that has it, and its row there.
    pub(crate) first: Vec<(u32, u32)>,
    /// Per collection gene: its key.
    pub(crate) keys: Vec<String>,
}

/// One dataset's gene keys, in its var order.
pub(crate) fn read_keys(dataset: &str, var: &AnnTable, key: Option<&str>) -> Result<Vec<String>> {
    let schema = var.schema();
    // The var index is `var_name`, column 1 of the var table.
    let column = match key {
        None => 1,
        Some(k) => schema.index_of(k).map_err(|_| Error::Harmonise {
            table: "var".into(),
            column: k.into(),
            detail: format!("dataset '{dataset}' has no var column '{k}' to align genes on"),
        })?,
    };
    let mut needed = vec![false; schema.fields().len()];
    needed[column] = true;
    if let Some(e) = var.refusal([column]) {
        return Err(e);
    }
    let batches = var.read_block(
        0..var.major_len,
        &needed,
        None,
        None,
        &mut SparseCarry::default(),
        &ReadStats::new_shared(),
    )?;
    let mut keys = Vec::with_capacity(var.major_len as usize);
    for b in &batches {
        strings(b, column, &mut keys)?;
    }
    Ok(keys)
}

fn strings(batch: &RecordBatch, column: usize, out: &mut Vec<String>) -> Result<()> {
    let array = cast(batch.column(column), &DataType::Utf8)
        .map_err(|e| Error::Internal(format!("gene keys cannot be read as text: {e}")))?;
    let array = array.as_string::<i32>();
    for i in 0..array.len() {
        // A missing key: no gene can be aligned on it; it keeps an empty key of its own below.
        out.push(if array.is_null(i) {
            String::new()
        } else {
            array.value(i).to_string()
        });
    }
    Ok(())
}

impl GeneAxis {
    /// Aligns the datasets' `keys` (named by `datasets`); `key` names the column for errors.
    pub(crate) fn align(datasets: &[String], keys: &[Vec<String>], key: &str) -> Result<Self> {
        let mut ids: HashMap<&str, i64> = HashMap::new();
        let mut first = Vec::new();
        let mut to_global = Vec::with_capacity(keys.len());
        for (m, genes) in keys.iter().enumerate() {
            let mut seen: HashMap<&str, usize> = HashMap::with_capacity(genes.len());
            let mut map = Vec::with_capacity(genes.len());
            for (row, g) in genes.iter().enumerate() {
                if let Some(before) = seen.insert(g.as_str(), row) {
                    return Err(Error::Harmonise {
                        table: "var".into(),
                        column: key.into(),
                        detail: format!(
                            "dataset '{}' has '{g}' at rows {before} and {row}: genes are aligned \
                             on a key unique within each dataset (choose another with \
                             ATTACH … (var_key 'gene_ids'))",
                            datasets[m]
                        ),
                    });
                }
                let next = ids.len() as i64;
                let id = *ids.entry(g.as_str()).or_insert_with(|| {
                    first.push((m as u32, row as u32));
                    next
                });
                map.push(id);
            }
            to_global.push(Arc::new(map));
        }
        let len = ids.len();
        let to_local = to_global
            .iter()
            .map(|map| {
                let mut local = vec![ABSENT; len];
                for (row, &g) in map.iter().enumerate() {
                    local[g as usize] = row as u32;
                }
                Arc::new(local)
            })
            .collect();
        let keys = first
            .iter()
            .map(|&(m, row)| keys[m as usize][row as usize].clone())
            .collect();
        Ok(Self {
            len: len as u64,
            to_global,
            to_local,
            first,
            keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&[&str]]) -> Vec<Vec<String>> {
        k.iter()
            .map(|d| d.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    #[test]
    fn genes_are_numbered_by_first_appearance() {
        let names = ["a".to_string(), "b".to_string()];
        let axis = GeneAxis::align(&names, &keys(&[&["G1", "G2"], &["G3", "G1"]]), "var_name")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(axis.len, 3);
        assert_eq!(*axis.to_global[1], [2, 0]);
        assert_eq!(*axis.to_local[1], [1, ABSENT, 0]);
        assert_eq!(axis.first, [(0, 0), (0, 1), (1, 0)]);
    }

    #[test]
    fn a_repeated_key_names_the_dataset() {
        let names = ["a".to_string(), "b".to_string()];
        let err = GeneAxis::align(&names, &keys(&[&["G1"], &["G2", "G2"]]), "gene_ids")
            .map(|_| ())
            .expect_err("an error")
            .to_string();
        assert!(
            err.contains("dataset 'b' has 'G2' at rows 0 and 1"),
            "{err}"
        );
    }
}
