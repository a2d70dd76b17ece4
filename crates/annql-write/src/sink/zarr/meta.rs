//! The metadata documents of a zarr output, as zarr-python 3.1 writes them for anndata 0.12:
//! v2 `.zarray` (blosc lz4 with byte shuffle, `|O` + `vlen-utf8` for strings, `.` separator) and
//! v3 `zarr.json` (`bytes`/`vlen-utf8` + `zstd` level 0, or those inside `sharding_indexed` with a
//! `bytes` + `crc32c` index at the end), plus the consolidated documents written at `finish`.
//!
//! The sink parses the same document into zarrs' metadata to build the array it encodes with, so
//! what is on disk and what zarrs encoded are one description.

use annql_store::DType;
use serde_json::{Map, Value, json};

use super::super::Attrs;

/// The zarr format of an output and whether its arrays are sharded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    /// Zarr format 2.
    V2,
    /// Zarr format 3; sharded arrays store `chunks_per_shard` chunks per object.
    V3 { sharded: bool },
}

/// Shape of one array's metadata: total shape, the chunk (the inner chunk when sharded) and the
/// shard (the stored object) when sharded.
#[derive(Debug, Clone)]
pub(super) struct Grid {
    /// The array's shape (empty for a 0-d array).
    pub shape: Vec<u64>,
    /// The chunk shape: what one codec chain run encodes.
    pub chunk: Vec<u64>,
    /// The shard shape (a multiple of `chunk`), when sharded.
    pub shard: Option<Vec<u64>>,
}

/// The v2 `dtype` string zarr-python writes for an element type.
fn dtype_v2(dtype: &DType) -> Option<&'static str> {
    Some(match dtype {
        DType::Bool => "|b1",
        DType::Int8 => "|i1",
        DType::Int16 => "<i2",
        DType::Int32 => "<i4",
        DType::Int64 => "<i8",
        DType::UInt8 => "|u1",
        DType::UInt16 => "<u2",
        DType::UInt32 => "<u4",
        DType::UInt64 => "<u8",
        DType::Float32 => "<f4",
        DType::Float64 => "<f8",
        DType::String => "|O",
        DType::Other(_) => return None,
    })
}

/// The v3 `data_type` name of an element type.
fn dtype_v3(dtype: &DType) -> Option<&'static str> {
    dtype.v3_name()
}

/// The fill value: what a chunk that was never written reads as (zarr-python's defaults).
fn fill_value(dtype: &DType) -> Value {
    match dtype {
        DType::Bool => json!(false),
        DType::Float32 | DType::Float64 => json!(0.0),
        DType::String => json!(""),
        _ => json!(0),
    }
}

/// The v3 `bytes` codec: zarr-python omits the endianness of one-byte types.
fn bytes_codec(dtype: &DType) -> Value {
    match dtype {
        DType::Bool | DType::Int8 | DType::UInt8 => json!({ "name": "bytes" }),
        _ => json!({ "name": "bytes", "configuration": { "endian": "little" } }),
    }
}

/// The v3 codecs of one chunk: array → bytes, then zstd.
fn chunk_codecs(dtype: &DType) -> Value {
    let array_to_bytes = match dtype {
        DType::String => json!({ "name": "vlen-utf8", "configuration": {} }),
        other => bytes_codec(other),
    };
    json!([
        array_to_bytes,
        { "name": "zstd", "configuration": { "level": 0, "checksum": false } }
    ])
}

/// The `.zarray` document of a v2 array (`None` for a type annql does not write).
pub(super) fn zarray(dtype: &DType, grid: &Grid) -> Option<Value> {
    let filters = match dtype {
        DType::String => json!([{ "id": "vlen-utf8" }]),
        _ => Value::Null,
    };
    Some(json!({
        "shape": grid.shape,
        "chunks": grid.chunk,
        "dtype": dtype_v2(dtype)?,
        "fill_value": fill_value(dtype),
        "order": "C",
        "filters": filters,
        "dimension_separator": ".",
        "compressor": { "id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0 },
        "zarr_format": 2,
    }))
}

/// The `zarr.json` document of a v3 array (`None` for a type annql does not write).
pub(super) fn array_v3(dtype: &DType, grid: &Grid, attrs: &Attrs) -> Option<Value> {
    let (grid_shape, codecs) = match &grid.shard {
        Some(shard) => (
            shard,
            json!([{
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": grid.chunk,
                    "codecs": chunk_codecs(dtype),
                    "index_codecs": [
                        { "name": "bytes", "configuration": { "endian": "little" } },
                        { "name": "crc32c" }
                    ],
                    "index_location": "end"
                }
            }]),
        ),
        None => (&grid.chunk, chunk_codecs(dtype)),
    };
    Some(json!({
        "shape": grid.shape,
        "data_type": dtype_v3(dtype)?,
        "chunk_grid": { "name": "regular", "configuration": { "chunk_shape": grid_shape } },
        "chunk_key_encoding": { "name": "default", "configuration": { "separator": "/" } },
        "fill_value": fill_value(dtype),
        "codecs": codecs,
        "attributes": attrs,
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }))
}

/// The `zarr.json` document of a v3 group.
pub(super) fn group_v3(attrs: &Attrs) -> Value {
    json!({ "attributes": attrs, "zarr_format": 3, "node_type": "group" })
}

/// The `.zgroup` document of a v2 group.
pub(super) fn zgroup() -> Value {
    json!({ "zarr_format": 2 })
}

/// The consolidated metadata gathered while writing: every node's documents under the keys the
/// format's consolidated document uses.
#[derive(Debug, Default)]
pub(super) struct Consolidated {
    entries: Map<String, Value>,
}

impl Consolidated {
    /// Records a v2 document (`obs/.zattrs`, `X/data/.zarray`, …) under its store key.
    pub fn v2(&mut self, key: String, doc: Value) {
        self.entries.insert(key, doc);
    }

    /// Records a v3 node document under its path (`obs`, `X/data`); groups get the empty
    /// inline `consolidated_metadata` zarr-python gives nested groups.
    pub fn v3(&mut self, path: &str, doc: &Value) {
        let mut doc = doc.clone();
        if doc.get("node_type") == Some(&json!("group"))
            && let Some(obj) = doc.as_object_mut()
        {
            obj.insert("consolidated_metadata".into(), inline(Map::new()));
        }
        self.entries.insert(path.to_string(), doc);
    }

    /// The v2 `.zmetadata` document.
    pub fn zmetadata(self) -> Value {
        json!({ "metadata": self.entries, "zarr_consolidated_format": 1 })
    }

    /// The root `zarr.json` of v3 with the consolidated metadata inline.
    pub fn root_v3(self, root_attrs: &Attrs) -> Value {
        json!({
            "attributes": root_attrs,
            "zarr_format": 3,
            "consolidated_metadata": inline(self.entries),
            "node_type": "group",
        })
    }
}

fn inline(metadata: Map<String, Value>) -> Value {
    json!({ "kind": "inline", "must_understand": false, "metadata": metadata })
}
