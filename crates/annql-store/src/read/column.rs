//! Dataframe columns into Arrow, by encoding: plain arrays, categoricals (current and pre-0.8
//! legacy) as dictionaries over categories read once and cached, and nullable arrays with their
//! masks as validity.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array as _, ArrayRef, BooleanArray, DictionaryArray, PrimitiveArray};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{
    ArrowDictionaryKeyType, ArrowPrimitiveType, DataType, Int8Type, Int16Type, Int32Type, Int64Type,
};

use super::Reader;
use crate::error::{Error, Result};
use crate::storage::ReadStats;

impl Reader {
    /// Reads `rows` of a dataframe column (any of the column encodings) into Arrow.
    pub(crate) fn read_column(
        &self,
        column: &crate::Element,
        rows: Range<u64>,
        stats: &Arc<ReadStats>,
    ) -> Result<ArrayRef> {
        use crate::Encoding as E;
        let path = &column.path;
        match &column.encoding {
            E::Array | E::StringArray => self.read_array(path, rows, stats),
            E::Categorical => {
                let codes = self.read_array(&format!("{path}/codes"), rows, stats)?;
                let categories = self.categories(&format!("{path}/categories"))?;
                self.dictionary(path, codes, categories)
            }
            E::LegacyCategorical => {
                let codes = self.read_array(path, rows, stats)?;
                let categories = self.categories(&self.legacy_categories_path(column)?)?;
                self.dictionary(path, codes, categories)
            }
            E::NullableInteger | E::NullableBoolean | E::NullableStringArray => {
                let values = self.read_array(&format!("{path}/values"), rows.clone(), stats)?;
                let mask = self.read_array(&format!("{path}/mask"), rows, stats)?;
                let mask = mask
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| {
                        self.malformed(&format!("{path}/mask"), "mask is not boolean")
                    })?;
                if mask.len() != values.len() {
                    return Err(self.malformed(path, "mask and values differ in length"));
                }
                let valid =
                    NullBuffer::from(mask.iter().map(|m| m != Some(true)).collect::<Vec<_>>());
                let data = values.to_data().into_builder().nulls(Some(valid));
                let data = data.build().map_err(|source| Error::Arrow {
                    store: self.name().into(),
                    path: path.clone(),
                    source,
                })?;
                Ok(arrow::array::make_array(data))
            }
            other => Err(self.unsupported(path, other.name(), "not a dataframe column encoding")),
        }
    }

    fn legacy_categories_path(&self, column: &crate::Element) -> Result<String> {
        column.legacy_categories_path().ok_or_else(|| {
            self.malformed(
                &column.path,
                "legacy categorical: the 'categories' attribute is not a path string",
            )
        })
    }

    /// The categories of a categorical (read whole, once, and cached: they are the dictionary).
    fn categories(&self, path: &str) -> Result<ArrayRef> {
        // A poisoned cache lock only costs reading the categories again.
        if let Some(c) = self
            .categories
            .lock()
            .ok()
            .and_then(|c| c.get(path).cloned())
        {
            return Ok(c);
        }
        let len = self.array_meta(path)?.shape.first().copied().unwrap_or(0);
        let values = self.read_array(path, 0..len, &ReadStats::new_shared())?;
        if let Ok(mut cache) = self.categories.lock() {
            cache.insert(path.to_string(), values.clone());
        }
        Ok(values)
    }

    fn dictionary(&self, path: &str, codes: ArrayRef, categories: ArrayRef) -> Result<ArrayRef> {
        let n = categories.len();
        macro_rules! dict {
            ($k:ty) => {
                self.make_dictionary::<$k>(
                    path,
                    codes.as_any().downcast_ref::<PrimitiveArray<$k>>(),
                    categories,
                    n,
                )
            };
        }
        match codes.data_type() {
            DataType::Int8 => dict!(Int8Type),
            DataType::Int16 => dict!(Int16Type),
            DataType::Int32 => dict!(Int32Type),
            DataType::Int64 => dict!(Int64Type),
            other => Err(self.malformed(
                path,
                &format!("categorical codes are {other}, expected signed integers"),
            )),
        }
    }

    fn make_dictionary<K: ArrowDictionaryKeyType + ArrowPrimitiveType>(
        &self,
        path: &str,
        codes: Option<&PrimitiveArray<K>>,
        categories: ArrayRef,
        n: usize,
    ) -> Result<ArrayRef>
    where
        K::Native: TryInto<i64> + Copy,
    {
        let codes = codes.ok_or_else(|| self.malformed(path, "codes have an unexpected type"))?;
        let mut valid = Vec::with_capacity(codes.len());
        for code in codes.values().iter() {
            let Ok(c) = TryInto::<i64>::try_into(*code) else {
                return Err(self.malformed(path, "categorical code does not fit in 64 bits"));
            };
            if c >= n as i64 || c < -1 {
                return Err(
                    self.malformed(path, &format!("code {c} out of range for {n} categories"))
                );
            }
            valid.push(c >= 0);
        }
        let keys = PrimitiveArray::<K>::new(codes.values().clone(), Some(NullBuffer::from(valid)));
        let dict =
            DictionaryArray::<K>::try_new(keys, categories).map_err(|source| Error::Arrow {
                store: self.name().into(),
                path: path.into(),
                source,
            })?;
        Ok(Arc::new(dict))
    }
}
