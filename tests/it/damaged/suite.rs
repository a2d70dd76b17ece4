//! The damaged-store suite's runner: every case of [`super::cases::cases`] is a copy of a fixture
//! broken by the shared generator ([`crate::damage`]), queried by the real `annql` binary in a
//! subprocess under an address-space limit and a time limit.
//!
//! A case passes when the query that reads the damaged element exits with annql's error (status
//! 1: no panic, no abort, no kill), the error names the store's path and the case's words (the
//! element and what is wrong), and the query that does not touch the damage answers exactly as
//! on the undamaged fixture. Cases in [`super::cases::KNOWN_GAPS`] run too; their outcome is
//! shown, and one that starts passing fails the suite until it leaves the list.
//!
//! `ANNQL_DAMAGED_TABLE=1` writes every case and the error it gives to
//! `tests/it/damaged.cases.md`.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::cases::{Case, KNOWN_GAPS, cases};
use crate::common::fixture;
use crate::damage::{self, Damaged};

/// The address space each `annql` may map: room for the allocator's arenas and the threads'
/// stacks, far below what a declared 10¹⁵-entry shape would ask.
const ADDRESS_SPACE: u64 = 4 << 30;
/// How long one query may take before it counts as a hang (a healthy one takes ~0.2 s).
const TIME_LIMIT: Duration = Duration::from_secs(20);
/// Cases run side by side (each spawns one `annql` at a time).
const WORKERS: usize = 3;

/// How one `annql run` ended.
struct Run {
    /// The exit code, or None when a signal ended it (or the time limit did).
    code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    /// What went wrong with the process itself, if anything: a hang, a signal, a panic, an
    /// allocation failure.
    fn crash(&self) -> Option<String> {
        if self.timed_out {
            return Some(format!("hang: still running after {TIME_LIMIT:?}"));
        }
        if self.stderr.contains("memory allocation of") {
            return Some(format!("OOM: {}", first_line(&self.stderr)));
        }
        if let Some(at) = self.stderr.lines().position(|l| l.contains("panicked")) {
            // The panic's location and its message (the line after), without the backtrace.
            let lines: Vec<&str> = self.stderr.lines().skip(at).take(2).collect();
            return Some(format!("panic: {}", without_thread_id(&lines.join(" "))));
        }
        if let Some(sig) = self.signal {
            return Some(format!("killed by signal {sig}: {}", self.stderr.trim()));
        }
        None
    }
}

fn first_line(text: &str) -> &str {
    text.lines().find(|l| !l.trim().is_empty()).unwrap_or("")
}

/// A panic's first line without its thread id (`thread 'main' (1234) panicked`), so the
/// generated table stays the same from run to run.
fn without_thread_id(line: &str) -> String {
    match (line.find("' ("), line.find(") panicked")) {
        (Some(a), Some(b)) if a < b => format!("{}'{}", &line[..a], &line[b + 1..]),
        _ => line.to_string(),
    }
}

/// `annql run -d t=STORE --format csv -c SQL` under [`ADDRESS_SPACE`] and [`TIME_LIMIT`].
fn annql(store: &Path, sql: &str, scratch: &Path) -> Run {
    let out_path = scratch.join("stdout");
    let err_path = scratch.join("stderr");
    let file = |p: &Path| std::fs::File::create(p).unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new("prlimit")
        .arg(format!("--as={ADDRESS_SPACE}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_annql"))
        .args(["--threads", "2", "run", "--format", "csv", "-d"])
        .arg(format!("t={}", store.display()))
        .args(["-c", sql])
        .stdin(Stdio::null())
        .stdout(file(&out_path))
        .stderr(file(&err_path))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn prlimit annql: {e}"));
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > TIME_LIMIT => {
                timed_out = true;
                // The child may have exited in between: either way it is waited for next.
                let _ = child.kill();
                break child.wait().unwrap_or_else(|e| panic!("{e}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("wait annql: {e}"),
        }
    };
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into();
    Run {
        code: status.code(),
        signal: status.signal(),
        timed_out,
        stdout: read(&out_path),
        stderr: read(&err_path),
    }
}

/// What one case showed.
struct Outcome {
    /// The error the damaged query gave (the store's temporary directory shown as `<tmp>`).
    error: String,
    /// Every way the case failed its promise; empty when it passed.
    problems: Vec<String>,
    /// How long its queries took.
    took: Duration,
}

/// Answers on the undamaged fixtures, by (fixture, query).
type Pristine = Mutex<HashMap<(String, String), String>>;

fn pristine_answer(cache: &Pristine, fixture_name: &str, sql: &str, scratch: &Path) -> String {
    let key = (fixture_name.to_string(), sql.to_string());
    if let Some(a) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return a.clone();
    }
    let run = annql(&fixture(fixture_name), sql, scratch);
    assert!(
        run.code == Some(0),
        "{fixture_name}: {sql} fails on the undamaged fixture: {}",
        run.stderr
    );
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, run.stdout.clone());
    run.stdout
}

