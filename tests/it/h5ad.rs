//! The HDF5 backend: the storage conformance suite run against every backend, the h5ad corpus,
//! range reads and damaged files. (Values of the h5ad fixtures against anndata are checked with
//! the other layouts in `store.rs`.)

use annql::store::storage::{Storage, open_local};
use annql::store::{AnnDataStore, Encoding, Error, ReadStats};
use zarrs::storage::byte_range::ByteRange;
use zarrs::storage::{StoreKey, StorePrefix};

use crate::common::{corpus_dir, fixture};

/// One fixture per storage backend: zarr v2 and v3 directories, a zip, HDF5 as anndata writes it
/// and HDF5 chunked with gzip + shuffle.
const BACKENDS: [&str; 6] = [
    "tiny.v2.zarr",
    "tiny.v3.zarr",
    "tiny.v2.zarr.zip",
    "tiny.h5ad",
    "tiny.gzip.h5ad",
    "tiny.lzf.h5ad",
];

fn key(k: &str) -> StoreKey {
    StoreKey::new(k).unwrap_or_else(|e| panic!("{k}: {e}"))
}

fn storage(name: &str) -> Storage {
    open_local(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The chunk keys of the array at `path` (its keys that are not metadata).
fn chunk_keys(s: &Storage, path: &str) -> Vec<StoreKey> {
    let prefix = StorePrefix::new(format!("{path}/")).unwrap_or_else(|e| panic!("{e}"));
    s.list_prefix(&prefix)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .into_iter()
        .filter(|k| {
            let last = k.as_str().rsplit('/').next().unwrap_or("");
            !last.starts_with('.') && last != "zarr.json" && last != "c"
        })
        .collect()
}

/// The storage conformance suite: what every backend must do the same way.
#[test]
fn storage_conformance() {
    for name in BACKENDS {
        let s = storage(name);
        // Listing: the root holds the AnnData groups; every listed key reads.
        let root = s
            .list_dir(&StorePrefix::root())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let dirs: Vec<&str> = root.prefixes().iter().map(|p| p.as_str()).collect();
        for d in ["obs/", "var/", "X/", "layers/", "uns/"] {
            assert!(dirs.contains(&d), "{name}: root lists {dirs:?}");
        }
        let all = s.list().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(all.len() > 50, "{name}: {} keys", all.len());
        let metadata = all
            .iter()
            .filter(|k| {
                let last = k.as_str().rsplit('/').next().unwrap_or("");
                [".zarray", ".zgroup", ".zattrs", "zarr.json"].contains(&last)
            })
            .collect::<Vec<_>>();
        assert!(!metadata.is_empty(), "{name}");
        for k in &metadata {
            let v = s.get(k).unwrap_or_else(|e| panic!("{name} {k}: {e}"));
            let v = v.unwrap_or_else(|| panic!("{name}: listed key {k} does not read"));
            serde_json::from_slice::<serde_json::Value>(&v)
                .unwrap_or_else(|e| panic!("{name} {k}: {e}"));
        }
        // A missing key is None, not an error.
        assert!(
            s.get(&key("no/such/key")).ok().flatten().is_none(),
            "{name}"
        );
        assert!(
            s.get(&key("X/data/999999")).ok().flatten().is_none(),
            "{name}"
        );
        // Byte ranges of a chunk are slices of the whole; size_key is its length.
        let chunks = chunk_keys(&s, "obs/n_counts");
        let k = chunks
            .first()
            .unwrap_or_else(|| panic!("{name}: no chunk keys"));
        let whole = s
            .get(k)
            .unwrap_or_else(|e| panic!("{name} {k}: {e}"))
            .unwrap_or_else(|| panic!("{name}: {k} is missing"));
        let len = whole.len() as u64;
        assert_eq!(
            s.size_key(k).ok().flatten(),
            Some(len),
            "{name}: size_key {k}"
        );
        let ranges = [
            ByteRange::FromStart(0, Some(len.min(7))),
            ByteRange::FromStart(len / 2, None),
            ByteRange::Suffix(len.min(5)),
        ];
        for r in ranges {
            let part = s
                .get_partial(k, r)
                .unwrap_or_else(|e| panic!("{name} {k} {r:?}: {e}"))
                .unwrap_or_else(|| panic!("{name}: {k} is missing"));
            let (a, b) = (r.start(len) as usize, r.end(len) as usize);
            assert_eq!(&part[..], &whole[a..b], "{name} {k} {r:?}");
        }
        // A range past the end is an error, not a panic or a short read.
        let past = s.get_partial(k, ByteRange::FromStart(len + 10, Some(4)));
        assert!(
            !matches!(past, Ok(Some(ref b)) if b.len() == 4),
            "{name}: read past the end"
        );
        // Many threads reading the chunks of one array at once see what one thread sees.
        let data_keys = chunk_keys(&s, "X/data");
        let sequential: Vec<Vec<u8>> = data_keys
            .iter()
            .map(|k| {
                s.get(k)
                    .ok()
                    .flatten()
                    .map(|b| b.to_vec())
                    .unwrap_or_default()
            })
            .collect();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for (k, want) in data_keys.iter().zip(&sequential).rev() {
                        let got = s
                            .get(k)
                            .ok()
                            .flatten()
                            .map(|b| b.to_vec())
                            .unwrap_or_default();
                        assert_eq!(&got, want, "{name}: {k} read concurrently");
                    }
                });
            }
        });
    }
}

