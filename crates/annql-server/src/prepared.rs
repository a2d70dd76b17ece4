//! SQL-level prepared statements: `PREPARE name [(types)] AS query`, `EXECUTE name(arguments)`,
//! `DEALLOCATE name`. Each connection keeps its own ([`PreparedStatements`]).
//!
//! As in PostgreSQL, a parameter's type is the one declared, else the one its use implies
//! (`n_counts < $1` makes `$1` a bigint, `$1::text` a text); a parameter whose type neither
//! tells is refused at `PREPARE` (42P18). `EXECUTE` converts each argument to its parameter's
//! type: a quoted literal is read as that type (`'3000'` as a bigint), a value of another type is
//! cast when the cast keeps it exactly and refused otherwise (42804) — where PostgreSQL would
//! round `2.5` into a bigint parameter, annql answers with an error rather than a different
//! number.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use datafusion::arrow::datatypes::DataType;
use datafusion::common::metadata::ScalarAndMetadata;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::LogicalPlan;
use pgwire::error::{PgWireError, PgWireResult};

use crate::sqlstate;

/// A statement kept by `PREPARE`: its plan (parameters as placeholders) and their types.
#[derive(Debug)]
pub struct SqlPrepared {
    name: String,
    plan: LogicalPlan,
    /// The type of `$1`, `$2`, …: one per parameter `EXECUTE` must be given.
    types: Vec<DataType>,
}

impl SqlPrepared {
    /// Keeps `plan` as `name`. `declared` are the types `PREPARE name(types)` named, `inferred`
    /// what the plan's use of each `$n` implies (None where it implies nothing).
    pub fn try_new(
        name: String,
        plan: LogicalPlan,
        declared: Vec<DataType>,
        inferred: Vec<Option<DataType>>,
    ) -> PgWireResult<SqlPrepared> {
        let count = declared.len().max(inferred.len());
        let types = (0..count)
            .map(|i| {
                declared
                    .get(i)
                    .cloned()
                    .or_else(|| inferred.get(i).cloned().flatten())
                    .ok_or_else(|| {
                        sqlstate::error(
                            "42P18",
                            format!(
                                "could not determine data type of parameter ${n} \
                                 (declare it, as in PREPARE {name}(bigint) AS …, or cast it, \
                                 as in ${n}::bigint)",
                                n = i + 1
                            ),
                        )
                    })
            })
            .collect::<PgWireResult<Vec<_>>>()?;
        Ok(SqlPrepared { name, plan, types })
    }

    /// The plan, parameters unbound (its schema is the answer's).
    pub fn plan(&self) -> &LogicalPlan {
        &self.plan
    }

    /// The plan with `arguments` (evaluated, `$1` first) in place of its parameters.
    pub fn bind(&self, arguments: Vec<ScalarValue>) -> PgWireResult<LogicalPlan> {
        if arguments.len() != self.types.len() {
            return Err(sqlstate::error(
                sqlstate::SYNTAX_ERROR,
                format!(
                    "wrong number of parameters for prepared statement \"{}\": expected {}, got {}",
                    self.name,
                    self.types.len(),
                    arguments.len()
                ),
            ));
        }
        let values = arguments
            .into_iter()
            .zip(&self.types)
            .enumerate()
            .map(|(i, (value, ty))| {
                convert(value, ty)
                    .map(|v| ScalarAndMetadata::new(v, None))
                    .map_err(|(code, why)| {
                        sqlstate::error(
                            code,
                            format!(
                                "parameter ${} of prepared statement \"{}\" is {ty}: {why}",
                                i + 1,
                                self.name
                            ),
                        )
                    })
            })
            .collect::<PgWireResult<Vec<_>>>()?;
        self.plan
            .clone()
            .replace_params_with_values(&ParamValues::List(values))
            .map_err(|e| sqlstate::from_datafusion(&e))
    }
}

