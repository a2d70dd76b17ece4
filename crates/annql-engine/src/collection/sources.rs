//! Which stores make a collection: a glob (`data/*.h5ad`), a list, or a collection file, resolved
//! to locations ordered by path, so that `obs_id` is the same for the same set of stores.
//!
//! A collection file (`*.annql-collection`) is JSON:
//! `{"datasets": ["a.zarr", "more/*.h5ad", {"path": "s3://b/x.h5ad", "name": "lung"}],
//!   "var_key": "gene_ids", "skip": ["notes"], "cast": {"n_genes": "Float64"}}`,
//! relative paths resolved against the file's directory.

use std::path::{Path, PathBuf};

use annql_store::StorageOptions;
use annql_store::arrow::datatypes::DataType;
use serde_json::Value;

use crate::error::{Error, Result};

/// The extension of a collection file.
pub const COLLECTION_FILE: &str = ".annql-collection";

/// A store of a collection, before it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSource {
    /// A local path or a URL.
    pub location: String,
    /// The dataset's name (its `dataset` value); None: from the location ([`dataset_names`]).
    pub name: Option<String>,
}

/// How the datasets' columns and genes are brought together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HarmoniseOptions {
    /// The var column genes are aligned on (None: the var index).
    pub var_key: Option<String>,
    /// Columns left out of the collection's tables.
    pub skip: Vec<String>,
    /// Columns cast to a type in every dataset (instead of the widened type, or of an error).
    pub cast: Vec<(String, DataType)>,
}

/// What `ATTACH` was given for a collection: its stores and options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CollectionSpec {
    /// The stores, in the order their cells are numbered.
    pub members: Vec<MemberSource>,
    /// Harmonisation options.
    pub options: HarmoniseOptions,
}

impl CollectionSpec {
    /// The stores a location names: the matches of a glob, sorted by path, or those a collection
    /// file lists. None if the location is one store.
    pub fn from_location(location: &str, storage: &StorageOptions) -> Result<Option<Self>> {
        if location.ends_with(COLLECTION_FILE) {
            return read_collection_file(Path::new(location), storage).map(Some);
        }
        if !is_glob(location) {
            return Ok(None);
        }
        Ok(Some(Self {
            members: expand(location, storage)?
                .into_iter()
                .map(|location| MemberSource {
                    location,
                    name: None,
                })
                .collect(),
            options: HarmoniseOptions::default(),
        }))
    }

    /// A list of locations (each may be a glob), in the order given.
    pub fn from_list<S: AsRef<str>>(locations: &[S], storage: &StorageOptions) -> Result<Self> {
        let mut members = Vec::new();
        for l in locations {
            members.extend(expand_one(l.as_ref(), storage)?);
        }
        Ok(Self {
            members,
            options: HarmoniseOptions::default(),
        })
    }

    /// Applies `ATTACH … (var_key 'x', skip 'a,b', cast 'col:type,…')` options, taking them out
    /// of `options`.
    pub fn take_options(&mut self, options: &mut Vec<(String, String)>) -> Result<()> {
        let mut rest = Vec::new();
        for (key, value) in options.drain(..) {
            match key.as_str() {
                "var_key" => self.options.var_key = Some(value),
                "skip" => self
                    .options
                    .skip
                    .extend(value.split(',').map(|s| s.trim().to_string())),
                "cast" => {
                    for item in value.split(',') {
                        let (column, ty) = item.rsplit_once(':').ok_or_else(|| {
                            Error::Statement(format!(
                                "collection option cast: expected 'column:type', got '{item}'"
                            ))
                        })?;
                        self.options
                            .cast
                            .push((column.trim().to_string(), parse_type(ty.trim())?));
                    }
                }
                _ => rest.push((key, value)),
            }
        }
        *options = rest;
        Ok(())
    }
}

/// An `ATTACH` of a list of stores: `ATTACH ('a.h5ad', 'b.zarr', 'more/*.h5ad') AS name
/// [(options)]`: the locations, the name (default `collection`) and the options.
pub type AttachList = (Vec<String>, String, Vec<(String, String)>);

