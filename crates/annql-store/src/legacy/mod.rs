//! Stores written before anndata 0.7 (before the encoding spec), read as anndata 0.12 reads them.
//!
//! The layout anndata ≤ 0.6 wrote, to `.h5ad` and zarr alike: no encoding attributes anywhere;
//! `obs`, `var` and `raw.var` are structured arrays (HDF5 compound datasets) whose first field is
//! the index; categorical columns are integer codes whose categories sit in
//! `uns/<column>_categories`; `obsm`/`varm` are structured arrays with one (sub-array) field per
//! embedding; `raw` is stored as top-level `raw.X`, `raw.var`, `raw.varm`; neighbour graphs sit in
//! `uns/neighbors`; strings are fixed-length bytes.
//!
//! [`modernize`] maps that onto the modern element tree, so the engine and everything above it
//! see an ordinary store. It follows anndata's own legacy readers (`read_dataframe_legacy`,
//! `_clean_uns`, `_read_legacy_raw`, `_move_adj_mtx`):
//! - a structured `obs`/`var`/`raw.var` becomes a dataframe: the first field is the index
//!   (`df.set_index(df.columns[0])`), the others are its columns, in order;
//! - for each `uns/<k>` whose name ends in `_categories`, the column named `k` with every
//!   `_categories` removed becomes an unordered categorical, in `obs` and in `var`, when all its
//!   codes are below the number of categories; the `uns` entry then disappears. Codes that fit
//!   but that pandas refuses (not integers, below -1) are an error, as they are for anndata;
//! - `raw.X`, `raw.var`, `raw.varm` become `raw/X`, `raw/var`, `raw/varm` (a store holding both
//!   `raw` and `raw.*` is refused, as anndata refuses it);
//! - a structured `obsm`/`varm` becomes one array per field;
//! - `uns/neighbors/{distances,connectivities}` (a sparse matrix or a 2-D array) move to `obsp`;
//! - fixed-length strings (`S<n>`, `U<n>`) read as strings (trailing NULs dropped; `S` must be
//!   ASCII, as numpy requires).
//!
//! The new arrays are virtual: [`storage::LegacyStorage`] cuts their chunks out of the stored
//! ones. Opening reads only metadata, except the codes of columns an `uns` categories entry may
//! apply to: whether it applies depends on their values.

mod records;
mod storage;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::metadata::{ArrayMeta, DType, Node};
use crate::storage::Storage;
use records::{Field, Kind, parse_record, parse_typestr};
use storage::{LegacyStorage, Source, Virtual};

/// Maps a pre-0.7 store onto the modern element tree; any other store is returned unchanged.
pub(crate) fn modernize(
    storage: Storage,
    store: &str,
    nodes: BTreeMap<String, Node>,
) -> Result<(Storage, BTreeMap<String, Node>)> {
    let unencoded = nodes
        .get("")
        .is_some_and(|r| r.array.is_none() && !r.attrs.contains_key("encoding-type"));
    let is_array = |p: &str| nodes.get(p).is_some_and(|n| n.array.is_some());
    let legacy_frames = is_array("obs") || is_array("var");
    let legacy_raw = nodes.keys().any(|k| is_legacy_raw(k));
    if !unencoded || !(legacy_frames || legacy_raw) {
        return Ok((storage, nodes));
    }
    let mut plan = Plan {
        store,
        inner: storage,
        stored: nodes.clone(),
        nodes,
        virtuals: BTreeMap::new(),
        aliases: Vec::new(),
        frames: BTreeMap::new(),
    };
    plan.raw()?;
    for (path, source) in [("obs", "obs"), ("var", "var"), ("raw/var", "raw.var")] {
        if plan.stored_array(source).is_some() {
            plan.frame(path, source)?;
        }
    }
    // anndata cleans uns only when obs itself is a structured array.
    if is_array_in(&plan.stored, "obs") {
        plan.categories_from_uns()?;
    }
    for (path, source) in [("obsm", "obsm"), ("varm", "varm"), ("raw/varm", "raw.varm")] {
        if plan.stored_array(source).is_some() {
            plan.fields_as_arrays(path, source)?;
        }
    }
    plan.neighbors_to_obsp();
    plan.fixed_strings()?;
    if let Some(root) = plan.nodes.get_mut("") {
        root.attrs.insert("encoding-type".into(), json!("anndata"));
        root.attrs.insert("encoding-version".into(), json!("0.1.0"));
    }
    let storage = LegacyStorage::new(plan.inner, plan.virtuals, plan.aliases, store);
    Ok((Arc::new(storage), plan.nodes))
}

