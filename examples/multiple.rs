//! Several datasets in one session: each is a schema, and queries can combine them.
//!
//! `cargo run --example multiple`

// An example prints its answers.
#![allow(clippy::print_stdout)]

use annql::engine::AnnSession;
use annql::engine::datafusion::arrow::util::pretty::pretty_format_batches;

const DEMO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/data/pbmc68k_reduced.zarr"
);
const TINY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/data/tiny.v3.zarr"
);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let session = AnnSession::new()?;
    session.attach("pbmc", DEMO)?;
    // SQL works too, and names the dataset.
    session.collect(&format!("ATTACH '{TINY}' AS tiny")).await?;
    let batches = session
        .collect(
            "SELECT 'pbmc' AS dataset, count(*) AS cells FROM pbmc.obs \
             UNION ALL SELECT 'tiny', count(*) FROM tiny.obs \
             UNION ALL SELECT 'genes in both', count(*) FROM pbmc.var p JOIN tiny.var t ON p.var_name = t.var_name \
             ORDER BY 1",
        )
        .await?;
    println!("{}", pretty_format_batches(&batches)?);
    Ok(())
}
