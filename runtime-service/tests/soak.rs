//! A short soak in every test run: `jsheets-runtime soak` against a real node, mixed
//! runtimes with hostile evaluations among them (limits hit, access-list violations,
//! floods, a fork bomb, a background process left running), every outcome checked, and
//! the node back to the processes, cgroups, mounts and open files it started with. The
//! long run (10,000 evaluations) is the same command with `--count 10000`.

#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::process::Command;

use support::*;

#[test]
fn a_node_holds_nothing_more_after_hundreds_of_mixed_and_hostile_evaluations() {
    let server = Server::start(&[]);
    let out = Command::new(BIN)
        .args([
            "soak",
            "--endpoint",
            &server.url(),
            "--pid",
            &server.pid.to_string(),
            "--count",
            "240",
            "--warmup",
            "24",
            "--concurrency",
            "2",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the soak failed:\n{stdout}");
    // Every hostile kind ran (the node offers all three runtimes).
    for case in [
        "python memory hog",
        "python output flood",
        "python wall timeout",
        "java denied",
        "shell fork bomb",
        "shell background process",
    ] {
        assert!(stdout.contains(case), "{case} did not run:\n{stdout}");
    }
    assert!(stdout.contains("240 evaluations in"), "{stdout}");
}
