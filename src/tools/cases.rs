//! Expected decisions that travel with a policy (`NAME.tests.toml` next to
//! `NAME.toml`), run by `egressd test-policy` and by `cargo test`.
//!
//! ```toml
//! cases = [
//!   { target = "https://www.qualtrics.com/", expect = "allow", rule = "qualtrics" },
//!   { target = "CONNECT www.google.com:443", expect = "allow", flags = ["path_not_enforced"] },
//!   { target = "http://qualtrics.com/", expect = "deny", reason = "no_matching_rule" },
//! ]
//! ```

use serde::Deserialize;
use toml::Spanned;

use crate::policy::file::LineIndex;
use crate::policy::{Policy, PolicyError};
use crate::target::parse_target;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    cases: Vec<Spanned<Case>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    target: String,
    expect: String,
    rule: Option<String>,
    reason: Option<String>,
    flags: Option<Vec<String>>,
}

/// A case whose decision differs from the expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFailure {
    pub line: usize,
    pub target: String,
    pub expected: String,
    pub got: String,
}

/// The outcome of running a case file.
#[derive(Debug, Clone, Default)]
pub struct CaseReport {
    pub passed: usize,
    pub failures: Vec<CaseFailure>,
}

/// Runs every case of `src` (a case file named `origin`) against `policy`.
/// A malformed case file is an error; a wrong decision is a failure.
pub fn run_cases(policy: &Policy, src: &str, origin: &str) -> Result<CaseReport, PolicyError> {
    let err = |line, reason: String| PolicyError {
        origin: origin.to_string(),
        line,
        rule: None,
        reason,
    };
    let lines = LineIndex::new(src);
    let file: CaseFile = toml::from_str(src).map_err(|e| {
        let line = e.span().map_or(1, |s| lines.line(s.start));
        err(line, e.message().to_string())
    })?;
    let mut report = CaseReport::default();
    for case in &file.cases {
        let line = lines.line(case.span().start);
        let c = case.get_ref();
        if !matches!(c.expect.as_str(), "allow" | "deny" | "would-deny") {
            return Err(err(
                line,
                format!("expect: {:?} is not allow, deny or would-deny", c.expect),
            ));
        }
        let cand = parse_target(&c.target).map_err(|e| err(line, e.to_string()))?;
        let d = policy.decide(&cand);
        let rule = d.rule.map(|r| policy.rule(r).id.to_string());
        let flags = d.flags.names().collect::<Vec<_>>();
        let mut got = d.verdict.as_str().to_string();
        let mut ok = got == c.expect;
        if let Some(want) = &c.rule {
            ok &= rule.as_deref() == Some(want.as_str());
            got += &format!(" rule={}", rule.as_deref().unwrap_or("-"));
        }
        if let Some(want) = &c.reason {
            ok &= d.reason.as_str() == want;
            got += &format!(" reason={}", d.reason.as_str());
        }
        if let Some(want) = &c.flags {
            let mut want = want.clone();
            want.sort();
            let mut have: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
            have.sort();
            ok &= want == have;
            got += &format!(" flags=[{}]", have.join(","));
        }
        if ok {
            report.passed += 1;
        } else {
            let mut expected = c.expect.clone();
            if let Some(r) = &c.rule {
                expected += &format!(" rule={r}");
            }
            if let Some(r) = &c.reason {
                expected += &format!(" reason={r}");
            }
            if let Some(f) = &c.flags {
                expected += &format!(" flags=[{}]", f.join(","));
            }
            report.failures.push(CaseFailure {
                line,
                target: c.target.clone(),
                expected,
                got,
            });
        }
    }
    Ok(report)
}
