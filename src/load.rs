//! Loading what the operator configures from files: the one policy loader
//! (the command line, reload and per-user policies all use it). Kept out
//! of [`crate::policy`], which does no I/O.

use std::path::Path;

use crate::policy::{Policy, PolicyErrors};

/// Why a policy file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read policy {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{0}")]
    Invalid(#[from] PolicyErrors),
}

impl Policy {
    /// Reads and compiles a policy file, or the built-in policy for `None`.
    pub fn load(path: Option<&Path>) -> Result<Policy, LoadError> {
        let Some(path) = path else {
            return Ok(Policy::from_toml(
                crate::DEFAULT_POLICY,
                crate::DEFAULT_POLICY_ORIGIN,
            )?);
        };
        let shown = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|error| LoadError::Read {
            path: shown.clone(),
            error,
        })?;
        Ok(Policy::from_toml(&src, &shown)?)
    }
}
