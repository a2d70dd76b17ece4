//! Damaged bytes never become numbers: every checksum a format carries (a zip member's CRC-32, the
//! Adler-32 ending HDF5's gzip streams, HDF5's Fletcher-32 filter) fails the query that meets a bad
//! one, with an error naming the file and the element; and metadata that breaks the zarr spec is
//! told apart from an encoding annql does not read.
//!
//! Each damaged store is a copy of a fixture written by the real anndata/h5py, made by the shared
//! damage generator ([`crate::damage`]); the same query on the undamaged copy answers as on the
//! zarr directory fixture.

use std::path::Path;

use annql::engine::AnnSession;
use annql::store::{AnnDataStore, Error, ReadStats};
use serde_json::{Value, json};

use crate::common::{fixture, rows};
use crate::damage::{self, flipped_data, wrong_crc};

/// A query that reads every stored value of X.
const SUM_X: &str = "SELECT sum(value), count(*) FROM t.x";

/// The answer to [`SUM_X`] on the store at `path`, or the error's text.
async fn sum_x(path: &Path) -> Result<Vec<Value>, String> {
    let session = AnnSession::builder()
        .with_threads(2)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    session.attach("t", path).map_err(|e| e.to_string())?;
    session
        .collect(SUM_X)
        .await
        .map(|b| rows(&b))
        .map_err(|e| e.to_string())
}

/// The answer on the zarr directory fixture, which the other tests pin to anndata's values.
async fn reference() -> Vec<Value> {
    sum_x(&fixture("tiny.v2.zarr"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `[byte offset, stored size]` of each chunk of `X/data` in `file`, as h5py reported them
/// (`tests/fixtures/make_checksum_fixtures.py`).
fn h5_chunks(file: &str) -> Vec<(usize, usize)> {
    let text = std::fs::read_to_string(fixture("tiny.chunks.json")).unwrap_or_default();
    let doc: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("tiny.chunks.json: {e}"));
    doc[file]["X/data"]
        .as_array()
        .unwrap_or_else(|| panic!("tiny.chunks.json has no X/data chunks for {file}"))
        .iter()
        .map(|c| {
            let n = |i: usize| c[i].as_u64().unwrap_or_else(|| panic!("{c}")) as usize;
            (n(0), n(1))
        })
        .collect()
}

/// The query on a damaged copy fails, naming the file and `needle` (the element or member).
async fn assert_fails(what: &str, path: &Path, needle: &str) -> String {
    match sum_x(path).await {
        Ok(answer) => panic!("{what}: the damaged store answered {answer:?}"),
        Err(e) => {
            let shown = path.display().to_string();
            assert!(e.contains(&shown) && e.contains(needle), "{what}: {e}");
            e
        }
    }
}

/// A flipped byte in a gzip chunk of an `.h5ad`: in the Adler-32 that ends the zlib stream, or in
/// the deflate data itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h5ad_gzip_chunk_with_flipped_bytes_is_an_error() {
    let name = "tiny.gzip.h5ad";
    let chunks = h5_chunks(name);
    let want = reference().await;
    let clean = damage::copy(name);
    assert_eq!(
        sum_x(&clean.path).await.unwrap_or_else(|e| panic!("{e}")),
        want
    );
    let last = chunks.len() - 1;
    let cases = [
        ("adler-32 of chunk 0", chunks[0].0 + chunks[0].1 - 1),
        (
            "adler-32 of the last chunk",
            chunks[last].0 + chunks[last].1 - 2,
        ),
        ("deflate data of chunk 1", chunks[1].0 + chunks[1].1 / 2),
        (
            "deflate data near the end of chunk 2",
            chunks[2].0 + chunks[2].1 - 6,
        ),
    ];
    for (what, at) in cases {
        let copy = damage::bytes_copy(name, |b| b[at] ^= 0x10);
        let path = &copy.path;
        let err = assert_fails(what, path, "'/X/data'").await;
        eprintln!("{what}: {err}");
    }
}

/// A flipped byte in a chunk written with h5py's `fletcher32=True`: in the data or in the checksum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h5ad_fletcher32_chunk_with_flipped_bytes_is_an_error() {
    let name = "tiny.fletcher32.h5ad";
    let chunks = h5_chunks(name);
    let want = reference().await;
    let clean = damage::copy(name);
    assert_eq!(
        sum_x(&clean.path).await.unwrap_or_else(|e| panic!("{e}")),
        want
    );
    let cases = [
        ("data of chunk 0", chunks[0].0 + 9),
        ("checksum of chunk 3", chunks[3].0 + chunks[3].1 - 1),
    ];
    for (what, at) in cases {
        let copy = damage::bytes_copy(name, |b| b[at] ^= 0x01);
        let path = &copy.path;
        let err = assert_fails(what, path, "'/X/data'").await;
        eprintln!("{what}: {err}");
    }
}

