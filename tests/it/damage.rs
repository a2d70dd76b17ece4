//! The one damage generator of the tests: copies of the committed fixtures (written by the real
//! anndata, zarr and h5py) with one thing broken. The damaged-store suite (`damaged`) and the
//! checksum suite (`integrity`) both build their stores here.
//!
//! A [`Damage`] is data, so a suite's case table can say what each case broke. It applies to a
//! zarr directory (v2 or v3, consolidated metadata kept in step with the element's own document),
//! a zip archive of one (the member rewritten, every other member copied raw) or a single file
//! (`.h5ad`, or the archive's own bytes). Damage to values inside chunks is written by the real
//! zarr/h5py ([`Damage::Python`], run in one Python process per batch) so the chunks stay valid
//! and only what they say is wrong.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::common::{copy_dir, fixture, python};

/// A damaged copy of a fixture; the temporary directory holding it lives as long as this.
pub struct Damaged {
    _dir: tempfile::TempDir,
    /// The copy: `<tmp>/<fixture name>`.
    pub path: PathBuf,
}

/// Where copies are made: `/dev/shm` where there is one (a suite makes a hundred copies of
/// directory stores of ~400 files, and removing them from a busy disk took longer than the
/// queries), else the system's temporary directory.
fn scratch_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.into()
    } else {
        std::env::temp_dir()
    }
}

