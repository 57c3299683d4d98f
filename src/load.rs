//! Loading what the operator configures from files: the one policy loader
//! (the command line, reload and per-user policies all use it). Kept out
//! of [`crate::policy`], which does no I/O.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::policy::{Day, Policy, PolicyErrors};

/// Why a policy file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read policy {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{0}")]
    Invalid(#[from] PolicyErrors),
}

impl Policy {
    /// Reads and compiles a policy file, or the built-in policy for `None`,
    /// with rule expiry judged as of today.
    pub fn load(path: Option<&Path>) -> Result<Policy, LoadError> {
        let policy = match path {
            None => Policy::from_toml(crate::DEFAULT_POLICY, crate::DEFAULT_POLICY_ORIGIN)?,
            Some(path) => {
                let shown = path.display().to_string();
                let src = std::fs::read_to_string(path).map_err(|error| LoadError::Read {
                    path: shown.clone(),
                    error,
                })?;
                Policy::from_toml(&src, &shown)?
            }
        };
        policy.set_today(today());
        Ok(policy)
    }
}

/// Today (UTC), from the system clock: the day rule expiry is judged by.
pub fn today() -> Day {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Day::from_unix(now.as_secs())
}
