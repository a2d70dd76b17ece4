//! Stage `open`: read a store's metadata — one request when consolidated metadata exists, a walk of
//! the hierarchy otherwise — into a flat map of nodes. No chunk is touched here.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use zarrs::storage::{StoreKey, StorePrefix};

use crate::error::{Error, Result};
use crate::storage::Storage;

/// The zarr on-disk format of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZarrFormat {
    /// Zarr format 2 (`.zgroup`, `.zarray`, `.zattrs`, `.zmetadata`).
    V2,
    /// Zarr format 3 (`zarr.json`).
    V3,
}

/// The element type of an array, as far as annql needs to know it (byte order is zarrs' business).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DType {
    /// Boolean.
    Bool,
    /// Signed integers.
    Int8,
    /// 16-bit signed.
    Int16,
    /// 32-bit signed.
    Int32,
    /// 64-bit signed.
    Int64,
    /// Unsigned integers.
    UInt8,
    /// 16-bit unsigned.
    UInt16,
    /// 32-bit unsigned.
    UInt32,
    /// 64-bit unsigned.
    UInt64,
    /// 32-bit float.
    Float32,
    /// 64-bit float.
    Float64,
    /// Variable-length UTF-8 (v2 `|O` + `vlen-utf8`, v3 `string`).
    String,
    /// Anything else, with the name the store gives it.
    Other(String),
}

impl ArrayMeta {
    /// Elements along the first axis of one (outer) chunk: the unit a read decodes.
    pub fn chunk_len(&self) -> Option<u64> {
        self.document
            .get("chunks")
            .or_else(|| {
                self.document
                    .pointer("/chunk_grid/configuration/chunk_shape")
            })?
            .as_array()?
            .first()?
            .as_u64()
    }
}

impl DType {
    /// The Arrow type values of this type are read as (None for types annql does not read).
    pub fn arrow_type(&self) -> Option<arrow::datatypes::DataType> {
        use arrow::datatypes::DataType;
        Some(match self {
            DType::Bool => DataType::Boolean,
            DType::Int8 => DataType::Int8,
            DType::Int16 => DataType::Int16,
            DType::Int32 => DataType::Int32,
            DType::Int64 => DataType::Int64,
            DType::UInt8 => DataType::UInt8,
            DType::UInt16 => DataType::UInt16,
            DType::UInt32 => DataType::UInt32,
            DType::UInt64 => DataType::UInt64,
            DType::Float32 => DataType::Float32,
            DType::Float64 => DataType::Float64,
            DType::String => DataType::Utf8,
            DType::Other(_) => return None,
        })
    }

    /// Size in bytes of one element, where fixed.
    pub fn size(&self) -> Option<usize> {
        Some(match self {
            DType::Bool | DType::Int8 | DType::UInt8 => 1,
            DType::Int16 | DType::UInt16 => 2,
            DType::Int32 | DType::UInt32 | DType::Float32 => 4,
            DType::Int64 | DType::UInt64 | DType::Float64 => 8,
            DType::String | DType::Other(_) => return None,
        })
    }

    /// True for the integer types.
    pub fn is_integer(&self) -> bool {
        matches!(
            self,
            DType::Int8
                | DType::Int16
                | DType::Int32
                | DType::Int64
                | DType::UInt8
                | DType::UInt16
                | DType::UInt32
                | DType::UInt64
        )
    }

    fn from_v2(dtype: &Value, filters: Option<&Value>) -> DType {
        let Some(s) = dtype.as_str() else {
            return DType::Other(format!("structured {dtype}"));
        };
        let code = s.trim_start_matches(['<', '>', '|', '=']);
        match code {
            "b1" => DType::Bool,
            "i1" => DType::Int8,
            "i2" => DType::Int16,
            "i4" => DType::Int32,
            "i8" => DType::Int64,
            "u1" => DType::UInt8,
            "u2" => DType::UInt16,
            "u4" => DType::UInt32,
            "u8" => DType::UInt64,
            "f4" => DType::Float32,
            "f8" => DType::Float64,
            "O" => {
                let vlen_utf8 = filters
                    .and_then(Value::as_array)
                    .is_some_and(|f| f.iter().any(|f| f["id"] == "vlen-utf8"));
                if vlen_utf8 {
                    DType::String
                } else {
                    DType::Other(s.to_string())
                }
            }
            _ => DType::Other(s.to_string()),
        }
    }

