//! Quickstart: attach the bundled demo dataset and run one group-by.
//!
//! `cargo run --example quickstart`

// An example prints its answers.
#![allow(clippy::print_stdout)]

use annql::engine::AnnSession;
use annql::engine::datafusion::arrow::util::pretty::pretty_format_batches;

const DEMO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/data/pbmc68k_reduced.zarr"
);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let session = AnnSession::new()?;
    session.attach("pbmc", DEMO)?;
    // Cells per annotated cell type, and the mean of the stored (non-zero) CD3E values.
    let batches = session
        .collect(
            "SELECT o.bulk_labels, count(DISTINCT o.obs_id) AS cells, round(avg(x.value), 4) AS mean_stored_cd3e \
             FROM pbmc.obs o JOIN pbmc.x x USING (obs_id) JOIN pbmc.var v USING (var_id) \
             WHERE v.var_name = 'CD3E' GROUP BY 1 ORDER BY 1",
        )
        .await?;
    println!("{}", pretty_format_batches(&batches)?);
    Ok(())
}
