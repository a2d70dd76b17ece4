//! The `annql` command (see `docs/cli.md`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    #[cfg(target_os = "linux")]
    serving::tune_allocator();
    annql_cli::main()
}

/// The allocator settings of `annql serve` (and `annql index`).
///
/// mimalloc's defaults suit one big scan: freed memory stays mapped a while (purge delay 1 s,
/// retained pages, transparent huge pages) for the next chunk buffer. A server's load comes and
/// goes, and its RSS should follow: with the defaults, 64 clients leave ~180 MB behind that
/// stays. These settings hand freed memory back at once. mimalloc and glibc read them from the
/// environment when the process starts (before `main`), so `serve` re-executes itself with them
/// set; when the user has set any of them, all are left to the user (and no re-execution
/// happens).
#[cfg(target_os = "linux")]
mod serving {
    use std::os::unix::process::CommandExt;

    const SETTINGS: [(&str, &str); 5] = [
        ("MIMALLOC_PURGE_DELAY", "0"),
        ("MIMALLOC_PAGE_FULL_RETAIN", "0"),
        ("MIMALLOC_ALLOW_THP", "0"),
        // C codecs (c-blosc) allocate through glibc's malloc, whose dynamic mmap threshold
        // rises after the first large free: chunk buffers then land in per-thread arenas that
        // never shrink (~90 MB left behind by 16 clients on atlas-s). A fixed threshold maps
        // each large buffer on its own and unmaps it when freed.
        ("MALLOC_MMAP_THRESHOLD_", "131072"),
        ("MALLOC_TRIM_THRESHOLD_", "131072"),
    ];

    pub fn tune_allocator() {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        let tuned = match args.get(1).and_then(|a| a.to_str()) {
            Some("serve") => true,
            // `index` under a small --memory too: what the allocator keeps of one pass's buffers
            // (~50 MB) would otherwise add to the next one's. Above it, that is within the
            // allowance, and the settings would cost a third of the time (atlas-m, 1 GiB: 30 s
            // with mimalloc's defaults, 46 s returning memory at once, 62 s with all of these).
            Some("index") => small_index_memory(&args),
            _ => false,
        };
        if !tuned || SETTINGS.iter().any(|(k, _)| std::env::var_os(k).is_some()) {
            return;
        }
        let exe = match std::env::current_exe() {
            Ok(exe) => exe,
            Err(error) => return log_failure(&error),
        };
        let error = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .envs(SETTINGS)
            .exec();
        // exec returns only when it failed: serve with the default settings.
        log_failure(&error);
    }

    /// Whether `annql index`'s `--memory` (default 1 GiB) is under 512 MiB.
    fn small_index_memory(args: &[std::ffi::OsString]) -> bool {
        let mut memory = None;
        let mut it = args.iter().filter_map(|a| a.to_str());
        while let Some(arg) = it.next() {
            if let Some(v) = arg.strip_prefix("--memory=") {
                memory = Some(v);
            } else if arg == "--memory" {
                memory = it.next();
            }
        }
        // An unparsable value is refused by the argument parser right after; no settings needed.
        memory
            .and_then(annql_store::object::parse_bytes)
            .is_some_and(|bytes| bytes < 512 << 20)
    }

    fn log_failure(error: &std::io::Error) {
        // The logger is not set up yet; this is the one line before it that says why memory
        // may not come back.
        #[allow(clippy::print_stderr)]
        {
            eprintln!("annql: serving without the allocator settings (cannot re-execute: {error})");
        }
    }
}
