//! Streaming a large result batch by batch, in bounded memory, instead of collecting it.
//!
//! `cargo run --example streaming`

// An example prints its answers.
#![allow(clippy::print_stdout)]

use annql::engine::AnnSession;
use futures::StreamExt;

const DEMO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/data/pbmc68k_reduced.zarr"
);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let session = AnnSession::builder().with_memory_limit(256 << 20).build()?;
    session.attach("pbmc", DEMO)?;
    let mut stream = session
        .sql("SELECT obs_id, var_id, value FROM pbmc.raw_x")
        .await?
        .execute_stream()
        .await?;
    let (mut batches, mut entries, mut total) = (0usize, 0usize, 0f64);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        batches += 1;
        entries += batch.num_rows();
        let values = annql::engine::datafusion::arrow::compute::cast(
            batch.column(2),
            &annql::engine::datafusion::arrow::datatypes::DataType::Float64,
        )?;
        let values = annql::engine::datafusion::arrow::array::AsArray::as_primitive::<
            annql::engine::datafusion::arrow::datatypes::Float64Type,
        >(values.as_ref());
        total += values.values().iter().sum::<f64>();
    }
    println!(
        "streamed {entries} stored entries of raw.X in {batches} batches; sum of values {total:.3}"
    );
    Ok(())
}
