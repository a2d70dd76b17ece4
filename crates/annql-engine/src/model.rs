//! The table model: which SQL tables an AnnData store exposes, decided from its element tree alone.
//!
//! | table | from | columns |
//! |---|---|---|
//! | `obs`, `var` | the annotation dataframes | `obs_id`/`var_id`, `obs_name`/`var_name`, every column |
//! | `x`, `layers_<name>`, `raw_x` | CSR, CSC or dense matrices | `obs_id`, `var_id`, `value` (stored non-zero entries) |
//! | `obsm_<key>`, `varm_<key>` | dense embeddings | `obs_id`, `<key>_0`, `<key>_1`, … |
//! | `obsm_<key>` (dataframe) | a dataframe in obsm | `obs_id`, its columns |
//! | `obsm_<key>` (sparse) | a sparse matrix in obsm | `obs_id`, `component_id`, `value` |
//! | `obsp_<key>`, `varp_<key>` | pairwise graphs | `obs_id_1`, `obs_id_2`, `value` |
//! | `uns` | unstructured metadata | `path`, `type`, `value` (JSON text) |
//! | `raw_var` | raw's var | `var_id`, `var_name`, columns |
//!
//! Generated names are lower case, because SQL folds unquoted identifiers; dataframe column names
//! are kept exactly as stored.

use annql_store::{Element, Encoding};

/// The column of a cell's row number (0-based), in `obs` and every table with a cell axis.
pub const OBS_ID: &str = "obs_id";
/// The column of a gene's row number (0-based), in `var` and every table with a gene axis.
pub const VAR_ID: &str = "var_id";
/// The column of a matrix entry's value.
pub const VALUE: &str = "value";

/// Which axis a table's rows (or ids) refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// Cells.
    Obs,
    /// Genes.
    Var,
    /// Components of an embedding (the columns of a sparse obsm/varm matrix).
    Component,
}

impl Axis {
    /// `obs` or `var`.
    pub fn name(self) -> &'static str {
        match self {
            Axis::Obs => "obs",
            Axis::Var => "var",
            Axis::Component => "component",
        }
    }
}

/// How a table is read from its element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableKind {
    /// A dataframe: one row per cell or gene.
    Frame {
        /// The axis whose id column (`obs_id`/`var_id`) leads the table.
        axis: Axis,
        /// Whether the index becomes a `<axis>_name` column (obs/var do; obsm frames do not).
        with_names: bool,
    },
    /// A matrix as (row id, column id, value) triples: its stored entries, or with `dense`
    /// every (cell, gene) pair of the selected rows and columns, zeros included.
    Matrix {
        /// Axis of the rows.
        rows: Axis,
        /// Axis of the columns.
        cols: Axis,
        /// The zero-filled view (`x_dense`): aggregates over it count cells without a stored
        /// value as 0, as scanpy does.
        dense: bool,
    },
    /// A dense 2-D array, one row per cell or gene with one column per component.
    Embedding {
        /// Axis of the rows.
        axis: Axis,
    },
    /// `uns`, flattened to (path, type, value).
    Uns,
}

/// One table of an attached store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDef {
    /// SQL name.
    pub name: String,
    /// The element path it reads.
    pub path: String,
    /// How it is read.
    pub kind: TableKind,
    /// A CSC copy of this CSR matrix in the store (`layers/<name>_csc`, see [`csc_copy_of`]):
    /// scans that select few genes read their columns from it instead of every row.
    pub csc_copy: Option<String>,
    /// The dataframes (`obs`, `var`, `raw/var`) whose lengths the table's rows and columns
    /// must equal: a matrix or embedding that disagrees with them cannot be read.
    pub axes: [Option<String>; 2],
}