/// Whether a location names a collection rather than one store: a glob or a collection file.
pub fn is_collection(location: &str) -> bool {
    is_glob(location) || location.ends_with(COLLECTION_FILE)
}

/// Recognises `ATTACH [DATABASE] ('path', …) [AS name] [(key 'value', …)]`; None for any other
/// statement.
pub fn parse_attach_list(sql: &str) -> Result<Option<AttachList>> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let bad = |why: String| Error::Statement(format!("ATTACH of a list of stores: {why}"));
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        // Not tokenizable: not a list; the statement's own parser reports the error.
        return Ok(None);
    };
    let tokens: Vec<Token> = tokens
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_) | Token::SemiColon))
        .collect();
    let word = |t: Option<&Token>, w: &str| matches!(t, Some(Token::Word(x)) if x.value.eq_ignore_ascii_case(w));
    if !word(tokens.first(), "ATTACH") {
        return Ok(None);
    }
    let mut at = 1;
    if word(tokens.get(at), "DATABASE") {
        at += 1;
    }
    if tokens.get(at) != Some(&Token::LParen) {
        return Ok(None);
    }
    at += 1;
    let mut paths = Vec::new();
    loop {
        match tokens.get(at) {
            Some(Token::SingleQuotedString(p)) => paths.push(p.clone()),
            other => return Err(bad(format!("expected a quoted path, got {other:?}"))),
        }
        at += 1;
        match tokens.get(at) {
            Some(Token::Comma) => at += 1,
            Some(Token::RParen) => {
                at += 1;
                break;
            }
            other => return Err(bad(format!("expected ',' or ')', got {other:?}"))),
        }
    }
    let mut name = "collection".to_string();
    if word(tokens.get(at), "AS") {
        match tokens.get(at + 1) {
            Some(Token::Word(w)) => name = w.value.clone(),
            other => return Err(bad(format!("expected a name after AS, got {other:?}"))),
        }
        at += 2;
    }
    let mut options = Vec::new();
    if tokens.get(at) == Some(&Token::LParen) {
        at += 1;
        while let Some(t) = tokens.get(at) {
            match (t, tokens.get(at + 1)) {
                (Token::RParen, _) => {
                    at += 1;
                    break;
                }
                (Token::Comma, _) => at += 1,
                (Token::Word(k), Some(Token::SingleQuotedString(v))) => {
                    options.push((k.value.to_ascii_lowercase(), v.clone()));
                    at += 2;
                }
                (Token::Word(k), Some(Token::Word(v))) => {
                    options.push((k.value.to_ascii_lowercase(), v.value.clone()));
                    at += 2;
                }
                (other, _) => return Err(bad(format!("bad option near {other}"))),
            }
        }
    }
    if at < tokens.len() {
        return Err(bad(format!("unexpected {} after the list", tokens[at])));
    }
    Ok(Some((paths, name, options)))
}

/// Whether a location is a glob: `*`, `?` or `[` in it.
pub fn is_glob(location: &str) -> bool {
    location.contains(['*', '?', '['])
}

fn expand_one(location: &str, storage: &StorageOptions) -> Result<Vec<MemberSource>> {
    let locations = if is_glob(location) {
        expand(location, storage)?
    } else {
        vec![location.to_string()]
    };
    Ok(locations
        .into_iter()
        .map(|location| MemberSource {
            location,
            name: None,
        })
        .collect())
}

