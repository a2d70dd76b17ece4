//! The damaged-store cases, as data: which fixture is copied, what is broken
//! ([`crate::damage::Damage`]), the query that reads the damage and must fail, the words its
//! error must hold besides the store's path (the element, and what is wrong), and a query that
//! does not touch the damage and must answer as on the undamaged fixture (None when the damage
//! leaves nothing of the store readable).

use serde_json::{Value, json};

use crate::damage::{At, Damage, Field, ZipSpot};

/// One damaged store and what annql must say about it.
pub struct Case {
    /// Unique; the table's and the failure list's name for it.
    pub name: &'static str,
    /// The fixture copied (tests/fixtures/data).
    pub fixture: &'static str,
    /// What is broken, applied in order.
    pub damage: Vec<Damage>,
    /// A query reading the damaged element: it must fail.
    pub fails: &'static str,
    /// Words the error must hold besides the store's path.
    pub says: &'static [&'static str],
    /// A query not touching the damage: it must answer as on the undamaged fixture.
    pub still: Option<&'static str>,
}

/// Cases whose promise annql does not keep yet, with why and whose area the fix is in; they run,
/// their outcome is listed, and one that starts passing fails the suite until it leaves the list.
pub const KNOWN_GAPS: &[(&str, &str)] = &[
    ("h5ad column header version", EAGER_HDF5_TREE),
    ("h5ad X/indptr header size huge", EAGER_HDF5_TREE),
    ("h5ad column header message type", EAGER_HDF5_TREE),
    ("h5ad codes header message size", EAGER_HDF5_TREE),
    ("h5ad obsm header garbage", EAGER_HDF5_TREE),
];

const EAGER_HDF5_TREE: &str = "hdf5 (the fuzz helper's area): the element tree is read at \
    open, so one damaged object header fails the whole file, and the error names the parent \
    group and the child's name instead of the element's path";

const V2: &str = "tiny.v2.zarr";
const V3: &str = "tiny.v3.zarr";
const Z2: &str = "tiny.v2.zarr.zip";
const Z3: &str = "tiny.v3.zarr.zip";
const H5: &str = "tiny.h5ad";
const H5GZ: &str = "tiny.gzip.h5ad";

/// Reads every stored value of X (data, and through the row ids indptr).
const X_VALUES: &str = "SELECT count(*), sum(obs_id), sum(value) FROM t.x WHERE value > 1.5";
/// Reads X's column indices.
const X_COLUMNS: &str = "SELECT sum(var_id) FROM t.x";
const LAYER: &str = "SELECT sum(value), count(*) FROM t.layers_counts";
const OBS: &str = "SELECT count(*), sum(n_genes) FROM t.obs";
const N_COUNTS: &str = "SELECT sum(n_counts) FROM t.obs";
const CELL_TYPE: &str =
    "SELECT cell_type, count(*) FROM t.obs GROUP BY cell_type ORDER BY cell_type";
const TISSUE: &str = "SELECT tissue, count(*) FROM t.obs GROUP BY tissue ORDER BY tissue";
const UNS: &str = "SELECT path, value FROM t.uns";
const ANY: &str = "SELECT count(*) FROM t.obs";

const HUGE: u64 = 1_000_000_000_000_000;

fn c(
    name: &'static str,
    fixture: &'static str,
    damage: Vec<Damage>,
    fails: &'static str,
    says: &'static [&'static str],
    still: Option<&'static str>,
) -> Case {
    Case {
        name,
        fixture,
        damage,
        fails,
        says,
        still,
    }
}

fn meta(elem: &'static str, field: Field, value: Value) -> Damage {
    Damage::Meta(elem, field, Some(value))
}

fn py(code: &str) -> Damage {
    Damage::Python(code.into())
}

/// Every case.
pub fn cases() -> Vec<Case> {
    let mut all = Vec::new();
    all.extend(chunks());
    all.extend(metadata());
    all.extend(sparse_and_codes());
    all.extend(missing());
    all.extend(zip_structure());
    all.extend(hdf5_structure());
    all.extend(file_kinds());
    all
}

