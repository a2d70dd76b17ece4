//! Per-connection settings: what `SET`, `SHOW` and `RESET` read and write.
//!
//! Each connection owns its [`Settings`], so a `SET` in one session never shows in another. The
//! values PostgreSQL reports with `ParameterStatus` are flagged, so clients that track them
//! (psycopg, pgJDBC) see the change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::ServerConfig;

/// A setting clients read: its default, whether it is reported to the client, a description.
struct Known {
    name: &'static str,
    default: &'static str,
    reported: bool,
    description: &'static str,
}

const KNOWN: &[Known] = &[
    Known {
        name: "application_name",
        default: "",
        reported: true,
        description: "Sets the application name to be reported in statistics and logs.",
    },
    Known {
        name: "bytea_output",
        default: "hex",
        reported: false,
        description: "Sets the output format for bytea.",
    },
    Known {
        name: "client_encoding",
        default: "UTF8",
        reported: true,
        description: "Sets the client's character set encoding.",
    },
    Known {
        name: "client_min_messages",
        default: "notice",
        reported: false,
        description: "Sets the message levels that are sent to the client.",
    },
    Known {
        name: "DateStyle",
        default: "ISO, MDY",
        reported: true,
        description: "Sets the display format for date and time values.",
    },
    Known {
        name: "default_transaction_isolation",
        default: "read committed",
        reported: false,
        description: "Sets the transaction isolation level of each new transaction.",
    },
    Known {
        name: "default_transaction_read_only",
        default: "on",
        reported: true,
        description: "annql serves read-only sessions.",
    },
    Known {
        name: "extra_float_digits",
        default: "1",
        reported: false,
        description: "Sets the number of digits displayed for floating-point values.",
    },
    Known {
        name: "idle_in_transaction_session_timeout",
        default: "0",
        reported: false,
        description: "Accepted for compatibility.",
    },
    Known {
        name: "integer_datetimes",
        default: "on",
        reported: true,
        description: "Shows whether datetimes are integer based.",
    },
    Known {
        name: "IntervalStyle",
        default: "postgres",
        reported: true,
        description: "Sets the display format for interval values.",
    },
    Known {
        name: "lock_timeout",
        default: "0",
        reported: false,
        description: "Accepted for compatibility (annql takes no locks).",
    },
    Known {
        name: "max_identifier_length",
        default: "63",
        reported: false,
        description: "Shows the maximum identifier length.",
    },
    Known {
        name: "search_path",
        default: "\"$user\", public",
        reported: false,
        description: "Sets the schema search order for names that are not schema-qualified.",
    },
    Known {
        name: "server_encoding",
        default: "UTF8",
        reported: true,
        description: "Shows the server (database) character set encoding.",
    },
    Known {
        name: "server_version",
        default: crate::PG_VERSION,
        reported: true,
        description: "Shows the PostgreSQL version annql's server is compatible with.",
    },
    Known {
        name: "server_version_num",
        default: crate::PG_VERSION_NUM,
        reported: false,
        description: "Shows the server version as an integer.",
    },
    Known {
        name: "standard_conforming_strings",
        default: "on",
        reported: true,
        description: "Causes '...' strings to treat backslashes literally.",
    },
    Known {
        name: "statement_timeout",
        default: "0",
        reported: false,
        description: "Sets the maximum allowed duration of any statement (0 turns it off).",
    },
    Known {
        name: "TimeZone",
        default: "UTC",
        reported: true,
        description: "Sets the time zone for displaying and interpreting time stamps.",
    },
    Known {
        name: "transaction_isolation",
        default: "read committed",
        reported: false,
        description: "Sets the current transaction's isolation level.",
    },
    Known {
        name: "transaction_read_only",
        default: "on",
        reported: false,
        description: "annql serves read-only sessions.",
    },
];

/// The settings of one session.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    values: BTreeMap<String, String>,
    /// Values the server's configuration fixes for every session (`max_connections`): `SHOW`
    /// and `pg_settings` report them, `SET` refuses them, `RESET` keeps them.
    server: Arc<Vec<ServerValue>>,
}

/// A setting fixed by the server's configuration.
#[derive(Debug)]
struct ServerValue {
    name: &'static str,
    value: String,
    description: &'static str,
}

/// What changing a setting means for the client.
#[derive(Debug, PartialEq, Eq)]
pub struct Changed {
    /// The setting's canonical name.
    pub name: String,
    /// Its new value.
    pub value: String,
    /// Whether PostgreSQL reports it with `ParameterStatus`.
    pub reported: bool,
}

fn known(name: &str) -> Option<&'static Known> {
    KNOWN.iter().find(|k| k.name.eq_ignore_ascii_case(name))
}

impl Settings {
    /// The settings a session of a server configured by `config` starts with: the defaults,
    /// and the values its configuration fixes (`max_connections`, as the server enforces it).
    pub fn for_server(config: &ServerConfig) -> Settings {
        let server = vec![ServerValue {
            name: "max_connections",
            value: config.max_connections.to_string(),
            description: "Sets the maximum number of concurrent connections.",
        }];
        Settings {
            values: BTreeMap::new(),
            server: Arc::new(server),
        }
    }

    fn server_value(&self, name: &str) -> Option<&ServerValue> {
        self.server
            .iter()
            .find(|v| v.name.eq_ignore_ascii_case(name))
    }

