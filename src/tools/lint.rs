//! `egressd lint`: a policy that loads, and the rules in it that deserve a
//! second look.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{OutputFormat, EXIT_DENIED};
use crate::audit::lint;
use crate::policy::Policy;

/// What `egressd lint` was asked.
#[derive(Debug, Clone)]
pub struct LintOptions {
    /// Policy file; `None` for the built-in policy.
    pub policy: Option<PathBuf>,
    /// Warnings fail too.
    pub strict: bool,
    pub format: OutputFormat,
    /// The proxy runs with a parent proxy (`--upstream-proxy`).
    pub with_parent: bool,
}

pub fn lint(args: LintOptions) -> ExitCode {
    let policy = match Policy::load(args.policy.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            super::errors_as_json(args.format == OutputFormat::Json);
            return super::bad_input(e);
        }
    };
    let mut findings = lint::lint(&policy);
    if args.with_parent {
        findings.extend(lint::through_parent(&policy));
    }
    match args.format {
        OutputFormat::Json => {
            println!("{}", serde_json::to_string_pretty(&findings).unwrap_or_default());
        }
        OutputFormat::Text => {
            for f in &findings {
                println!(
                    "{}:{}: warning[{}]: rule {:?} ({}): {}",
                    policy.origin(),
                    f.line,
                    f.kind,
                    f.rule,
                    f.pattern,
                    f.message
                );
            }
            println!(
                "{}: {} rules, {} warnings",
                policy.origin(),
                policy.rules().len(),
                findings.len()
            );
        }
    }
    if args.strict && !findings.is_empty() {
        ExitCode::from(EXIT_DENIED)
    } else {
        ExitCode::SUCCESS
    }
}