/// anndata 0.7 categoricals point at their categories with an HDF5 object reference, presented as
/// the absolute path of the categories; every obs column reads as in the zarr copy of the same
/// file (which stores a relative path string), or fails the same way.
#[test]
fn object_reference_categoricals_read_like_zarr() {
    let dir = corpus_dir().join("scverse-anndata/tests/data/archives/v0.7.0");
    let h5 = AnnDataStore::open(dir.join("adata.h5ad")).unwrap_or_else(|e| panic!("{e}"));
    let zarr = AnnDataStore::open(dir.join("adata.zarr.zip")).unwrap_or_else(|e| panic!("{e}"));
    let cat = h5.element("obs/obs_cat").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cat.encoding, Encoding::LegacyCategorical);
    assert_eq!(
        cat.attrs.get("categories").and_then(|v| v.as_str()),
        Some("/obs/__categories/obs_cat")
    );
    let stats = ReadStats::new_shared;
    let codes = h5
        .read_array("obs/obs_cat", 0..30, &stats())
        .unwrap_or_else(|e| panic!("{e}"));
    let zcodes = zarr
        .read_array("obs/obs_cat", 0..30, &stats())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(codes.as_ref(), zcodes.as_ref());
    let categories = h5
        .read_array("obs/__categories/obs_cat", 0..3, &stats())
        .map(|a| a.len());
    let zcategories = zarr
        .read_array("obs/__categories/obs_cat", 0..3, &stats())
        .map(|a| a.len());
    assert_eq!(categories.is_ok(), zcategories.is_ok());
    let obs = h5.element("obs").unwrap_or_else(|e| panic!("{e}"));
    for col in &obs.children {
        let z = zarr
            .element(&col.path)
            .unwrap_or_else(|e| panic!("{}: {e}", col.path));
        assert_eq!(col.encoding, z.encoding, "{}", col.path);
        let n = col.shape.first().copied().unwrap_or(0);
        match (
            h5.read_column(col, 0..n, &stats()),
            zarr.read_column(z, 0..n, &stats()),
        ) {
            (Ok(a), Ok(b)) => assert_eq!(a.as_ref(), b.as_ref(), "{}", col.path),
            (Err(Error::Unsupported { .. }), Err(Error::Unsupported { .. })) => {}
            (a, b) => panic!("{}: h5ad {:?}, zarr {:?}", col.path, a.err(), b.err()),
        }
    }
}

