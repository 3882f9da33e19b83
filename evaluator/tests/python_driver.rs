//! The in-sandbox Python driver's own test suite (plain unittest, run on the host's
//! Debian python3.11, which the python-3.11 runtime is built from).

#[test]
fn python_driver_unittests_pass() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/drivers");
    let out = std::process::Command::new("/usr/bin/python3.11")
        .args(["-m", "unittest", "-v", "test_python_driver.py"])
        .current_dir(&dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("running /usr/bin/python3.11 (Debian package python3.11)");
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "driver tests failed:\n{report}");
    assert!(report.contains("\nOK"), "{report}");
}