    fn from_v3(data_type: &Value) -> DType {
        let name = data_type
            .as_str()
            .or_else(|| data_type.get("name").and_then(Value::as_str))
            .unwrap_or("?");
        match name {
            "bool" => DType::Bool,
            "int8" => DType::Int8,
            "int16" => DType::Int16,
            "int32" => DType::Int32,
            "int64" => DType::Int64,
            "uint8" => DType::UInt8,
            "uint16" => DType::UInt16,
            "uint32" => DType::UInt32,
            "uint64" => DType::UInt64,
            "float32" => DType::Float32,
            "float64" => DType::Float64,
            "string" => DType::String,
            other => DType::Other(other.to_string()),
        }
    }
}

impl DType {
    /// The zarr v3 `data_type` name (also annql's display name); `None` for other types.
    pub fn v3_name(&self) -> Option<&'static str> {
        Some(match self {
            DType::Bool => "bool",
            DType::Int8 => "int8",
            DType::Int16 => "int16",
            DType::Int32 => "int32",
            DType::Int64 => "int64",
            DType::UInt8 => "uint8",
            DType::UInt16 => "uint16",
            DType::UInt32 => "uint32",
            DType::UInt64 => "uint64",
            DType::Float32 => "float32",
            DType::Float64 => "float64",
            DType::String => "string",
            DType::Other(_) => return None,
        })
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DType::Other(s) => f.write_str(s),
            // `v3_name` is `None` only for `Other`, matched above.
            known => f.write_str(known.v3_name().unwrap_or_default()),
        }
    }
}

/// An array node's metadata: what annql reads from it, plus the raw document zarrs is built from.
#[derive(Debug, Clone)]
pub struct ArrayMeta {
    /// Shape.
    pub shape: Vec<u64>,
    /// Element type.
    pub dtype: DType,
    /// The `.zarray` / `zarr.json` document.
    pub(crate) document: Value,
}

/// One node of the hierarchy.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub attrs: Map<String, Value>,
    pub array: Option<ArrayMeta>,
}

/// The whole hierarchy: node path ("" for the root, `obs/cell_type` below it) to node.
#[derive(Debug)]
pub(crate) struct Hierarchy {
    pub format: ZarrFormat,
    pub consolidated: bool,
    pub nodes: BTreeMap<String, Node>,
    /// Nodes below the root whose metadata could not be read, with why (see [`Damaged`]).
    pub damaged: Damaged,
}

/// Node path to why its metadata could not be read (the error without the store's name). One
/// element's unreadable metadata does not fail the store: the node stays in the tree as an empty
/// group, and reading it raises the reason ([`crate::AnnDataStore::damage`]).
pub(crate) type Damaged = BTreeMap<String, String>;

/// Keeps node `path` whose metadata failed with `error` as an empty group, and why; the root's
/// failure is the store's.
fn keep_damaged(
    store: &str,
    path: &str,
    error: Error,
    nodes: &mut BTreeMap<String, Node>,
    damaged: &mut Damaged,
) -> Result<()> {
    if path.is_empty() {
        return Err(error);
    }
    let text = error.to_string();
    let prefix = format!("{store}: ");
    let reason = text.strip_prefix(&prefix).unwrap_or(&text).to_string();
    damaged.insert(path.to_string(), reason);
    nodes.insert(
        path.to_string(),
        Node {
            attrs: Map::new(),
            array: None,
        },
    );
    Ok(())
}

/// Most nodes a hierarchy may have: bounds the work a hostile store can cause at open.
const MAX_NODES: usize = 1_000_000;
/// Deepest nesting of groups walked (AnnData nests a few levels): a store of groups nested
/// thousands deep would otherwise exhaust the stack.
const MAX_DEPTH: usize = 128;