fn run_case(case: &Case, store: &Damaged, cache: &Pristine) -> Outcome {
    let started = Instant::now();
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let shown = store.path.display().to_string();
    let tmp = store.path.parent().map(|p| p.display().to_string());
    let mut problems = Vec::new();
    let bad = annql(&store.path, case.fails, scratch.path());
    let line = without_thread_id(first_line(&bad.stderr));
    let error = match &tmp {
        Some(t) => line.replace(t.as_str(), "<tmp>"),
        None => line,
    };
    if let Some(crash) = bad.crash() {
        problems.push(crash);
    } else if bad.code != Some(1) {
        problems.push(format!(
            "`{}` did not fail (exit {:?}): {}",
            case.fails,
            bad.code,
            bad.stdout.trim().chars().take(200).collect::<String>()
        ));
    } else {
        if !bad.stderr.contains(&shown) {
            problems.push("the error does not name the store's path".into());
        }
        for word in case.says {
            if !bad.stderr.contains(word) {
                problems.push(format!("the error does not say {word:?}"));
            }
        }
    }
    if let Some(sql) = case.still {
        let want = pristine_answer(cache, case.fixture, sql, scratch.path());
        let got = annql(&store.path, sql, scratch.path());
        if let Some(crash) = got.crash() {
            problems.push(format!("`{sql}`: {crash}"));
        } else if got.code != Some(0) {
            problems.push(format!("`{sql}` no longer answers: {}", got.stderr.trim()));
        } else if got.stdout != want {
            problems.push(format!(
                "`{sql}` answers {:?}, undamaged {want:?}",
                got.stdout
            ));
        }
    }
    Outcome {
        error,
        problems,
        took: started.elapsed(),
    }
}

/// The case table as markdown: name, store, damage, query, error (or problems).
fn table(cases: &[Case], outcomes: &[Outcome]) -> String {
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let mut out = String::from(
        "# The damaged-store cases\n\n\
         Generated by `ANNQL_DAMAGED_TABLE=1 cargo test --test it damaged::suite` \
         (tests/it/damaged/cases.rs): each case's store (a copy of a fixture), its damage, \
         the query that must fail, the error `annql run` gave, and the query that must still \
         answer as on the undamaged fixture. `<tmp>` is the copy's temporary directory.\n\n\
         | # | case | store | damage | failing query | error | still answers |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for (i, (case, outcome)) in cases.iter().zip(outcomes).enumerate() {
        let damage: Vec<String> = case.damage.iter().map(|d| d.to_string()).collect();
        let mut error = cell(&outcome.error);
        if let Some((_, why)) = KNOWN_GAPS.iter().find(|(n, _)| *n == case.name) {
            error = format!("KNOWN GAP ({why}): {error}");
        }
        if !outcome.problems.is_empty() {
            error = format!("{error} — PROBLEMS: {}", cell(&outcome.problems.join("; ")));
        }
        out.push_str(&format!(
            "| {} | {} | {} | {} | `{}` | {} | {} |\n",
            i + 1,
            case.name,
            case.fixture,
            cell(&damage.join("; ")),
            cell(case.fails),
            error,
            case.still
                .map_or("— (the whole store is damaged)".into(), |s| format!(
                    "`{}`",
                    cell(s)
                )),
        ));
    }
    out
}

#[test]
fn damaged_stores_fail_cleanly_naming_store_and_element() {
    let cases = cases();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let mut names = std::collections::HashSet::new();
    for c in &cases {
        assert!(names.insert(c.name), "two cases named {}", c.name);
    }
    for (gap, _) in KNOWN_GAPS {
        assert!(names.contains(gap), "KNOWN_GAPS names no case {gap}");
    }
    let started = Instant::now();
    let stores: Vec<Damaged> = cases
        .iter()
        .map(|c| {
            let d = damage::copy(c.fixture);
            for dmg in &c.damage {
                damage::apply(&d.path, dmg);
            }
            d
        })
        .collect();
    eprintln!("damaged copies made in {:?}", started.elapsed());
    let jobs: Vec<(PathBuf, &damage::Damage)> = cases
        .iter()
        .zip(&stores)
        .flat_map(|(c, s)| c.damage.iter().map(|d| (s.path.clone(), d)))
        .collect();
    damage::run_python(&jobs);
    eprintln!("damage written by Python in {:?}", started.elapsed());

    let cache = Pristine::default();
    // Known gaps first: a hang holds its worker for the whole time limit, better while the
    // others work through the rest.
    let mut order: Vec<usize> = (0..cases.len()).collect();
    order.sort_by_key(|&i| !KNOWN_GAPS.iter().any(|(n, _)| *n == cases[i].name));
    let next = AtomicUsize::new(0);
    let outcomes: Mutex<Vec<Option<Outcome>>> =
        Mutex::new((0..cases.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let outcome = run_case(&cases[i], &stores[i], &cache);
                    outcomes.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(outcome);
                }
            });
        }
    });
    let outcomes: Vec<Outcome> = outcomes
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|o| o.unwrap_or_else(|| panic!("a case did not run")))
        .collect();

    let mut slowest: Vec<(&str, Duration)> = cases
        .iter()
        .zip(&outcomes)
        .map(|(c, o)| (c.name, o.took))
        .collect();
    slowest.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
    eprintln!(
        "{} cases in {:?}; slowest: {slowest:?}",
        cases.len(),
        started.elapsed(),
        slowest = &slowest[..slowest.len().min(5)]
    );
    if std::env::var_os("ANNQL_DAMAGED_TABLE").is_some() {
        let path = Path::new(crate::common::REPO).join("tests/it/damaged.cases.md");
        std::fs::write(&path, table(&cases, &outcomes)).unwrap_or_else(|e| panic!("{e}"));
    }
    let mut failures = Vec::new();
    for (case, outcome) in cases.iter().zip(&outcomes) {
        let gap = KNOWN_GAPS.iter().any(|(n, _)| *n == case.name);
        match (gap, outcome.problems.is_empty()) {
            (false, false) => failures.push(format!(
                "{} ({}): {}\n    error: {}",
                case.name,
                case.fixture,
                outcome.problems.join("\n    "),
                outcome.error
            )),
            (true, true) => failures.push(format!(
                "{}: passes now; remove it from KNOWN_GAPS",
                case.name
            )),
            _ => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} damaged-store cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
