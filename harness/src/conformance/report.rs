//! The runner's results: a table for people, a JSON report for tools, and the last line
//! `total: X/Y cases passed`. A case counts as passed when its response passed and every
//! status check of its test did (the suite checks status before it sends traffic).
use std::fmt::Write as _;

use serde::Serialize;

use super::cases::Case;
use super::compare::CaseOutcome;

#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    pub check: String,
    /// What differs; `None`: passed.
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    pub name: String,
    /// The response (or distribution) passed.
    pub passed: bool,
    pub attempts: u32,
    pub difference: Option<String>,
    pub seconds: f64,
}

impl CaseResult {
    pub fn new(case: &Case, outcome: CaseOutcome) -> Self {
        Self {
            name: case.name.clone(),
            passed: outcome.passed,
            attempts: outcome.attempts,
            difference: outcome.first_difference,
            seconds: outcome.elapsed.as_secs_f64(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TestResult {
    pub name: String,
    pub feature: String,
    /// `Core`, `Extended`, or `-` (in no GATEWAY-HTTP profile).
    pub level: String,
    pub status_only: bool,
    pub checks: Vec<CheckResult>,
    pub cases: Vec<CaseResult>,
    pub seconds: f64,
    /// Why the test did not run (a feature it needs is not one we declare), as the suite
    /// skips it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl TestResult {
    /// A test not run, and why.
    pub fn skipped(name: &str, features: &[String], why: &str) -> Self {
        Self {
            name: name.into(),
            feature: features.last().cloned().unwrap_or_default(),
            level: "-".into(),
            status_only: true,
            checks: Vec::new(),
            cases: Vec::new(),
            seconds: 0.0,
            skipped: Some(why.into()),
        }
    }

    pub fn checks_passed(&self) -> bool {
        self.checks.iter().all(|c| c.error.is_none())
    }

    /// Cases that count as passed.
    pub fn cases_passed(&self) -> usize {
        if self.checks_passed() {
            self.cases.iter().filter(|c| c.passed).count()
        } else {
            0
        }
    }

    pub fn passed(&self) -> bool {
        self.checks_passed() && self.cases.iter().all(|c| c.passed)
    }

    /// The first difference found: a status check's, else a case's.
    pub fn first_difference(&self) -> Option<String> {
        let check = self
            .checks
            .iter()
            .find_map(|c| c.error.as_ref().map(|e| format!("status {}: {e}", c.check)));
        check.or_else(|| {
            self.cases
                .iter()
                .find(|c| !c.passed)
                .map(|c| format!("{}: {}", c.name, c.difference.as_deref().unwrap_or("failed")))
        })
    }

    /// One line of progress.
    pub fn line(&self) -> String {
        if let Some(why) = &self.skipped {
            return format!("SKIP {} ({why})", self.name);
        }
        format!(
            "{} {} ({:.1} s){}",
            if self.passed() { "PASS" } else { "FAIL" },
            self.name,
            self.seconds,
            self.first_difference().map(|d| format!(": {d}")).unwrap_or_default()
        )
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub tests: Vec<TestResult>,
    pub wall_seconds: f64,
}

impl Report {
    /// (cases passed, cases run).
    pub fn totals(&self) -> (usize, usize) {
        let passed = self.tests.iter().map(TestResult::cases_passed).sum();
        let total = self.tests.iter().map(|t| t.cases.len()).sum();
        (passed, total)
    }

    pub fn all_passed(&self) -> bool {
        self.tests.iter().all(TestResult::passed)
    }

    /// The table, a summary by level, and the last line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let width = self.tests.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
        let _ = writeln!(
            out,
            "{:width$}  {:38}  {:8}  {:>7}  {:>6}  first difference",
            "test", "feature", "level", "cases", "status"
        );
        for t in &self.tests {
            let cases = if t.status_only {
                "-".to_string()
            } else {
                format!("{}/{}", t.cases_passed(), t.cases.len())
            };
            let checks = format!(
                "{}/{}",
                t.checks.iter().filter(|c| c.error.is_none()).count(),
                t.checks.len()
            );
            let mut difference = match &t.skipped {
                Some(why) => format!("skipped: {why}"),
                None => t.first_difference().unwrap_or_default(),
            };
            if difference.len() > 160 {
                let cut = (0..=160).rev().find(|i| difference.is_char_boundary(*i)).unwrap_or(0);
                difference.truncate(cut);
                difference.push('…');
            }
            let _ = writeln!(
                out,
                "{:width$}  {:38}  {:8}  {:>7}  {:>6}  {}",
                t.name, t.feature, t.level, cases, checks, difference
            );
        }
        for level in ["Core", "Extended", "-"] {
            let tests: Vec<&TestResult> = self.tests.iter().filter(|t| t.level == level).collect();
            if tests.is_empty() {
                continue;
            }
            let passed = tests.iter().filter(|t| t.passed() && t.skipped.is_none()).count();
            let skipped = tests.iter().filter(|t| t.skipped.is_some()).count();
            let cases: usize = tests.iter().map(|t| t.cases_passed()).sum();
            let total: usize = tests.iter().map(|t| t.cases.len()).sum();
            let _ = writeln!(
                out,
                "{level}: {passed}/{} tests passed, {cases}/{total} cases{}",
                tests.len() - skipped,
                if skipped > 0 {
                    format!(", {skipped} skipped")
                } else {
                    String::new()
                }
            );
        }
        let _ = writeln!(out, "wall time: {:.0} s", self.wall_seconds);
        let (passed, total) = self.totals();
        let _ = writeln!(out, "total: {passed}/{total} cases passed");
        out
    }
}