/// Truncated, garbage and empty chunks.
#[rustfmt::skip]
fn chunks() -> Vec<Case> {
    use Damage::*;
    vec![
        c("v2 X/data chunk truncated", V2, vec![Truncate("X/data/0", 20)], X_VALUES, &["'/X/data'"], Some(LAYER)),
        c("v3 X/data shard truncated", V3, vec![Halve("X/data/c/0")], X_VALUES, &["'/X/data'"], Some(LAYER)),
        c("zip v2 X/data member truncated", Z2, vec![Truncate("X/data/0", 20)], X_VALUES, &["'/X/data'"], Some(LAYER)),
        c("zip v3 X/data shard member truncated", Z3, vec![Halve("X/data/c/0")], X_VALUES, &["'/X/data'"], Some(LAYER)),
        c("v2 obs column chunk truncated", V2, vec![Truncate("obs/n_counts/0", 10)], N_COUNTS, &["'/obs/n_counts'"], Some(OBS)),
        c("v3 categorical codes shard truncated", V3, vec![Halve("obs/cell_type/codes/c/0")], CELL_TYPE, &["'/obs/cell_type/codes'"], Some(TISSUE)),
        c("v2 X/indices chunk garbage", V2, vec![Garbage("X/indices/0")], X_COLUMNS, &["'/X/indices'"], Some(LAYER)),
        c("v3 X/indices shard garbage", V3, vec![Garbage("X/indices/c/0")], X_COLUMNS, &["'/X/indices'"], Some(LAYER)),
        c("v3 shard index checksum wrong", V3, vec![Overwrite("obs/n_genes/c/0", At::End(4), vec![0, 0, 0, 0])], "SELECT sum(n_genes) FROM t.obs", &["'/obs/n_genes'", "checksum"], Some(N_COUNTS)),
        c("v3 X/data first inner chunk garbage", V3, vec![Overwrite("X/data/c/0", At::Start(0), b"garbage!".to_vec())], X_VALUES, &["'/X/data'"], Some(LAYER)),
        c("zip v2 X/indptr member garbage", Z2, vec![Garbage("X/indptr/0")], X_VALUES, &["'/X/indptr'"], Some(LAYER)),
        c("zip v3 obs column shard garbage", Z3, vec![Garbage("obs/n_counts/c/0")], N_COUNTS, &["'/obs/n_counts'"], Some(OBS)),
        c("v2 uns value chunk garbage", V2, vec![Garbage("uns/weights/0")], UNS, &["'/uns/weights'"], Some("SELECT path, type FROM t.uns ORDER BY path")),
        c("h5ad gzip X/data chunk garbage", H5GZ, vec![py("with h5py.File(P, 'r') as f:\n    c = f['X/data'].id.get_chunk_info(1)\npoke(P, c.byte_offset, np.random.default_rng(1).bytes(c.size))")], X_VALUES, &["'/X/data'"], Some(LAYER)),
        c("h5ad gzip X/indptr chunk zeroed", H5GZ, vec![py("with h5py.File(P, 'r') as f:\n    c = f['X/indptr'].id.get_chunk_info(0)\npoke(P, c.byte_offset, bytes(c.size))")], X_VALUES, &["'/X/indptr'"], Some(LAYER)),
        c("v2 X/data chunk empty", V2, vec![Empty("X/data/0")], X_VALUES, &["'/X/data'"], Some(LAYER)),
        c("v3 X/data shard empty", V3, vec![Empty("X/data/c/0")], X_VALUES, &["'/X/data'"], Some(LAYER)),
        c("zip v3 X/indptr shard member empty", Z3, vec![Empty("X/indptr/c/0")], X_VALUES, &["'/X/indptr'"], Some(LAYER)),
    ]
}

