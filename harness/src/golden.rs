//! Golden-file tests: every folder under a root is a case; `render` turns the case folder
//! into text compared with its `output.yaml`. With `UPDATE_GOLDEN=1` the outputs are
//! rewritten instead, for review in the diff.
use std::path::Path;

/// Runs every case under `root`; panics listing each mismatch (expected and actual).
pub fn check_cases(root: &Path, render: impl Fn(&Path) -> String) {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("golden folder {}: {e}", root.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no golden cases under {}", root.display());
    let mut failures = Vec::new();
    for case in cases {
        let actual = render(&case);
        let expected_path = case.join("output.yaml");
        if update {
            std::fs::write(&expected_path, &actual).unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{}:\n--- expected\n{expected}\n--- actual\n{actual}",
                case.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (UPDATE_GOLDEN=1 to accept):\n{}",
        failures.join("\n")
    );
}
