//! The pipeline language from Rust: the same question as a pipeline, as SQL calling it through
//! `aql('…')`, and the SQL the pipeline lowers to.
//!
//! `cargo run --example pipeline`

// An example prints its answers.
#![allow(clippy::print_stdout)]

use annql::engine::datafusion::arrow::util::pretty::pretty_format_batches;

const DEMO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/data/pbmc68k_reduced.zarr"
);

const PIPELINE: &str = r#"from pbmc
| group bulk_labels
| agg cells = count(), mean_cd3e = mean(raw.X["CD3E"]), expressing = frac(raw.X["CD3E"] > 0)
| sort -mean_cd3e
| take 3"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `annql::session()` installs the `aql('…')` table function.
    let session = annql::session()?;
    session.attach("pbmc", DEMO)?;
    let df = annql::lang::query(&session, PIPELINE).await?;
    println!("{}", pretty_format_batches(&df.collect().await?)?);
    let sql =
        format!("SELECT bulk_labels, round(mean_cd3e, 3) AS mean_cd3e FROM aql($${PIPELINE}$$)");
    println!("{}", pretty_format_batches(&session.collect(&sql).await?)?);
    println!(
        "lowered: {}",
        annql::lang::to_sql(&session, PIPELINE).await?
    );
    Ok(())
}