/// Reads the hierarchy of a store, refusing nodes nested deeper than [`MAX_DEPTH`] (the element
/// tree is built, walked and dropped recursively).
pub(crate) fn read_hierarchy(storage: &Storage, store: &str) -> Result<Hierarchy> {
    let hierarchy = read_nodes(storage, store)?;
    if let Some(deep) = hierarchy
        .nodes
        .keys()
        .find(|path| path.split('/').count() > MAX_DEPTH)
    {
        return Err(Error::NotAnnData {
            store: store.into(),
            reason: format!(
                "groups nested more than {MAX_DEPTH} deep at '{}...'",
                deep.chars().take(80).collect::<String>()
            ),
        });
    }
    Ok(hierarchy)
}

/// The hierarchy as stored.
fn read_nodes(storage: &Storage, store: &str) -> Result<Hierarchy> {
    // v2's consolidated document first: most AnnData zarr stores are v2, and for a remote
    // store this makes opening one request.
    if let Some(doc) = get_json(storage, store, ".zmetadata")? {
        let meta = doc
            .get("metadata")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::Metadata {
                store: store.into(),
                key: ".zmetadata".into(),
                reason: "no 'metadata' object".into(),
            })?;
        let mut damaged = Damaged::new();
        let nodes = nodes_from_v2_documents(store, meta, &mut damaged)?;
        return Ok(Hierarchy {
            format: ZarrFormat::V2,
            consolidated: true,
            nodes,
            damaged,
        });
    }
    if let Some(root) = get_json(storage, store, "zarr.json")? {
        let mut nodes = BTreeMap::new();
        let mut damaged = Damaged::new();
        let consolidated = root
            .pointer("/consolidated_metadata/metadata")
            .and_then(Value::as_object)
            .cloned();
        nodes.insert(String::new(), node_v3(store, "zarr.json", &root)?);
        match &consolidated {
            Some(children) => {
                for (path, doc) in children {
                    let key = format!("{path}/zarr.json");
                    let path = path.trim_matches('/');
                    match node_v3(store, &key, doc) {
                        Ok(node) => {
                            nodes.insert(path.to_string(), node);
                        }
                        Err(e) => keep_damaged(store, path, e, &mut nodes, &mut damaged)?,
                    }
                }
            }
            None => walk(
                storage,
                store,
                ZarrFormat::V3,
                "",
                0,
                &mut nodes,
                &mut damaged,
            )?,
        }
        return Ok(Hierarchy {
            format: ZarrFormat::V3,
            consolidated: consolidated.is_some(),
            nodes,
            damaged,
        });
    }
    let mut nodes = BTreeMap::new();
    let mut damaged = Damaged::new();
    let root = node_v2(storage, store, "")?.ok_or_else(|| Error::NotAnnData {
        store: store.into(),
        reason: "not a zarr store: no zarr.json, .zmetadata, .zgroup or .zarray at its root".into(),
    })?;
    let is_group = root.array.is_none();
    nodes.insert(String::new(), root);
    if is_group {
        walk(
            storage,
            store,
            ZarrFormat::V2,
            "",
            0,
            &mut nodes,
            &mut damaged,
        )?;
    }
    Ok(Hierarchy {
        format: ZarrFormat::V2,
        consolidated: false,
        nodes,
        damaged,
    })
}

fn get_json(storage: &Storage, store: &str, key: &str) -> Result<Option<Value>> {
    let store_key = StoreKey::new(key).map_err(|e| Error::Metadata {
        store: store.into(),
        key: key.into(),
        reason: e.to_string(),
    })?;
    let bytes = storage.get(&store_key).map_err(|source| Error::Storage {
        store: store.into(),
        key: key.into(),
        source,
    })?;
    bytes
        .map(|b| {
            serde_json::from_slice(&b).map_err(|e| Error::Metadata {
                store: store.into(),
                key: key.into(),
                reason: format!("invalid JSON: {e}"),
            })
        })
        .transpose()
}

