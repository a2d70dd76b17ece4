//! Snapshot tests: parse trees, lowered SQL and rendered errors, one expected-text file per case
//! under `tests/snapshots/`. `ANNQL_UPDATE_SNAPSHOTS=1 cargo test -p annql-lang` rewrites them;
//! review the diff.

mod common;

use std::path::PathBuf;

/// (name, program). The snapshot holds the parse tree, then the SQL or the errors.
const CASES: &[(&str, &str)] = &[
    (
        "issue_example",
        r#"from t | where tissue == "lung" and cell_type in ["B cell", "T cell"] | group cell_type | agg n = count(), cd3e = mean(X["CD3E"]), expressing = frac(X["CD3E"] > 0) | sort -n | take 10"#,
    ),
    (
        "soma_value_filter",
        r#"from t | where is_doublet == False & pct_mito < 0.05 | n_counts > 100 | select obs_name, umap1 = obsm.X_umap[0], `Pre-existing heart disease`"#,
    ),
    (
        "per_cell_gene_values",
        r#"from t | where X["CD3E"] > 1 and X["CD4"] == 0 | agg n = count(), m = mean(sum(layers.counts))"#,
    ),
    (
        "ranges_tests_derive",
        r#"from t | where age in 20..40 and not (donor_id not in ["D1"]) and pct_mito is not nan and age is not null | derive pct = pct_mito * 100 | sort -pct | take 3"#,
    ),
    (
        "gene_set_by_predicate",
        "from t | group cell_type, gene | agg m = mean(X[var.highly_variable]), r = mean(raw.X[var.highly_variable])",
    ),
    (
        "gene_table",
        "from t.var | where var.highly_variable | select var_name, means | sort -means",
    ),
    (
        "string_functions",
        r#"from t | where lower(cell_type) == "b cell" and starts_with(donor_id, "D") | select obs_name, l = log1p(n_counts)"#,
    ),
    (
        "pseudobulk_then_filter",
        "from t | group donor_id, cell_type, gene | agg total = sum(layers.counts) | where total != 0",
    ),
    (
        "let_markers",
        "let markers = [\"CD3E\", \"CD4\"]\n# two marker genes\nfrom t\n| group cell_type, gene\n| agg mean_x = mean(X[markers]), frac_pos = frac(X[markers] > 0)",
    ),
    (
        "join_union_across_datasets",
        "from t | group cell_type | agg n = count() | join (from other | group cell_type | agg n2 = count(), m2 = mean(X[\"CD3E\"])) on cell_type | union (from other | where tissue == \"lung\" | group cell_type | agg n = count()) | sort -n",
    ),
    (
        "left_join_embedding",
        "from t | select obs_id, cell_type | left join (from t.obsm_x_umap) on obs_id | where x_umap_0 > 0",
    ),
    // Bad inputs.
    (
        "err_join",
        "from t | join (from other.var | select var_name, obs_name = var_name) on cell_typ | union (from nope)",
    ),
    (
        "err_unclosed_bracket",
        r#"from t | group cell_type | agg mean_x = mean(X["CD3E"]"#,
    ),
    ("err_unmatched_bracket", r#"from t | where X["CD3E"]] > 0)"#),
    (
        "err_unknown_columns",
        r#"from t | where cel_type == "B cell" | group cell_typ | agg n = count()"#,
    ),
    (
        "err_unknown_gene_and_layer",
        r#"from t | group cell_type | agg m = mean(X["CD3X"]), s = sum(layers.count)"#,
    ),
    (
        "err_types",
        r#"from t | where cell_type == 3 and age + "x" > 1 | agg n = count(cell_type)"#,
    ),
    (
        "err_single_equals",
        r#"from t | where cell_type = "B cell""#,
    ),
    ("err_unknown_dataset", "from tt | take 1"),
    (
        "err_not_a_reduction",
        "from t | group cell_type | agg n = count(), a = age",
    ),
    (
        "err_multiline",
        "from t\n| where tissue == \"lung\"\n| group cell_type\n| agg m = mean(X[\"CD3E\"]), v = vari(X[\"CD3E\"])",
    ),
    (
        "err_matrix_after_agg",
        "from t | agg n = count() | where X[\"CD3E\"] > 0",
    ),
];

fn snapshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots")
}

