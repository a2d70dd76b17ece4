//! The gene-index statements and `ATTACH` option:
//!
//! - `CREATE GENE INDEX ON dataset[.table] [WITH (memory '1GiB')]` builds the index of the
//!   table's matrix (`x` by default) beside the dataset's store, then re-attaches the dataset so
//!   that its queries use it; refused where the session may not write there.
//! - `DROP GENE INDEX ON dataset` removes the dataset's sidecar.
//! - `ATTACH 'path' AS name (index 'other/place.annql-index')` names the sidecar of a store (a
//!   URL source's must be named); `(index 'off')` attaches without one.

use std::path::PathBuf;

use annql_index::GeneIndex;
use annql_store::StorageOptions;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use super::AttachedIndex;
use crate::error::{Error, Result};

/// Which gene index an attached store uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum IndexChoice {
    /// The sidecar beside a local store (`<path>.annql-index`), if there is one.
    #[default]
    Beside,
    /// The sidecar at this path or URL, which must exist.
    At(String),
    /// None.
    Off,
}

impl IndexChoice {
    /// Takes the `index` option out of `ATTACH` options.
    pub fn take_from(options: &mut Vec<(String, String)>) -> IndexChoice {
        let Some(i) = options.iter().position(|(k, _)| k == "index") else {
            return IndexChoice::Beside;
        };
        let (_, value) = options.remove(i);
        match value.to_ascii_lowercase().as_str() {
            "off" | "none" | "false" => IndexChoice::Off,
            _ => IndexChoice::At(value),
        }
    }

    /// The sidecar this choice gives for the store at `location`.
    pub fn find(&self, location: &str, options: &StorageOptions) -> Result<Option<AttachedIndex>> {
        let found = match self {
            IndexChoice::Off => None,
            IndexChoice::At(at) => Some(
                GeneIndex::open(at, options)?
                    .ok_or_else(|| annql_index::Error::Missing(PathBuf::from(at)))?,
            ),
            IndexChoice::Beside => {
                let Some(at) = annql_index::default_location(location) else {
                    return Ok(None);
                };
                match GeneIndex::open(&at.to_string_lossy(), options) {
                    Ok(found) => found,
                    Err(e) => {
                        // A damaged sidecar nobody named is not worth refusing the store for:
                        // queries read the matrix itself, and the warning says why.
                        log::warn!("ignoring the gene index {}: {e}", at.display());
                        None
                    }
                }
            }
        };
        Ok(found.map(|index| AttachedIndex {
            index,
            source: location.to_string(),
        }))
    }
}

/// Where a dataset attached by location came from.
#[derive(Debug, Clone)]
pub(crate) struct AttachedSource {
    pub location: String,
    pub options: StorageOptions,
    pub index: IndexChoice,
}

/// A gene-index statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GeneIndexStatement {
    /// `CREATE GENE INDEX ON dataset[.table] [WITH (memory '…')]`.
    Create {
        dataset: String,
        table: String,
        memory: Option<u64>,
    },
    /// `DROP GENE INDEX ON dataset`.
    Drop { dataset: String },
}

/// Recognises the gene-index statements; None for any other statement.
pub(crate) fn parse_gene_index(sql: &str) -> Result<Option<GeneIndexStatement>> {
    let words: Vec<String> = sql
        .split_whitespace()
        .take(3)
        .map(str::to_ascii_uppercase)
        .collect();
    let create = match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["CREATE", "GENE", "INDEX"] => true,
        ["DROP", "GENE", "INDEX"] => false,
        _ => return Ok(None),
    };
    let usage = || {
        Error::Statement(
            "expected CREATE GENE INDEX ON dataset[.table] [WITH (memory '1GiB')] or DROP GENE \
             INDEX ON dataset"
                .into(),
        )
    };
    let tokens: Vec<Token> = Tokenizer::new(&GenericDialect {}, sql.trim().trim_end_matches(';'))
        .tokenize()
        .map_err(|e| Error::Statement(e.to_string()))?
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .skip(3)
        .collect();
    let word = |t: Option<&Token>| match t {
        Some(Token::Word(w)) => Some(w.value.clone()),
        _ => None,
    };
    let mut at = 0;
    if word(tokens.first())
        .map(|w| w.to_ascii_uppercase())
        .as_deref()
        != Some("ON")
    {
        return Err(usage());
    }
    at += 1;
    let dataset = word(tokens.get(at)).ok_or_else(usage)?;
    at += 1;
    let mut table = "x".to_string();
    if tokens.get(at) == Some(&Token::Period) {
        table = word(tokens.get(at + 1)).ok_or_else(usage)?;
        at += 2;
    }
    if !create {
        return if at == tokens.len() {
            Ok(Some(GeneIndexStatement::Drop { dataset }))
        } else {
            Err(usage())
        };
    }
    let mut memory = None;
    if at < tokens.len() {
        let with = word(tokens.get(at)).map(|w| w.to_ascii_uppercase());
        if with.as_deref() != Some("WITH") || tokens.get(at + 1) != Some(&Token::LParen) {
            return Err(usage());
        }
        at += 2;
        while at < tokens.len() && tokens[at] != Token::RParen {
            let key = word(tokens.get(at)).ok_or_else(usage)?.to_ascii_lowercase();
            at += 1;
            if tokens.get(at) == Some(&Token::Eq) {
                at += 1;
            }
            let value = match tokens.get(at) {
                Some(Token::SingleQuotedString(v)) | Some(Token::Number(v, _)) => v.clone(),
                Some(Token::Word(w)) => w.value.clone(),
                _ => return Err(usage()),
            };
            at += 1;
            match key.as_str() {
                "memory" => {
                    memory = Some(annql_store::object::parse_bytes(&value).ok_or_else(|| {
                        Error::Statement(format!("memory '{value}' is not a size (e.g. 1GiB)"))
                    })?)
                }
                other => {
                    return Err(Error::Statement(format!(
                        "unknown gene index option '{other}' (memory)"
                    )));
                }
            }
            if tokens.get(at) == Some(&Token::Comma) {
                at += 1;
            }
        }
        if tokens.get(at) != Some(&Token::RParen) || at + 1 != tokens.len() {
            return Err(usage());
        }
    }
    Ok(Some(GeneIndexStatement::Create {
        dataset,
        table,
        memory,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_parse_and_others_pass_through() {
        assert_eq!(parse_gene_index("SELECT 1").ok(), Some(None));
        assert_eq!(
            parse_gene_index("create gene index on atlas")
                .ok()
                .flatten(),
            Some(GeneIndexStatement::Create {
                dataset: "atlas".into(),
                table: "x".into(),
                memory: None
            })
        );
        assert_eq!(
            parse_gene_index("CREATE GENE INDEX ON a.layers_counts WITH (memory = '64MiB');")
                .ok()
                .flatten(),
            Some(GeneIndexStatement::Create {
                dataset: "a".into(),
                table: "layers_counts".into(),
                memory: Some(64 << 20)
            })
        );
        assert_eq!(
            parse_gene_index("DROP GENE INDEX ON a").ok().flatten(),
            Some(GeneIndexStatement::Drop {
                dataset: "a".into()
            })
        );
        for bad in [
            "CREATE GENE INDEX atlas",
            "CREATE GENE INDEX ON a WITH (speed 'fast')",
            "CREATE GENE INDEX ON a WITH (memory 'lots')",
            "DROP GENE INDEX ON a WITH (memory '1GiB')",
        ] {
            assert!(parse_gene_index(bad).is_err(), "{bad} should be refused");
        }
    }
}