/// The tables of one AnnData element (the root, or a MuData modality with `prefix` "rna_").
///
/// Every element in a place the spec gives a tabular reading becomes a table, whether or not
/// annql can read it: one it cannot (an unknown encoding, an impossible shape) is kept, so that
/// `annql schema` lists it with the reason and a query that names it gets that reason rather
/// than "table not found" (see [`crate::table::AnnTable::unmapped`]).
pub fn tables_of(adata: &Element, prefix: &str) -> Vec<TableDef> {
    let mut out = Vec::new();
    let frame_path = |e: Option<&Element>| e.map(|e| e.path.clone());
    let obs = frame_path(adata.child("obs"));
    let var = frame_path(adata.child("var"));
    let axis_frame = |axis: Axis| match axis {
        Axis::Obs => obs.clone(),
        Axis::Var => var.clone(),
        Axis::Component => None,
    };
    let mut add = |name: String, path: &str, kind, axes| {
        out.push(TableDef {
            name: format!("{prefix}{name}"),
            path: path.to_string(),
            csc_copy: csc_copy_of(adata, path),
            kind,
            axes,
        })
    };
    for axis in [Axis::Obs, Axis::Var] {
        if let Some(df) = adata.child(axis.name()) {
            add(
                axis.name().into(),
                &df.path,
                TableKind::Frame {
                    axis,
                    with_names: true,
                },
                [None, None],
            );
        }
    }
    if let Some(x) = adata.child("X") {
        let axes = [obs.clone(), var.clone()];
        add(
            "x".into(),
            &x.path,
            matrix(Axis::Obs, Axis::Var),
            axes.clone(),
        );
        add("x_dense".into(), &x.path, dense(Axis::Obs, Axis::Var), axes);
    }
    for (group, rows, cols) in [
        ("layers", Axis::Obs, Axis::Var),
        ("obsp", Axis::Obs, Axis::Obs),
        ("varp", Axis::Var, Axis::Var),
    ] {
        for e in children(adata, group) {
            let name = format!("{group}_{}", sql_name(e.name()));
            let axes = [axis_frame(rows), axis_frame(cols)];
            add(name.clone(), &e.path, matrix(rows, cols), axes.clone());
            if group == "layers" {
                add(format!("{name}_dense"), &e.path, dense(rows, cols), axes);
            }
        }
    }
    for (group, axis) in [("obsm", Axis::Obs), ("varm", Axis::Var)] {
        for e in children(adata, group) {
            // Anything but a dataframe or a sparse matrix is read as a dense embedding; one that
            // is not a 2-D array is an embedding that cannot be read, with the reason.
            let kind = match e.encoding {
                Encoding::DataFrame => TableKind::Frame {
                    axis,
                    with_names: false,
                },
                Encoding::CsrMatrix | Encoding::CscMatrix => matrix(axis, Axis::Component),
                _ => TableKind::Embedding { axis },
            };
            let name = format!("{group}_{}", sql_name(e.name()));
            add(name, &e.path, kind, [axis_frame(axis), None]);
        }
    }
    if let Some(uns) = adata.child("uns") {
        add("uns".into(), &uns.path, TableKind::Uns, [None, None]);
    }
    if let Some(raw) = adata.child("raw").filter(|e| e.encoding == Encoding::Raw) {
        let raw_var = frame_path(raw.child("var"));
        if let Some(x) = raw.child("X") {
            let axes = [obs.clone(), raw_var.clone()];
            add(
                "raw_x".into(),
                &x.path,
                matrix(Axis::Obs, Axis::Var),
                axes.clone(),
            );
            add(
                "raw_x_dense".into(),
                &x.path,
                dense(Axis::Obs, Axis::Var),
                axes,
            );
        }
        if let Some(var) = raw.child("var") {
            add(
                "raw_var".into(),
                &var.path,
                TableKind::Frame {
                    axis: Axis::Var,
                    with_names: true,
                },
                [None, None],
            );
        }
    }
    dedupe(out)
}

/// Every table of a store: its AnnData root, or each MuData modality prefixed by its name.
pub fn tables_of_store(store: &annql_store::AnnDataStore) -> Vec<TableDef> {
    match store.root().encoding {
        Encoding::MuData => {
            let mut out = tables_of(store.root(), "");
            for m in store.anndatas() {
                out.extend(tables_of(m, &format!("{}_", sql_name(m.name()))));
            }
            dedupe(out)
        }
        _ => tables_of(store.root(), ""),
    }
}

fn matrix(rows: Axis, cols: Axis) -> TableKind {
    TableKind::Matrix {
        rows,
        cols,
        dense: false,
    }
}

fn dense(rows: Axis, cols: Axis) -> TableKind {
    TableKind::Matrix {
        rows,
        cols,
        dense: true,
    }
}

/// The CSC copy of the CSR matrix at `path`: `layers/X_csc` for `X`, `layers/<name>_csc` for
/// `layers/<name>`, when it is a CSC matrix of the same shape. This is how a store opts in to
/// fast gene-selective queries: `adata.layers["X_csc"] = adata.X.tocsc()` in anndata.
pub fn csc_copy_of(adata: &Element, path: &str) -> Option<String> {
    let element = adata
        .children
        .iter()
        .find(|e| e.path == path)
        .or_else(|| children(adata, "layers").find(|e| e.path == path))?;
    if element.encoding != Encoding::CsrMatrix {
        return None;
    }
    let name = match element.path.rsplit_once('/') {
        Some((parent, name)) if parent.ends_with("layers") => name,
        _ if element.name() == "X" => "X",
        _ => return None,
    };
    children(adata, "layers")
        .find(|e| {
            e.name() == format!("{name}_csc")
                && e.encoding == Encoding::CscMatrix
                && e.shape == element.shape
        })
        .map(|e| e.path.clone())
}

fn children<'a>(adata: &'a Element, group: &str) -> impl Iterator<Item = &'a Element> {
    adata
        .child(group)
        .into_iter()
        .flat_map(|g| g.children.iter())
}

/// The name a store is attached under by default: its file stem (`pbmc.zarr.zip` → `pbmc`).
pub fn default_name(path: &str) -> String {
    let file = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path);
    let stem = [".zarr.zip", ".zarr", ".zip", ".h5ad", ".h5mu"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))
        .unwrap_or(file);
    sql_name(stem)
}

/// Lower case, with anything but letters, digits and `_` replaced by `_`.
pub fn sql_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Two elements that fold to the same name: the later keeps its exact (quoted) spelling.
fn dedupe(tables: Vec<TableDef>) -> Vec<TableDef> {
    let mut seen = std::collections::HashSet::new();
    tables
        .into_iter()
        .map(|mut t| {
            if !seen.insert(t.name.clone()) {
                t.name = format!("{}_{}", t.name, t.path.replace('/', "_"));
                seen.insert(t.name.clone());
            }
            t
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_to_sql_identifiers() {
        assert_eq!(sql_name("X_umap"), "x_umap");
        assert_eq!(sql_name("csc counts"), "csc_counts");
    }
}
