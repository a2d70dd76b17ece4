//! A matrix handed to Rust: the demo's CD14+ monocytes × every gene of raw.X as a `sprs` CSR
//! matrix, per-gene means computed with sprs, checked against the means anndata computes on the
//! same selection (`examples/data/subset_matrix.expected.json`, written by
//! `examples/data/make_subset_matrix_expected.py`).
//!
//! `cargo run --example subset_matrix`

// An example prints its answers.
#![allow(clippy::print_stdout)]

use annql::engine::AnnSession;
use annql::engine::sprs::CsMat;

const DEMO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/data/pbmc68k_reduced.zarr"
);
const EXPECTED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/data/subset_matrix.expected.json"
);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let session = AnnSession::new()?;
    session.attach("pbmc", DEMO)?;
    let cells = session
        .dataset("pbmc")?
        .obs("bulk_labels = 'CD14+ Monocyte'")
        .raw();
    // raw.X is stored as float32: the element type is the stored one.
    let m: CsMat<f32> = cells.to_csmat().await?;
    let (n_cells, n_genes) = m.shape();

    // Per-gene means (absent entries are 0): column sums over the rows, divided by the cells.
    let mut sums = vec![0f64; n_genes];
    for row in m.outer_iterator() {
        for (gene, &v) in row.iter() {
            sums[gene] += f64::from(v);
        }
    }
    let means: Vec<f64> = sums.iter().map(|s| s / n_cells as f64).collect();

    let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(EXPECTED)?)?;
    let want: Vec<f64> = expected["means"]
        .as_array()
        .ok_or("expected means missing")?
        .iter()
        .map(|v| v.as_f64().unwrap_or(f64::NAN))
        .collect();
    let genes = expected["genes"]
        .as_array()
        .ok_or("expected genes missing")?;
    if n_cells as u64 != expected["cells"].as_u64().unwrap_or(0) || want.len() != n_genes {
        return Err(format!("selection is {n_cells} × {n_genes}, anndata's is not").into());
    }
    let worst = means
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs() / w.abs().max(1.0))
        .fold(0f64, f64::max);
    if worst > 1e-5 {
        return Err(format!("means differ from anndata's by up to {worst:e}").into());
    }
    let mut top: Vec<(usize, f64)> = means.iter().copied().enumerate().collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!(
        "CD14+ monocytes: {n_cells} cells × {n_genes} genes, {} stored entries",
        m.nnz()
    );
    for (gene, mean) in top.iter().take(5) {
        println!(
            "  {:<10} mean {mean:.4}",
            genes[*gene].as_str().unwrap_or("?")
        );
    }
    println!("per-gene means match anndata's (max relative difference {worst:.1e})");
    Ok(())
}
