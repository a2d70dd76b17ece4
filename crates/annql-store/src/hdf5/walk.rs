//! The walk of an HDF5 file's hierarchy: every group and dataset once (hard links to an object
//! already seen are skipped, so cycles end), refusing files with more objects or deeper nesting
//! than AnnData ever writes.

use std::collections::HashSet;

use hdf5_reader::Dataset;
use hdf5_reader::group::Group;

/// Most objects (groups and datasets) a file may hold: bounds the work of a hostile file.
pub(super) const MAX_OBJECTS: usize = 1_000_000;
/// Deepest nesting of groups walked: AnnData nests a few levels; a file nesting thousands of
/// groups would otherwise exhaust the stack.
const MAX_DEPTH: usize = 128;

/// A group or dataset found by the walk.
pub(super) enum Object {
    Group(Group),
    Dataset(Box<Dataset>),
}

impl Object {
    pub(super) fn address(&self) -> u64 {
        match self {
            Object::Group(g) => g.address(),
            Object::Dataset(d) => d.address(),
        }
    }
}

/// Walks the hierarchy below `group` (at node path `path`, `depth` groups down), depth first;
/// hard links to an object already seen are skipped, so cycles end, and nesting deeper than
/// [`MAX_DEPTH`] is refused.
pub(super) fn collect(
    group: &Group,
    path: &str,
    depth: usize,
    out: &mut Vec<(String, Object)>,
    seen: &mut HashSet<u64>,
) -> std::result::Result<(), (String, hdf5_reader::error::Error)> {
    if !seen.insert(group.address()) || out.len() > MAX_OBJECTS {
        return Ok(());
    }
    if depth > MAX_DEPTH {
        return Err((
            path.to_string(),
            hdf5_reader::error::Error::InvalidData(format!(
                "groups nested more than {MAX_DEPTH} deep"
            )),
        ));
    }
    out.push((path.to_string(), Object::Group(group.clone())));
    let (groups, datasets) = group.members().map_err(|e| (path.to_string(), e))?;
    let child = |name: &str| {
        if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}/{name}")
        }
    };
    for d in datasets {
        if seen.insert(d.address()) {
            out.push((child(d.name()), Object::Dataset(Box::new(d))));
        }
    }
    for g in groups {
        collect(&g, &child(g.name()), depth + 1, out, seen)?;
    }
    Ok(())
}
