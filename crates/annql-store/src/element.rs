//! The typed element tree of the AnnData on-disk spec, built from a store's metadata alone.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::metadata::{DType, Node};

/// The `encoding-type` of an element (or what an unencoded node is taken to be).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoding {
    /// The root of an AnnData object (`anndata`).
    AnnData,
    /// The root of a MuData object; its AnnData objects sit under `mod/<name>`.
    MuData,
    /// `raw`: an AnnData-like group with X, var and varm.
    Raw,
    /// `dataframe` (0.2.0, or 0.1.0 with `__categories`).
    DataFrame,
    /// `categorical`: integer codes and categories.
    Categorical,
    /// A legacy (0.1.0 dataframe) categorical: codes array with a `categories` attribute.
    LegacyCategorical,
    /// `string-array`.
    StringArray,
    /// `nullable-integer`: values and mask.
    NullableInteger,
    /// `nullable-boolean`: values and mask.
    NullableBoolean,
    /// `nullable-string-array`: values and mask.
    NullableStringArray,
    /// `csr_matrix`.
    CsrMatrix,
    /// `csc_matrix`.
    CscMatrix,
    /// `array`: a dense n-d array.
    Array,
    /// `dict` (or an unencoded group).
    Dict,
    /// `numeric-scalar`.
    NumericScalar,
    /// `string` (a scalar).
    String,
    /// `null`.
    Null,
    /// `rec-array`: a structured array.
    RecArray,
    /// `awkward-array`.
    AwkwardArray,
    /// An encoding annql does not know.
    Unknown(String),
}

impl Encoding {
    fn from_attr(name: &str) -> Encoding {
        match name {
            "anndata" => Encoding::AnnData,
            "MuData" | "mudata" => Encoding::MuData,
            "raw" => Encoding::Raw,
            "dataframe" => Encoding::DataFrame,
            "categorical" => Encoding::Categorical,
            "string-array" => Encoding::StringArray,
            "nullable-integer" => Encoding::NullableInteger,
            "nullable-boolean" => Encoding::NullableBoolean,
            "nullable-string-array" => Encoding::NullableStringArray,
            "csr_matrix" => Encoding::CsrMatrix,
            "csc_matrix" => Encoding::CscMatrix,
            "array" => Encoding::Array,
            "dict" => Encoding::Dict,
            "numeric-scalar" => Encoding::NumericScalar,
            "string" => Encoding::String,
            "null" => Encoding::Null,
            "rec-array" => Encoding::RecArray,
            "awkward-array" => Encoding::AwkwardArray,
            other => Encoding::Unknown(other.to_string()),
        }
    }

    /// The spec's name for the encoding.
    pub fn name(&self) -> &str {
        match self {
            Encoding::AnnData => "anndata",
            Encoding::MuData => "MuData",
            Encoding::Raw => "raw",
            Encoding::DataFrame => "dataframe",
            Encoding::Categorical => "categorical",
            Encoding::LegacyCategorical => "categorical (0.1.0)",
            Encoding::StringArray => "string-array",
            Encoding::NullableInteger => "nullable-integer",
            Encoding::NullableBoolean => "nullable-boolean",
            Encoding::NullableStringArray => "nullable-string-array",
            Encoding::CsrMatrix => "csr_matrix",
            Encoding::CscMatrix => "csc_matrix",
            Encoding::Array => "array",
            Encoding::Dict => "dict",
            Encoding::NumericScalar => "numeric-scalar",
            Encoding::String => "string",
            Encoding::Null => "null",
            Encoding::RecArray => "rec-array",
            Encoding::AwkwardArray => "awkward-array",
            Encoding::Unknown(s) => s,
        }
    }

    /// True for encodings whose children are part of the element itself (not elements of their own).
    fn is_leaf(&self) -> bool {
        !matches!(
            self,
            Encoding::AnnData
                | Encoding::MuData
                | Encoding::Raw
                | Encoding::Dict
                | Encoding::DataFrame
        )
    }
}

/// One element of the tree.
#[derive(Debug, Clone)]
pub struct Element {
    /// Path inside the store, without a leading slash ("" is the root).
    pub path: String,
    /// The element's encoding.
    pub encoding: Encoding,
    /// Its `encoding-version`, when given.
    pub version: Option<String>,
    /// Shape: rows × columns for matrices and dataframes, the array shape otherwise; empty for groups.
    pub shape: Vec<u64>,
    /// Element type of the values, where there is one.
    pub dtype: Option<DType>,
    /// Attributes as stored.
    pub attrs: Map<String, Value>,
    /// Child elements (for groups: anndata, raw, dict, dataframe columns), in stored order.
    pub children: Vec<Element>,
}

