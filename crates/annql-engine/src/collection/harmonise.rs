//! Columns brought together: each column of a collection's table, its type across the datasets
//! and how every dataset's values become it.
//!
//! The rules (docs/collections.md): a column missing in a dataset is NULL there; integer widths
//! widen to the widest, integers meeting floats to `Float64`, `Float32` meeting `Float64` to
//! `Float64`; categoricals become one dictionary of the union of their categories (in order of
//! first appearance); a categorical meeting plain strings becomes strings. Anything else (numbers
//! meeting strings, booleans meeting numbers) is an error naming the column and two datasets that
//! disagree, unless the column is cast (`cast 'col:type'`) or skipped (`skip 'col'`).

use std::sync::Arc;

use annql_store::arrow::compute::can_cast_types;
use annql_store::arrow::datatypes::{DataType, Field, SchemaRef};

use super::sources::HarmoniseOptions;
use crate::error::{Error, Result};

/// How one dataset's values make a collection column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// Column `index` of the dataset's table, converted as `conv` says.
    Column {
        /// Position in the dataset table's schema.
        index: usize,
        /// The conversion.
        conv: Conv,
    },
    /// The dataset has no such column: NULL for its rows.
    Null,
    /// The dataset's name (the `dataset` column).
    Dataset,
}

/// A conversion of a dataset's column into the collection's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conv {
    /// Already the collection's type.
    Same,
    /// An Arrow cast.
    Cast,
    /// A categorical re-coded into the union of categories.
    Categories,
    /// Cell ids shifted by the dataset's first cell.
    ObsOffset,
    /// Gene ids mapped to the collection's genes.
    GeneMap,
}

/// A dataset that has a column: its position, the column's index and type.
type Present<'a> = (usize, usize, &'a DataType);

/// One column of a collection table.
#[derive(Debug, Clone)]
pub(crate) struct ColumnPlan {
    /// Its field in the collection's schema.
    pub(crate) field: Field,
    /// How each dataset (in order) makes it.
    pub(crate) sources: Vec<Source>,
}

/// The dictionary type of collection categoricals: one code type, whatever the datasets use.
pub(crate) fn categorical(values: DataType) -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(values))
}