/// Bad JSON, wrong dtypes, impossible shapes.
#[rustfmt::skip]
fn metadata() -> Vec<Case> {
    use Damage::*;
    use Field::{Array, Attr};
    vec![
        c("v2 consolidated metadata not JSON", V2, vec![Text(".zmetadata", "{\"metadata\": {")], ANY, &[".zmetadata"], None),
        c("v2 array metadata not JSON", V2, vec![Unconsolidate, Text("obs/n_counts/.zarray", "{\"shape\": [120,")], N_COUNTS, &["obs/n_counts/.zarray"], Some(OBS)),
        c("v2 dataframe attributes not JSON", V2, vec![Unconsolidate, Text("obs/.zattrs", "[1, 2")], ANY, &["obs/.zattrs"], Some(LAYER)),
        c("v3 root zarr.json not JSON", V3, vec![Text("zarr.json", "{")], ANY, &["zarr.json"], None),
        c("v3 array zarr.json not JSON", V3, vec![Unconsolidate, Text("X/indptr/zarr.json", "nope")], X_VALUES, &["X/indptr/zarr.json"], Some(LAYER)),
        c("zip v2 consolidated metadata not JSON", Z2, vec![Text(".zmetadata", "garbage")], ANY, &[".zmetadata"], None),
        c("zip v3 root zarr.json not JSON", Z3, vec![Text("zarr.json", "{\"zarr_format\": 3,")], ANY, &["zarr.json"], None),
        c("v2 X/indices dtype float", V2, vec![meta("X/indices", Array("dtype"), json!("<f8"))], X_COLUMNS, &["'/X/indices'", "float64", "integers"], Some(LAYER)),
        c("v3 X/indices data_type float", V3, vec![meta("X/indices", Array("data_type"), json!("float32"))], X_COLUMNS, &["'/X/indices'", "float32", "integers"], Some(LAYER)),
        c("v2 X/indptr dtype float", V2, vec![meta("X/indptr", Array("dtype"), json!("<f8"))], X_VALUES, &["'/X/indptr'", "float64", "integers"], Some(LAYER)),
        c("h5ad X/indptr float", H5, vec![py("with h5py.File(P, 'a') as f:\n    v = f['X/indptr'][:]\n    del f['X/indptr']\n    f['X/indptr'] = v.astype('f8')")], X_VALUES, &["'/X/indptr'", "float64", "integers"], Some(LAYER)),
        c("v2 categorical codes dtype float", V2, vec![meta("obs/cell_type/codes", Array("dtype"), json!("<f4"))], CELL_TYPE, &["'/obs/cell_type", "float32", "signed integers"], Some(TISSUE)),
        c("v3 categorical codes data_type bool", V3, vec![meta("obs/cell_type/codes", Array("data_type"), json!("bool"))], CELL_TYPE, &["'/obs/cell_type", "bool", "signed integers"], Some(TISSUE)),
        c("v2 obs column dtype structured", V2, vec![meta("obs/n_counts", Array("dtype"), json!([["a", "<i4"], ["b", "<i4"]]))], N_COUNTS, &["'/obs/n_counts'"], Some(OBS)),
        c("v2 obs column dtype unknown", V2, vec![meta("obs/n_counts", Array("dtype"), json!("<x9"))], N_COUNTS, &["obs/n_counts", "<x9"], Some(OBS)),
        c("v3 X/data data_type complex", V3, vec![meta("X/data", Array("data_type"), json!("complex64"))], X_VALUES, &["'/X/data'", "complex64"], Some(LAYER)),
        c("h5ad categorical codes float", H5, vec![py("with h5py.File(P, 'a') as f:\n    g = f['obs/cell_type']\n    v = g['codes'][:]\n    del g['codes']\n    g['codes'] = v.astype('f8')")], CELL_TYPE, &["'/obs/cell_type", "float64", "signed integers"], Some(TISSUE)),
        c("h5ad X/indices float", H5, vec![py("with h5py.File(P, 'a') as f:\n    v = f['X/indices'][:]\n    del f['X/indices']\n    f['X/indices'] = v.astype('f4')")], X_COLUMNS, &["'/X/indices'", "float32", "integers"], Some(LAYER)),
        c("h5ad obs column compound dtype", H5, vec![py("with h5py.File(P, 'a') as f:\n    v = f['obs/n_counts'][:]\n    del f['obs/n_counts']\n    f['obs/n_counts'] = np.array([(x, x) for x in v], dtype=[('a', '<i8'), ('b', '<i8')])")], N_COUNTS, &["'/obs/n_counts'"], Some(OBS)),
        c("v2 X/data shape negative", V2, vec![meta("X/data", Array("shape"), json!([-5]))], X_VALUES, &["X/data", "shape"], Some(LAYER)),
        c("v3 X/data shape negative", V3, vec![meta("X/data", Array("shape"), json!([-5]))], X_VALUES, &["X/data", "shape"], Some(LAYER)),
        c("v2 obs column huge", V2, vec![meta("obs/n_counts", Array("shape"), json!([HUGE]))], N_COUNTS, &["'/obs/n_counts'", "1000000000000000", "120"], Some(OBS)),
        c("v2 X shape huge", V2, vec![meta("X", Attr("shape"), json!([HUGE, 40]))], X_VALUES, &["'/X'", "1000000000000000", "indptr"], Some(LAYER)),
        c("v2 categories huge", V2, vec![meta("obs/cell_type/categories", Array("shape"), json!([HUGE]))], CELL_TYPE, &["'/obs/cell_type/categories'"], Some(TISSUE)),
        c("v3 categories huge", V3, vec![meta("obs/tissue/categories", Array("shape"), json!([HUGE]))], TISSUE, &["'/obs/tissue/categories'"], Some(CELL_TYPE)),
        c("h5ad categories huge", H5, vec![py("with h5py.File(P, 'a') as f:\n    g = f['obs/cell_type']\n    a = dict(g['categories'].attrs)\n    del g['categories']\n    d = g.create_dataset('categories', shape=(10**15), chunks=(1000), dtype=h5py.string_dtype())\n    d.attrs.update(a)")], CELL_TYPE, &["'/obs/cell_type/categories'"], Some(TISSUE)),
        c("v2 X/data chunk huge", V2, vec![meta("X/data", Array("chunks"), json!([HUGE]))], X_VALUES, &["'/X/data'", "chunk"], Some(LAYER)),
        c("v3 X/data shard huge", V3, vec![meta("X/data", Array("chunk_grid"), json!({"name": "regular", "configuration": {"chunk_shape": [HUGE]}}))], X_VALUES, &["'/X/data'", "index of a shard", "read limit"], Some(LAYER)),
        c("v2 X/data chunk zero", V2, vec![meta("X/data", Array("chunks"), json!([0]))], X_VALUES, &["'/X/data'", "chunk"], Some(LAYER)),
        c("v2 X/indices shorter than data", V2, vec![meta("X/indices", Array("shape"), json!([719]))], X_COLUMNS, &["'/X'", "719", "720"], Some(LAYER)),
        c("v3 X/indices shorter than data", V3, vec![meta("X/indices", Array("shape"), json!([719]))], X_COLUMNS, &["'/X'", "719", "720"], Some(LAYER)),
        c("v2 X shape three lengths", V2, vec![meta("X", Attr("shape"), json!([120, 40, 2]))], X_VALUES, &["'/X'", "shape"], Some(LAYER)),
        c("v2 obsm rows disagree", V2, vec![meta("obsm/X_umap", Array("shape"), json!([119, 2]))], "SELECT * FROM t.obsm_x_umap", &["'/obsm/X_umap'", "119", "120"], Some("SELECT sum(x_pca_0) FROM t.obsm_x_pca")),
        c("v3 dense layer columns disagree", V3, vec![meta("layers/dense", Array("shape"), json!([120, 41]))], "SELECT sum(value) FROM t.layers_dense", &["'/layers/dense'", "41", "40"], Some(LAYER)),
        c("h5ad obs column longer than index", H5, vec![py("with h5py.File(P, 'a') as f:\n    a = dict(f['obs/n_counts'].attrs)\n    v = f['obs/n_counts'][:]\n    del f['obs/n_counts']\n    f['obs/n_counts'] = np.concatenate([v, v[:1]])\n    f['obs/n_counts'].attrs.update(a)")], N_COUNTS, &["'/obs/n_counts'", "121", "120"], Some(OBS)),
    ]
}

