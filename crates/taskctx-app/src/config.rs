//! `Config`: settings from the environment (`TASKCTX_*` and the AIECS names), presets, validation.
//!
//! Precedence: a `TASKCTX_*` variable wins over its AIECS twin, which wins over the base (the
//! preset named by `TASKCTX_PRESET`, or the defaults). Every bad value is an error naming the
//! variable and the value; nothing is silently replaced by a default.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::context::Persistence;

/// A log level (AIECS names; `WARNING` and `CRITICAL` map onto `tracing`'s levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogLevel {
    /// Everything, including per-operation details.
    Debug,
    /// Normal operation.
    #[default]
    Info,
    /// Something unexpected.
    Warning,
    /// Failures.
    Error,
    /// Failures only (AIECS `CRITICAL`; `tracing` has no higher level than error).
    Critical,
}

impl LogLevel {
    /// The `tracing` filter directive for this level.
    pub fn as_filter(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warning => "warn",
            Self::Error | Self::Critical => "error",
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "DEBUG" => Ok(Self::Debug),
            "INFO" => Ok(Self::Info),
            "WARNING" | "WARN" => Ok(Self::Warning),
            "ERROR" => Ok(Self::Error),
            "CRITICAL" => Ok(Self::Critical),
            _ => Err("expected DEBUG, INFO, WARNING, ERROR or CRITICAL".to_owned()),
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Debug => "DEBUG",
            Self::Info => "INFO",
            Self::Warning => "WARNING",
            Self::Error => "ERROR",
            Self::Critical => "CRITICAL",
        })
    }
}

/// A configuration value that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An environment variable has an unusable value.
    #[error("{variable}={value:?} is invalid: {reason}")]
    Invalid {
        /// The variable.
        variable: String,
        /// Its value.
        value: String,
        /// Why it is unusable and what is expected.
        reason: String,
    },
}

/// taskctx settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Config {
    /// Store URL (`memory:`, `fs:PATH`, `sled:PATH`). `None`: the default store under
    /// `task_dir` (`TASKCTX_STORE`).
    pub store: Option<String>,
    /// Where histories live by default (`TASKCTX_TASK_DIR`, `AIECS_TASK_DIR`; default `./tasks`).
    pub task_dir: PathBuf,
    /// History optimisation budget in characters, positive (`TASKCTX_MAX_CONTEXT_SIZE`,
    /// `AIECS_MAX_CONTEXT_SIZE`; default 1000).
    pub max_context_size: usize,
    /// When updates are saved (`TASKCTX_PERSISTENCE` = write-through | buffered | off;
    /// `AIECS_ENABLE_PERSISTENCE` = true → write-through, false → off; default write-through).
    pub persistence: Persistence,
    /// Log level (`TASKCTX_LOG_LEVEL`, `AIECS_LOG_LEVEL`; default INFO).
    pub log_level: LogLevel,
    /// How often the retention sweep runs (`TASKCTX_CLEANUP_INTERVAL`, seconds; default 3600).
    #[serde(with = "seconds")]
    pub cleanup_interval: Duration,
    /// How many histories retention keeps; `None` keeps all (`TASKCTX_MAX_HISTORY_FILES`,
    /// `0` = keep all; default keep all).
    pub max_history_files: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            store: None,
            task_dir: PathBuf::from("./tasks"),
            max_context_size: 1000,
            persistence: Persistence::WriteThrough,
            log_level: LogLevel::Info,
            cleanup_interval: Duration::from_secs(3600),
            max_history_files: None,
        }
    }
}

impl Config {
    /// The seed's production preset: `/var/lib/aiecs/tasks`, 5000 characters, persistence on,
    /// INFO, hourly cleanup keeping 100 histories.
    pub fn production() -> Self {
        Self {
            store: None,
            task_dir: PathBuf::from("/var/lib/aiecs/tasks"),
            max_context_size: 5000,
            persistence: Persistence::WriteThrough,
            log_level: LogLevel::Info,
            cleanup_interval: Duration::from_secs(3600),
            max_history_files: Some(100),
        }
    }

    /// The seed's development preset: `./tasks`, 1000 characters, persistence off, DEBUG,
    /// cleanup every 5 minutes keeping 10 histories.
    pub fn development() -> Self {
        Self {
            store: None,
            task_dir: PathBuf::from("./tasks"),
            max_context_size: 1000,
            persistence: Persistence::Off,
            log_level: LogLevel::Debug,
            cleanup_interval: Duration::from_secs(300),
            max_history_files: Some(10),
        }
    }