/// The columns of a table over the datasets' `schemas` (named by `datasets`), in order of first
/// appearance. `ids` says how the id columns convert (`obs_id`: offset; `var_id`: gene map);
/// `dataset_column` inserts the dataset's name after `after`.
pub(crate) fn union_columns(
    table: &str,
    datasets: &[String],
    schemas: &[SchemaRef],
    ids: &[(&str, Conv)],
    dataset_column: Option<(&str, &str)>,
    options: &HarmoniseOptions,
) -> Result<Vec<ColumnPlan>> {
    let mut names: Vec<String> = Vec::new();
    for s in schemas {
        for f in s.fields() {
            if !names.contains(f.name()) && !options.skip.contains(f.name()) {
                names.push(f.name().clone());
            }
        }
    }
    let mut plans = Vec::with_capacity(names.len() + 1);
    for name in &names {
        let present: Vec<Present> = schemas
            .iter()
            .enumerate()
            .filter_map(|(m, s)| {
                // Not found: this dataset lacks the column (it is NULL there).
                let i = s.index_of(name).ok()?;
                let f = s.field(i);
                Some((m, i, f.data_type()))
            })
            .collect();
        let id = ids.iter().find(|(n, _)| n == name).map(|(_, c)| *c);
        let cast_to = options.cast.iter().find(|(c, _)| c == name).map(|(_, t)| t);
        let target = match (id, cast_to) {
            (Some(_), _) => DataType::Int64,
            (None, Some(t)) => {
                for &(m, _, ty) in &present {
                    if !can_cast_types(ty, t) {
                        return Err(Error::Harmonise {
                            table: table.into(),
                            column: name.clone(),
                            detail: format!(
                                "dataset '{}' has {ty}, which cannot be cast to {t}",
                                datasets[m]
                            ),
                        });
                    }
                }
                t.clone()
            }
            (None, None) => {
                let mut target = present[0].2.clone();
                let mut from = present[0].0;
                for &(m, _, ty) in &present[1..] {
                    target = widen(&target, ty).ok_or_else(|| Error::Harmonise {
                        table: table.into(),
                        column: name.clone(),
                        detail: format!(
                            "dataset '{}' has {}, dataset '{}' has {ty}; cast it \
                             (ATTACH … (cast '{name}:varchar')) or skip it (ATTACH … (skip '{name}'))",
                            datasets[from], present_type(&present, from), datasets[m]
                        ),
                    })?;
                    from = m;
                }
                target
            }
        };
        // Collection categoricals share one code type (their categories are the union's).
        let target = match target {
            DataType::Dictionary(_, v) => categorical(*v),
            t => t,
        };
        let mut sources = vec![Source::Null; schemas.len()];
        for &(m, index, ty) in &present {
            let conv = match id {
                Some(c) => c,
                None if matches!(target, DataType::Dictionary(..))
                    && matches!(ty, DataType::Dictionary(..)) =>
                {
                    Conv::Categories
                }
                None if *ty == target => Conv::Same,
                None => Conv::Cast,
            };
            sources[m] = Source::Column { index, conv };
        }
        // Every column but the ids is nullable: a dataset may lack it.
        plans.push(ColumnPlan {
            field: Field::new(name, target, id.is_none()),
            sources,
        });
        if let Some((column, after)) = dataset_column
            && name == after
        {
            plans.push(dataset_plan(column, schemas.len()));
        }
    }
    if let Some((column, after)) = dataset_column
        && !names.iter().any(|n| n == after)
    {
        plans.insert(plans.len().min(1), dataset_plan(column, schemas.len()));
    }
    Ok(plans)
}

fn present_type(present: &[Present], m: usize) -> String {
    present
        .iter()
        .find(|p| p.0 == m)
        .map(|p| p.2.to_string())
        .unwrap_or_default()
}

fn dataset_plan(name: &str, members: usize) -> ColumnPlan {
    ColumnPlan {
        field: Field::new(name, categorical(DataType::Utf8), false),
        sources: vec![Source::Dataset; members],
    }
}

/// The name of the `dataset` column: `dataset`, or if a dataset already has a column of that
/// name, the first of `annql_dataset`, `annql_dataset_2`, … that none has (a dataset's own column
/// is never overwritten).
pub(crate) fn dataset_column_name(schemas: &[SchemaRef]) -> String {
    let taken = |n: &str| schemas.iter().any(|s| s.index_of(n).is_ok());
    if !taken("dataset") {
        return "dataset".into();
    }
    (1..)
        .map(|i| {
            if i == 1 {
                "annql_dataset".to_string()
            } else {
                format!("annql_dataset_{i}")
            }
        })
        .find(|n| !taken(n))
        .unwrap_or_else(|| "annql_dataset".into())
}

/// The type two datasets' columns widen to, or None if they cannot be brought together.
pub(crate) fn widen(a: &DataType, b: &DataType) -> Option<DataType> {
    use DataType::*;
    if a == b {
        return Some(a.clone());
    }
    let is_string = |t: &DataType| matches!(t, Utf8 | LargeUtf8 | Utf8View);
    Some(match (a, b) {
        (Dictionary(_, va), Dictionary(_, vb)) => categorical(widen(va, vb)?),
        (Dictionary(_, v), s) | (s, Dictionary(_, v)) if is_string(v) && is_string(s) => Utf8,
        (x, y) if is_string(x) && is_string(y) => Utf8,
        (x, y) if x.is_integer() && y.is_integer() => wider_integer(x, y),
        (x, y) if x.is_numeric() && y.is_numeric() => Float64,
        _ => return None,
    })
}