/// Sparse parts that disagree, categorical codes out of range.
#[rustfmt::skip]
fn sparse_and_codes() -> Vec<Case> {
    const DECREASING_Z: &str =
        "a = zarr.open_array(P + '/X/indptr', mode='r+')\nv = a[:]\nv[10] = v[12] + 1\na[:] = v";
    const DECREASING_H: &str =
        "with h5py.File(P, 'a') as f:\n    d = f['X/indptr']\n    d[10] = d[12] + 1";
    vec![
        c("v2 indptr decreasing", V2, vec![py(DECREASING_Z)], X_VALUES, &["'/X/indptr'"], Some(LAYER)),
        c("v3 indptr decreasing", V3, vec![py(DECREASING_Z)], X_VALUES, &["'/X/indptr'"], Some(LAYER)),
        c("h5ad indptr decreasing", H5, vec![py(DECREASING_H)], X_VALUES, &["'/X/indptr'"], Some(LAYER)),
        c("v2 indptr ends past data", V2, vec![py("a = zarr.open_array(P + '/X/indptr', mode='r+')\na[120] = 800")], X_VALUES, &["'/X/indptr'", "800", "720"], Some(LAYER)),
        c("h5ad indptr ends past data", H5, vec![py("with h5py.File(P, 'a') as f:\n    f['X/indptr'][120] = 800")], X_VALUES, &["'/X/indptr'", "800", "720"], Some(LAYER)),
        c("v3 indptr starts at 1", V3, vec![py("a = zarr.open_array(P + '/X/indptr', mode='r+')\na[0] = 1")], X_VALUES, &["'/X/indptr'", "starts at 1"], Some(LAYER)),
        c("v2 column index out of range", V2, vec![py("a = zarr.open_array(P + '/X/indices', mode='r+')\na[5] = 45")], X_COLUMNS, &["'/X/indices'", "out of range 0..40"], Some(LAYER)),
        c("v3 column index out of range", V3, vec![py("a = zarr.open_array(P + '/X/indices', mode='r+')\na[700] = 1000")], X_COLUMNS, &["'/X/indices'", "out of range 0..40"], Some(LAYER)),
        c("h5ad column index negative", H5, vec![py("with h5py.File(P, 'a') as f:\n    f['X/indices'][3] = -3")], X_COLUMNS, &["'/X/indices'", "out of range 0..40"], Some(LAYER)),
        c("v2 categorical code past categories", V2, vec![py("a = zarr.open_array(P + '/obs/cell_type/codes', mode='r+')\na[3] = 9")], CELL_TYPE, &["'/obs/cell_type", "9", "4 categories"], Some(TISSUE)),
        c("v3 categorical code past categories", V3, vec![py("a = zarr.open_array(P + '/obs/cell_type/codes', mode='r+')\na[3] = 4")], CELL_TYPE, &["'/obs/cell_type", "4 categories"], Some(TISSUE)),
        c("h5ad categorical code past categories", H5, vec![py("with h5py.File(P, 'a') as f:\n    f['obs/cell_type/codes'][3] = 100")], CELL_TYPE, &["'/obs/cell_type", "100", "4 categories"], Some(TISSUE)),
        c("v2 categorical code below -1", V2, vec![py("a = zarr.open_array(P + '/obs/tissue/codes', mode='r+')\na[0] = -2")], TISSUE, &["'/obs/tissue", "-2"], Some(CELL_TYPE)),
    ]
}