impl Element {
    /// The last path component.
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }

    /// The child called `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name() == name)
    }

    /// The descendant at `path` relative to this element.
    pub fn find(&self, path: &str) -> Option<&Element> {
        path.split('/')
            .filter(|p| !p.is_empty())
            .try_fold(self, |e, name| e.child(name))
    }

    /// Every element below and including this one, depth first.
    pub fn walk(&self) -> Vec<&Element> {
        let mut out = vec![self];
        for c in &self.children {
            out.extend(c.walk());
        }
        out
    }

    /// A one-line description: `path  encoding  shape  dtype`.
    pub fn describe(&self) -> String {
        let shape = self
            .shape
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("×");
        let dtype = self
            .dtype
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        format!(
            "/{:<40} {:<22} {:<14} {}",
            self.path,
            self.encoding.name(),
            shape,
            dtype
        )
        .trim_end()
        .to_string()
    }

    /// For dataframes: the column names in `column-order`.
    pub fn column_order(&self) -> Vec<String> {
        match self.attrs.get("column-order") {
            Some(Value::Array(cols)) => cols
                .iter()
                .filter_map(|c| c.as_str().map(String::from))
                .collect(),
            Some(Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        }
    }

    /// For a 0.1.0 categorical: the node path of its categories, from its `categories`
    /// attribute (absolute, or relative to the dataframe); None when that is not a path string.
    pub fn legacy_categories_path(&self) -> Option<String> {
        legacy_categories_node(&self.path, &self.attrs)
    }

    /// For dataframes: the name of the index column (`_index` attribute).
    pub fn index_column(&self) -> Option<&str> {
        self.attrs.get("_index").and_then(Value::as_str)
    }
}

/// Builds the element tree from the flat node map.
pub(crate) fn build_tree(store: &str, nodes: &BTreeMap<String, Node>) -> Result<Element> {
    let mut children: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for path in nodes.keys().filter(|p| !p.is_empty()) {
        let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
        children.entry(parent).or_default().push(path);
    }
    let root = nodes.get("").ok_or_else(|| Error::NotAnnData {
        store: store.into(),
        reason: "store has no root node".into(),
    })?;
    let encoding = root.attrs.get("encoding-type").and_then(Value::as_str);
    // anndata 0.7 wrote no attributes on the root; its obs is an encoded dataframe group.
    let obs_is_dataframe = nodes.get("obs").is_some_and(|n| {
        n.array.is_none()
            && n.attrs.get("encoding-type").and_then(Value::as_str) == Some("dataframe")
    });
    // (Stores written before anndata 0.7 reach here already mapped by `legacy::modernize`.)
    if encoding.is_none() && !obs_is_dataframe {
        return Err(Error::NotAnnData {
            store: store.into(),
            reason: "not an AnnData store: the root group has no 'encoding-type' attribute".into(),
        });
    }
    Ok(build_element("", nodes, &children, None))
}

fn build_element(
    path: &str,
    nodes: &BTreeMap<String, Node>,
    children: &BTreeMap<&str, Vec<&str>>,
    parent: Option<&Encoding>,
) -> Element {
    let node = &nodes[path];
    let attrs = &node.attrs;
    let encoding = classify(
        path,
        node,
        parent,
        children.get(path).map(Vec::as_slice),
        nodes,
    );
    let version = attrs
        .get("encoding-version")
        .and_then(Value::as_str)
        .map(String::from);
    let mut kids = Vec::new();
    if !encoding.is_leaf() {
        for child in children.get(path).into_iter().flatten() {
            // 0.1.0 dataframes keep categories in a `__categories` subgroup: part of the columns.
            if encoding == Encoding::DataFrame && child.ends_with("/__categories") {
                continue;
            }
            kids.push(build_element(child, nodes, children, Some(&encoding)));
        }
        if encoding == Encoding::DataFrame {
            order_columns(&mut kids, attrs);
        }
    }
    let (shape, dtype) = shape_and_dtype(path, &encoding, node, nodes, &kids);
    let mut attrs = attrs.clone();
    if encoding == Encoding::LegacyCategorical {
        // anndata 0.7 kept `ordered` on the categories array, and its reader takes a missing one
        // as false; the column carries it, as a 0.2.0 categorical does.
        let ordered = legacy_categories_node(path, &attrs)
            .and_then(|c| nodes.get(&c))
            .and_then(|n| n.attrs.get("ordered").cloned())
            .unwrap_or(Value::Bool(false));
        attrs.entry("ordered").or_insert(ordered);
    }
    Element {
        path: path.to_string(),
        encoding,
        version,
        shape,
        dtype,
        attrs,
        children: kids,
    }
}

/// The node path of a 0.1.0 categorical's categories: its `categories` attribute, absolute or
/// relative to the dataframe.
fn legacy_categories_node(path: &str, attrs: &Map<String, Value>) -> Option<String> {
    let rel = attrs.get("categories")?.as_str()?;
    let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
    Some(match rel.strip_prefix('/') {
        Some(abs) => abs.to_string(),
        None if parent.is_empty() => rel.to_string(),
        None => format!("{parent}/{rel}"),
    })
}