/// A row range of a chunked (gzip) X reads one or two of its chunks; rows of a contiguous array
/// read just their bytes.
#[test]
fn h5ad_range_reads_touch_only_what_they_need() {
    let store = AnnDataStore::open(fixture("chunky.h5ad")).unwrap_or_else(|e| panic!("{e}"));
    let s = ReadStats::new_shared();
    store
        .read_sparse("X", 1000..1100, &s)
        .unwrap_or_else(|e| panic!("{e}"));
    let (data, indices) = (s.keys_under("X/data/"), s.keys_under("X/indices/"));
    assert!(
        (1..=2).contains(&data),
        "touched {data} data chunks: {:?}",
        s.keys()
    );
    assert!(
        (1..=2).contains(&indices),
        "touched {indices} indices chunks"
    );

    let store = AnnDataStore::open(fixture("tiny.h5ad")).unwrap_or_else(|e| panic!("{e}"));
    let s = ReadStats::new_shared();
    let block = store
        .read_dense_rows("layers/dense", 10..20, &s)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(block.values.len(), 10 * 40);
    assert!(
        s.bytes() <= 10 * 40 * 8,
        "read {} bytes for 3200",
        s.bytes()
    );
}

/// Truncated or overwritten files give errors naming the file, never a panic, whether the damage
/// is found at open or at read.
#[test]
fn damaged_h5ad_files_give_clear_errors() {
    let source = std::fs::read(fixture("tiny.gzip.h5ad")).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let n = source.len();
    let cases: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), Vec::new()),
        ("superblock only".into(), source[..100].to_vec()),
        ("truncated at 10%".into(), source[..n / 10].to_vec()),
        ("truncated at 50%".into(), source[..n / 2].to_vec()),
        ("truncated at 95%".into(), source[..n * 95 / 100].to_vec()),
        ("overwritten middle".into(), {
            let mut b = source.clone();
            for (i, byte) in b[n / 3..n / 3 + 4096].iter_mut().enumerate() {
                *byte = (i * 131 % 251) as u8;
            }
            b
        }),
        ("overwritten tail".into(), {
            let mut b = source.clone();
            for byte in &mut b[n - 60_000..n - 20_000] {
                *byte = 0xAB;
            }
            b
        }),
    ];
    let mut failed_somewhere = 0;
    for (what, bytes) in cases {
        let path = dir.path().join("damaged.h5ad");
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
        let shown = path.display().to_string();
        match AnnDataStore::open(&path) {
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(&shown), "{what}: {msg}");
                failed_somewhere += 1;
            }
            Ok(store) => {
                let mut errors = Vec::new();
                for ad in store.anndatas() {
                    for element in ad.walk() {
                        let r = match element.encoding {
                            Encoding::CsrMatrix | Encoding::CscMatrix => store
                                .sparse_dims(element)
                                .and_then(|(m, _)| {
                                    store.read_sparse(&element.path, 0..m, &ReadStats::new_shared())
                                })
                                .map(|_| ()),
                            Encoding::DataFrame => element.children.iter().try_for_each(|c| {
                                let rows = c.shape.first().copied().unwrap_or(0);
                                store
                                    .read_column(c, 0..rows, &ReadStats::new_shared())
                                    .map(|_| ())
                            }),
                            _ => Ok(()),
                        };
                        if let Err(e) = r {
                            errors.push(e.to_string());
                        }
                    }
                }
                for msg in &errors {
                    assert!(
                        msg.contains(&shown) && msg.contains("element '/"),
                        "{what}: {msg}"
                    );
                }
                failed_somewhere += usize::from(!errors.is_empty());
            }
        }
    }
    assert!(
        failed_somewhere >= 6,
        "only {failed_somewhere} damaged files were noticed"
    );
}

/// Not an HDF5 file despite the extension, or HDF5 without AnnData in it: clear errors.
#[test]
fn non_anndata_hdf5_is_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let fake = dir.path().join("fake.h5ad");
    std::fs::write(&fake, b"this is not hdf5 at all, just text").unwrap_or_else(|e| panic!("{e}"));
    let err = AnnDataStore::open(&fake)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("fake.h5ad"), "{err}");
}
