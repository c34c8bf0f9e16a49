//! The npm package `clients/js` as a TypeScript user sees it: `tests/typescript` imports it by
//! name (a `file:` dependency, so through its `exports` map) and `tsc` type-checks a usage file
//! against its declarations, strict, including misuses that must be refused. The package's
//! manifest, exported names and `npm pack` contents are tested by `node --test clients/js/`.

use std::path::Path;
use std::process::Command;

#[test]
fn typescript_declarations_type_check_a_usage_of_the_package() {
    let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/typescript");
    let tsc = project.join("node_modules/typescript/bin/tsc");
    assert!(
        tsc.is_file() && project.join("node_modules/signet-client").exists(),
        "TypeScript is not installed: run `npm ci --prefix tests/typescript` (./scripts/test.sh does it)"
    );
    let output = Command::new("node")
        .arg(&tsc)
        .arg("--project")
        .arg(&project)
        .arg("--pretty")
        .arg("false")
        .output()
        .unwrap_or_else(|err| {
            panic!("cannot run `node` ({err}): the check needs Node.js 20 or later")
        });
    assert!(
        output.status.success(),
        "tsc found errors in the declarations of clients/js ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