/// Required elements missing.
#[rustfmt::skip]
fn missing() -> Vec<Case> {
    use Damage::*;
    vec![
        c("v2 X/indptr missing", V2, vec![Remove("X/indptr")], X_VALUES, &["'/X", "indptr"], Some(LAYER)),
        c("v3 X/indices missing", V3, vec![Remove("X/indices")], X_COLUMNS, &["'/X", "indices"], Some(LAYER)),
        c("zip v2 X/data missing", Z2, vec![Remove("X/data")], X_VALUES, &["'/X", "data"], Some(LAYER)),
        c("h5ad X/data missing", H5, vec![py("with h5py.File(P, 'a') as f:\n    del f['X/data']")], X_VALUES, &["'/X", "data"], Some(LAYER)),
        c("v2 obs index missing", V2, vec![Remove("obs/_index")], ANY, &["'/obs", "_index"], Some(LAYER)),
        c("h5ad column a dangling link", H5, vec![py(super::DANGLING_LINK)], N_COUNTS, &["'/obs/n_counts'"], Some(OBS)),
        c("h5ad obs index missing", H5, vec![py("with h5py.File(P, 'a') as f:\n    del f['obs/_index']")], ANY, &["'/obs", "_index"], Some(LAYER)),
        c("v2 categorical codes missing", V2, vec![Remove("obs/cell_type/codes")], CELL_TYPE, &["'/obs/cell_type", "codes"], Some(TISSUE)),
        c("v3 var index missing", V3, vec![Remove("var/_index")], "SELECT count(*) FROM t.var", &["'/var/_index'"], Some(OBS)),
    ]
}

