//! The aggregate's layout, recorded by an in-memory sink.

use std::collections::BTreeMap;

use annql_store::arrow::array::{Array, AsArray, UInt8Array};
use annql_store::arrow::compute::concat;
use annql_store::arrow::datatypes::{Float64Type, Int8Type};

use super::*;
use crate::sink::ArrayId;

/// Every group and array a write made, by path.
#[derive(Default)]
struct Recording {
    groups: BTreeMap<String, Attrs>,
    arrays: BTreeMap<String, (ArraySpec, Attrs, Vec<ArrayRef>)>,
    open: Vec<String>,
    closed: Vec<bool>,
}

impl Sink for Recording {
    fn group(&mut self, path: &str, attrs: &Attrs) -> Result<()> {
        assert!(
            self.groups.insert(path.into(), attrs.clone()).is_none(),
            "{path} twice"
        );
        Ok(())
    }
    fn open_array(&mut self, path: &str, spec: &ArraySpec, attrs: &Attrs) -> Result<ArrayId> {
        let parent = path.rsplit_once('/').map_or("", |p| p.0);
        assert!(self.groups.contains_key(parent), "{path} before its parent");
        self.arrays
            .insert(path.into(), (spec.clone(), attrs.clone(), Vec::new()));
        self.open.push(path.into());
        self.closed.push(false);
        Ok(ArrayId(self.open.len() - 1))
    }
    fn append(&mut self, array: ArrayId, values: &ArrayRef) -> Result<()> {
        assert!(!self.closed[array.0]);
        let path = &self.open[array.0];
        if let Some(a) = self.arrays.get_mut(path) {
            a.2.push(values.clone());
        }
        Ok(())
    }
    fn close_array(&mut self, array: ArrayId) -> Result<()> {
        self.closed[array.0] = true;
        Ok(())
    }
    fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

impl Recording {
    fn values(&self, path: &str) -> ArrayRef {
        let (_, _, parts) = &self.arrays[path];
        let parts: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
        concat(&parts).unwrap_or_else(|e| panic!("{path}: {e}"))
    }
    fn encoding(&self, path: &str) -> String {
        let attrs = self
            .groups
            .get(path)
            .or_else(|| self.arrays.get(path).map(|a| &a.1));
        attrs
            .and_then(|a| a.get("encoding-type"))
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .into()
    }
}

/// Two donors × two cell types, three present, two genes.
fn two_keys() -> Aggregate {
    Aggregate {
        keys: vec![
            GroupKey {
                name: "donor".into(),
                categories: Arc::new(StringArray::from(vec!["D0", "D1"])),
                codes: vec![0, 0, 1],
            },
            GroupKey {
                name: "n".into(),
                categories: Arc::new(UInt8Array::from(vec![3, 7])),
                codes: vec![0, 1, 1],
            },
        ],
        group_names: vec!["D0_3".into(), "D0_7".into(), "D1_7".into()],
        n_vars: 2,
        stats: vec![
            (AggFunc::Sum, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            (AggFunc::CountNonzero, vec![1.0, 1.0, 0.0, 2.0, 1.0, 1.0]),
        ],
        x_from: None,
    }
}

fn record(agg: &Aggregate) -> Result<Recording> {
    let mut rec = Recording::default();
    write_into(&mut rec, agg, |sink| {
        sink.group("var", &encoding("dataframe", "0.2.0"))
    })?;
    Ok(rec)
}

#[test]
fn lays_out_obs_layers_and_no_x_as_scanpy() {
    let rec = record(&two_keys()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rec.encoding(""), "anndata");
    assert_eq!(rec.encoding("obs"), "dataframe");
    assert_eq!(rec.groups["obs"]["column-order"], json!(["donor", "n"]));
    assert_eq!(rec.groups["obs"]["_index"], json!("_index"));
    let index = rec.values("obs/_index");
    let index: Vec<_> = index.as_string::<i32>().iter().flatten().collect();
    assert_eq!(index, ["D0_3", "D0_7", "D1_7"]);
    assert_eq!(rec.encoding("obs/donor"), "categorical");
    assert_eq!(rec.groups["obs/donor"]["ordered"], json!(false));
    let codes = rec.values("obs/n/codes");
    assert_eq!(
        codes.as_primitive::<Int8Type>().values().to_vec(),
        vec![0, 1, 1]
    );
    assert_eq!(rec.arrays["obs/n/categories"].0.dtype, DType::UInt8);
    assert_eq!(rec.encoding("obs/donor/categories"), "string-array");
    let sum = rec.values("layers/sum");
    assert_eq!(
        sum.as_primitive::<Float64Type>().values().to_vec(),
        vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    );
    assert_eq!(rec.arrays["layers/sum"].0.inner, vec![2]);
    assert!(rec.arrays.contains_key("layers/count_nonzero"));
    assert!(
        !rec.arrays.contains_key("X"),
        "X is absent unless asked for"
    );
    for g in ["layers", "obsm", "obsp", "varm", "varp", "uns"] {
        assert_eq!(rec.encoding(g), "dict", "{g}");
    }
}

#[test]
fn copies_a_statistic_to_x_when_asked() {
    let mut agg = two_keys();
    agg.x_from = Some(AggFunc::CountNonzero);
    let rec = record(&agg).unwrap_or_else(|e| panic!("{e}"));
    let x = rec.values("X");
    assert_eq!(
        x.as_primitive::<Float64Type>().values().to_vec(),
        vec![1.0, 1.0, 0.0, 2.0, 1.0, 1.0]
    );
    assert!(rec.arrays.contains_key("layers/count_nonzero"));
}

#[test]
fn inconsistent_parts_are_refused_before_writing() {
    let mut agg = two_keys();
    agg.stats[0].1.pop();
    let e = record(&agg)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("sum has 5 values for 3 × 2"), "{e}");
    let mut agg = two_keys();
    agg.keys[1].codes[2] = 2;
    let e = record(&agg)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("code 2 past its categories"), "{e}");
    let mut agg = two_keys();
    agg.x_from = Some(AggFunc::Mean);
    let e = record(&agg)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("X is to be mean but that statistic was not computed"),
        "{e}"
    );
}

#[test]
fn float_keys_are_refused_by_name() {
    let mut agg = two_keys();
    agg.keys[1].categories = Arc::new(Float64Array::from(vec![0.5, 1.5]));
    let e = record(&agg)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("obs/n") && e.contains("Float64"), "{e}");
}

#[test]
fn names_round_trip() {
    for f in [
        AggFunc::Sum,
        AggFunc::Mean,
        AggFunc::CountNonzero,
        AggFunc::Var,
    ] {
        assert_eq!(AggFunc::from_name(f.name()), Some(f));
    }
    assert_eq!(AggFunc::from_name("median"), None);
}
