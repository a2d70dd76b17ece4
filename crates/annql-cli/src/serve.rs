//! `annql serve`: reads the options and the catalog file, starts the server, stops on Ctrl-C.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use annql_engine::session::remote::Connector;
use annql_server::{Dataset, Server, ServerConfig, TlsFiles};
use annql_store::StorageOptions;
use annql_store::object::is_remote;

use crate::args::{Options, ServeArgs};
use crate::error::{CliError, Result};
use crate::script::{DEMO, dataset_spec, storage_options};

/// Datasets named in a catalog file: `NAME = LOCATION [KEY=VALUE ...]` per line, `#` comments,
/// blank lines. LOCATION is a path (relative ones are taken relative to the file) or a URL; the
/// KEY=VALUE pairs are storage options for a remote store (`endpoint=…`, `cache=off`).
pub fn read_catalog(file: &Path) -> Result<Vec<Dataset>> {
    let text = std::fs::read_to_string(file).map_err(|e| CliError::File {
        what: "catalog ",
        path: file.to_path_buf(),
        source: Box::new(e),
    })?;
    let base = file.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = |why: String| CliError::Usage(format!("{}:{}: {why}", file.display(), n + 1));
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let Some((name, rest)) = line.split_once('=') else {
            return Err(at(format!("expected NAME = LOCATION, got {line:?}")));
        };
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(at(format!(
                "dataset name {name:?} must be letters, digits and _"
            )));
        }
        let mut words = rest.split_whitespace();
        let location = words
            .next()
            .map(|w| w.trim_matches('"').trim_matches('\''))
            .filter(|w| !w.is_empty())
            .ok_or_else(|| at(format!("no location for {name}")))?;
        let mut pairs = Vec::new();
        for w in words {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| at(format!("expected KEY=VALUE after the location, got {w:?}")))?;
            pairs.push((
                k.to_string(),
                v.trim_matches('"').trim_matches('\'').to_string(),
            ));
        }
        let options = StorageOptions::from_pairs(pairs).map_err(|e| CliError::Catalog {
            path: file.to_path_buf(),
            line: n + 1,
            source: Box::new(e),
        })?;
        let path = Path::new(location);
        let location = if is_remote(location) || !path.is_relative() {
            path.to_path_buf()
        } else {
            base.join(path)
        };
        out.push(Dataset {
            name: name.to_string(),
            location,
            options,
        });
    }
    Ok(out)
}

/// Runs the server until Ctrl-C.
#[allow(clippy::print_stderr)]
pub async fn run(options: &Options, args: ServeArgs) -> Result<()> {
    let storage = storage_options(options)?;
    let mut datasets: Vec<Dataset> = args
        .datasets
        .iter()
        .map(|s| {
            let (name, path) = dataset_spec(s);
            Dataset {
                name,
                location: PathBuf::from(path),
                options: storage.clone(),
            }
        })
        .collect();
    if let Some(file) = &args.catalog {
        datasets.extend(read_catalog(file)?);
    }
    if datasets.is_empty() {
        datasets.push(Dataset {
            name: "pbmc".into(),
            location: PathBuf::from(DEMO),
            options: storage,
        });
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
        flight_sql: args.flight_sql,
        datasets,
        credentials,
        tls: args
            .tls_cert
            .clone()
            .zip(args.tls_key.clone())
            .map(|(cert, key)| TlsFiles { cert, key }),
        require_tls: args.require_tls,
        max_connections: args.max_connections.max(1),
        // A per-query limit by default; `--memory-limit 0` turns it off.
        memory_limit: match options.memory_limit {
            Some(0) => None,
            Some(limit) => Some(limit),
            None => Some(annql_server::config::DEFAULT_QUERY_MEMORY),
        },
        threads: options.threads,
        idle_timeout: args.idle_timeout.map(Duration::from_secs),
        writable_dir: args.writable_dir.clone(),
        cluster: match &options.cluster {
            Some(url) => {
                let cluster: Arc<dyn Connector> = Arc::new(annql_cluster::Cluster::new(url)?);
                Some(cluster)
            }
            None => None,
        },
        ..ServerConfig::default()
    };
    let names: Vec<String> = config.datasets.iter().map(|d| d.name.clone()).collect();
    let server = Server::bind(config).await?;
    let flight = match server.flight_sql_addr().transpose()? {
        Some(addr) => format!(", Flight SQL on {addr}"),
        None => String::new(),
    };
    eprintln!(
        "annql serve: listening on {}{flight} (datasets: {}; user {}{})",
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
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("a temporary directory: {e}"));
        let file = dir.path().join("catalog.txt");
        std::fs::write(
            &file,
            "# atlases\npbmc = pbmc.zarr\nlung=/data/lung.h5ad # local\n\n\
             cloud = s3://bucket/atlas.zarr endpoint=http://127.0.0.1:9000 cache=off\n",
        )
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let got = read_catalog(&file).map(|d| {
            d.into_iter()
                .map(|d| (d.name, d.location))
                .collect::<Vec<_>>()
        });
        assert_eq!(
            got.map_err(|e| e.to_string()),
            Ok(vec![
                ("pbmc".to_string(), dir.path().join("pbmc.zarr")),
                ("lung".to_string(), PathBuf::from("/data/lung.h5ad")),
                ("cloud".to_string(), PathBuf::from("s3://bucket/atlas.zarr")),
            ])
        );
        std::fs::write(&file, "no equals sign\n").ok();
        assert!(read_catalog(&file).is_err());
        std::fs::write(&file, "x = s3://b/a.zarr retries=many\n").ok();
        let err = read_catalog(&file).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains(":1:") && e.contains("retries")));
    }
}
