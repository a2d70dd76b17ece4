//! A hand-built catalog shaped like the tiny fixture, so parse/bind/lower run without a store.

use annql_lang::catalog::{Catalog, Column, Dataset, Ty};

fn cols(spec: &[(&str, Ty)]) -> Vec<Column> {
    spec.iter().map(|(n, t)| Column::new(*n, *t)).collect()
}

/// Datasets `t` and `other`: obs, var, x, layers_counts, raw_x, raw_var, obsm_x_umap.
pub fn catalog() -> Catalog {
    let entries = cols(&[("obs_id", Ty::Num), ("var_id", Ty::Num), ("value", Ty::Num)]);
    let mut ds = Dataset::default();
    ds.tables.insert(
        "obs".into(),
        cols(&[
            ("obs_id", Ty::Num),
            ("obs_name", Ty::Str),
            ("cell_type", Ty::Str),
            ("tissue", Ty::Str),
            ("donor_id", Ty::Str),
            ("n_counts", Ty::Num),
            ("pct_mito", Ty::Num),
            ("is_doublet", Ty::Bool),
            ("age", Ty::Num),
            ("Pre-existing heart disease", Ty::Str),
        ]),
    );
    ds.tables.insert(
        "var".into(),
        cols(&[
            ("var_id", Ty::Num),
            ("var_name", Ty::Str),
            ("highly_variable", Ty::Bool),
            ("means", Ty::Num),
        ]),
    );
    ds.tables.insert(
        "raw_var".into(),
        cols(&[("var_id", Ty::Num), ("var_name", Ty::Str)]),
    );
    for t in ["x", "layers_counts", "raw_x"] {
        ds.tables.insert(t.into(), entries.clone());
    }
    ds.tables.insert(
        "obsm_x_umap".into(),
        cols(&[
            ("obs_id", Ty::Num),
            ("x_umap_0", Ty::Num),
            ("x_umap_1", Ty::Num),
        ]),
    );
    let genes: Vec<String> = [
        "CD3E", "CD4", "CD8A", "MS4A1", "CD14", "LYZ", "NKG7", "GNLY", "FCGR3A", "PPBP",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    ds.genes.insert("var".into(), genes.clone());
    ds.genes.insert("raw_var".into(), genes);
    // `other`: a second dataset of the same shape, for joins and unions across datasets.
    Catalog {
        attached: vec!["t".into(), "other".into()],
        datasets: [("t".to_string(), ds.clone()), ("other".to_string(), ds)]
            .into_iter()
            .collect(),
    }
}

/// The SQL a pipeline lowers to, or its rendered diagnostics.
pub fn sql_or_error(source: &str) -> String {
    let catalog = catalog();
    let result = annql_lang::parse(source)
        .map_err(annql_lang::Error::from)
        .and_then(|p| Ok(annql_lang::bind(source, &p, &catalog)?))
        .and_then(|b| annql_lang::lower(&b));
    match result {
        Ok(s) => s.to_string(),
        Err(e) => e.to_string(),
    }
}
