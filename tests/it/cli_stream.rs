//! Results printed as they stream: every text format of `annql run` writes the same bytes however
//! the result is cut into batches, its rows are those the real anndata reads, and printing a
//! result far larger than memory keeps the process's peak memory bounded.

use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::common::{expected, fixture, python};

fn annql(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_annql"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn annql: {e}"))
}

/// `sql` over the tiny fixture in `format`, with DataFusion's batches `batch_size` rows long.
fn tiny_in(format: &str, batch_size: usize, sql: &str) -> String {
    let tiny = format!("tiny={}", fixture("tiny.v2.zarr").display());
    let set = format!("SET datafusion.execution.batch_size = {batch_size}");
    let out = annql(&[
        "run",
        "--threads",
        "1",
        "-d",
        &tiny,
        "--format",
        format,
        "-c",
        &set,
        "-c",
        sql,
    ]);
    assert!(
        out.status.success(),
        "{format}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The stored entries of the tiny fixture's X as anndata read them: (row, column, value).
fn tiny_x() -> Vec<(i64, i64, f64)> {
    let x = &expected("tiny")["X"];
    let num = |v: &Value| v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    let list = |k: &str| -> Vec<f64> {
        x[k].as_array()
            .unwrap_or_else(|| panic!("X.{k}"))
            .iter()
            .map(num)
            .collect()
    };
    let (indptr, indices, data) = (list("indptr"), list("indices"), list("data"));
    let mut out = Vec::new();
    for row in 0..indptr.len() - 1 {
        for k in indptr[row] as usize..indptr[row + 1] as usize {
            out.push((row as i64, indices[k] as i64, data[k]));
        }
    }
    out
}

const X_SORTED: &str = "SELECT obs_id, var_id, value FROM tiny.x ORDER BY obs_id, var_id";

#[test]
fn every_text_format_is_the_same_however_the_result_is_batched() {
    for format in ["table", "csv", "json", "ndjson", "markdown"] {
        let whole = tiny_in(format, 100_000, X_SORTED);
        for batch_size in [1, 7, 64] {
            assert_eq!(
                tiny_in(format, batch_size, X_SORTED),
                whole,
                "{format} with batches of {batch_size} rows"
            );
        }
        // An empty result: the header alone (CSV, Markdown), `[]`, nothing, or `(0 rows)`.
        let empty = tiny_in(format, 7, &format!("{X_SORTED} LIMIT 0"));
        let want = match format {
            "table" => "(0 rows)\n",
            "csv" => "obs_id,var_id,value\n",
            "json" => "[]\n",
            "ndjson" => "",
            _ => "| obs_id | var_id | value |\n|---|---|---|\n",
        };
        assert!(empty.ends_with(want), "{format} of no rows: {empty:?}");
    }
}

#[test]
fn streamed_rows_are_what_anndata_reads() {
    let want = tiny_x();
    let json: Value = serde_json::from_str(&tiny_in("json", 7, X_SORTED))
        .unwrap_or_else(|e| panic!("the JSON output parses: {e}"));
    let got: Vec<(i64, i64, f64)> = json
        .as_array()
        .unwrap_or_else(|| panic!("an array: {json}"))
        .iter()
        .map(|r| {
            let n = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} in {r}"));
            (n("obs_id") as i64, n("var_id") as i64, n("value"))
        })
        .collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((g.0, g.1), (w.0, w.1));
        assert!(
            (g.2 - w.2).abs() <= 1e-6 * w.2.abs().max(1.0),
            "{g:?} vs {w:?}"
        );
    }
    // The NDJSON lines and the CSV rows are those entries too, in order.
    let ndjson = tiny_in("ndjson", 7, X_SORTED);
    assert_eq!(ndjson.lines().count(), want.len());
    let csv = tiny_in("csv", 7, X_SORTED);
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), want.len());
    for (line, w) in rows.iter().zip(&want) {
        assert!(
            line.starts_with(&format!("{},{},", w.0, w.1)),
            "{line} vs {w:?}"
        );
    }
    // The table shows the first and last 20 entries and counts all of them.
    let table = tiny_in("table", 7, X_SORTED);
    assert!(
        table.contains(&format!("({} rows, 40 shown)", want.len())),
        "{table}"
    );
    let cells = |line: &str| -> Vec<String> {
        line.split('|')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect()
    };
    let shown: Vec<Vec<String>> = table
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(1)
        .map(cells)
        .filter(|c| c[0] != "…")
        .collect();
    let picked: Vec<&(i64, i64, f64)> = want[..20].iter().chain(&want[want.len() - 20..]).collect();
    assert_eq!(shown.len(), picked.len());
    for (s, w) in shown.iter().zip(picked) {
        assert_eq!(
            (s[0].as_str(), s[1].as_str()),
            (&*w.0.to_string(), &*w.1.to_string())
        );
    }
    // A display limit of its own: the first and last 3.
    let tiny = format!("tiny={}", fixture("tiny.v2.zarr").display());
    let out = annql(&["run", "-d", &tiny, "--max-rows", "6", "-c", X_SORTED]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("({} rows, 6 shown)", want.len())),
        "{text}"
    );
}