/// A top-level `raw.X`, `raw.var`, … node.
fn is_legacy_raw(path: &str) -> bool {
    path.starts_with("raw.") && !path.contains('/')
}

fn is_array_in(nodes: &BTreeMap<String, Node>, path: &str) -> bool {
    nodes.get(path).is_some_and(|n| n.array.is_some())
}

/// The rewrite in progress: the modern node map, its virtual arrays and renamed subtrees.
struct Plan<'a> {
    store: &'a str,
    inner: Storage,
    /// The hierarchy as stored (sources are looked up here).
    stored: BTreeMap<String, Node>,
    /// The hierarchy being built.
    nodes: BTreeMap<String, Node>,
    virtuals: BTreeMap<String, Virtual>,
    /// Modern path prefix → stored path prefix.
    aliases: Vec<(String, String)>,
    /// Converted dataframes: path → index field name.
    frames: BTreeMap<String, String>,
}

impl Plan<'_> {
    fn unsupported(&self, path: &str, what: &str, reason: impl Into<String>) -> Error {
        Error::Unsupported {
            store: self.store.into(),
            path: path.into(),
            what: what.into(),
            reason: reason.into(),
        }
    }

    fn malformed(&self, path: &str, reason: impl Into<String>) -> Error {
        Error::Malformed {
            store: self.store.into(),
            path: path.into(),
            reason: reason.into(),
        }
    }

    fn stored_array(&self, path: &str) -> Option<&ArrayMeta> {
        self.stored.get(path).and_then(|n| n.array.as_ref())
    }

    /// Removes the node at `path` and everything below it, returning them by relative path.
    fn take_subtree(&mut self, path: &str) -> Vec<(String, Node)> {
        let below = format!("{path}/");
        let keys: Vec<String> = self
            .nodes
            .keys()
            .filter(|k| *k == path || k.starts_with(&below))
            .cloned()
            .collect();
        keys.into_iter()
            .filter_map(|k| {
                let node = self.nodes.remove(&k)?;
                Some((k[path.len()..].to_string(), node))
            })
            .collect()
    }

    /// Presents the stored subtree at `from` under `to`.
    fn move_subtree(&mut self, from: &str, to: &str) {
        for (rest, node) in self.take_subtree(from) {
            self.nodes.insert(format!("{to}{rest}"), node);
        }
        self.aliases.push((to.to_string(), from.to_string()));
    }

    /// A group node with `attrs`.
    fn group(&mut self, path: &str, attrs: Map<String, Value>) {
        self.nodes
            .insert(path.to_string(), Node { attrs, array: None });
    }

    /// Registers a virtual array (its node and its chunks) at `path`.
    fn add_virtual(&mut self, path: &str, v: Virtual, sub_shape: &[u64]) {
        let document = v.document(sub_shape);
        let shape = document["shape"]
            .as_array()
            .map(|s| s.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        let dtype = if v.widen {
            DType::Int64
        } else {
            v.kind.dtype()
        };
        let meta = ArrayMeta {
            shape,
            dtype,
            document,
        };
        self.nodes.insert(
            path.to_string(),
            Node {
                attrs: Map::new(),
                array: Some(meta),
            },
        );
        self.virtuals.insert(path.to_string(), v);
    }

    /// The stored structured array at `source`: its fields and a reader of its records.
    fn records(&self, source: &str, what: &str) -> Result<(Vec<Field>, Arc<Source>)> {
        let meta = self
            .stored_array(source)
            .ok_or_else(|| self.malformed(source, "expected an array"))?;
        let (fields, itemsize) = parse_record(&meta.document["dtype"])
            .map_err(|reason| self.unsupported(source, what, reason))?;
        if meta.shape.len() != 1 {
            return Err(self.unsupported(source, what, "a structured array must be 1-D"));
        }
        let reader = Source::open(&self.inner, source, meta, itemsize)
            .map_err(|reason| self.unsupported(source, what, reason))?;
        if let Some(f) = fields.iter().find(|f| f.name.contains('/')) {
            return Err(self.unsupported(
                source,
                what,
                format!("field name '{}' contains '/'", f.name),
            ));
        }
        Ok((fields, Arc::new(reader)))
    }

    /// `raw.X`, `raw.var`, `raw.varm` as `raw/X`, `raw/var`, `raw/varm` (the structured `var`
    /// and `varm` are converted later); other `raw.*` entries are not read by anndata.
    fn raw(&mut self) -> Result<()> {
        let legacy: Vec<String> = self
            .stored
            .keys()
            .filter(|k| is_legacy_raw(k))
            .cloned()
            .collect();
        if legacy.is_empty() {
            return Ok(());
        }
        if self.stored.contains_key("raw") {
            return Err(self.malformed(
                "raw",
                "the store has both 'raw' and legacy 'raw.*' elements (anndata refuses it too)",
            ));
        }
        for old in &legacy {
            let part = &old["raw.".len()..];
            let structured = matches!(part, "var" | "varm") && self.stored_array(old).is_some();
            if matches!(part, "X" | "var" | "varm") && !structured {
                self.move_subtree(old, &format!("raw/{part}"));
            } else {
                self.take_subtree(old);
            }
        }
        let attrs = json!({"encoding-type": "raw", "encoding-version": "0.1.0"});
        self.group("raw", attrs.as_object().cloned().unwrap_or_default());
        Ok(())
    }

    /// A structured array as a dataframe at `path`: the first field is the index.
    fn frame(&mut self, path: &str, source: &str) -> Result<()> {
        let what = "pre-0.7 dataframe";
        let (fields, reader) = self.records(source, what)?;
        if let Some(f) = fields.iter().find(|f| !f.shape.is_empty()) {
            return Err(self.unsupported(
                source,
                what,
                format!(
                    "field '{}' is a sub-array, which a dataframe cannot hold (anndata cannot \
                     read it either)",
                    f.name
                ),
            ));
        }
        let mut attrs = self
            .stored
            .get(source)
            .map(|n| n.attrs.clone())
            .unwrap_or_default();
        self.take_subtree(path);
        let index = fields[0].name.clone();
        let columns: Vec<&str> = fields[1..].iter().map(|f| f.name.as_str()).collect();
        attrs.insert("encoding-type".into(), json!("dataframe"));
        attrs.insert("encoding-version".into(), json!("0.2.0"));
        attrs.insert("_index".into(), json!(index));
        attrs.insert("column-order".into(), json!(columns));
        self.group(path, attrs);
        for f in &fields {
            let v = Virtual {
                source: reader.clone(),
                offset: f.offset,
                kind: f.kind.clone(),
                count: 1,
                widen: false,
            };
            self.add_virtual(&format!("{path}/{}", f.name), v, &[]);
        }
        self.frames.insert(path.to_string(), index);
        Ok(())
    }

    /// anndata's `_clean_uns`: codes columns whose categories sit in `uns/<column>_categories`.
    fn categories_from_uns(&mut self) -> Result<()> {
        let keys: Vec<String> = self
            .stored
            .keys()
            .filter_map(|k| k.strip_prefix("uns/"))
            .filter(|k| !k.contains('/') && k.ends_with("_categories"))
            .map(String::from)
            .collect();
        let mut applied = BTreeSet::new();
        for key in keys {
            let cats_path = format!("uns/{key}");
            // A group here is not a list of categories; anndata's check would not apply it either.
            let Some(cats) = self.stored_array(&cats_path) else {
                continue;
            };
            // A scalar (one category) counts as one, as anndata wraps it in a list.
            let n_categories = cats.shape.first().copied().unwrap_or(1) as f64;
            let column = key.replace("_categories", "");
            for frame in ["obs", "var"] {
                let is_column = self.frames.get(frame).is_some_and(|index| *index != column);
                let col_path = format!("{frame}/{column}");
                let Some(v) = self.virtuals.get(&col_path).filter(|_| is_column) else {
                    continue;
                };
                let refuse = |reason: &str| {
                    self.unsupported(
                        &col_path,
                        "pre-0.7 categorical",
                        format!(
                            "'/{cats_path}' holds categories for this column, but {reason} \
                             (anndata cannot read this file either)"
                        ),
                    )
                };
                if v.kind.is_string() {
                    return Err(refuse("its values are strings, not codes"));
                }
                let codes = v.numbers().map_err(|e| refuse(&e))?;
                if !codes.iter().all(|&c| c < n_categories) {
                    continue;
                }
                if !v.kind.dtype().is_integer() && !codes.is_empty() {
                    return Err(refuse("its codes are not integers"));
                }
                if codes.iter().any(|&c| c < -1.0) {
                    return Err(refuse("a code is below -1"));
                }
                self.categorical(&col_path, &cats_path)?;
                applied.insert(cats_path.clone());
            }
        }
        for path in applied {
            self.take_subtree(&path);
        }
        Ok(())
    }

    /// The codes column at `col_path` as a categorical whose categories are `cats_path`.
    fn categorical(&mut self, col_path: &str, cats_path: &str) -> Result<()> {
        let Some(mut codes) = self.virtuals.remove(col_path) else {
            return Err(self.malformed(col_path, "not a column of a pre-0.7 dataframe"));
        };
        self.nodes.remove(col_path);
        let unsigned = matches!(
            codes.kind.dtype(),
            DType::UInt8 | DType::UInt16 | DType::UInt32 | DType::UInt64
        );
        codes.widen = unsigned;
        let attrs = json!({"encoding-type": "categorical", "encoding-version": "0.2.0",
                           "ordered": false});
        self.group(col_path, attrs.as_object().cloned().unwrap_or_default());
        self.add_virtual(&format!("{col_path}/codes"), codes, &[]);
        self.view(&format!("{col_path}/categories"), cats_path)
    }

    /// The stored 1-D (or 0-d, as one value) array at `source` presented at `path`: fixed-length
    /// strings as strings, anything else as stored.
    fn view(&mut self, path: &str, source: &str) -> Result<()> {
        let Some(meta) = self.stored_array(source).cloned() else {
            return Err(self.malformed(source, "expected an array"));
        };
        let what = "pre-0.7 categories";
        if meta.shape.len() > 1 {
            return Err(self.unsupported(source, what, "categories must be 1-D"));
        }
        let one = |doc: &mut Value| {
            if let Some(obj) = doc.as_object_mut() {
                obj.insert("shape".into(), json!([1]));
                obj.insert("chunks".into(), json!([1]));
            }
        };
        match fixed_string(&meta) {
            Some(kind) => {
                let reader = Source::open(&self.inner, source, &meta, kind.size())
                    .map_err(|reason| self.unsupported(source, what, reason))?;
                let v = Virtual {
                    source: Arc::new(reader),
                    offset: 0,
                    kind,
                    count: 1,
                    widen: false,
                };
                self.add_virtual(path, v, &[]);
                if meta.shape.is_empty()
                    && let Some(Node { array: Some(a), .. }) = self.nodes.get_mut(path)
                {
                    a.shape = vec![1];
                    one(&mut a.document);
                }
            }
            None if !matches!(meta.dtype, DType::Other(_)) => {
                let mut meta = meta;
                if meta.shape.is_empty() {
                    meta.shape = vec![1];
                    one(&mut meta.document);
                }
                self.nodes.insert(
                    path.to_string(),
                    Node {
                        attrs: Map::new(),
                        array: Some(meta),
                    },
                );
                self.aliases.push((path.to_string(), source.to_string()));
            }
            None => {
                return Err(self.unsupported(
                    source,
                    what,
                    format!("categories of type {} are not read", meta.dtype),
                ));
            }
        }
        Ok(())
    }

    /// A structured `obsm`/`varm` as one array per field (a sub-array field is 2-D).
    fn fields_as_arrays(&mut self, path: &str, source: &str) -> Result<()> {
        let (fields, reader) = self.records(source, "pre-0.7 embeddings")?;
        let attrs = self
            .stored
            .get(source)
            .map(|n| n.attrs.clone())
            .unwrap_or_default();
        self.take_subtree(path);
        self.group(path, attrs);
        for f in fields {
            let v = Virtual {
                source: reader.clone(),
                offset: f.offset,
                // `parse_record` checked that the field's size fits a record.
                count: f.size().map_or(0, |bytes| bytes / f.kind.size().max(1)),
                kind: f.kind,
                widen: false,
            };
            self.add_virtual(&format!("{path}/{}", f.name), v, &f.shape);
        }
        Ok(())
    }

    /// anndata's `_move_adj_mtx`: neighbour graphs in `uns/neighbors` belong to `obsp`.
    fn neighbors_to_obsp(&mut self) {
        for key in ["distances", "connectivities"] {
            let from = format!("uns/neighbors/{key}");
            let Some(node) = self.nodes.get(&from) else {
                continue;
            };
            let sparse = ["h5sparse_format", "encoding-type"].iter().any(|a| {
                node.attrs
                    .get(*a)
                    .and_then(Value::as_str)
                    .is_some_and(|f| matches!(f, "csr" | "csc" | "csr_matrix" | "csc_matrix"))
            });
            let dense = node.array.as_ref().is_some_and(|a| a.shape.len() == 2);
            if !(sparse || dense) {
                continue;
            }
            if !self.nodes.contains_key("obsp") {
                self.group("obsp", Map::new());
            }
            let to = format!("obsp/{key}");
            self.take_subtree(&to);
            self.move_subtree(&from, &to);
        }
    }

    /// Fixed-length string arrays left (zarr's `|S`, `<U`: in `uns`, `raw/X`'s neighbours…) read
    /// as strings, where they are 1-D or 0-d.
    fn fixed_strings(&mut self) -> Result<()> {
        let candidates: Vec<(String, ArrayMeta, Kind)> = self
            .nodes
            .iter()
            .filter(|(p, _)| !self.virtuals.contains_key(*p))
            .filter_map(|(p, n)| {
                let meta = n.array.as_ref()?;
                let kind = fixed_string(meta)?;
                (meta.shape.len() <= 1).then(|| (p.clone(), meta.clone(), kind))
            })
            .collect();
        for (path, meta, kind) in candidates {
            let stored = self.stored_path(&path);
            let reader = Source::open(&self.inner, &stored, &meta, kind.size())
                .map_err(|reason| self.unsupported(&path, "fixed-length strings", reason))?;
            let attrs = self
                .nodes
                .get(&path)
                .map(|n| n.attrs.clone())
                .unwrap_or_default();
            let v = Virtual {
                source: Arc::new(reader),
                offset: 0,
                kind,
                count: 1,
                widen: false,
            };
            self.add_virtual(&path, v, &[]);
            if let Some(node) = self.nodes.get_mut(&path) {
                node.attrs = attrs;
            }
        }
        Ok(())
    }

    /// Where a node of the modern tree is stored.
    fn stored_path(&self, path: &str) -> String {
        self.aliases
            .iter()
            .find_map(|(new, old)| {
                path.strip_prefix(new.as_str())
                    .filter(|rest| rest.is_empty() || rest.starts_with('/'))
                    .map(|rest| format!("{old}{rest}"))
            })
            .unwrap_or_else(|| path.to_string())
    }
}

/// The kind of a plain fixed-length string array (`|S7`, `<U3`), if that is what `meta` is.
fn fixed_string(meta: &ArrayMeta) -> Option<Kind> {
    let typestr = meta.document.get("dtype")?.as_str()?;
    parse_typestr(typestr).ok().filter(Kind::is_string)
}