/// `value` as a `ty`, as PostgreSQL's assignment conversion allows: text is read as `ty`, any
/// value becomes text, and numbers convert between numeric types when the value stays exactly
/// the same (3.0 into a bigint, not 2.5). The error is a SQLSTATE and the reason.
fn convert(value: ScalarValue, ty: &DataType) -> Result<ScalarValue, (&'static str, String)> {
    let from = value.data_type();
    let is_text =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    let cast = |why: &'static str| {
        value
            .cast_to(ty)
            .map_err(|e| (why, format!("{value} ({from}) cannot be converted: {e}")))
    };
    if &from == ty || value.is_null() || is_text(ty) {
        return cast("42804");
    }
    if is_text(&from) {
        return value.cast_to(ty).map_err(|e| {
            (
                "22P02",
                format!("invalid input syntax for {ty}: {value} ({e})"),
            )
        });
    }
    if !(from.is_numeric() && ty.is_numeric()) {
        return Err((
            "42804",
            format!("{value} is {from}, which cannot be coerced"),
        ));
    }
    let converted = cast("42804")?;
    if !converted.cast_to(&from).is_ok_and(|back| back == value) {
        return Err(("42804", format!("{value} ({from}) is not exactly a {ty}")));
    }
    Ok(converted)
}

/// One connection's prepared statements by name.
#[derive(Debug, Default)]
pub struct PreparedStatements(Mutex<HashMap<String, Arc<SqlPrepared>>>);

impl PreparedStatements {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<SqlPrepared>>> {
        // A panic while holding the lock leaves the map as it was (every change is one call).
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `statement` under its name; an error if the name is taken.
    pub fn insert(&self, statement: SqlPrepared) -> PgWireResult<()> {
        let mut map = self.map();
        if map.contains_key(&statement.name) {
            return Err(sqlstate::error(
                "42P05",
                format!("prepared statement \"{}\" already exists", statement.name),
            ));
        }
        map.insert(statement.name.clone(), Arc::new(statement));
        Ok(())
    }

    /// The statement `name`; an error if there is none.
    pub fn get(&self, name: &str) -> PgWireResult<Arc<SqlPrepared>> {
        self.map().get(name).cloned().ok_or_else(|| not_found(name))
    }

    /// Removes `name`; whether it was there.
    pub fn remove(&self, name: &str) -> bool {
        self.map().remove(name).is_some()
    }

    /// Removes every statement (`DEALLOCATE ALL`, `DISCARD ALL`).
    pub fn clear(&self) {
        self.map().clear();
    }
}

/// PostgreSQL's error for an unknown prepared statement.
pub fn not_found(name: &str) -> PgWireError {
    sqlstate::error(
        "26000",
        format!("prepared statement \"{name}\" does not exist"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_convert_exactly_or_not_at_all() {
        let int = DataType::Int64;
        let ok = |v: ScalarValue| convert(v, &int).map_err(|(c, _)| c);
        assert_eq!(
            ok(ScalarValue::Int64(Some(3))),
            Ok(ScalarValue::Int64(Some(3)))
        );
        assert_eq!(
            ok(ScalarValue::Int32(Some(3))),
            Ok(ScalarValue::Int64(Some(3)))
        );
        assert_eq!(
            ok(ScalarValue::Float64(Some(3.0))),
            Ok(ScalarValue::Int64(Some(3)))
        );
        assert_eq!(
            ok(ScalarValue::from("3000")),
            Ok(ScalarValue::Int64(Some(3000)))
        );
        assert_eq!(ok(ScalarValue::Null), Ok(ScalarValue::Int64(None)));
        assert_eq!(ok(ScalarValue::Float64(Some(2.5))), Err("42804"));
        assert_eq!(ok(ScalarValue::from("many")), Err("22P02"));
        assert_eq!(ok(ScalarValue::Boolean(Some(true))), Err("42804"));
    }

    #[test]
    fn parameters_need_a_type_and_a_count() {
        let plan = LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
            produce_one_row: true,
            schema: Arc::new(datafusion::common::DFSchema::empty()),
        });
        assert!(SqlPrepared::try_new("p".into(), plan.clone(), vec![], vec![None]).is_err());
        let p = SqlPrepared::try_new("p".into(), plan, vec![DataType::Int32], vec![])
            .expect("declared");
        assert!(p.bind(vec![]).is_err());
        assert!(p.bind(vec![ScalarValue::Int32(Some(1))]).is_ok());
    }
}
