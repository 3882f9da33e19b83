//! `jsheets-runtime bench-node` end to end: it starts its own nodes on the shared
//! runtimes, measures real sandboxes and bwrap, prints the expected rows with numbers,
//! and leaves no node behind.

#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::process::Command;

use support::{runtimes_dir, BIN};

/// The table's rows: the lines after the header, split into fields, without the
/// indented failure lines.
fn rows(stdout: &str) -> Vec<Vec<String>> {
    let Some((_, table)) = stdout.split_once("pool hits %\n") else {
        panic!("no table header in:\n{stdout}");
    };
    let mut rows = Vec::new();
    for line in table.lines().filter(|l| !l.starts_with(' ')) {
        // `what` may hold a space ("node cold"): it is the first 12 characters.
        let (what, rest) = line.split_at(12);
        let mut row = vec![what.trim().to_string()];
        row.extend(rest.split_whitespace().map(String::from));
        rows.push(row);
    }
    rows
}

#[test]
fn python_and_cold_rows_with_their_baselines() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("empty.toml");
    std::fs::write(&config, "").unwrap();
    let out = Command::new(BIN)
        .args(["--runtimes-dir"])
        .arg(runtimes_dir())
        .args([
            "bench-node",
            "--rows",
            "python,cold",
            "--duration",
            "1",
            "--concurrency",
            "1",
            "--cold-concurrency",
            "1",
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("JSHEETS_RUNTIME_CONFIG", &config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    let rows = rows(&stdout);
    let labels: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str(), r[2].as_str()))
        .collect();
    assert_eq!(
        labels,
        [
            ("node", "python-3.11", "1"),
            ("bwrap", "python-3.11", "1"),
            ("node cold", "python-3.11", "1"),
            ("bwrap", "python-3.11", "1"),
            ("node cold", "shell", "1"),
            ("bwrap", "shell", "1"),
        ],
        "{stdout}"
    );
    for row in &rows {
        assert_eq!(row.len(), 11, "{row:?}");
        assert!(row[3].parse::<usize>().unwrap() > 0, "{row:?}");
        for number in &row[4..10] {
            number
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("{number:?} in {row:?}"));
        }
    }
    // A hit rate where there is a pool, none on the node without pools or for bwrap.
    let hits: f64 = rows[0][10].parse().unwrap();
    assert!((0.0..=100.0).contains(&hits), "{:?}", rows[0]);
    for row in &rows[1..] {
        assert_eq!(row[10], "-", "{row:?}");
    }
    // The nodes it started are gone: no `serve` of this binary is left whose config
    // sits in a bench-node directory.
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(" serve --config ") && c.contains("jsheets-bench-node-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
