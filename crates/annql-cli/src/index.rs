//! `annql index`: builds, checks or removes the gene index of a store (docs/index.md).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use annql_index::{IndexOptions, check, default_location, drop_index};

use crate::args::{IndexArgs, Options};
use crate::error::{CliError, Result};
use crate::script::storage_options;

/// Builds the index of `args.source`'s matrix (or checks or drops it), printing what was done.
/// Ctrl-C stops a build; nothing is then left at the sidecar's path.
#[allow(clippy::print_stdout)]
pub async fn run(options: &Options, args: IndexArgs) -> Result<()> {
    let storage = storage_options(options)?;
    let sidecar = match &args.out {
        Some(out) => Some(out.clone()),
        None => default_location(&args.source),
    };
    let index_error = |e: annql_index::Error| CliError::Engine(annql_engine::Error::from(e));
    if args.check || args.drop {
        let sidecar = sidecar.ok_or_else(|| {
            CliError::Usage(format!(
                "{} is remote: name its index with --out",
                args.source
            ))
        })?;
        if args.drop {
            drop_index(&sidecar).map_err(index_error)?;
            println!("removed {}", sidecar.display());
            return Ok(());
        }
        let copies = check(&args.source, &storage, &sidecar).map_err(index_error)?;
        let mut stale = 0;
        for c in &copies {
            let p = &c.provenance;
            let state = match &c.stale {
                None => "usable".to_string(),
                Some(why) => {
                    stale += 1;
                    format!("stale, ignored: {why}")
                }
            };
            println!(
                "{}:/{}  {}×{}, {} entries  {state}",
                sidecar.display(),
                c.matrix,
                p.shape.0,
                p.shape.1,
                p.nnz
            );
        }
        if stale > 0 {
            return Err(CliError::Usage(format!(
                "{stale} of {} copies in {} are stale (rebuild with `annql index {}`)",
                copies.len(),
                sidecar.display(),
                args.source
            )));
        }
        return Ok(());
    }
    let cancel = Arc::new(AtomicBool::new(false));
    let index_options = IndexOptions {
        matrix: args.matrix,
        // --memory bounds the whole process: the build gets what the process does not hold yet
        // (~30 MiB of code, runtime threads and allocator arenas; assumed where /proc is not).
        memory: args
            .memory
            .saturating_sub(annql_index::build::resident_bytes().unwrap_or(32 << 20)),
        out: args.out,
        in_place: args.in_place,
        cancel: Some(cancel.clone()),
        window: None,
    };
    let interrupted = crate::interrupt::wakeup().notified();
    let flag = cancel.clone();
    let watcher = tokio::spawn(async move {
        interrupted.await;
        flag.store(true, Ordering::SeqCst);
    });
    let source = args.source.clone();
    let built = tokio::task::spawn_blocking(move || {
        let bar = Bar::new();
        let built = annql_index::build(&source, &storage, &index_options, &|done, total| {
            bar.draw(done, total)
        });
        bar.clear();
        built
    })
    .await
    .map_err(|e| CliError::Usage(format!("the index build stopped: {e}")))?;
    watcher.abort();
    let built = match built {
        Err(annql_index::Error::Cancelled(_)) => return Err(CliError::Cancelled),
        other => other.map_err(index_error)?,
    };
    println!(
        "indexed {} of {}: {} cells × {} genes, {} entries, {} pass{} in {:.1} s → {}",
        built.matrix,
        args.source,
        built.shape.0,
        built.shape.1,
        built.nnz,
        built.passes,
        if built.passes == 1 { "" } else { "es" },
        built.seconds,
        built.sidecar.display()
    );
    Ok(())
}

/// The build's progress on stderr: only on a terminal, at most ten times a second.
struct Bar {
    on: bool,
    started: Instant,
    last: AtomicU64,
}

impl Bar {
    fn new() -> Bar {
        Bar {
            on: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn draw(&self, done: u64, total: u64) {
        let now = self.started.elapsed().as_millis() as u64;
        if !self.on || total == 0 || now < self.last.load(Ordering::Relaxed) + 100 {
            return;
        }
        self.last.store(now, Ordering::Relaxed);
        let filled = (done.min(total) * 30 / total) as usize;
        let bar = format!("{}{}", "=".repeat(filled), " ".repeat(30 - filled));
        // Drawing is best effort: a terminal that cannot take it loses nothing of the build.
        let _ = write!(
            std::io::stderr(),
            "\r[{bar}] {:>3}% {:.0} s",
            done.min(total) * 100 / total,
            now as f64 / 1000.0
        );
        // Best effort, as the line above.
        let _ = std::io::stderr().flush();
    }

    fn clear(&self) {
        if self.on {
            // Best effort, as above: clears the bar's line.
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}
