//! End to end: files into and out of `/work`, and datasets, through a real node (the
//! `jsheets-runtime serve` binary, real sandboxes), the client library and the CLI.
//! Needs root.

#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use proto::jsheets::{File, FileCaps, StartEvaluationRequest};
use support::*;
use tonic::Code;

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn file(path: &str, content: &[u8], executable: bool) -> File {
    File {
        path: path.into(),
        content: content.to_vec(),
        executable,
    }
}

/// The files of every response, in order, with whether the response was the final one.
fn chunks(t: &Transcript) -> Vec<(&proto::jsheets::ReturnedFile, bool)> {
    t.responses
        .iter()
        .flat_map(|r| r.files.iter().map(move |f| (f, r.completion.is_some())))
        .collect()
}

/// Checks that the node left no sandbox behind.
async fn nothing_left(server: &Server) {
    if let Err(left) = wait_sandboxes_gone(server.pid, SECS(10)).await {
        panic!("left behind: {left:?}");
    }
}

#[tokio::test]
async fn files_go_in_run_and_come_back() {
    let server = Server::start(&[]);
    let mut client = server.client().await;
    let code = "cd /work && \
        while IFS=, read a b; do echo \"$b;$a\"; done < in/data.csv > out/result.txt && \
        ./bin/run.sh ok > out/ran.txt && echo not-asked > out/other.log && ls -l bin";
    let s = StartEvaluationRequest {
        files: vec![
            file("in/data.csv", b"a,b\n1,2\n", false),
            // The directory out/ comes with a hidden file (the runtime has no mkdir).
            file("out/.keep", b"", false),
            file("bin/run.sh", b"#!/bin/sh\necho ran-$1\n", true),
            file("bin/plain.sh", b"#!/bin/sh\necho no\n", false),
        ],
        get_files: vec!["out/*.txt".into()],
        ..start_code("shell", code)
    };
    let t = evaluate(&mut client, s, SECS(30)).await;
    assert_eq!(t.status_name(), "Ok", "{t:#?}");
    // Executable as asked, and only as asked.
    let listing = t.stdout();
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with("run.sh")),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rw-r--r--") && l.ends_with("plain.sh")),
        "{listing}"
    );
    let got: Vec<(&str, &[u8], bool)> = chunks(&t)
        .iter()
        .map(|(f, _)| (f.path.as_str(), f.content.as_slice(), f.last))
        .collect();
    assert_eq!(
        got,
        [
            ("out/ran.txt", &b"ran-ok\n"[..], true),
            ("out/result.txt", &b"b;a\n2;1\n"[..], true),
        ]
    );
    nothing_left(&server).await;
}

/// `yes abcdefg | head -c N`: what the sandbox writes.
fn pattern(len: usize) -> Vec<u8> {
    b"abcdefg\n".iter().copied().cycle().take(len).collect()
}

#[tokio::test]
async fn a_large_file_comes_back_in_chunks_and_caps_truncate_or_refuse() {
    let server = Server::start(&[]);
    let mut client = server.client().await;
    let big = 3 << 20;
    let code = format!(
        "cd /work && yes abcdefg | head -c {big} > big.txt && yes abcdefg | head -c 5000 > five.txt"
    );
    let s = StartEvaluationRequest {
        get_files: vec!["big.txt".into()],
        file_caps: Some(FileCaps {
            max_file_bytes: 4 << 20,
            ..Default::default()
        }),
        ..start_code("shell", &code)
    };
    let t = evaluate(&mut client, s.clone(), SECS(30)).await;
    assert_eq!(t.status_name(), "Ok", "{t:#?}");
    for r in &t.responses {
        let bytes: usize = r.files.iter().map(|f| f.content.len()).sum();
        assert!(
            bytes <= 1 << 20,
            "a response carries {bytes} bytes of files"
        );
    }
    let parts = chunks(&t);
    assert!(parts.len() >= 3, "{} chunks", parts.len());
    let offsets: Vec<u64> = parts.iter().map(|(f, _)| f.offset).collect();
    assert_eq!(offsets, [0, 1 << 20, 2 << 20]);
    assert!(parts
        .iter()
        .all(|(f, _)| f.size == big as u64 && !f.truncated));
    let lasts: Vec<bool> = parts.iter().map(|(f, _)| f.last).collect();
    assert_eq!(lasts, [false, false, true]);
    // File responses follow the live output and carry nothing else; the final one
    // may carry the last chunk.
    let first_files = t
        .responses
        .iter()
        .position(|r| !r.files.is_empty())
        .unwrap();
    assert!(t.responses[first_files..]
        .iter()
        .all(|r| r.completion.is_some() || (r.result.is_empty() && r.error.is_empty())));
    let whole: Vec<u8> = parts.iter().flat_map(|(f, _)| f.content.clone()).collect();
    assert!(whole == pattern(big), "the chunks do not make the file");

    // The client library puts them back together.
    let channel = server.channel().await;
    let request = client::EvalRequest::new("shell")
        .component("e1", code.clone())
        .get("big.txt")
        .file_caps(FileCaps {
            max_file_bytes: 4 << 20,
            ..Default::default()
        });
    let evaluated = client::evaluate(&channel, &request, SECS(30), |_| {})
        .await
        .unwrap();
    assert_eq!(evaluated.files.len(), 1);
    assert!(evaluated.files[0].content == pattern(big));

    // Over the per-file cap: truncated, its real size said; or refused.
    let capped = |refuse| StartEvaluationRequest {
        get_files: vec!["five.txt".into()],
        file_caps: Some(FileCaps {
            max_file_bytes: 1000,
            max_total_bytes: 0,
            refuse_oversized: refuse,
        }),
        ..start_code("shell", &code)
    };
    let t = evaluate(&mut client, capped(false), SECS(30)).await;
    let parts = chunks(&t);
    assert_eq!(parts.len(), 1, "{t:#?}");
    let (f, in_final) = parts[0];
    assert!(in_final);
    assert!(f.truncated && f.last && f.error.is_empty(), "{f:?}");
    assert_eq!(f.size, 5000);
    assert_eq!(f.content, pattern(1000));
    let t = evaluate(&mut client, capped(true), SECS(30)).await;
    let parts = chunks(&t);
    assert_eq!(parts.len(), 1, "{t:#?}");
    let f = parts[0].0;
    assert!(
        f.content.is_empty() && f.last && !f.error.is_empty(),
        "{f:?}"
    );
    nothing_left(&server).await;
}