fn render(source: &str) -> String {
    let tree = match annql_lang::parse(source) {
        Ok(p) => p.to_string(),
        Err(e) => e.to_string(),
    };
    format!(
        "{source}\n--- parse\n{tree}\n--- sql\n{}\n",
        common::sql_or_error(source)
    )
}

#[test]
fn snapshots() {
    let update = std::env::var_os("ANNQL_UPDATE_SNAPSHOTS").is_some();
    let mut failures = Vec::new();
    for (name, source) in CASES {
        let got = render(source);
        let path = snapshot_dir().join(format!("{name}.txt"));
        if update {
            std::fs::create_dir_all(snapshot_dir()).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(&path, &got).unwrap_or_else(|e| panic!("{e}"));
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if got != want {
            failures.push(format!("--- {name} (expected {})\n{got}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "snapshots differ (ANNQL_UPDATE_SNAPSHOTS=1 to accept):\n{}",
        failures.join("\n")
    );
}

/// Parsing (and binding and lowering what parses) never panics on mutated programs.
#[test]
fn mutated_inputs_never_panic() {
    let pieces = [
        "from", "t", "|", "where", "group", "agg", "select", "derive", "sort", "take", "X", "[",
        "]", "(", ")", "\"CD3E\"", "'x'", "`a b`", "==", "!=", "<", "..", "in", "not", "and", "or",
        "&", "is", "null", "nan", "-", "+", "*", "/", "%", ",", "=", ".", "obsm", "layers",
        "counts", "raw", "var", "gene", "mean", "sum", "nnz", "frac", "count", "1", "2.5e3",
        "#c\n", "let", "é", "\\", "\"",
    ];
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for (_, base) in CASES {
        for _ in 0..300 {
            let mut s: String = (*base).to_string();
            for _ in 0..(1 + next() % 4) {
                let at = {
                    let mut i = (next() as usize) % (s.len() + 1);
                    while !s.is_char_boundary(i) {
                        i -= 1;
                    }
                    i
                };
                match next() % 3 {
                    0 => s.insert_str(at, pieces[(next() as usize) % pieces.len()]),
                    1 => {
                        let mut end = (at + 1 + (next() as usize) % 8).min(s.len());
                        while !s.is_char_boundary(end) {
                            end -= 1;
                        }
                        s.replace_range(at..end.max(at), "");
                    }
                    _ => s.truncate(at),
                }
            }
            let _ = common::sql_or_error(&s);
        }
    }
    for _ in 0..2000 {
        let s: String = (0..(next() % 20))
            .map(|_| pieces[(next() as usize) % pieces.len()])
            .collect::<Vec<_>>()
            .join(" ");
        let _ = common::sql_or_error(&s);
    }
}

/// Every pipeline example in `docs/language.md` parses, binds and lowers (on the test catalog,
/// with `atlas` read as `t` and `atlas2` as `other`).
#[test]
fn docs_examples_lower() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/language.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut examples = 0;
    for block in doc.split("```text\n").skip(1) {
        let Some((body, _)) = block.split_once("```") else {
            continue;
        };
        if !(body.starts_with("from ") || body.starts_with("let ")) {
            continue;
        }
        examples += 1;
        let source = body
            .replace("from atlas2", "from other")
            .replace("from atlas", "from t");
        let out = common::sql_or_error(&source);
        assert!(out.starts_with("SELECT"), "docs example:\n{source}\n{out}");
    }
    assert!(
        examples >= 8,
        "only {examples} examples found in docs/language.md"
    );
}