/// A zip member whose CRC-32 does not match its bytes: a stored (uncompressed) chunk with a wrong
/// CRC or a flipped data byte, a stored shard (read in part) with a wrong CRC, and a deflated
/// chunk with a wrong CRC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zip_member_with_a_bad_crc_is_an_error() {
    let want = reference().await;
    for name in [
        "tiny.v2.zarr.zip",
        "tiny.v3.zarr.zip",
        "tiny.nested.zarr.zip",
    ] {
        let clean = damage::copy(name);
        assert_eq!(
            sum_x(&clean.path)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}")),
            want,
            "{name}"
        );
    }
    type Damage = fn(&mut [u8], &str);
    let cases: [(&str, &str, &str, Damage); 4] = [
        (
            "stored chunk, wrong CRC",
            "tiny.v2.zarr.zip",
            "X/data/0",
            wrong_crc,
        ),
        (
            "stored chunk, flipped byte",
            "tiny.v2.zarr.zip",
            "X/data/0",
            flipped_data,
        ),
        (
            "stored shard, wrong CRC",
            "tiny.v3.zarr.zip",
            "X/data/c/0",
            wrong_crc,
        ),
        (
            "deflated chunk, wrong CRC",
            "tiny.nested.zarr.zip",
            "tiny.zarr/X/data/0",
            wrong_crc,
        ),
    ];
    for (what, name, member, damage) in cases {
        let copy = damage::bytes_copy(name, |b| damage(b, member));
        let path = &copy.path;
        let err = assert_fails(what, path, "X/data/").await;
        assert!(
            err.contains(member.trim_start_matches("tiny.zarr/")),
            "{what}: {err}"
        );
        eprintln!("{what}: {err}");
    }
}

/// Array metadata that breaks the zarr spec is malformed; a codec annql does not have is
/// unsupported. Both name the store and the element.
#[test]
fn malformed_array_metadata_is_not_reported_as_unsupported() {
    let read = |path: &Path| {
        let store = AnnDataStore::open(path).unwrap_or_else(|e| panic!("{e}"));
        store
            .read_array("X/data", 0..10, &ReadStats::new_shared())
            .map(|_| ())
    };
    let malformed: [(&str, Value); 3] = [
        (
            "a fill value that is not a number",
            json!({"fill_value": "zero"}),
        ),
        (
            "a 2-D chunk shape for a 1-D array",
            json!({"chunks": [64, 2]}),
        ),
        (
            "a compressor without an id",
            json!({"compressor": {"level": 5}}),
        ),
    ];
    for (what, change) in malformed {
        let copy = damage::consolidated_copy("tiny.v2.zarr", |v| {
            let doc = &mut v["metadata"]["X/data/.zarray"];
            for (k, x) in change.as_object().into_iter().flatten() {
                doc[k] = x.clone();
            }
        });
        match read(&copy.path) {
            Err(e @ Error::Malformed { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(&copy.path.display().to_string()) && text.contains("'/X/data'"),
                    "{what}: {text}"
                );
                eprintln!("{what}: {text}");
            }
            other => panic!("{what}: expected a malformed-element error, got {other:?}"),
        }
    }
    let copy = damage::consolidated_copy("tiny.v2.zarr", |v| {
        v["metadata"]["X/data/.zarray"]["compressor"] = json!({"id": "no-such-codec"});
    });
    match read(&copy.path) {
        Err(e @ Error::Unsupported { .. }) => {
            let text = e.to_string();
            assert!(text.contains("'/X/data'"), "{text}");
            eprintln!("unknown codec: {text}");
        }
        other => panic!("unknown codec: expected an unsupported error, got {other:?}"),
    }
}