/// The `_index` column first, then `column-order`, then anything else stored.
fn order_columns(kids: &mut [Element], attrs: &Map<String, Value>) {
    let index = attrs
        .get("_index")
        .and_then(Value::as_str)
        .unwrap_or("_index");
    let order: Vec<&str> = match attrs.get("column-order") {
        Some(Value::Array(c)) => c.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    kids.sort_by_key(|k| {
        let name = k.name();
        if name == index {
            (0, 0)
        } else {
            (
                1,
                order.iter().position(|c| *c == name).unwrap_or(usize::MAX),
            )
        }
    });
}

fn classify(
    path: &str,
    node: &Node,
    parent: Option<&Encoding>,
    kids: Option<&[&str]>,
    nodes: &BTreeMap<String, Node>,
) -> Encoding {
    if let Some(e) = node.attrs.get("encoding-type").and_then(Value::as_str) {
        return Encoding::from_attr(e);
    }
    let name = path.rsplit('/').next().unwrap_or("");
    if path.is_empty() {
        return Encoding::AnnData;
    }
    if node.array.is_some() {
        if parent == Some(&Encoding::DataFrame) && node.attrs.get("categories").is_some() {
            return Encoding::LegacyCategorical;
        }
        let structured = node
            .array
            .as_ref()
            .is_some_and(|a| matches!(&a.dtype, DType::Other(d) if d.starts_with("structured")));
        return if structured {
            Encoding::RecArray
        } else {
            Encoding::Array
        };
    }
    // Unencoded groups written by anndata 0.7: sparse matrices carry `h5sparse_format`.
    match node.attrs.get("h5sparse_format").and_then(Value::as_str) {
        Some("csr") => return Encoding::CsrMatrix,
        Some("csc") => return Encoding::CscMatrix,
        _ => {}
    }
    let has = |c: &str| kids.is_some_and(|k| k.iter().any(|p| p.ends_with(&format!("/{c}"))));
    if has("data") && has("indices") && has("indptr") {
        return Encoding::CsrMatrix;
    }
    if name == "raw" && parent == Some(&Encoding::AnnData) {
        return Encoding::Raw;
    }
    if parent == Some(&Encoding::MuData)
        || path.starts_with("mod/") && path.matches('/').count() == 1
    {
        let full = nodes.contains_key(&format!("{path}/obs"));
        if full {
            return Encoding::AnnData;
        }
    }
    Encoding::Dict
}

fn shape_and_dtype(
    path: &str,
    encoding: &Encoding,
    node: &Node,
    nodes: &BTreeMap<String, Node>,
    kids: &[Element],
) -> (Vec<u64>, Option<DType>) {
    let sub = |name: &str| {
        nodes
            .get(&format!("{path}/{name}"))
            .and_then(|n| n.array.as_ref())
    };
    match encoding {
        Encoding::CsrMatrix | Encoding::CscMatrix => {
            let shape = node
                .attrs
                .get("shape")
                .or_else(|| node.attrs.get("h5sparse_shape"))
                .and_then(Value::as_array)
                .map(|s| s.iter().filter_map(Value::as_u64).collect())
                // A missing or bad shape is not 2-D: `sparse_dims` refuses it when read.
                .unwrap_or_default();
            (shape, sub("data").map(|a| a.dtype.clone()))
        }
        Encoding::Categorical => {
            let dtype = sub("categories").map(|a| a.dtype.clone());
            (
                // Missing codes: the column reads as an error naming them.
                sub("codes").map(|a| a.shape.clone()).unwrap_or_default(),
                dtype,
            )
        }
        Encoding::NullableInteger | Encoding::NullableBoolean | Encoding::NullableStringArray => {
            let values = sub("values");
            (
                // Missing values: the column reads as an error naming them.
                values.map(|a| a.shape.clone()).unwrap_or_default(),
                values.map(|a| a.dtype.clone()),
            )
        }
        Encoding::DataFrame => {
            let index = node
                .attrs
                .get("_index")
                .and_then(Value::as_str)
                .unwrap_or("_index");
            let rows = kids
                .iter()
                .find(|k| k.name() == index)
                .and_then(|k| k.shape.first().copied())
                .unwrap_or(0);
            let cols = kids.iter().filter(|k| k.name() != index).count() as u64;
            (vec![rows, cols], None)
        }
        Encoding::AnnData | Encoding::Raw => {
            let first = |name: &str, axis: usize| {
                kids.iter()
                    .find(|k| k.name() == name)
                    .and_then(|k| k.shape.get(axis).copied())
            };
            // raw has no obs: its rows are X's.
            let rows = first("obs", 0).or_else(|| first("X", 0)).unwrap_or(0);
            let cols = first("var", 0).or_else(|| first("X", 1)).unwrap_or(0);
            (vec![rows, cols], None)
        }
        _ => match &node.array {
            Some(a) => (a.shape.clone(), Some(a.dtype.clone())),
            None => (Vec::new(), None),
        },
    }
}
