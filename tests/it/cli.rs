//! The `annql` binary, driven as users drive it: batch files, every output format read back,
//! exit codes and error positions, schema and explain.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use annql::engine::datafusion::arrow::array::{AsArray, RecordBatch};
use annql::engine::datafusion::arrow::compute::cast;
use annql::engine::datafusion::arrow::datatypes::{DataType, Int64Type};

use crate::common::fixture;

fn annql(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_annql"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn annql: {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .map(|mut s| s.write_all(input.as_bytes()));
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap_or_else(|e| panic!("{e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn tiny() -> String {
    format!("tiny={}", fixture("tiny.v2.zarr").display())
}

const SCRIPT: &str = "-- statements without rows print nothing in machine formats
SET datafusion.execution.batch_size = 1000;
SELECT cell_type, count(*) AS n FROM tiny.obs GROUP BY cell_type ORDER BY cell_type;
SELECT var_name, 'a;b' AS s FROM tiny.var WHERE var_id < 2 ORDER BY var_id;
";

fn script_file() -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".sql")
        .tempfile()
        .unwrap_or_else(|e| panic!("{e}"));
    f.write_all(SCRIPT.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    f
}

#[test]
fn batch_csv_has_only_result_rows() {
    let f = script_file();
    let out = annql(
        &[
            "run",
            "-d",
            &tiny(),
            "--format",
            "csv",
            &f.path().display().to_string(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "cell_type,n");
    assert_eq!(
        &lines[1..5],
        &["B cell,28", "NK cell,29", "T cell,29", "monocyte,34"]
    );
    assert_eq!(&lines[5..], &["var_name,s", "CD3E,a;b", "CD4,a;b"]);
}

#[test]
fn batch_json_and_ndjson_parse_back() {
    let out = annql(
        &[
            "run",
            "-d",
            &tiny(),
            "--format",
            "json",
            "-c",
            "SELECT obs_name, age, treated FROM tiny.obs ORDER BY obs_id LIMIT 3",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    assert_eq!(rows[0]["obs_name"], "cell_0000");
    assert!(
        rows[0].get("age").is_none_or(|v| v.is_null()),
        "NA age is null: {rows}"
    );
    assert_eq!(rows[1]["age"], 21);
    assert_eq!(rows[1]["treated"], true);
    let out = annql(
        &[
            "run",
            "-d",
            &tiny(),
            "--format",
            "ndjson",
            "-c",
            "SELECT cell_type, count(*) AS n FROM tiny.obs GROUP BY 1 ORDER BY 1",
        ],
        None,
    );
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(
        lines[3],
        serde_json::json!({"cell_type": "monocyte", "n": 34})
    );
}

#[test]
fn batch_parquet_and_arrow_files_read_back() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sql = "SELECT obs_id, var_id, value FROM tiny.layers_counts WHERE obs_id < 10 ORDER BY obs_id, var_id";
    let pq = dir.path().join("out.parquet");
    let out = annql(
        &[
            "run",
            "-d",
            &tiny(),
            "--format",
            "parquet",
            "--output",
            &pq.display().to_string(),
            "-c",
            sql,
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let file = std::fs::File::open(&pq).unwrap_or_else(|e| panic!("{e}"));
    let reader = annql::engine::datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .unwrap_or_else(|e| panic!("{e}"));
    let rows: usize = reader.map(|b| b.map(|b| b.num_rows()).unwrap_or(0)).sum();
    let want = crate::common::expected("tiny");
    let indptr = want["layers"]["counts"]["indptr"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        rows as u64,
        indptr[10].as_u64().unwrap_or(0),
        "entries of the first 10 cells"
    );

    let ipc = dir.path().join("out.arrow");
    let out = annql(
        &[
            "run",
            "-d",
            &tiny(),
            "--format",
            "arrow",
            "-o",
            &ipc.display().to_string(),
            "-c",
            sql,
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reader = arrow_ipc::reader::FileReader::try_new(
        std::fs::File::open(&ipc).unwrap_or_else(|e| panic!("{e}")),
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let rows2: usize = reader.map(|b| b.map(|b| b.num_rows()).unwrap_or(0)).sum();
    assert_eq!(rows2, rows);

    // Binary formats refuse stdout.
    let out = annql(
        &["run", "-d", &tiny(), "--format", "parquet", "-c", sql],
        None,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--output"),
        "{}",
        text(&out.stderr)
    );
}

/// `annql run -d tiny --format FORMAT -o PATH -c SQL`.
fn run_into(format: &str, path: &std::path::Path, sql: &str) -> Output {
    annql(
        &[
            "run",
            "-d",
            &tiny(),
            "--format",
            format,
            "-o",
            &path.display().to_string(),
            "-c",
            sql,
        ],
        None,
    )
}

/// Every batch of an Arrow IPC or Parquet file.
fn read_batches(format: &str, path: &std::path::Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{e}"));
    let batches: Result<Vec<RecordBatch>, _> = match format {
        "arrow" => arrow_ipc::reader::FileReader::try_new(file, None)
            .unwrap_or_else(|e| panic!("{e}"))
            .collect(),
        _ => annql::engine::datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .unwrap_or_else(|e| panic!("{e}"))
            .collect(),
    };
    batches.unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn binary_results_stream_batch_by_batch_into_one_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let want = crate::common::expected("tiny");
    let nnz = want["layers"]["counts"]["indptr"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    // Small batches: the result may reach the writer in several windows.
    let script = "SET datafusion.execution.batch_size = 7;
                  SELECT obs_id, var_id, value FROM tiny.layers_counts;";
    for format in ["arrow", "parquet"] {
        let path = dir.path().join(format!("all.{format}"));
        let out = run_into(format, &path, script);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let rows: usize = read_batches(format, &path)
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows as u64, nnz, "{format}: every stored entry");
    }
    // An aggregate's batches each carry their own dictionary of a categorical key; the file
    // keeps one, grown as batches bring values, and every row reads back as the CSV has it.
    let path = dir.path().join("groups.arrow");
    let sql = "SET datafusion.execution.batch_size = 1;
               SELECT cell_type, count(*) AS n FROM tiny.obs GROUP BY cell_type";
    let out = run_into("arrow", &path, sql);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let batches = read_batches("arrow", &path);
    assert!(batches.len() > 1, "one batch per group");
    assert!(matches!(
        batches[0].schema().field(0).data_type(),
        DataType::Dictionary(_, v) if v.as_ref() == &DataType::Utf8
    ));
    let mut got: Vec<String> = Vec::new();
    for b in &batches {
        let names = cast(b.column(0), &DataType::Utf8).unwrap_or_else(|e| panic!("{e}"));
        let names = names.as_string::<i32>();
        let n = b.column(1).as_primitive::<Int64Type>();
        got.extend((0..b.num_rows()).map(|i| format!("{},{}", names.value(i), n.value(i))));
    }
    got.sort();
    let csv = annql(&["run", "-d", &tiny(), "--format", "csv", "-c", sql], None);
    assert!(csv.status.success(), "{}", text(&csv.stderr));
    let mut want: Vec<String> = text(&csv.stdout)
        .lines()
        .skip(1)
        .map(String::from)
        .collect();
    want.sort();
    assert_eq!(got, want);
    // One file holds one result.
    let out = run_into(
        "arrow",
        &dir.path().join("two.arrow"),
        "SELECT 1 AS a; SELECT 2 AS b",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("second result"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn errors_exit_nonzero_with_file_line_column() {
    let mut f = tempfile::Builder::new()
        .suffix(".sql")
        .tempfile()
        .unwrap_or_else(|e| panic!("{e}"));
    f.write_all(b"SELECT 1;\n\nSELECT count(*)\n  FROM tiny.obz;\nSELECT 2;\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let path = f.path().display().to_string();
    let out = annql(&["run", "-d", &tiny(), "--format", "csv", &path], None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{path}:4:8:")) && err.contains("tiny.obz"),
        "{err}"
    );
    // The first statement's result was printed; the third never ran.
    assert_eq!(
        text(&out.stdout).lines().collect::<Vec<_>>(),
        vec!["Int64(1)", "1"]
    );

    let out = annql(&["run", "-d", &tiny(), "-c", "SELEC 1"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("-c:1:"), "{}", text(&out.stderr));

    let out = annql(
        &["run", "-d", "/nonexistent/store.zarr", "-c", "SELECT 1"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("/nonexistent/store.zarr"),
        "{}",
        text(&out.stderr)
    );
}

/// An error is reported at its own line and column in the file, not at its statement's start:
/// an unknown column in a statement indented on line 3, and (above) a missing table on the
/// second line of a statement.
#[test]
fn script_errors_point_at_the_error_inside_the_statement() {
    let mut f = tempfile::Builder::new()
        .suffix(".sql")
        .tempfile()
        .unwrap_or_else(|e| panic!("{e}"));
    f.write_all(b"SELECT 1;\nSELECT 2;\n  SELECT cel_type FROM tiny.obs;\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let path = f.path().display().to_string();
    let out = annql(&["run", "-d", &tiny(), "--format", "csv", &path], None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{path}:3:10:")) && err.contains("cel_type"),
        "{err}"
    );
}

#[test]
fn stdin_and_the_demo_dataset() {
    let out = annql(
        &["run", "--format", "csv", "-"],
        Some("SELECT count(*) AS cells FROM pbmc.obs;"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "cells\n700\n");
}

#[test]
fn table_output_truncates_with_a_footer() {
    let out = annql(
        &["run", "-d", &tiny(), "-c", "SELECT * FROM tiny.obs"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("(120 rows, 40 shown)"), "{s}");
    assert!(s.lines().all(|l| l.chars().count() <= 170), "{s}");
}

#[test]
fn schema_and_explain_subcommands() {
    let out = annql(&["schema", &tiny()], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.contains("tiny.obs")
            && s.contains("\"Pre-existing heart disease\" categorical(Utf8)")
            && s.contains("/obs/age"),
        "{s}"
    );
    let out = annql(
        &[
            "explain",
            "-d",
            &tiny(),
            "SELECT count(*) FROM tiny.x JOIN tiny.obs USING (obs_id) WHERE tissue = 'lung'",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("AnnDataScanExec"),
        "{}",
        text(&out.stdout)
    );
}

/// `annql explain` of SQL that calls `aql('…')` shows the plan of the pipeline inside it.
#[test]
fn explain_subcommand_of_aql_table_function() {
    let out = annql(
        &[
            "explain",
            "-d",
            &tiny(),
            "SELECT * FROM aql('from tiny | group cell_type | agg n = count()') WHERE n > 1",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert!(
        plan.contains("AnnDataScanExec") && plan.contains("cell_type"),
        "{plan}"
    );
}

/// `.aql` files run as pipelines (programs separated by `;`), `--lang aql` makes `-c` a
/// pipeline, `aql('…')` works inside SQL, and a pipeline's error is reported at its file, line
/// and column with the rendered diagnostic.
#[test]
fn pipelines_in_files_commands_and_sql() {
    let mut f = tempfile::Builder::new()
        .suffix(".aql")
        .tempfile()
        .unwrap_or_else(|e| panic!("{e}"));
    f.write_all(
        b"# cells per type\nfrom tiny | group cell_type | agg n = count() | sort cell_type;\n\nlet genes = [\"CD3E\"];\nfrom tiny.var | where var_name in genes | select var_name\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let path = f.path().display().to_string();
    let out = annql(&["run", "-d", &tiny(), "--format", "csv", &path], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sql = annql(
        &[
            "run",
            "-d",
            &tiny(),
            "--format",
            "csv",
            "-c",
            "SELECT cell_type, count(*) AS n FROM tiny.obs GROUP BY 1 ORDER BY 1",
            "-c",
            "SELECT var_name FROM tiny.var WHERE var_name IN ('CD3E')",
        ],
        None,
    );
    assert_eq!(text(&out.stdout), text(&sql.stdout));
    assert!(text(&out.stdout).contains("CD3E"), "{}", text(&out.stdout));

    let c = annql(
        &[
            "run",
            "-d",
            &tiny(),
            "--lang",
            "aql",
            "--format",
            "csv",
            "-c",
            "from tiny | group cell_type | agg n = count() | sort cell_type",
        ],
        None,
    );
    let table_fn = annql(
        &[
            "run",
            "-d",
            &tiny(),
            "--format",
            "csv",
            "-c",
            "SELECT * FROM aql('from tiny | group cell_type | agg n = count()') ORDER BY cell_type",
        ],
        None,
    );
    assert!(table_fn.status.success(), "{}", text(&table_fn.stderr));
    let first_result: String = text(&out.stdout)
        .lines()
        .take_while(|l| !l.starts_with("var_name"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(text(&c.stdout), first_result);
    assert_eq!(text(&table_fn.stdout), first_result);

    // An unknown column on line 2 of the file: file:2:… and the caret under it.
    let mut bad = tempfile::Builder::new()
        .suffix(".aql")
        .tempfile()
        .unwrap_or_else(|e| panic!("{e}"));
    bad.write_all(b"from tiny | take 1;\nfrom tiny | where cel_type == \"B cell\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = annql(
        &["run", "-d", &tiny(), &bad.path().display().to_string()],
        None,
    );
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(":2:19:"), "{err}");
    assert!(
        err.contains("did you mean `cell_type`?") && err.contains("^^^^^^^^"),
        "{err}"
    );
}

/// A result of many batches comes out as CSV in order, with one header (batches are formatted
/// in parallel).
#[test]
fn csv_of_many_batches_keeps_order() {
    let out = annql(
        &[
            "run",
            "-d",
            &tiny(),
            "--format",
            "csv",
            "-c",
            "SET datafusion.execution.batch_size = 7",
            "-c",
            "SELECT obs_id, var_id FROM tiny.x ORDER BY obs_id, var_id",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = text(&out.stdout);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("obs_id,var_id"));
    let rows: Vec<(i64, i64)> = lines
        .map(|l| {
            let (a, b) = l.split_once(',').unwrap_or_else(|| panic!("{l}"));
            (
                a.parse().unwrap_or_else(|e| panic!("{l}: {e}")),
                b.parse().unwrap_or_else(|e| panic!("{l}: {e}")),
            )
        })
        .collect();
    assert!(rows.len() > 100, "{} rows", rows.len());
    assert!(rows.windows(2).all(|w| w[0] < w[1]), "out of order");
}

/// Options shared by every mode are accepted before the subcommand (as the docs write them) and
/// after it, with the same effect.
#[test]
fn global_options_before_or_after_the_subcommand() {
    let sql = "SELECT count(*) AS n FROM tiny.obs";
    let tiny = tiny();
    let orders: [Vec<&str>; 4] = [
        vec!["--stats", "--threads", "1", "run", "-d", &tiny, "-c", sql],
        vec!["run", "--stats", "--threads", "1", "-d", &tiny, "-c", sql],
        vec![
            "--memory-limit",
            "1GB",
            "--storage-option",
            "cache=off",
            "--stats",
            "run",
            "-d",
            &tiny,
            "-c",
            sql,
        ],
        vec!["--threads", "1", "run", "-d", &tiny, "--stats", "-c", sql],
    ];
    for args in orders {
        let out = annql(&args, None);
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(text(&out.stdout).contains("| 120 |"), "{args:?}");
        // --stats took effect wherever it stood.
        assert!(stderr.contains("-- -c:1:"), "{args:?}: {stderr}");
    }
    for args in [
        vec!["--threads", "1", "schema", &tiny],
        vec!["schema", "--threads", "1", &tiny],
    ] {
        let out = annql(&args, None);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("tiny.obs"), "{args:?}");
    }
}

/// The forms a dataset may take, as the store reader opens them.
const DATASET_FORMS: [&str; 9] = [
    "zarr directory",
    ".zarr.zip",
    ".h5ad",
    ".h5mu",
    "http://",
    "https://",
    "s3://",
    "gs://",
    "az://",
];

/// `--help` and the error for a path that is not a store name every form a dataset may take.
#[test]
fn help_and_bad_paths_name_every_dataset_form() {
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["serve", "--help"],
    ] {
        let out = annql(&args, None);
        assert!(out.status.success(), "{args:?}");
        let help = text(&out.stdout);
        for form in DATASET_FORMS {
            assert!(
                help.contains(form),
                "{args:?} does not mention {form}:\n{help}"
            );
        }
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let not_a_store = dir.path().join("notes.txt");
    std::fs::write(&not_a_store, "plain text, not a store\n").unwrap_or_else(|e| panic!("{e}"));
    let missing = dir.path().join("missing.zarr");
    for (path, says) in [(&not_a_store, "notes.txt"), (&missing, "cannot open")] {
        let path = path.display().to_string();
        for args in [
            vec!["run", "-d", &path, "-c", "SELECT 1"],
            vec!["schema", &path],
        ] {
            let out = annql(&args, None);
            let stderr = text(&out.stderr);
            assert!(!out.status.success(), "{args:?}");
            assert!(
                stderr.contains(&path) && stderr.contains(says),
                "{args:?}: {stderr}"
            );
            for form in DATASET_FORMS {
                assert!(stderr.contains(form), "{args:?}: no {form} in:\n{stderr}");
            }
        }
    }
}