#[tokio::test]
async fn bad_files_are_refused_naming_the_bound() {
    let server = Server::start(&[
        ("JSHEETS_RUNTIME_EVALUATION_MAX_INPUT_FILES", "2"),
        ("JSHEETS_RUNTIME_EVALUATION_MAX_INPUT_FILE_BYTES", "100"),
        (
            "JSHEETS_RUNTIME_EVALUATION_DEFAULT_RETURNED_FILE_BYTES",
            "1000",
        ),
        ("JSHEETS_RUNTIME_EVALUATION_MAX_RETURNED_FILE_BYTES", "2000"),
    ]);
    let mut client = server.client().await;
    let with_files = |files: Vec<File>| StartEvaluationRequest {
        files,
        ..start_code("shell", "true")
    };
    let cases = [
        (
            with_files(vec![file("../x", b"", false)]),
            "files[0].path \"../x\" has an empty, `.` or `..` component",
        ),
        (
            with_files(vec![file("/abs", b"", false)]),
            "files[0].path \"/abs\" is absolute (names are relative to /work)",
        ),
        (
            with_files(vec![file("a\0b", b"", false)]),
            "files[0].path \"a\\0b\" contains a NUL byte",
        ),
        (
            with_files(vec![file("a", b"", false); 3]),
            "files: 3 files, above this node's maximum of 2 (evaluation.maxInputFiles)",
        ),
        (
            with_files(vec![
                file("a", &[b'x'; 60], false),
                file("b", &[b'x'; 41], false),
            ]),
            "files: 101 bytes, above this node's maximum of 100 (evaluation.maxInputFileBytes)",
        ),
        (
            StartEvaluationRequest {
                get_files: vec!["*".into()],
                file_caps: Some(FileCaps {
                    max_file_bytes: 2001,
                    ..Default::default()
                }),
                ..start_code("shell", "true")
            },
            "file_caps.max_file_bytes is 2001, above this node's maximum of 2000 \
             (evaluation.maxReturnedFileBytes)",
        ),
    ];
    for (s, message) in cases {
        let status = refused(&mut client, s).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(status.message(), message);
    }
    let status = refused(
        &mut client,
        StartEvaluationRequest {
            datasets: vec!["prices".into()],
            ..start_code("shell", "true")
        },
    )
    .await;
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(
        status.message(),
        "dataset \"prices\" is not on this node; it has none"
    );
    nothing_left(&server).await;
}