/// A copy of the fixture `name` (a file or a directory store) in a new temporary directory.
pub fn copy(name: &str) -> Damaged {
    let dir = tempfile::tempdir_in(scratch_root()).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join(name);
    let from = fixture(name);
    if from.is_dir() {
        copy_dir(&from, &path);
    } else {
        std::fs::copy(&from, &path).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    Damaged { _dir: dir, path }
}

/// A copy of the fixture file `name` with `edit` applied to its bytes.
pub fn bytes_copy(name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> Damaged {
    let d = copy(name);
    let mut bytes = std::fs::read(&d.path).unwrap_or_else(|e| panic!("{name}: {e}"));
    edit(&mut bytes);
    std::fs::write(&d.path, bytes).unwrap_or_else(|e| panic!("{e}"));
    d
}

/// A copy of the zarr directory fixture `name` whose consolidated metadata document (the whole
/// JSON of `.zmetadata` or the root `zarr.json`) is edited by `edit`, the element documents left
/// as written: what a store whose consolidated metadata went stale looks like.
pub fn consolidated_copy(name: &str, edit: impl FnOnce(&mut Value)) -> Damaged {
    let d = copy(name);
    let key = if d.path.join("zarr.json").exists() {
        "zarr.json"
    } else {
        ".zmetadata"
    };
    let file = d.path.join(key);
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{name}/{key}: {e}"));
    edit(&mut doc);
    std::fs::write(&file, doc.to_string()).unwrap_or_else(|e| panic!("{e}"));
    d
}

/// Where a byte edit lands in a file.
#[derive(Debug, Clone, Copy)]
pub enum At {
    /// This many bytes from the start.
    Start(usize),
    /// This many bytes before the end.
    End(usize),
}

/// Where in a zip archive's structure a byte edit lands.
#[derive(Debug, Clone, Copy)]
pub enum ZipSpot {
    /// The end-of-central-directory record, this many bytes in.
    EndRecord(usize),
    /// The central directory header of a member (its last copy), this many bytes in.
    Central(&'static str, usize),
    /// The local file header of a member (its last copy), this many bytes in.
    Local(&'static str, usize),
}

/// A field of an element's zarr metadata.
#[derive(Debug, Clone, Copy)]
pub enum Field {
    /// Of the array metadata (`.zarray` in v2, the top level of `zarr.json` in v3).
    Array(&'static str),
    /// An attribute (`.zattrs` in v2, `attributes` of `zarr.json` in v3).
    Attr(&'static str),
}

/// One thing broken in a store. `key` is a file's path inside a directory store or a member's
/// name in a zip archive; `""` is the store file itself (an `.h5ad`, or the archive's bytes).
#[derive(Debug, Clone)]
pub enum Damage {
    /// The file cut to this many bytes.
    Truncate(&'static str, usize),
    /// The file cut to half its length.
    Halve(&'static str),
    /// The file emptied.
    Empty(&'static str),
    /// The file's bytes replaced by as many pseudo-random ones.
    Garbage(&'static str),
    /// Bytes written over the file at a position.
    Overwrite(&'static str, At, Vec<u8>),
    /// The file's content replaced by this text (bad JSON, mostly).
    Text(&'static str, &'static str),
    /// An element's metadata field set (None: removed), in its own document and in the
    /// consolidated metadata alike.
    Meta(&'static str, Field, Option<Value>),
    /// An element removed from the store and from the consolidated metadata.
    Remove(&'static str),
    /// The consolidated metadata removed, so the store is read by walking it.
    Unconsolidate,
    /// A directory where the file `key` belongs.
    DirForFile(&'static str),
    /// A file (of a few bytes) where the directory `key` belongs.
    FileForDir(&'static str),
    /// `key` replaced by a symbolic link to itself.
    SymlinkLoop(&'static str),
    /// A symbolic link at `key` to the directory holding it (a cycle for a directory walk).
    SymlinkCycle(&'static str),
    /// A FIFO (named pipe) where the file `key` belongs: opening it for reading blocks until a
    /// writer comes, which none does.
    Fifo(&'static str),
    /// Bytes written over a zip archive's directory or headers.
    Zip(ZipSpot, Vec<u8>),
    /// Python run with the real zarr/h5py; `P` is the store's path, and `header(P, obj)` gives
    /// an HDF5 object's header address, `poke(P, at, bytes)` writes bytes (see [`PRELUDE`]).
    Python(String),
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = |k: &str| {
            if k.is_empty() {
                "the file".to_string()
            } else {
                format!("`{k}`")
            }
        };
        match self {
            Damage::Truncate(k, n) => write!(f, "{} cut to {n} bytes", key(k)),
            Damage::Halve(k) => write!(f, "{} cut to half", key(k)),
            Damage::Empty(k) => write!(f, "{} emptied", key(k)),
            Damage::Garbage(k) => write!(f, "{} replaced by random bytes", key(k)),
            Damage::Overwrite(k, at, b) => write!(f, "{} bytes {b:02x?} at {at:?}", key(k)),
            Damage::Text(k, t) => write!(f, "{} is `{t}`", key(k)),
            Damage::Meta(e, field, v) => {
                let field = match field {
                    Field::Array(k) => k.to_string(),
                    Field::Attr(k) => format!("attribute {k}"),
                };
                match v {
                    Some(v) => write!(f, "`{e}` {field} = {v}"),
                    None => write!(f, "`{e}` {field} removed"),
                }
            }
            Damage::Remove(e) => write!(f, "`{e}` removed"),
            Damage::Unconsolidate => write!(f, "consolidated metadata removed"),
            Damage::DirForFile(k) => write!(f, "a directory at {}", key(k)),
            Damage::FileForDir(k) => write!(f, "a file at {}", key(k)),
            Damage::SymlinkLoop(k) => write!(f, "{} a symlink to itself", key(k)),
            Damage::SymlinkCycle(k) => write!(f, "{} a symlink to its parent", key(k)),
            Damage::Fifo(k) => write!(f, "a FIFO at {}", key(k)),
            Damage::Zip(spot, b) => write!(f, "bytes {b:02x?} at {spot:?}"),
            Damage::Python(code) => {
                let lines: Vec<&str> = code.lines().map(str::trim).collect();
                write!(f, "Python: `{}`", lines.join("; "))
            }
        }
    }
}

/// Helpers the [`Damage::Python`] snippets can call.
const PRELUDE: &str = r#"
import json, sys
import numpy as np, h5py, zarr

def header(path, obj):
    with h5py.File(path, "r") as f:
        return h5py.h5o.get_info(f[obj].id).addr

def poke(path, at, data):
    with open(path, "r+b") as g:
        g.seek(at)
        g.write(data)

for P, code in json.load(sys.stdin):
    try:
        exec(code, {"P": P, "np": np, "h5py": h5py, "zarr": zarr, "header": header, "poke": poke})
    except Exception as e:
        sys.exit(f"{P}: {code}: {e!r}")
"#;

/// Applies `damage` to the store at `path`; [`Damage::Python`] is left to [`run_python`].
pub fn apply(path: &Path, damage: &Damage) {
    if matches!(damage, Damage::Python(_)) {
        return;
    }
    if let Damage::Zip(spot, bytes) = damage {
        return zip_bytes(path, *spot, bytes);
    }
    let is_zip = path.extension().is_some_and(|e| e == "zip");
    if path.is_dir() || (is_zip && !key_of(damage).is_empty()) {
        let mut files = Files::open(path);
        files.apply(damage);
        files.close();
    } else {
        file_damage(path, damage);
    }
}

/// Runs the [`Damage::Python`] snippets of every `(store, damage)` in one Python process.
pub fn run_python(jobs: &[(PathBuf, &Damage)]) {
    let snippets: Vec<Value> = jobs
        .iter()
        .filter_map(|(p, d)| match d {
            Damage::Python(code) => Some(json!([p.display().to_string(), code])),
            _ => None,
        })
        .collect();
    if snippets.is_empty() {
        return;
    }
    let mut child = Command::new(python())
        .args(["-c", PRELUDE])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python: {e}"));
    let input = Value::Array(snippets).to_string();
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("python stdin: {e}"));
    }
    let status = child.wait().unwrap_or_else(|e| panic!("python: {e}"));
    assert!(status.success(), "damaging with Python failed");
}

fn key_of(damage: &Damage) -> &'static str {
    match damage {
        Damage::Truncate(k, _)
        | Damage::Halve(k)
        | Damage::Empty(k)
        | Damage::Garbage(k)
        | Damage::Overwrite(k, _, _)
        | Damage::Text(k, _)
        | Damage::DirForFile(k)
        | Damage::FileForDir(k)
        | Damage::SymlinkLoop(k)
        | Damage::SymlinkCycle(k)
        | Damage::Fifo(k) => k,
        Damage::Meta(e, _, _) | Damage::Remove(e) => e,
        Damage::Unconsolidate => ".",
        Damage::Zip(..) | Damage::Python(_) => "",
    }
}

/// Pseudo-random bytes (a fixed xorshift sequence, so a failure reproduces).
pub fn garbage(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The bytes-level damages, on a byte buffer.
fn edit_bytes(bytes: &mut Vec<u8>, damage: &Damage) {
    match damage {
        Damage::Truncate(_, n) => bytes.truncate(*n),
        Damage::Halve(_) => bytes.truncate(bytes.len() / 2),
        Damage::Empty(_) => bytes.clear(),
        Damage::Garbage(_) => *bytes = garbage(bytes.len()),
        Damage::Overwrite(_, at, new) => {
            let start = match at {
                At::Start(n) => *n,
                At::End(n) => bytes.len() - n,
            };
            bytes[start..start + new.len()].copy_from_slice(new);
        }
        Damage::Text(_, text) => *bytes = text.as_bytes().to_vec(),
        other => panic!("{other} is not a byte edit"),
    }
}

/// Damage to a single file: the `.h5ad`, or a whole archive.
fn file_damage(path: &Path, damage: &Damage) {
    match damage {
        Damage::DirForFile(_) => {
            std::fs::remove_file(path).unwrap_or_else(|e| panic!("{e}"));
            std::fs::create_dir(path).unwrap_or_else(|e| panic!("{e}"));
        }
        Damage::SymlinkLoop(_) => symlink_loop(path),
        _ => {
            let mut bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{e}"));
            edit_bytes(&mut bytes, damage);
            std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

fn symlink_loop(path: &Path) {
    if path.is_dir() {
        std::fs::remove_dir_all(path).unwrap_or_else(|e| panic!("{e}"));
    } else {
        std::fs::remove_file(path).unwrap_or_else(|e| panic!("{e}"));
    }
    let name = path.file_name().unwrap_or_default();
    std::os::unix::fs::symlink(name, path).unwrap_or_else(|e| panic!("{e}"));
}

/// The files of a store, edited in place (a directory) or in memory and written back as a new
/// archive whose other members are copied raw (a zip).
enum Files {
    Dir(PathBuf),
    Zip {
        path: PathBuf,
        /// Members replaced (Some) or removed (None), by name.
        edits: Vec<(String, Option<Vec<u8>>)>,
    },
}

impl Files {
    fn open(path: &Path) -> Self {
        if path.is_dir() {
            Files::Dir(path.into())
        } else {
            Files::Zip {
                path: path.into(),
                edits: Vec::new(),
            }
        }
    }

    fn read(&self, key: &str) -> Option<Vec<u8>> {
        match self {
            Files::Dir(root) => std::fs::read(root.join(key)).ok(),
            Files::Zip { path, edits } => {
                if let Some((_, v)) = edits.iter().rev().find(|(k, _)| k == key) {
                    return v.clone();
                }
                let mut archive = zip_archive(path);
                let index = (0..archive.len())
                    .rev()
                    .find(|&i| archive.name_for_index(i) == Some(key))?;
                let mut out = Vec::new();
                let mut member = archive.by_index(index).ok()?;
                member
                    .read_to_end(&mut out)
                    .unwrap_or_else(|e| panic!("{key}: {e}"));
                Some(out)
            }
        }
    }

    fn write(&mut self, key: &str, bytes: Vec<u8>) {
        match self {
            Files::Dir(root) => {
                std::fs::write(root.join(key), bytes).unwrap_or_else(|e| panic!("{key}: {e}"))
            }
            Files::Zip { edits, .. } => edits.push((key.into(), Some(bytes))),
        }
    }

    fn keys(&self) -> Vec<String> {
        match self {
            Files::Dir(root) => {
                fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
                    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                        let p = e.path();
                        if p.is_dir() {
                            walk(root, &p, out);
                        }
                        if let Ok(rel) = p.strip_prefix(root) {
                            out.push(rel.display().to_string());
                        }
                    }
                }
                let mut out = Vec::new();
                walk(root, root, &mut out);
                out
            }
            Files::Zip { path, .. } => zip_archive(path).file_names().map(String::from).collect(),
        }
    }

    fn remove(&mut self, key: &str) {
        match self {
            Files::Dir(root) => {
                let p = root.join(key);
                if p.is_dir() {
                    std::fs::remove_dir_all(&p).unwrap_or_else(|e| panic!("{key}: {e}"));
                } else if p.exists() {
                    std::fs::remove_file(&p).unwrap_or_else(|e| panic!("{key}: {e}"));
                }
            }
            Files::Zip { edits, .. } => edits.push((key.into(), None)),
        }
    }

    fn dir(&self, what: &Damage) -> &Path {
        match self {
            Files::Dir(root) => root,
            Files::Zip { .. } => panic!("{what}: only in a directory store"),
        }
    }

    fn apply(&mut self, damage: &Damage) {
        match damage {
            Damage::Meta(elem, field, value) => self.meta(elem, *field, value.as_ref()),
            Damage::Remove(elem) => self.remove_element(elem),
            Damage::Unconsolidate => self.unconsolidate(),
            Damage::DirForFile(k) => {
                let p = self.dir(damage).join(k);
                if p.exists() {
                    std::fs::remove_file(&p).unwrap_or_else(|e| panic!("{k}: {e}"));
                }
                std::fs::create_dir(&p).unwrap_or_else(|e| panic!("{k}: {e}"));
            }
            Damage::FileForDir(k) => {
                let p = self.dir(damage).join(k);
                std::fs::remove_dir_all(&p).unwrap_or_else(|e| panic!("{k}: {e}"));
                std::fs::write(&p, b"not a directory").unwrap_or_else(|e| panic!("{k}: {e}"));
            }
            Damage::SymlinkLoop("") => symlink_loop(self.dir(damage)),
            Damage::SymlinkLoop(k) => symlink_loop(&self.dir(damage).join(k)),
            Damage::SymlinkCycle(k) => {
                std::os::unix::fs::symlink("..", self.dir(damage).join(k))
                    .unwrap_or_else(|e| panic!("{k}: {e}"));
            }
            Damage::Fifo(k) => {
                let p = self.dir(damage).join(k);
                std::fs::remove_file(&p).unwrap_or_else(|e| panic!("{k}: {e}"));
                let made = Command::new("mkfifo")
                    .arg(&p)
                    .status()
                    .unwrap_or_else(|e| panic!("mkfifo: {e}"));
                assert!(made.success(), "mkfifo {}", p.display());
            }
            _ => {
                let key = key_of(damage);
                let mut bytes = self
                    .read(key)
                    .unwrap_or_else(|| panic!("{damage}: no file {key}"));
                edit_bytes(&mut bytes, damage);
                self.write(key, bytes);
            }
        }
    }

    /// Whether the store is zarr v3 (a root `zarr.json`).
    fn v3(&self) -> bool {
        self.read("zarr.json").is_some()
    }

    fn json(&self, key: &str) -> Option<Value> {
        let bytes = self.read(key)?;
        Some(serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{key}: {e}")))
    }

    fn put_json(&mut self, key: &str, doc: &Value) {
        let text = serde_json::to_string_pretty(doc).unwrap_or_else(|e| panic!("{e}"));
        self.write(key, text.into_bytes());
    }

    /// Sets (or removes) `field` of `elem` in its own document and in the consolidated metadata.
    fn meta(&mut self, elem: &str, field: Field, value: Option<&Value>) {
        let edit = |doc: &mut Value, v3: bool| {
            let target = match (field, v3) {
                (Field::Attr(_), true) => &mut doc["attributes"],
                _ => doc,
            };
            let (Field::Array(name) | Field::Attr(name)) = field;
            let Some(map) = target.as_object_mut() else {
                panic!("{elem}: metadata is not an object");
            };
            match value {
                Some(v) => map.insert(name.into(), v.clone()),
                None => map.remove(name),
            };
        };
        let v3 = self.v3();
        let own = match (field, v3) {
            (_, true) => format!("{elem}/zarr.json"),
            (Field::Array(_), false) => format!("{elem}/.zarray"),
            (Field::Attr(_), false) => format!("{elem}/.zattrs"),
        };
        let mut doc = self.json(&own).unwrap_or_else(|| json!({}));
        edit(&mut doc, v3);
        self.put_json(&own, &doc);
        let (key, mut root) = self.consolidated();
        if let Some(root) = root.as_mut() {
            let entry = if v3 {
                &mut root["consolidated_metadata"]["metadata"][elem]
            } else {
                &mut root["metadata"][own.as_str()]
            };
            if entry.is_null() {
                *entry = json!({});
            }
            edit(entry, v3);
            self.put_json(key, root);
        }
    }

    /// The consolidated metadata document: its key, and its JSON if the store has one.
    fn consolidated(&self) -> (&'static str, Option<Value>) {
        if self.v3() {
            let root = self.json("zarr.json");
            let has = root
                .as_ref()
                .is_some_and(|r| r.get("consolidated_metadata").is_some_and(|c| !c.is_null()));
            ("zarr.json", root.filter(|_| has))
        } else {
            (".zmetadata", self.json(".zmetadata"))
        }
    }

    fn remove_element(&mut self, elem: &str) {
        let prefix = format!("{elem}/");
        for k in self.keys() {
            if k == elem || k.starts_with(&prefix) {
                self.remove(&k);
            }
        }
        let (key, root) = self.consolidated();
        if let Some(mut root) = root {
            let v3 = key == "zarr.json";
            let map = if v3 {
                &mut root["consolidated_metadata"]["metadata"]
            } else {
                &mut root["metadata"]
            };
            if let Some(map) = map.as_object_mut() {
                map.retain(|k, _| k != elem && !k.starts_with(&prefix));
            }
            self.put_json(key, &root);
        }
    }

    fn unconsolidate(&mut self) {
        if self.v3() {
            let mut root = self.json("zarr.json").unwrap_or_else(|| json!({}));
            if let Some(map) = root.as_object_mut() {
                map.remove("consolidated_metadata");
            }
            self.put_json("zarr.json", &root);
        } else {
            self.remove(".zmetadata");
        }
    }

    /// Writes a zip's edits back: every member not edited copied raw, in order; an edited one
    /// written once (stored) where its last copy was.
    fn close(self) {
        let Files::Zip { path, edits } = self else {
            return;
        };
        if edits.is_empty() {
            return;
        }
        let mut final_edit: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        for (k, v) in edits {
            final_edit.retain(|(x, _)| *x != k);
            final_edit.push((k, v));
        }
        let mut archive = zip_archive(&path);
        let names: Vec<String> = archive.file_names().map(String::from).collect();
        let last = |name: &str, i: usize| {
            (0..archive.len())
                .rev()
                .find(|&j| archive.name_for_index(j) == Some(name))
                == Some(i)
        };
        let lasts: Vec<bool> = (0..archive.len())
            .map(|i| last(archive.name_for_index(i).unwrap_or_default(), i))
            .collect();
        let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (i, is_last) in lasts.into_iter().enumerate() {
            let name = archive.name_for_index(i).unwrap_or_default().to_string();
            match final_edit.iter().find(|(k, _)| *k == name) {
                None => {
                    let member = archive.by_index_raw(i).unwrap_or_else(|e| panic!("{e}"));
                    out.raw_copy_file(member).unwrap_or_else(|e| panic!("{e}"));
                }
                Some((_, Some(bytes))) if is_last => {
                    let opts = zip::write::SimpleFileOptions::default()
                        .compression_method(zip::CompressionMethod::Stored);
                    out.start_file(name.as_str(), opts)
                        .unwrap_or_else(|e| panic!("{e}"));
                    out.write_all(bytes).unwrap_or_else(|e| panic!("{e}"));
                }
                Some(_) => {}
            }
        }
        for (k, v) in &final_edit {
            if let (false, Some(bytes)) = (names.contains(k), v) {
                let opts = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Stored);
                out.start_file(k.as_str(), opts)
                    .unwrap_or_else(|e| panic!("{e}"));
                out.write_all(bytes).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        let bytes = out.finish().unwrap_or_else(|e| panic!("{e}")).into_inner();
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{e}"));
    }
}

fn zip_archive(path: &Path) -> zip::ZipArchive<std::io::Cursor<Vec<u8>>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Where member `name` (its last copy) sits in a zip archive: (local header, central directory
/// header, data start, size).
pub fn zip_member(bytes: &[u8], name: &str) -> (usize, usize, usize, usize) {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec()))
        .unwrap_or_else(|e| panic!("{e}"));
    let index = (0..archive.len())
        .rev()
        .find(|&i| archive.name_for_index(i) == Some(name))
        .unwrap_or_else(|| panic!("no member {name}"));
    let member = archive
        .by_index_raw(index)
        .unwrap_or_else(|e| panic!("{e}"));
    let at = |n: u64| usize::try_from(n).unwrap_or_else(|e| panic!("{e}"));
    (
        at(member.header_start()),
        at(member.central_header_start()),
        at(member.data_start()),
        at(member.compressed_size()),
    )
}

/// Makes the CRC-32 recorded for member `name` wrong, in its local and central headers alike.
pub fn wrong_crc(bytes: &mut [u8], name: &str) {
    let (local, central, _, _) = zip_member(bytes, name);
    // The CRC-32 field is 14 bytes into the local header, 16 into the central directory's.
    bytes[local + 14] ^= 0xFF;
    bytes[central + 16] ^= 0xFF;
}

/// Flips a bit of the last byte of member `name`'s data.
pub fn flipped_data(bytes: &mut [u8], name: &str) {
    let (_, _, data, size) = zip_member(bytes, name);
    bytes[data + size - 1] ^= 0x01;
}

/// Bytes written over a zip archive's end record or a member's headers.
fn zip_bytes(path: &Path, spot: ZipSpot, new: &[u8]) {
    let mut bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{e}"));
    let at = match spot {
        ZipSpot::EndRecord(n) => {
            let eocd = bytes
                .windows(4)
                .rposition(|w| w == b"PK\x05\x06")
                .unwrap_or_else(|| panic!("{}: no end record", path.display()));
            eocd + n
        }
        ZipSpot::Central(name, n) => zip_member(&bytes, name).1 + n,
        ZipSpot::Local(name, n) => zip_member(&bytes, name).0 + n,
    };
    bytes[at..at + new.len()].copy_from_slice(new);
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{e}"));
}