    /// Reads the process environment (see the field docs for the variables).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (for tests and embedding).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |names: &[&str]| -> Option<(String, String)> {
            names
                .iter()
                .find_map(|name| lookup(name).map(|value| ((*name).to_owned(), value)))
        };
        let invalid = |variable: String, value: String, reason: &str| ConfigError::Invalid {
            variable,
            value,
            reason: reason.to_owned(),
        };
        let mut config = match get(&["TASKCTX_PRESET"]) {
            None => Self::default(),
            Some((name, value)) => match value.trim().to_ascii_lowercase().as_str() {
                "production" => Self::production(),
                "development" => Self::development(),
                "default" | "" => Self::default(),
                _ => {
                    return Err(invalid(
                        name,
                        value,
                        "expected production, development or default",
                    ));
                }
            },
        };
        if let Some((_, value)) = get(&["TASKCTX_STORE"]) {
            config.store = (!value.trim().is_empty()).then(|| value.trim().to_owned());
        }
        if let Some((name, value)) = get(&["TASKCTX_TASK_DIR", "AIECS_TASK_DIR"]) {
            if value.trim().is_empty() {
                return Err(invalid(name, value, "expected a directory path"));
            }
            config.task_dir = PathBuf::from(value);
        }
        if let Some((name, value)) = get(&["TASKCTX_MAX_CONTEXT_SIZE", "AIECS_MAX_CONTEXT_SIZE"]) {
            config.max_context_size = match value.trim().parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => return Err(invalid(name, value, "expected a positive whole number")),
            };
        }
        if let Some((name, value)) = get(&["TASKCTX_PERSISTENCE"]) {
            config.persistence = value
                .parse()
                .map_err(|reason: String| invalid(name, value.clone(), &reason))?;
        } else if let Some((name, value)) = get(&["AIECS_ENABLE_PERSISTENCE"]) {
            config.persistence = match parse_bool(&value) {
                Some(true) => Persistence::WriteThrough,
                Some(false) => Persistence::Off,
                None => return Err(invalid(name, value, "expected true or false")),
            };
        }
        if let Some((name, value)) = get(&["TASKCTX_LOG_LEVEL", "AIECS_LOG_LEVEL"]) {
            config.log_level = value
                .parse()
                .map_err(|reason: String| invalid(name, value.clone(), &reason))?;
        }
        if let Some((name, value)) = get(&["TASKCTX_CLEANUP_INTERVAL"]) {
            config.cleanup_interval = match value.trim().parse::<u64>() {
                Ok(n) if n > 0 => Duration::from_secs(n),
                _ => {
                    return Err(invalid(
                        name,
                        value,
                        "expected a positive number of seconds",
                    ));
                }
            };
        }
        if let Some((name, value)) = get(&["TASKCTX_MAX_HISTORY_FILES"]) {
            config.max_history_files = match value.trim().parse::<usize>() {
                Ok(0) => None,
                Ok(n) => Some(n),
                Err(_) => {
                    return Err(invalid(
                        name,
                        value,
                        "expected a whole number (0 keeps every history)",
                    ));
                }
            };
        }
        Ok(config)
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn no_variables_give_the_aiecs_defaults() {
        assert_eq!(from(&[]).unwrap(), Config::default());
        assert_eq!(Config::default().max_context_size, 1000);
        assert_eq!(Config::default().task_dir, PathBuf::from("./tasks"));
    }

    #[test]
    fn aiecs_names_are_read_and_taskctx_names_win() {
        let config = from(&[
            ("AIECS_TASK_DIR", "/data/aiecs"),
            ("AIECS_MAX_CONTEXT_SIZE", "2500"),
            ("AIECS_ENABLE_PERSISTENCE", "false"),
            ("AIECS_LOG_LEVEL", "warning"),
        ])
        .unwrap();
        assert_eq!(config.task_dir, PathBuf::from("/data/aiecs"));
        assert_eq!(config.max_context_size, 2500);
        assert_eq!(config.persistence, Persistence::Off);
        assert_eq!(config.log_level, LogLevel::Warning);
        let config = from(&[
            ("AIECS_MAX_CONTEXT_SIZE", "2500"),
            ("TASKCTX_MAX_CONTEXT_SIZE", "300"),
            ("AIECS_ENABLE_PERSISTENCE", "false"),
            ("TASKCTX_PERSISTENCE", "buffered"),
        ])
        .unwrap();
        assert_eq!(config.max_context_size, 300);
        assert_eq!(config.persistence, Persistence::Buffered);
    }

    #[test]
    fn bad_values_name_the_variable_and_the_value() {
        let cases = [
            ("AIECS_MAX_CONTEXT_SIZE", "0"),
            ("AIECS_MAX_CONTEXT_SIZE", "-5"),
            ("AIECS_ENABLE_PERSISTENCE", "maybe"),
            ("AIECS_LOG_LEVEL", "LOUD"),
            ("TASKCTX_PERSISTENCE", "sometimes"),
            ("TASKCTX_CLEANUP_INTERVAL", "soon"),
            ("TASKCTX_MAX_HISTORY_FILES", "-1"),
            ("TASKCTX_PRESET", "staging"),
        ];
        for (variable, value) in cases {
            let err = from(&[(variable, value)]).unwrap_err();
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("{variable}={value:?} is invalid")),
                "{message}"
            );
        }
    }

    #[test]
    fn presets_carry_the_seed_values_and_can_be_overridden() {
        let production = from(&[("TASKCTX_PRESET", "production")]).unwrap();
        assert_eq!(production, Config::production());
        assert_eq!(production.max_history_files, Some(100));
        assert_eq!(production.cleanup_interval, Duration::from_secs(3600));
        let development = from(&[
            ("TASKCTX_PRESET", "development"),
            ("TASKCTX_MAX_HISTORY_FILES", "0"),
        ])
        .unwrap();
        assert_eq!(development.log_level, LogLevel::Debug);
        assert_eq!(development.persistence, Persistence::Off);
        assert_eq!(development.max_history_files, None);
    }
}
