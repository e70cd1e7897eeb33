//! `StoreUrl`: which backend a store URL names (`memory:`, `fs:PATH`, `sled:PATH`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A parsed store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreUrl {
    /// `memory:` — in this process only.
    Memory,
    /// `fs:PATH` — plain files in a directory.
    Fs(PathBuf),
    /// `sled:PATH` — an embedded sled database (the default).
    Sled(PathBuf),
}

/// Why a store URL is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid store URL {url:?}: {reason}")]
pub struct UrlError {
    /// The URL as given.
    pub url: String,
    /// What is wrong and what is expected.
    pub reason: String,
}

impl StoreUrl {
    /// The scheme: `memory`, `fs` or `sled`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Fs(_) => "fs",
            Self::Sled(_) => "sled",
        }
    }
}

impl FromStr for StoreUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| UrlError {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = url.trim().split_once(':').ok_or_else(|| {
            err("expected memory:, fs:PATH or sled:PATH (a scheme, a colon, then a path)")
        })?;
        // Accept `fs://path` as well as `fs:path`; both mean the same local path.
        let path = rest.strip_prefix("//").unwrap_or(rest);
        match scheme.to_ascii_lowercase().as_str() {
            "memory" | "mem" => {
                if path.is_empty() {
                    Ok(Self::Memory)
                } else {
                    Err(err("memory: takes no path"))
                }
            }
            "fs" | "file" => non_empty(path)
                .map(Self::Fs)
                .ok_or_else(|| err("fs: needs a directory path, e.g. fs:./tasks")),
            "sled" => non_empty(path)
                .map(Self::Sled)
                .ok_or_else(|| err("sled: needs a path, e.g. sled:./tasks/taskctx.sled")),
            "postgres" | "postgresql" => {
                Err(err("the PostgreSQL adapter is not part of this build yet"))
            }
            other => Err(err(&format!(
                "unknown scheme `{other}`; expected memory, fs or sled"
            ))),
        }
    }
}

fn non_empty(path: &str) -> Option<PathBuf> {
    (!path.trim().is_empty()).then(|| PathBuf::from(path))
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("memory:"),
            Self::Fs(path) => write!(f, "fs:{}", path.display()),
            Self::Sled(path) => write!(f, "sled:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme_and_names_the_problem() {
        assert_eq!("memory:".parse::<StoreUrl>().unwrap(), StoreUrl::Memory);
        assert_eq!(
            "fs:./tasks".parse::<StoreUrl>().unwrap(),
            StoreUrl::Fs(PathBuf::from("./tasks"))
        );
        assert_eq!(
            "sled:///var/lib/t.sled".parse::<StoreUrl>().unwrap(),
            StoreUrl::Sled(PathBuf::from("/var/lib/t.sled"))
        );
        assert_eq!(
            "SLED:a b".parse::<StoreUrl>().unwrap(),
            StoreUrl::Sled(PathBuf::from("a b"))
        );
        for (bad, reason) in [
            ("tasks", "expected memory:"),
            ("fs:", "needs a directory path"),
            ("redis://x", "unknown scheme `redis`"),
            ("memory:/x", "takes no path"),
        ] {
            let err = bad.parse::<StoreUrl>().unwrap_err().to_string();
            assert!(err.contains(reason), "{bad}: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for url in ["memory:", "fs:./a", "sled:/b/c.sled"] {
            assert_eq!(url.parse::<StoreUrl>().unwrap().to_string(), url);
        }
    }
}
