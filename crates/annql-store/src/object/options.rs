//! [`StorageOptions`]: how a remote store is reached — `object_store` settings passed to the
//! backend's builder, and annql's own (cache, retries, timeouts, concurrency, coalescing, read
//! limit) — parsed from `key = value` pairs.

use std::time::Duration;

use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use crate::error::{Error, Result};
use crate::limits::ReadLimit;

/// How a remote store is reached: `object_store` settings (endpoint, region, credentials…) plus
/// annql's own (cache, retries, timeouts, concurrency, coalescing).
///
/// Keys not listed in [`StorageOptions::set`] go to the backend's builder (`endpoint`, `region`,
/// `aws_access_key_id`, `skip_signature`, `allow_http`, …); credentials not given here come from
/// the usual environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
#[derive(Debug, Clone)]
pub struct StorageOptions {
    pub(super) backend: Vec<(String, String)>,
    pub(super) cache: bool,
    retries: usize,
    retry_timeout: Duration,
    timeout: Duration,
    connect_timeout: Duration,
    pub(super) concurrency: usize,
    pub(super) coalesce: u64,
    read_limit: ReadLimit,
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self {
            backend: Vec::new(),
            cache: true,
            retries: 3,
            retry_timeout: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            concurrency: 16,
            coalesce: 64 * 1024,
            read_limit: ReadLimit::default(),
        }
    }
}

impl StorageOptions {
    /// Options from `key = value` pairs (ATTACH options, a catalog line).
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self> {
        Self::default().with_pairs(pairs)
    }

    /// These options with `pairs` applied on top (later keys win).
    pub fn with_pairs<K: AsRef<str>, V: AsRef<str>>(
        &self,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self> {
        let mut options = self.clone();
        for (k, v) in pairs {
            options.set(k.as_ref(), v.as_ref())?;
        }
        Ok(options)
    }

    /// Sets one option. annql's keys: `cache` (on/off), `retries`, `retry_timeout`, `timeout`,
    /// `connect_timeout` (seconds), `concurrency` (requests in flight), `coalesce` (bytes between
    /// ranges merged into one request), `anonymous` (no credentials: public buckets),
    /// `read_limit` (bytes one read may allocate, any store; default 1 GiB).
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let bad = |reason: &str| Error::Option {
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let seconds = |v: &str| {
            // The parse error becomes the option error, which says what was expected.
            v.trim_end_matches('s')
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| bad("expected a number of seconds"))
        };
        let count = |v: &str| {
            v.parse::<usize>()
                .map_err(|_| bad("expected a whole number"))
        };
        match key.to_ascii_lowercase().as_str() {
            "cache" => self.cache = parse_bool(value).ok_or_else(|| bad("expected on or off"))?,
            "retries" => self.retries = count(value)?,
            "retry_timeout" => self.retry_timeout = seconds(value)?,
            "timeout" => self.timeout = seconds(value)?,
            "connect_timeout" => self.connect_timeout = seconds(value)?,
            "concurrency" => self.concurrency = count(value)?.max(1),
            "coalesce" => {
                self.coalesce = parse_bytes(value).ok_or_else(|| bad("expected bytes"))?
            }
            "read_limit" => {
                let bytes = parse_bytes(value).filter(|&b| b > 0);
                self.read_limit = ReadLimit::new(bytes.ok_or_else(|| bad("expected bytes"))?)
            }
            "anonymous" => {
                if parse_bool(value).ok_or_else(|| bad("expected true or false"))? {
                    self.backend.push(("skip_signature".into(), "true".into()));
                }
            }
            other => self.backend.push((other.to_string(), value.to_string())),
        }
        Ok(())
    }

    /// These options with a read limit of `bytes`: no read (a chunk, a row block, a zip member,
    /// a category table) allocates more (see [`crate::limits`]).
    pub fn with_read_limit(mut self, bytes: u64) -> Self {
        self.read_limit = ReadLimit::new(bytes);
        self
    }

    /// The most one read may allocate.
    pub fn read_limit(&self) -> ReadLimit {
        self.read_limit
    }

    pub(super) fn client_options(&self) -> ClientOptions {
        ClientOptions::new()
            .with_timeout(self.timeout)
            .with_connect_timeout(self.connect_timeout)
    }

    pub(super) fn retry(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: self.retries,
            retry_timeout: self.retry_timeout,
        }
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// `65536`, `64KB`, `512MiB`, `2g`.
pub fn parse_bytes(v: &str) -> Option<u64> {
    let v = v.trim().to_ascii_lowercase();
    let digits = v.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = v[digits.len()..]
        .trim_end_matches("ib")
        .trim_end_matches('b');
    let scale: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return None,
    };
    let n: f64 = digits.trim().parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some((n * scale as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::ObjectStorage;

    #[test]
    fn options_are_checked() {
        let o = StorageOptions::from_pairs([("cache", "off"), ("retries", "0")]);
        assert!(o.as_ref().is_ok_and(|o| !o.cache && o.retries == 0));
        let err = StorageOptions::from_pairs([("retries", "many")])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("retries") && err.contains("whole number"),
            "{err}"
        );
        let err = ObjectStorage::open(
            "s3://bucket/a.zarr",
            &StorageOptions::from_pairs([("no_such_option", "1")]).unwrap_or_default(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("no_such_option"), "{err}");
    }
}