/// Zip central directories, end records and local headers.
#[rustfmt::skip]
fn zip_structure() -> Vec<Case> {
    use Damage::*;
    use ZipSpot::*;
    vec![
        c("zip end record signature", Z2, vec![Zip(EndRecord(0), b"XXXX".to_vec())], ANY, &["zip"], None),
        c("zip end record directory offset", Z2, vec![Zip(EndRecord(16), vec![0xff, 0xff, 0xff, 0x0f])], ANY, &["zip"], None),
        c("zip end record entry count", Z2, vec![Zip(EndRecord(8), vec![0xff, 0xff, 0xff, 0xff])], ANY, &["zip"], None),
        c("zip central header signature", Z2, vec![Zip(Central("X/data/0", 0), b"XXXX".to_vec())], ANY, &["zip"], None),
        c("zip central header sizes huge", Z2, vec![Zip(Central("X/data/0", 20), vec![0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0x7f])], X_VALUES, &["X/data/0"], Some(LAYER)),
        c("zip central header local offset wrong", Z2, vec![Zip(Central("X/data/0", 42), vec![0, 0, 0, 0])], X_VALUES, &["X/data/0"], Some(LAYER)),
        c("zip local header signature", Z2, vec![Zip(Local("X/data/0", 0), b"XXXX".to_vec())], X_VALUES, &["X/data/0"], Some(LAYER)),
        c("zip local header name length", Z2, vec![Zip(Local("X/data/0", 26), vec![0xff, 0xff])], X_VALUES, &["X/data/0"], Some(LAYER)),
        c("zip local header compression method", Z2, vec![Zip(Local("X/data/0", 8), vec![14, 0]), Zip(Central("X/data/0", 10), vec![14, 0])], X_VALUES, &["X/data/0"], Some(LAYER)),
        c("zip v3 local header of a shard", Z3, vec![Zip(Local("X/data/c/0", 0), b"XXXX".to_vec())], X_VALUES, &["X/data/c/0"], Some(LAYER)),
        c("zip v3 central header shard size", Z3, vec![Zip(Central("X/data/c/0", 24), vec![0xff, 0xff, 0xff, 0x7f])], X_VALUES, &["X/data/c/0"], Some(LAYER)),
        c("zip truncated", Z2, vec![Halve("")], ANY, &["zip"], None),
        c("zip v3 empty", Z3, vec![Empty("")], ANY, &["empty"], None),
    ]
}

/// HDF5 superblocks and object headers.
#[rustfmt::skip]
fn hdf5_structure() -> Vec<Case> {
    use Damage::*;
    let header = |obj: &str, at: usize, bytes: &str| {
        py(&format!("poke(P, header(P, '{obj}') + {at}, {bytes})"))
    };
    vec![
        c("h5ad superblock signature", H5, vec![Overwrite("", At::Start(1), b"XDF".to_vec())], ANY, &["HDF5"], None),
        c("h5ad superblock version", H5, vec![Overwrite("", At::Start(8), vec![9])], ANY, &["superblock"], None),
        c("h5ad superblock offset size", H5, vec![Overwrite("", At::Start(13), vec![3])], ANY, &["HDF5"], None),
        c("h5ad superblock root address past the end", H5, vec![Overwrite("", At::Start(64), vec![0, 0, 0, 0, 0x10, 0, 0, 0])], ANY, &["HDF5"], None),
        c("h5ad superblock cut short", H5, vec![Truncate("", 40)], ANY, &["HDF5"], None),
        c("h5ad truncated", H5GZ, vec![Halve("")], ANY, &["HDF5"], None),
        c("h5ad empty", H5, vec![Empty("")], ANY, &["empty"], None),
        c("h5ad column header version", H5, vec![header("obs/n_counts", 0, "b'\\x07'")], N_COUNTS, &["'/obs/n_counts'"], Some(LAYER)),
        c("h5ad column data address past the end", H5, vec![py("with h5py.File(P, 'r') as f:\n    at = f['obs/n_counts'].id.get_offset()\nh = header(P, 'obs/n_counts')\nb = open(P, 'rb').read()\npoke(P, b.index(at.to_bytes(8, 'little'), h), (2**40).to_bytes(8, 'little'))")], N_COUNTS, &["'/obs/n_counts'"], Some(OBS)),
        c("h5ad X/indptr header size huge", H5, vec![header("X/indptr", 8, "b'\\xf0\\xff\\xff\\x7f'")], X_VALUES, &["'/X/indptr'"], Some(LAYER)),
        c("h5ad column header message type", H5, vec![header("obs/n_genes", 16, "b'\\xff\\x7f'")], "SELECT sum(n_genes) FROM t.obs", &["'/obs/n_genes'"], Some(N_COUNTS)),
        c("h5ad codes header message size", H5, vec![header("obs/cell_type/codes", 18, "b'\\xff\\xff'")], CELL_TYPE, &["'/obs/cell_type"], Some(TISSUE)),
        c("h5ad obsm header garbage", H5, vec![header("obsm/X_umap", 0, "np.random.default_rng(2).bytes(64)")], "SELECT * FROM t.obsm_x_umap", &["'/obsm/X_umap'"], Some(LAYER)),
    ]
}