/// The smallest signed integer holding both (`Float64` past `Int64`).
fn wider_integer(a: &DataType, b: &DataType) -> DataType {
    use DataType::*;
    let bits = |t: &DataType| match t {
        Int8 => (8, true),
        Int16 => (16, true),
        Int32 => (32, true),
        Int64 => (64, true),
        UInt8 => (8, false),
        UInt16 => (16, false),
        UInt32 => (32, false),
        _ => (64, false),
    };
    let ((ba, sa), (bb, sb)) = (bits(a), bits(b));
    if sa == sb {
        return if ba >= bb { a.clone() } else { b.clone() };
    }
    // Signed with unsigned: the unsigned needs one more bit.
    let need = if sa { ba.max(bb * 2) } else { bb.max(ba * 2) };
    match need {
        8 => Int8,
        16 => Int16,
        32 => Int32,
        64 => Int64,
        _ => Float64,
    }
}

/// The schema of a collection table from its column plans.
pub(crate) fn schema_of(plans: &[ColumnPlan]) -> SchemaRef {
    Arc::new(annql_store::arrow::datatypes::Schema::new(
        plans.iter().map(|p| p.field.clone()).collect::<Vec<_>>(),
    ))
}

#[cfg(test)]
mod tests {
    use annql_store::arrow::datatypes::Schema;

    use super::*;

    #[test]
    fn types_widen_as_documented() {
        use DataType::*;
        assert_eq!(widen(&Int32, &Int64), Some(Int64));
        assert_eq!(widen(&UInt8, &Int8), Some(Int16));
        assert_eq!(widen(&Int32, &Float32), Some(Float64));
        assert_eq!(widen(&Float32, &Float64), Some(Float64));
        let cat8 = Dictionary(Box::new(Int8), Box::new(Utf8));
        let cat16 = Dictionary(Box::new(Int16), Box::new(Utf8));
        assert_eq!(widen(&cat8, &cat16), Some(categorical(Utf8)));
        assert_eq!(widen(&cat8, &Utf8), Some(Utf8));
        assert_eq!(widen(&Utf8, &Float64), None);
        assert_eq!(widen(&Boolean, &Int64), None);
    }

    #[test]
    fn columns_union_with_nulls_and_a_named_error() {
        let a = Arc::new(Schema::new(vec![
            Field::new("obs_id", DataType::Int64, false),
            Field::new("obs_name", DataType::Utf8, false),
            Field::new("n", DataType::Int32, false),
        ]));
        let b = Arc::new(Schema::new(vec![
            Field::new("obs_id", DataType::Int64, false),
            Field::new("obs_name", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
            Field::new("extra", DataType::Utf8, false),
        ]));
        let names = ["a".to_string(), "b".to_string()];
        let plans = union_columns(
            "obs",
            &names,
            &[a.clone(), b.clone()],
            &[("obs_id", Conv::ObsOffset)],
            Some(("dataset", "obs_name")),
            &HarmoniseOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let fields: Vec<_> = plans.iter().map(|p| p.field.name().as_str()).collect();
        assert_eq!(fields, ["obs_id", "obs_name", "dataset", "n", "extra"]);
        assert_eq!(plans[3].field.data_type(), &DataType::Int64);
        assert_eq!(plans[4].sources[0], Source::Null);
        assert!(plans[4].field.is_nullable());
        let c = Arc::new(Schema::new(vec![Field::new("n", DataType::Utf8, false)]));
        let names = ["a".to_string(), "c".to_string()];
        let err = union_columns(
            "obs",
            &names,
            &[a, c],
            &[],
            None,
            &HarmoniseOptions::default(),
        )
        .map(|_| ())
        .expect_err("an error")
        .to_string();
        assert!(
            err.contains("'a' has Int32") && err.contains("'c' has Utf8"),
            "{err}"
        );
    }
}