/// The stores a glob matches, sorted by path. `*` and `?` match within one path component;
/// a directory that matches a component and ends the pattern is a store (a `.zarr`). In object
/// storage (S3, GCS, Azure: where listing exists) the glob is in the last component and the
/// prefix before it is listed one level deep. A glob that matches nothing is an error, not an
/// empty collection.
fn expand(pattern: &str, storage: &StorageOptions) -> Result<Vec<String>> {
    if annql_store::object::is_remote(pattern) {
        return expand_remote(pattern, storage);
    }
    let absolute = pattern.starts_with('/');
    let parts: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
    let mut found = vec![if absolute {
        PathBuf::from("/")
    } else {
        PathBuf::from(".")
    }];
    for (i, part) in parts.iter().enumerate() {
        let mut next = Vec::new();
        for dir in &found {
            if !is_glob(part) {
                let p = dir.join(part);
                if p.exists() {
                    next.push(p);
                }
                continue;
            }
            let entries = std::fs::read_dir(dir).map_err(|e| {
                Error::Statement(format!("{pattern}: cannot list {}: {e}", dir.display()))
            })?;
            for entry in entries {
                let entry = entry.map_err(|e| {
                    Error::Statement(format!("{pattern}: cannot list {}: {e}", dir.display()))
                })?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let last = i + 1 == parts.len();
                if wildcard(part, &name)
                    && !name.starts_with('.')
                    && (last || entry.path().is_dir())
                {
                    next.push(entry.path());
                }
            }
        }
        found = next;
    }
    let mut out: Vec<String> = found
        .into_iter()
        .map(|p| {
            let s = p.to_string_lossy().into_owned();
            match s.strip_prefix("./") {
                Some(rest) if !pattern.starts_with("./") => rest.to_string(),
                _ => s,
            }
        })
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(Error::Statement(format!("{pattern}: no store matches")));
    }
    Ok(out)
}

/// [`expand`] in object storage: the entries under the URL's last `/` that match its last
/// component.
fn expand_remote(pattern: &str, storage: &StorageOptions) -> Result<Vec<String>> {
    let (dir, last) = pattern
        .trim_end_matches('/')
        .rsplit_once('/')
        .ok_or_else(|| Error::Statement(format!("{pattern}: not a URL with a path")))?;
    if is_glob(dir) {
        return Err(Error::Statement(format!(
            "{pattern}: in object storage a glob may only be in the last path component"
        )));
    }
    let listing = annql_store::object::ObjectStorage::open(dir, storage)?.list_children()?;
    let mut out: Vec<String> = listing
        .into_iter()
        .filter(|name| wildcard(last, name) && !name.starts_with('.'))
        .map(|name| format!("{dir}/{name}"))
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(Error::Statement(format!("{pattern}: no store matches")));
    }
    Ok(out)
}

/// Whether `name` matches `pattern` (`*` any run, `?` one character, `[abc]` one of a set).
fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => match p.iter().position(|&c| c == ']') {
                Some(end) if !n.is_empty() => {
                    p[1..end].contains(&n[0]) && go(&p[end + 1..], &n[1..])
                }
                _ => false,
            },
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    go(&p, &n)
}

/// Reads a collection file (see the module's documentation).
fn read_collection_file(path: &Path, storage: &StorageOptions) -> Result<CollectionSpec> {
    let bad = |why: String| Error::Statement(format!("collection file {}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &str| -> String {
        if annql_store::object::is_remote(p) || Path::new(p).is_absolute() {
            p.to_string()
        } else {
            base.join(p).to_string_lossy().into_owned()
        }
    };
    let datasets = doc
        .get("datasets")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("expected {\"datasets\": [...]}".into()))?;
    let mut spec = CollectionSpec::default();
    for d in datasets {
        match d {
            Value::String(p) => spec
                .members
                .extend(expand_one(&resolve(p), storage).map_err(|e| bad(e.to_string()))?),
            Value::Object(o) => {
                let p = o
                    .get("path")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("dataset without a \"path\": {d}")))?;
                spec.members.push(MemberSource {
                    location: resolve(p),
                    name: o.get("name").and_then(Value::as_str).map(str::to_string),
                });
            }
            other => {
                return Err(bad(format!(
                    "a dataset is a path or an object, not {other}"
                )));
            }
        }
    }
    if let Some(k) = doc.get("var_key") {
        spec.options.var_key = Some(
            k.as_str()
                .ok_or_else(|| bad("var_key is a column name".into()))?
                .to_string(),
        );
    }
    if let Some(skip) = doc.get("skip").and_then(Value::as_array) {
        for s in skip {
            spec.options.skip.push(
                s.as_str()
                    .ok_or_else(|| bad("skip lists column names".into()))?
                    .to_string(),
            );
        }
    }
    if let Some(cast) = doc.get("cast").and_then(Value::as_object) {
        for (column, ty) in cast {
            let ty = ty
                .as_str()
                .ok_or_else(|| bad(format!("cast of {column}: a type name")))?;
            spec.options.cast.push((column.clone(), parse_type(ty)?));
        }
    }
    if spec.members.is_empty() {
        return Err(bad("no datasets".into()));
    }
    Ok(spec)
}