/// Writes a sparse AnnData store of `cells` × `genes` with `density` stored entries with the
/// real anndata (zarr v2), returning its stored entry count.
fn write_store(path: &std::path::Path, cells: usize, genes: usize, density: f64) -> u64 {
    let script = format!(
        "import anndata, numpy as np, pandas as pd, scipy.sparse as sp\n\
         x = sp.random({cells}, {genes}, density={density}, format='csr', dtype=np.float32, random_state=0)\n\
         x.data += 1\n\
         a = anndata.AnnData(X=x, obs=pd.DataFrame(index=[f'c{{i}}' for i in range({cells})]),\n\
                             var=pd.DataFrame(index=[f'g{{i}}' for i in range({genes})]))\n\
         a.write_zarr(r'{}')\n\
         print(x.nnz)\n",
        path.display()
    );
    let out = Command::new(python())
        .args(["-c", &script])
        .output()
        .unwrap_or_else(|e| panic!("python: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("nnz: {e}"))
}

/// Runs `annql run` with `args` and returns the child's peak resident memory in MiB
/// (`getrusage(RUSAGE_CHILDREN)` of a Python parent that runs only it), the bytes it wrote to
/// stdout (read and counted, not kept) and its last line.
fn peak_mib(args: &[&str]) -> (f64, u64, String) {
    let script = "import resource, subprocess, sys\n\
                  p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)\n\
                  n, tail = 0, b''\n\
                  for chunk in iter(lambda: p.stdout.read(1 << 16), b''):\n    n += len(chunk); tail = (tail + chunk)[-4096:]\n\
                  err = p.stderr.read()\n\
                  assert p.wait() == 0, err.decode()\n\
                  print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, n, tail.rstrip().rsplit(b'\\n', 1)[-1].decode())\n";
    let out = Command::new(python())
        .args(["-c", script, env!("CARGO_BIN_EXE_annql")])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("python: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut words = text.splitn(3, ' ');
    let mut next = || words.next().unwrap_or_else(|| panic!("{text}")).to_string();
    let (mib, bytes, last) = (next(), next(), next());
    (
        mib.parse().unwrap_or_else(|e| panic!("{text}: {e}")),
        bytes.parse().unwrap_or_else(|e| panic!("{text}: {e}")),
        last,
    )
}

#[test]
fn a_result_larger_than_memory_prints_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = dir.path().join("big.zarr");
    // 24M stored entries: held whole, the result's Arrow batches alone take ~460 MiB (and its
    // JSON text ~1 GiB); streamed, only the scan's blocks in flight are held.
    let nnz = write_store(&store, 120_000, 4_000, 0.05);
    let dataset = format!("big={}", store.display());
    let (table_mib, _, footer) = peak_mib(&["run", "-d", &dataset, "-c", "SELECT * FROM big.x"]);
    assert_eq!(footer, format!("({nnz} rows, 40 shown)"));
    let (json_mib, bytes, end) = peak_mib(&[
        "run",
        "-d",
        &dataset,
        "--format",
        "json",
        "-c",
        "SELECT * FROM big.x",
    ]);
    assert!(
        bytes > 20 * nnz && end.ends_with("}]"),
        "{bytes} bytes ending {end}"
    );
    eprintln!("{nnz} entries: table peak {table_mib:.0} MiB, JSON peak {json_mib:.0} MiB");
    for (what, mib) in [("table", table_mib), ("json", json_mib)] {
        assert!(mib < 300.0, "{what}: peak {mib:.0} MiB for {nnz} entries");
    }
}
