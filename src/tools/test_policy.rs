//! `egressd test-policy`: a policy loads, and its expected cases (in
//! `NAME.tests.toml` beside it, [`super::cases`]) hold.

use std::path::PathBuf;
use std::process::ExitCode;

use super::cases::run_cases;
use crate::policy::Policy;

/// What `egressd test-policy` was asked.
#[derive(Debug, Clone, Default)]
pub struct TestPolicyOptions {
    /// Policy files; none for the built-in policy.
    pub policies: Vec<PathBuf>,
    /// A case file to use instead of the one beside each policy.
    pub cases: Option<PathBuf>,
}

pub fn test_policy(args: TestPolicyOptions) -> ExitCode {
    let targets: Vec<Option<PathBuf>> = if args.policies.is_empty() {
        vec![None]
    } else {
        args.policies.into_iter().map(Some).collect()
    };
    let mut failed = false;
    for path in targets {
        let policy = match Policy::load(path.as_deref()) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        let (cases_src, cases_origin) = match (&args.cases, &path) {
            (Some(c), _) => (std::fs::read_to_string(c), c.display().to_string()),
            (None, Some(p)) => {
                let c = p.with_extension("tests.toml");
                (std::fs::read_to_string(&c), c.display().to_string())
            }
            (None, None) => (
                Ok(include_str!("../../policy/qualtrics.tests.toml").to_string()),
                "builtin:qualtrics.tests.toml".to_string(),
            ),
        };
        let cases_src = match cases_src {
            Ok(s) => s,
            Err(e) => {
                eprintln!(
                    "{}: policy is valid ({} rules), but no cases: {cases_origin}: {e}",
                    policy.origin(),
                    policy.rules().len()
                );
                return ExitCode::from(2);
            }
        };
        match run_cases(&policy, &cases_src, &cases_origin) {
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
            Ok(report) => {
                for f in &report.failures {
                    println!(
                        "FAIL {cases_origin}:{}: {}: expected {}, got {}",
                        f.line, f.target, f.expected, f.got
                    );
                }
                println!(
                    "{}: {} ({}): {} passed, {} failed",
                    policy.origin(),
                    policy.version(),
                    cases_origin,
                    report.passed,
                    report.failures.len()
                );
                failed |= !report.failures.is_empty();
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