#[tokio::test]
async fn datasets_are_read_only_noexec_and_never_take_a_pooled_sandbox() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("p.csv"), b"price,42\n").unwrap();
    let script = data.path().join("run.sh");
    std::fs::write(&script, b"#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let other = tempfile::tempdir().unwrap();
    let datasets = format!(
        "prices={},logs={}",
        data.path().display(),
        other.path().display()
    );
    let mut server = Server::start(&[
        ("JSHEETS_RUNTIME_EVALUATION_DATASETS", &datasets),
        (
            "JSHEETS_RUNTIME_EVALUATION_POOL",
            "{\"python-3.11\" = {size = 1, idleMemoryBytes = 134217728}}",
        ),
    ]);
    let mut client = server.client().await;

    let status = refused(
        &mut client,
        StartEvaluationRequest {
            datasets: vec!["nope".into()],
            ..start_code("shell", "true")
        },
    )
    .await;
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(
        status.message(),
        "dataset \"nope\" is not on this node; it has: logs, prices"
    );

    let code = "cat /data/prices/p.csv; \
        echo x > /data/prices/new; echo \"write=$?\"; \
        /data/prices/run.sh; echo \"exec=$?\"";
    let s = StartEvaluationRequest {
        datasets: vec!["prices".into()],
        ..start_code("shell", code)
    };
    let t = evaluate(&mut client, s, SECS(30)).await;
    let stdout = t.stdout();
    assert!(stdout.starts_with("price,42\n"), "{t:#?}");
    assert!(stdout.contains("write=2"), "{stdout}");
    assert!(stdout.contains("exec=126"), "{stdout}");
    let stderr: String = t
        .responses
        .iter()
        .flat_map(|r| &r.result)
        .filter(|r| r.kind() == proto::jsheets::evaluation_result::Kind::Error)
        .map(|r| r.output.clone())
        .collect();
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert!(!data.path().join("new").exists());

    // The pool is full; a request with datasets leaves it alone, one without takes.
    let taken = |runtimes: &[proto::jsheets::RuntimeInfo]| {
        let p = runtimes.iter().find(|r| r.name == "python-3.11").unwrap();
        (p.pool_taken, p.pool_misses, p.pool_idle)
    };
    let deadline = std::time::Instant::now() + SECS(90);
    let before = loop {
        let runtimes = client
            .list_runtimes(proto::jsheets::ListRuntimesRequest {})
            .await
            .unwrap()
            .into_inner()
            .runtimes;
        let now = taken(&runtimes);
        if now.2 == 1 {
            break now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pool did not fill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let s = StartEvaluationRequest {
        datasets: vec!["logs".into()],
        ..start_code("python-3.11", "print('with data')")
    };
    let t = evaluate(&mut client, s, SECS(60)).await;
    assert_eq!(t.stdout(), "with data\n", "{t:#?}");
    let runtimes = client
        .list_runtimes(proto::jsheets::ListRuntimesRequest {})
        .await
        .unwrap()
        .into_inner()
        .runtimes;
    let after = taken(&runtimes);
    assert_eq!((after.0, after.1), (before.0, before.1), "{after:?}");
    let t = evaluate(&mut client, start_code("python-3.11", "print(1)"), SECS(60)).await;
    assert_eq!(t.stdout(), "1\n", "{t:#?}");
    let runtimes = client
        .list_runtimes(proto::jsheets::ListRuntimesRequest {})
        .await
        .unwrap()
        .into_inner()
        .runtimes;
    assert_eq!(taken(&runtimes).0, before.0 + 1, "{runtimes:?}");
    // The waiting sandboxes go with the node.
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.wait_exit(SECS(20)).await.success());
    if let Err(left) = wait_sandbox_processes_gone(server.pid, false, SECS(5)).await {
        panic!("left behind 5 s after the node exited: {left:?}");
    }
}

#[tokio::test]
async fn eval_puts_files_and_writes_what_comes_back_in_the_output_dir() {
    let server = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("data.csv");
    std::fs::write(&input, b"x,y\n").unwrap();
    let out = tmp.path().join("got");
    let outcome = Command::new(BIN)
        .args(["eval", "--endpoint", &server.url(), "--runtime", "shell"])
        .args(["--file", &format!("{}:in/data.csv", input.display())])
        .args(["--file", &format!("{}:sub/.keep", input.display())])
        .args(["--get", "sub/*", "--output-dir", out.to_str().unwrap()])
        .args([
            "-e",
            "cd /work && cat in/data.csv in/data.csv > sub/twice.csv",
        ])
        .env_clear()
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&outcome.stderr);
    assert!(outcome.status.success(), "{stderr}");
    assert_eq!(
        std::fs::read(out.join("sub/twice.csv")).unwrap(),
        b"x,y\nx,y\n"
    );
    assert!(
        stderr.contains(&format!(
            "file: {} (8 bytes)",
            out.join("sub/twice.csv").display()
        )),
        "{stderr}"
    );
    // Hidden files match only patterns that name them so.
    assert!(!out.join("sub/.keep").exists());
    nothing_left(&server).await;
}

#[test]
fn run_puts_files_mounts_a_local_dataset_and_writes_what_comes_back() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("go.sh");
    std::fs::write(&script, b"#!/bin/sh\necho go-$1\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("d.txt"), b"dataset\n").unwrap();
    let out = tmp.path().join("out");
    let outcome = Command::new(BIN)
        .args(["run", "-r", "shell"])
        .args(["--file", script.to_str().unwrap()])
        .args(["--dataset", &format!("d={}", data.display())])
        .args(["--get", "*.txt", "--output-dir", out.to_str().unwrap()])
        .args([
            "-e",
            "cd /work && ./go.sh 1 > a.txt && cat /data/d/d.txt > b.txt",
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("JSHEETS_RUNTIME_RUNTIMES_DIR", runtimes_dir())
        .env("JSHEETS_RUNTIME_STATE_DIR", tmp.path().join("state"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&outcome.stderr);
    assert!(outcome.status.success(), "{stderr}");
    assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"go-1\n");
    assert_eq!(std::fs::read(out.join("b.txt")).unwrap(), b"dataset\n");
    assert!(stderr.contains("(5 bytes)"), "{stderr}");
}
