//! `annql serve`: reads the options and the catalog file, starts the server, stops on Ctrl-C.

use std::path::{Path, PathBuf};
use std::time::Duration;

use annql_server::{Server, ServerConfig, TlsFiles};

use crate::args::{Options, ServeArgs};
use crate::error::{CliError, Result};
use crate::script::{DEMO, dataset_spec};

/// Datasets named in a catalog file: `NAME = PATH` per line, `#` comments, blank lines.
/// Relative paths are taken relative to the file.
pub fn read_catalog(file: &Path) -> Result<Vec<(String, PathBuf)>> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::Usage(format!("catalog {}: {e}", file.display())))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let Some((name, path)) = line.split_once('=') else {
            return Err(CliError::Usage(format!(
                "{}:{}: expected NAME = PATH, got {line:?}",
                file.display(),
                n + 1
            )));
        };
        let (name, path) = (
            name.trim(),
            path.trim().trim_matches('"').trim_matches('\''),
        );
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(CliError::Usage(format!(
                "{}:{}: dataset name {name:?} must be letters, digits and _",
                file.display(),
                n + 1
            )));
        }
        let path = Path::new(path);
        let path = if path.is_relative() {
            base.join(path)
        } else {
            path.to_path_buf()
        };
        out.push((name.to_string(), path));
    }
    Ok(out)
}

/// Runs the server until Ctrl-C.
#[allow(clippy::print_stderr)]
pub async fn run(options: &Options, args: ServeArgs) -> Result<()> {
    let _ = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("annql_server=info"),
    )
    .try_init();
    let mut datasets: Vec<(String, PathBuf)> = args
        .datasets
        .iter()
        .map(|s| {
            let (name, path) = dataset_spec(s);
            (name, PathBuf::from(path))
        })
        .collect();
    if let Some(file) = &args.catalog {
        datasets.extend(read_catalog(file)?);
    }
    if datasets.is_empty() {
        datasets.push(("pbmc".into(), PathBuf::from(DEMO)));
    }
    let credentials = if args.no_auth {
        None
    } else {
        let password = match args.password.clone() {
            Some(p) if !p.is_empty() => p,
            _ => {
                let p: String = annql_server::auth::random_bytes(12)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                eprintln!(
                    "annql serve: no --password or ANNQL_PASSWORD given; generated password: {p}"
                );
                p
            }
        };
        Some((args.user.clone(), password))
    };
    let config = ServerConfig {
        listen: args.listen,
        datasets,
        credentials,
        tls: args
            .tls_cert
            .clone()
            .zip(args.tls_key.clone())
            .map(|(cert, key)| TlsFiles { cert, key }),
        require_tls: args.require_tls,
        max_connections: args.max_connections.max(1),
        memory_limit: options.memory_limit,
        threads: options.threads,
        idle_timeout: args.idle_timeout.map(Duration::from_secs),
        ..ServerConfig::default()
    };
    let names: Vec<String> = config.datasets.iter().map(|d| d.0.clone()).collect();
    let server = Server::bind(config).await?;
    eprintln!(
        "annql serve: listening on {} (datasets: {}; user {}{})",
        server.local_addr()?,
        names.join(", "),
        args.user,
        if args.require_tls {
            "; TLS required"
        } else {
            ""
        }
    );
    tokio::select! {
        r = server.run() => r?,
        _ = tokio::signal::ctrl_c() => eprintln!("annql serve: stopping"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_files() {
        let dir = tempfile::tempdir().map_err(|e| e.to_string());
        let Ok(dir) = dir else { return };
        let file = dir.path().join("catalog.txt");
        std::fs::write(
            &file,
            "# atlases\npbmc = pbmc.zarr\nlung=/data/lung.h5ad # remote later\n\n",
        )
        .ok();
        let got = read_catalog(&file).map_err(|e| e.to_string());
        assert_eq!(
            got,
            Ok(vec![
                ("pbmc".to_string(), dir.path().join("pbmc.zarr")),
                ("lung".to_string(), PathBuf::from("/data/lung.h5ad")),
            ])
        );
        std::fs::write(&file, "no equals sign\n").ok();
        assert!(read_catalog(&file).is_err());
    }
}