fn node_v3(store: &str, key: &str, doc: &Value) -> Result<Node> {
    let bad = |reason: String| Error::Metadata {
        store: store.into(),
        key: key.into(),
        reason,
    };
    let attrs = match doc.get("attributes") {
        // Optional in zarr v3: a node without them has none.
        None => Map::new(),
        Some(Value::Object(attrs)) => attrs.clone(),
        Some(other) => return Err(bad(format!("'attributes' is {other}, expected an object"))),
    };
    match doc.get("node_type").and_then(Value::as_str) {
        Some("group") => Ok(Node { attrs, array: None }),
        Some("array") => {
            let shape = parse_shape(doc.get("shape")).ok_or_else(|| bad("bad 'shape'".into()))?;
            let dtype = DType::from_v3(doc.get("data_type").unwrap_or(&Value::Null));
            let mut document = doc.clone();
            if let Some(obj) = document.as_object_mut() {
                obj.remove("attributes");
            }
            Ok(Node {
                attrs,
                array: Some(ArrayMeta {
                    shape,
                    dtype,
                    document,
                }),
            })
        }
        other => Err(bad(format!(
            "node_type is {other:?}, expected \"group\" or \"array\""
        ))),
    }
}

fn parse_shape(v: Option<&Value>) -> Option<Vec<u64>> {
    v?.as_array()?.iter().map(Value::as_u64).collect()
}

fn array_v2(store: &str, key: &str, doc: &Value) -> Result<ArrayMeta> {
    let shape = parse_shape(doc.get("shape")).ok_or_else(|| Error::Metadata {
        store: store.into(),
        key: key.into(),
        reason: "missing or bad 'shape'".into(),
    })?;
    let dtype = DType::from_v2(doc.get("dtype").unwrap_or(&Value::Null), doc.get("filters"));
    Ok(ArrayMeta {
        shape,
        dtype,
        document: doc.clone(),
    })
}

fn nodes_from_v2_documents(
    store: &str,
    meta: &Map<String, Value>,
    damaged: &mut Damaged,
) -> Result<BTreeMap<String, Node>> {
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    // Attributes alone do not make a node: a path needs a `.zgroup` or `.zarray` to exist.
    let exists = |dir: &str| {
        let key = |f: &str| {
            if dir.is_empty() {
                f.to_string()
            } else {
                format!("{dir}/{f}")
            }
        };
        meta.contains_key(&key(".zgroup")) || meta.contains_key(&key(".zarray"))
    };
    for (key, doc) in meta {
        let (dir, file) = key.rsplit_once('/').unwrap_or(("", key.as_str()));
        let entry = || Node {
            attrs: Map::new(),
            array: None,
        };
        match file {
            ".zgroup" => {
                nodes.entry(dir.to_string()).or_insert_with(entry);
            }
            ".zarray" if !damaged.contains_key(dir) => match array_v2(store, key, doc) {
                Ok(array) => nodes.entry(dir.to_string()).or_insert_with(entry).array = Some(array),
                Err(e) => keep_damaged(store, dir, e, &mut nodes, damaged)?,
            },
            ".zattrs" if exists(dir) && !damaged.contains_key(dir) => {
                match attrs_v2(store, key, doc.clone()) {
                    Ok(attrs) => nodes.entry(dir.to_string()).or_insert_with(entry).attrs = attrs,
                    Err(e) => keep_damaged(store, dir, e, &mut nodes, damaged)?,
                }
            }
            _ => {}
        }
        if nodes.len() > MAX_NODES {
            return Err(too_many(store));
        }
    }
    Ok(nodes)
}

/// The attributes a `.zattrs` document holds: a JSON object, or the document is bad.
fn attrs_v2(store: &str, key: &str, doc: Value) -> Result<Map<String, Value>> {
    match doc {
        Value::Object(attrs) => Ok(attrs),
        other => Err(Error::Metadata {
            store: store.into(),
            key: key.into(),
            reason: format!("the attributes are {other}, expected a JSON object"),
        }),
    }
}

fn too_many(store: &str) -> Error {
    Error::NotAnnData {
        store: store.into(),
        reason: format!("more than {MAX_NODES} nodes in the hierarchy"),
    }
}