/// Empty files, directories where files belong and files where directories do, a FIFO, symlink
/// loops.
#[rustfmt::skip]
fn file_kinds() -> Vec<Case> {
    use Damage::*;
    vec![
        c("v2 consolidated metadata empty", V2, vec![Empty(".zmetadata")], ANY, &[".zmetadata"], None),
        c("v2 array metadata empty", V2, vec![Unconsolidate, Empty("obs/n_counts/.zarray")], N_COUNTS, &["obs/n_counts/.zarray"], Some(OBS)),
        c("v3 group zarr.json empty", V3, vec![Unconsolidate, Empty("obs/zarr.json")], ANY, &["obs/zarr.json"], Some(LAYER)),
        c("v2 directory for a chunk", V2, vec![DirForFile("X/data/0")], X_VALUES, &["'/X/data'", "X/data/0", "directory"], Some(LAYER)),
        c("v3 directory for a shard", V3, vec![DirForFile("X/data/c/0")], X_VALUES, &["'/X/data'", "X/data/c/0", "directory"], Some(LAYER)),
        c("v2 directory for consolidated metadata", V2, vec![DirForFile(".zmetadata")], ANY, &[".zmetadata", "directory"], None),
        c("v2 directory for array metadata", V2, vec![Unconsolidate, DirForFile("obs/n_counts/.zarray")], N_COUNTS, &["obs/n_counts/.zarray", "directory"], Some(OBS)),
        c("h5ad directory for the file", H5, vec![DirForFile("")], ANY, &["not a zarr store"], None),
        c("v2 file for the indptr directory", V2, vec![FileForDir("X/indptr")], X_VALUES, &["'/X/indptr'"], Some(LAYER)),
        c("v3 file for the chunk directory", V3, vec![FileForDir("X/data/c")], X_VALUES, &["'/X/data'"], Some(LAYER)),
        c("v2 file for a column group", V2, vec![Unconsolidate, FileForDir("obs/cell_type")], CELL_TYPE, &["obs/cell_type"], Some(TISSUE)),
        c("v2 FIFO for a chunk", V2, vec![Fifo("X/data/0")], X_VALUES, &["X/data/0", "FIFO"], Some(LAYER)),
        c("v2 chunk symlink loop", V2, vec![SymlinkLoop("X/data/0")], X_VALUES, &["'/X/data'", "symbolic links"], Some(LAYER)),
        c("v3 shard symlink loop", V3, vec![SymlinkLoop("X/data/c/0")], X_VALUES, &["'/X/data'", "symbolic links"], Some(LAYER)),
        c("v2 consolidated metadata symlink loop", V2, vec![SymlinkLoop(".zmetadata")], ANY, &[".zmetadata", "symbolic links"], None),
        c("v2 store symlink loop", V2, vec![SymlinkLoop("")], ANY, &["symbolic links"], None),
        c("h5ad symlink loop", H5, vec![SymlinkLoop("")], ANY, &["symbolic links"], None),
        c("v2 column directory symlink loop", V2, vec![Unconsolidate, SymlinkLoop("obs/n_counts")], N_COUNTS, &["'/obs/n_counts'", "not stored"], Some(OBS)),
        c("v3 directory cycle in a walked store", V3, vec![Unconsolidate, Remove("X/indptr"), SymlinkCycle("X/indptr")], X_VALUES, &["'/X", "indptr"], Some(LAYER)),
    ]
}