/// A type named in a `cast` option: Arrow's names (`Float64`, `Utf8`) or SQL's (`double`,
/// `bigint`, `varchar`, `text`, `boolean`).
fn parse_type(name: &str) -> Result<DataType> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "double" | "float8" | "float64" => DataType::Float64,
        "real" | "float" | "float4" | "float32" => DataType::Float32,
        "bigint" | "int8" | "int64" => DataType::Int64,
        "int" | "integer" | "int4" | "int32" => DataType::Int32,
        "varchar" | "text" | "string" | "utf8" => DataType::Utf8,
        "boolean" | "bool" => DataType::Boolean,
        "categorical" | "category" => {
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
        }
        _ => {
            return Err(Error::Statement(format!(
                "collection option cast: unknown type '{name}' (double, real, bigint, int, \
                 varchar, boolean or categorical)"
            )));
        }
    })
}

/// Each dataset's name: the one it was given, else its store's file stem (`part03.zarr` →
/// `part03`); a stem two stores share takes its parent directory too (`a/x`, `b/x`), and any
/// name still repeated a `#2`, `#3`… suffix.
pub fn dataset_names(members: &[MemberSource]) -> Vec<String> {
    let stem = |l: &str| crate::model::default_name(l);
    let mut names: Vec<String> = members
        .iter()
        .map(|m| m.name.clone().unwrap_or_else(|| stem(&m.location)))
        .collect();
    let count = |names: &[String], n: &str| names.iter().filter(|x| *x == n).count();
    let firsts = names.clone();
    for (i, m) in members.iter().enumerate() {
        if m.name.is_none() && count(&firsts, &firsts[i]) > 1 {
            let trimmed = m.location.trim_end_matches('/');
            let parent = trimmed
                .rsplit('/')
                .nth(1)
                .filter(|p| !p.is_empty())
                .unwrap_or(".");
            names[i] = format!("{parent}/{}", firsts[i]);
        }
    }
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for n in names.iter_mut() {
        let k = seen.entry(n.clone()).or_insert(0);
        *k += 1;
        if *k > 1 {
            *n = format!("{n}#{k}");
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_within_a_component() {
        assert!(wildcard("*.h5ad", "a.h5ad"));
        assert!(!wildcard("*.h5ad", "a.zarr"));
        assert!(wildcard("part0?.zarr", "part01.zarr"));
        assert!(wildcard("part[01].zarr", "part1.zarr"));
        assert!(!wildcard("part[01].zarr", "part2.zarr"));
    }

    #[test]
    fn names_come_from_stems_and_stay_unique() {
        let m = |l: &str| MemberSource {
            location: l.into(),
            name: None,
        };
        let names = dataset_names(&[m("d/a.zarr"), m("e/a.h5ad"), m("d/b.h5ad")]);
        assert_eq!(names, ["d/a", "e/a", "b"]);
    }

    #[test]
    fn options_parse_and_bad_ones_are_named() {
        let mut spec = CollectionSpec::default();
        let mut opts = vec![
            ("var_key".to_string(), "gene_ids".to_string()),
            ("cast".to_string(), "n:double, x:varchar".to_string()),
            ("region".to_string(), "eu".to_string()),
        ];
        spec.take_options(&mut opts)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.options.var_key.as_deref(), Some("gene_ids"));
        assert_eq!(spec.options.cast.len(), 2);
        assert_eq!(opts, [("region".to_string(), "eu".to_string())]);
        let mut bad = vec![("cast".to_string(), "n:decimal".to_string())];
        let err = spec
            .take_options(&mut bad)
            .map(|_| ())
            .expect_err("an error");
        assert!(err.to_string().contains("unknown type 'decimal'"), "{err}");
    }
}