fn node_v2(storage: &Storage, store: &str, path: &str) -> Result<Option<Node>> {
    let key = |f: &str| {
        if path.is_empty() {
            f.to_string()
        } else {
            format!("{path}/{f}")
        }
    };
    // A node without `.zattrs` has no attributes.
    let attrs = match get_json(storage, store, &key(".zattrs"))? {
        Some(doc) => attrs_v2(store, &key(".zattrs"), doc)?,
        None => Map::new(),
    };
    if let Some(doc) = get_json(storage, store, &key(".zarray"))? {
        let array = array_v2(store, &key(".zarray"), &doc)?;
        return Ok(Some(Node {
            attrs,
            array: Some(array),
        }));
    }
    if get_json(storage, store, &key(".zgroup"))?.is_some() {
        return Ok(Some(Node { attrs, array: None }));
    }
    Ok(None)
}

/// Walks the groups below `path` (`depth` groups below the root) one directory listing at a time
/// (arrays are not descended into); groups nested deeper than [`MAX_DEPTH`] are refused.
fn walk(
    storage: &Storage,
    store: &str,
    format: ZarrFormat,
    path: &str,
    depth: usize,
    nodes: &mut BTreeMap<String, Node>,
    damaged: &mut Damaged,
) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::NotAnnData {
            store: store.into(),
            reason: format!(
                "groups nested more than {MAX_DEPTH} deep at '{}...'",
                path.chars().take(80).collect::<String>()
            ),
        });
    }
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    };
    let store_prefix = StorePrefix::new(prefix.as_str()).map_err(|e| Error::Metadata {
        store: store.into(),
        key: prefix.clone(),
        reason: e.to_string(),
    })?;
    let listing = storage
        .list_dir(&store_prefix)
        .map_err(|e| Error::NotAnnData {
            store: store.into(),
            reason: format!(
                "the store has no consolidated metadata and listing '{prefix}' failed ({e}); \
                 consolidate its metadata (zarr.consolidate_metadata) or serve it from storage \
                 that can list (S3, GCS, Azure, a local directory)"
            ),
        })?;
    for child in listing.prefixes() {
        let child = child.as_str().trim_end_matches('/').to_string();
        let node = match format {
            ZarrFormat::V2 => node_v2(storage, store, &child),
            ZarrFormat::V3 => {
                let key = format!("{child}/zarr.json");
                get_json(storage, store, &key)
                    .and_then(|doc| doc.map(|doc| node_v3(store, &key, &doc)).transpose())
            }
        };
        let node = match node {
            Ok(Some(node)) => node,
            Ok(None) => continue,
            // Not descended into: what lies below a node of unknown kind is not its elements.
            Err(e) => {
                keep_damaged(store, &child, e, nodes, damaged)?;
                if nodes.len() > MAX_NODES {
                    return Err(too_many(store));
                }
                continue;
            }
        };
        let is_group = node.array.is_none();
        nodes.insert(child.clone(), node);
        if nodes.len() > MAX_NODES {
            return Err(too_many(store));
        }
        if is_group {
            walk(storage, store, format, &child, depth + 1, nodes, damaged)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v2_dtypes() {
        let vlen = json!([{"id": "vlen-utf8"}]);
        assert_eq!(DType::from_v2(&json!("<f4"), None), DType::Float32);
        assert_eq!(DType::from_v2(&json!("|b1"), None), DType::Bool);
        assert_eq!(DType::from_v2(&json!(">i8"), None), DType::Int64);
        assert_eq!(DType::from_v2(&json!("|O"), Some(&vlen)), DType::String);
        assert!(matches!(
            DType::from_v2(&json!("|O"), None),
            DType::Other(_)
        ));
        assert!(matches!(
            DType::from_v2(&json!([["a", "<i4"]]), None),
            DType::Other(_)
        ));
    }

    #[test]
    fn v3_dtypes() {
        assert_eq!(DType::from_v3(&json!("uint16")), DType::UInt16);
        assert_eq!(DType::from_v3(&json!("string")), DType::String);
        assert_eq!(
            DType::from_v3(&json!({"name": "struct"})),
            DType::Other("struct".into())
        );
    }

    /// Groups nested 200 deep, consolidated or walked, are refused naming the depth (rather
    /// than recursing until the stack runs out, as a fuzzed zip archive did).
    #[test]
    fn deep_groups_are_refused() -> Result<()> {
        use zarrs::storage::WritableStorageTraits;
        let store = zarrs::storage::store::MemoryStore::new();
        let group = zarrs::storage::Bytes::from_static(br#"{"zarr_format": 2}"#);
        let mut path = String::new();
        let mut consolidated = serde_json::Map::new();
        for _ in 0..200 {
            let key = |f: &str| format!("{path}{f}");
            let zgroup = key(".zgroup");
            consolidated.insert(zgroup.clone(), json!({"zarr_format": 2}));
            let bad = |e: String| too_many(&e);
            store
                .set(
                    &StoreKey::new(zgroup).map_err(|e| bad(e.to_string()))?,
                    group.clone(),
                )
                .map_err(|e| bad(e.to_string()))?;
            path.push_str("d/");
        }
        let storage: Storage = std::sync::Arc::new(store);
        let walked = read_hierarchy(&storage, "s").err().map(|e| e.to_string());
        assert!(
            walked
                .unwrap_or_default()
                .contains("nested more than 128 deep")
        );
        let meta = json!({"metadata": consolidated}).to_string();
        let one = zarrs::storage::store::MemoryStore::new();
        one.set(
            &StoreKey::new(".zmetadata").map_err(|e| too_many(&e.to_string()))?,
            zarrs::storage::Bytes::from(meta.into_bytes()),
        )
        .map_err(|e| too_many(&e.to_string()))?;
        let storage: Storage = std::sync::Arc::new(one);
        let read = read_hierarchy(&storage, "s").err().map(|e| e.to_string());
        assert!(
            read.unwrap_or_default()
                .contains("nested more than 128 deep")
        );
        Ok(())
    }

    #[test]
    fn consolidated_v2_documents_become_nodes() -> Result<()> {
        let meta = json!({
            ".zgroup": {"zarr_format": 2},
            ".zattrs": {"encoding-type": "anndata"},
            "obs/.zgroup": {"zarr_format": 2},
            "obs/_index/.zarray": {"shape": [3], "dtype": "|O", "filters": [{"id": "vlen-utf8"}]},
        });
        let mut damaged = Damaged::new();
        let nodes = nodes_from_v2_documents(
            "s",
            meta.as_object().ok_or_else(|| too_many("s"))?,
            &mut damaged,
        )?;
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[""].attrs["encoding-type"], "anndata");
        assert_eq!(
            nodes["obs/_index"].array.as_ref().map(|a| a.dtype.clone()),
            Some(DType::String)
        );
        Ok(())
    }

    #[test]
    fn one_unreadable_array_document_is_that_node_s_damage() -> Result<()> {
        let meta = json!({
            ".zgroup": {"zarr_format": 2},
            "obs/.zgroup": {"zarr_format": 2},
            "obs/a/.zarray": {"shape": [-5], "dtype": "<f4"},
            "obs/b/.zarray": {"shape": [3], "dtype": "<f4"},
        });
        let mut damaged = Damaged::new();
        let nodes = nodes_from_v2_documents(
            "s",
            meta.as_object().ok_or_else(|| too_many("s"))?,
            &mut damaged,
        )?;
        assert!(nodes["obs/a"].array.is_none());
        assert!(nodes["obs/b"].array.is_some());
        assert_eq!(damaged.keys().collect::<Vec<_>>(), ["obs/a"]);
        assert!(damaged["obs/a"].contains("'obs/a/.zarray'"), "{damaged:?}");
        // The root's own damage is the store's.
        let root = json!({".zgroup": {"zarr_format": 2}, ".zarray": {"shape": "x"}});
        let whole = nodes_from_v2_documents(
            "s",
            root.as_object().ok_or_else(|| too_many("s"))?,
            &mut Damaged::new(),
        );
        assert!(whole.is_err());
        Ok(())
    }
}