    /// Sets `name` (case-insensitive; unknown names are kept as given, like PostgreSQL's
    /// placeholder variables).
    pub fn set(&mut self, name: &str, value: &str) -> Result<Changed, String> {
        if let Some(v) = self.server_value(name) {
            return Err(format!(
                "parameter \"{}\" cannot be changed without restarting the server",
                v.name
            ));
        }
        let (canonical, reported) = match known(name) {
            Some(k) => (k.name.to_string(), k.reported),
            None => (name.to_ascii_lowercase(), false),
        };
        if [
            "server_version",
            "server_version_num",
            "server_encoding",
            "integer_datetimes",
            "max_identifier_length",
        ]
        .contains(&canonical.as_str())
        {
            return Err(format!("parameter \"{canonical}\" cannot be changed"));
        }
        let value = if canonical == "statement_timeout" {
            parse_duration(value)
                .map(|d| d.as_millis().to_string())
                .ok_or_else(|| {
                    format!("invalid value for parameter \"statement_timeout\": \"{value}\"")
                })?
        } else {
            value.to_string()
        };
        self.values.insert(canonical.clone(), value.clone());
        Ok(Changed {
            name: canonical,
            value,
            reported,
        })
    }

    /// Back to the default (`RESET name`).
    pub fn reset(&mut self, name: &str) {
        let canonical =
            known(name).map_or_else(|| name.to_ascii_lowercase(), |k| k.name.to_string());
        self.values.remove(&canonical);
    }

    /// Everything back to the defaults (`RESET ALL`, `DISCARD ALL`).
    pub fn reset_all(&mut self) {
        self.values.clear();
    }

    /// The current value of `name`, if it is a setting at all.
    pub fn get(&self, name: &str) -> Option<String> {
        if let Some(v) = self.server_value(name) {
            return Some(v.value.clone());
        }
        let canonical =
            known(name).map_or_else(|| name.to_ascii_lowercase(), |k| k.name.to_string());
        if let Some(v) = self.values.get(&canonical) {
            return Some(if canonical == "statement_timeout" {
                display_millis(v)
            } else {
                v.clone()
            });
        }
        known(name).map(|k| k.default.to_string())
    }

    /// Every known setting with its value and description (`SHOW ALL`).
    pub fn all(&self) -> Vec<(String, String, String)> {
        let mut rows: Vec<(String, String, String)> = KNOWN
            .iter()
            .map(|k| {
                (
                    k.name.to_string(),
                    // A setting without a value shows as empty, as PostgreSQL shows one.
                    self.get(k.name).unwrap_or_default(),
                    k.description.to_string(),
                )
            })
            .collect();
        rows.extend(self.server.iter().map(|v| {
            (
                v.name.to_string(),
                v.value.clone(),
                v.description.to_string(),
            )
        }));
        for (name, value) in &self.values {
            if known(name).is_none() && self.server_value(name).is_none() {
                rows.push((name.clone(), value.clone(), String::new()));
            }
        }
        rows
    }

    /// `statement_timeout`, when one is set.
    pub fn statement_timeout(&self) -> Option<Duration> {
        // `set` stores whole milliseconds it parsed itself, so this parse cannot fail.
        let ms: u64 = self.values.get("statement_timeout")?.parse().ok()?;
        (ms > 0).then(|| Duration::from_millis(ms))
    }
}

fn display_millis(ms: &str) -> String {
    match ms.parse::<u64>() {
        Ok(0) => "0".into(),
        Ok(ms) if ms % 1000 == 0 => format!("{}s", ms / 1000),
        Ok(ms) => format!("{ms}ms"),
        Err(_) => ms.into(),
    }
}

/// PostgreSQL's duration syntax for timeouts: a bare number is milliseconds; units `us`, `ms`,
/// `s`, `min`, `h`, `d`.
pub fn parse_duration(value: &str) -> Option<Duration> {
    let v = value.trim().trim_matches('\'').trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    // Not a number: None, which `set` turns into PostgreSQL's "invalid value" error.
    let n: f64 = num.parse().ok()?;
    let ms = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" => n,
        "us" => n / 1000.0,
        "s" => n * 1000.0,
        "min" => n * 60_000.0,
        "h" => n * 3_600_000.0,
        "d" => n * 86_400_000.0,
        _ => return None,
    };
    (ms >= 0.0).then(|| Duration::from_micros((ms * 1000.0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_duration("'5s'"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("1500"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2min"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("soon"), None);
    }

    #[test]
    fn set_show_reset() {
        let mut s = Settings::default();
        assert_eq!(s.get("datestyle").as_deref(), Some("ISO, MDY"));
        let c = s.set("datestyle", "ISO").map_err(|e| e.to_string());
        assert_eq!(
            c,
            Ok(Changed {
                name: "DateStyle".into(),
                value: "ISO".into(),
                reported: true
            })
        );
        assert_eq!(s.get("DateStyle").as_deref(), Some("ISO"));
        assert!(s.set("statement_timeout", "5s").is_ok());
        assert_eq!(s.get("statement_timeout").as_deref(), Some("5s"));
        assert_eq!(s.statement_timeout(), Some(Duration::from_secs(5)));
        assert!(s.set("statement_timeout", "later").is_err());
        assert!(s.set("server_version", "1").is_err());
        s.reset_all();
        assert_eq!(s.statement_timeout(), None);
        assert_eq!(s.get("nonexistent"), None);
    }

    #[test]
    fn server_values_are_reported_and_fixed() {
        let config = ServerConfig {
            max_connections: 7,
            ..ServerConfig::default()
        };
        let mut s = Settings::for_server(&config);
        assert_eq!(s.get("MAX_CONNECTIONS").as_deref(), Some("7"));
        assert!(s.set("max_connections", "100").is_err());
        s.reset_all();
        assert_eq!(s.get("max_connections").as_deref(), Some("7"));
        let listed: Vec<_> = s
            .all()
            .into_iter()
            .filter(|r| r.0 == "max_connections")
            .collect();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].1, "7");
    }
}
