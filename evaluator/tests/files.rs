//! Files into and out of `/work`, and read-only datasets (root required): files go in
//! before the code runs, owned by the sandbox's user, in a fresh sandbox and in one
//! started ahead; what comes back is read through `/work` as the sandbox's init
//! opened it, never through a link, and only regular files, within their caps, whatever
//! the code planted.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use common::Fixture;
use evaluator::evaluate::RequestData;
use evaluator::lang::Launch;
use evaluator::pool::Pool;
use evaluator::sandbox::files::{Files, InputFile, Oversize, ReturnedFile, Wanted};
use evaluator::sandbox::{Limits, Status};
use evaluator::snippet::Component;
use tokio_util::sync::CancellationToken;

fn one(code: &str) -> Vec<Component> {
    vec![Component {
        id: "c".into(),
        code: code.into(),
    }]
}

fn wanted(patterns: &[&str]) -> Wanted {
    Wanted {
        patterns: patterns.iter().map(|p| p.to_string()).collect(),
        max_file_bytes: 1 << 20,
        max_total_bytes: 4 << 20,
        max_files: 1000,
        oversize: Oversize::Truncate,
    }
}

fn input(path: &str, content: &[u8], executable: bool) -> InputFile {
    InputFile {
        path: path.into(),
        content: content.to_vec(),
        executable,
    }
}

async fn python(fx: &Fixture) -> Launch {
    let mut launch = fx.runtime("python-3.11").await.launch();
    launch.access_list = None;
    launch
}

async fn run(
    fx: &Fixture,
    waiting: Option<evaluator::sandbox::Waiting>,
    launch: &Launch,
    code: &str,
    data: RequestData,
) -> common::Run {
    fx.run_with(
        waiting,
        launch,
        one(code),
        Vec::new(),
        Limits::default(),
        data,
        CancellationToken::new(),
    )
    .await
}

fn file<'a>(files: &'a [ReturnedFile], path: &str) -> &'a ReturnedFile {
    files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("{path} not returned: {files:?}"))
}

const ROUNDTRIP: &str = r#"
import os, stat, subprocess
st = os.stat("in/data.csv")
print("owner", st.st_uid == os.getuid(), st.st_gid == os.getgid(), oct(stat.S_IMODE(st.st_mode)))
print("script", oct(stat.S_IMODE(os.stat("bin/run.sh").st_mode)))
os.makedirs("out/deep", exist_ok=True)
rows = open("in/data.csv").read().split()
open("out/sum.txt", "w").write(str(sum(int(r) for r in rows)))
open("out/deep/rows.txt", "w").write(str(len(rows)))
open("out/skip.log", "w").write("not asked for")
"#;

/// The same request in a fresh sandbox, in one started ahead and in one forked from a
/// zygote.
#[tokio::test]
async fn files_go_in_before_the_code_and_come_back_after_it() {
    let fx = Fixture::new();
    let launch = python(&fx).await;
    assert!(
        common::zygote_library().is_some(),
        "cargo build -p zygote-lib"
    );
    let started = Pool::start(
        fx.sandboxes.clone(),
        launch.clone(),
        common::pool_settings(1, false),
    )
    .unwrap();
    let forked = Pool::start(
        fx.sandboxes.clone(),
        launch.clone(),
        common::pool_settings(1, true),
    )
    .unwrap();
    for ahead in [None, Some(&started), Some(&forked)] {
        let started_ahead = ahead.is_some();
        let waiting = match ahead {
            Some(pool) => Some(common::take_waiting(pool).await),
            None => None,
        };
        let data = RequestData {
            files: Files {
                put: vec![
                    input("in/data.csv", b"1\n2\n39\n", false),
                    input("bin/run.sh", b"#!/bin/sh\necho hi\n", true),
                ],
                get: Some(wanted(&["out/*.txt", "out/**/rows.txt", "missing.txt"])),
            },
            datasets: Vec::new(),
        };
        let r = run(&fx, waiting, &launch, ROUNDTRIP, data).await;
        assert_eq!(r.outcome.status, Status::Ok, "{r:?}");
        assert_eq!(
            r.stdout(),
            "owner True True 0o644\nscript 0o755\n",
            "ahead {started_ahead}"
        );
        let files = &r.outcome.files;
        let sum = file(files, "out/sum.txt");
        assert_eq!((sum.content.as_slice(), sum.size), (&b"42"[..], 2));
        assert_eq!(file(files, "out/deep/rows.txt").content, b"3");
        assert_eq!(
            file(files, "missing.txt").error.as_deref(),
            Some("no such file")
        );
        assert!(files.iter().all(|f| f.path != "out/skip.log"), "{files:?}");
    }
    assert!(forked.stats().forked > 0, "{:?}", forked.stats());
    started.shutdown().await;
    forked.shutdown().await;
    fx.assert_clean().await;
}

/// Everything a snippet can plant in its output directory to make the node read
/// something else: links to host files and to `/proc` of the supervisor, a linked
/// directory, a FIFO (which would block a reader), a socket, a hard link, a sparse
/// file claiming a terabyte. Only the sandbox's own regular files come back, and no
/// byte of a host file.
const PLANT: &str = r#"
import os, socket
os.makedirs("out", exist_ok=True)
os.symlink("/etc/passwd", "out/passwd")
os.symlink("/proc/1/environ", "out/environ")
os.symlink("/proc/self/root/etc/shadow", "out/shadow")
os.symlink("/etc", "out/etc")
os.symlink("../../../../etc/hostname", "out/up")
os.mkfifo("out/fifo")
s = socket.socket(socket.AF_UNIX); s.bind("out/sock")
open("out/real.txt", "w").write("mine")
os.link("out/real.txt", "out/hard.txt")
with open("out/sparse.bin", "wb") as f:
    f.seek(1 << 40)
    f.write(b"x")
try:
    os.mknod("out/dev", 0o600 | 0o020000, os.makedev(1, 3))
    print("mknod allowed")
except OSError as e:
    print("mknod refused")
"#;

#[tokio::test]
async fn nothing_planted_in_work_makes_the_node_read_elsewhere() {
    let fx = Fixture::new();
    let launch = python(&fx).await;
    let data = RequestData {
        files: Files {
            put: Vec::new(),
            get: Some(wanted(&["out/*", "out/etc/passwd"])),
        },
        datasets: Vec::new(),
    };
    let r = run(&fx, None, &launch, PLANT, data).await;
    assert_eq!(r.outcome.status, Status::Ok, "{r:?}");
    assert_eq!(r.stdout(), "mknod refused\n");
    let files = &r.outcome.files;
    for link in [
        "out/passwd",
        "out/environ",
        "out/shadow",
        "out/etc",
        "out/up",
    ] {
        let f = file(files, link);
        assert_eq!(
            (f.error.as_deref(), f.content.len()),
            (Some("a symbolic link (not followed)"), 0),
            "{link}"
        );
    }
    assert_eq!(
        file(files, "out/fifo").error.as_deref(),
        Some("a FIFO, not a regular file")
    );
    assert_eq!(
        file(files, "out/sock").error.as_deref(),
        Some("a socket, not a regular file")
    );
    // Not entered through the link: the named file is simply not in /work.
    assert_eq!(
        file(files, "out/etc/passwd").error.as_deref(),
        Some("no such file")
    );
    assert_eq!(file(files, "out/real.txt").content, b"mine");
    assert_eq!(file(files, "out/hard.txt").content, b"mine");
    let sparse = file(files, "out/sparse.bin");
    assert_eq!(sparse.size, (1 << 40) + 1);
    assert_eq!(sparse.content.len(), 1 << 20);
    assert!(sparse.truncated);
    let host_passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let first_line = host_passwd.lines().next().unwrap().as_bytes();
    for f in files {
        assert!(
            !f.content.windows(first_line.len()).any(|w| w == first_line),
            "{} carries a host file",
            f.path
        );
    }
    fx.assert_clean().await;
}

const BIG: &str = r#"
import os
os.makedirs("out", exist_ok=True)
open("out/a.bin", "wb").write(b"a" * 3_000_000)
open("out/b.bin", "wb").write(b"b" * 500_000)
open("out/c.bin", "wb").write(b"c" * 10)
"#;

/// Per-file and total caps, truncating or refusing as asked.
#[tokio::test]
async fn files_over_their_caps_are_truncated_or_refused_as_asked() {
    let fx = Fixture::new();
    let launch = python(&fx).await;
    for oversize in [Oversize::Truncate, Oversize::Refuse] {
        let mut get = wanted(&["out/*.bin"]);
        get.max_file_bytes = 1_000_000;
        get.max_total_bytes = 1_200_000;
        get.oversize = oversize;
        let data = RequestData {
            files: Files {
                put: Vec::new(),
                get: Some(get),
            },
            datasets: Vec::new(),
        };
        let r = run(&fx, None, &launch, BIG, data).await;
        assert_eq!(r.outcome.status, Status::Ok, "{r:?}");
        let files = &r.outcome.files;
        let (a, b, c) = (
            file(files, "out/a.bin"),
            file(files, "out/b.bin"),
            file(files, "out/c.bin"),
        );
        assert_eq!((a.size, b.size, c.size), (3_000_000, 500_000, 10));
        match oversize {
            Oversize::Truncate => {
                // a: its cap; b: what is left of the total; c: nothing left.
                assert_eq!((a.content.len(), a.truncated), (1_000_000, true));
                assert_eq!((b.content.len(), b.truncated), (200_000, true));
                assert_eq!((c.content.len(), c.truncated), (0, true));
            }
            Oversize::Refuse => {
                assert!(a.content.is_empty() && a.error.as_ref().unwrap().contains("per file"));
                assert_eq!((b.content.len(), b.error.as_deref()), (500_000, None));
                assert_eq!((c.content.len(), c.error.as_deref()), (10, None));
            }
        }
        let total: usize = files.iter().map(|f| f.content.len()).sum();
        assert!(total <= 1_200_000);
    }
    fx.assert_clean().await;
}

/// A sandbox that makes a hundred thousand files costs the node a bounded walk and a
/// bounded answer.
#[tokio::test]
async fn a_huge_number_of_small_files_is_a_bounded_answer() {
    let fx = Fixture::new();
    let launch = python(&fx).await;
    let mut get = wanted(&["**"]);
    get.max_files = 500;
    let data = RequestData {
        files: Files {
            put: Vec::new(),
            get: Some(get),
        },
        datasets: Vec::new(),
    };
    let code = r#"
import os
for d in range(100):
    os.makedirs(f"many/{d}", exist_ok=True)
    for i in range(1000):
        open(f"many/{d}/{i}", "w").close()
print("made")
"#;
    // Making the files takes a second of CPU here, minutes in an emulated guest.
    let limits = Limits {
        wall_time: std::time::Duration::from_secs(60),
        cpu_time: std::time::Duration::from_secs(60) * common::time_scale(),
        ..Limits::default()
    };
    let r = fx
        .run_with(
            None,
            &launch,
            one(code),
            Vec::new(),
            limits,
            data,
            CancellationToken::new(),
        )
        .await;
    assert_eq!(r.outcome.status, Status::Ok, "{r:?}");
    assert_eq!(r.stdout(), "made\n");
    assert_eq!(r.outcome.files.len(), 500);
    fx.assert_clean().await;
}

/// Files of a run stopped by a limit still come back; a name that would leave /work
/// (the service refuses it first) is refused by the kernel's resolution too, and the
/// code never runs.
#[tokio::test]
async fn a_stopped_run_returns_its_files_and_no_name_leaves_work() {
    let fx = Fixture::new();
    let launch = python(&fx).await;
    let data = RequestData {
        files: Files {
            put: Vec::new(),
            get: Some(wanted(&["partial.txt"])),
        },
        datasets: Vec::new(),
    };
    let limits = Limits {
        wall_time: std::time::Duration::from_secs(2),
        ..Limits::default()
    };
    let r = fx
        .run_with(
            None,
            &launch,
            one("open('partial.txt','w').write('so far')\nimport time\ntime.sleep(60)"),
            Vec::new(),
            limits,
            data,
            CancellationToken::new(),
        )
        .await;
    assert_eq!(r.outcome.status, Status::WallTimeout, "{r:?}");
    assert_eq!(file(&r.outcome.files, "partial.txt").content, b"so far");

    let outside = std::env::temp_dir().join(format!("jsheets-escape-{}", std::process::id()));
    for name in ["../escape", "/tmp/escape", "a/../../escape"] {
        let data = RequestData {
            files: Files {
                put: vec![input(name, b"x", false)],
                get: None,
            },
            datasets: Vec::new(),
        };
        let r = run(&fx, None, &launch, "print('ran')", data).await;
        assert_eq!(r.outcome.status, Status::SetupFailed, "{name}: {r:?}");
        assert_eq!(r.stdout(), "", "{name}");
    }
    assert!(!outside.exists());
    fx.assert_clean().await;
}

/// A dataset is there to read, and nothing on it can be written or run.
#[tokio::test]
async fn a_dataset_is_read_only_and_runs_nothing() {
    let fx = Fixture::new();
    let launch = python(&fx).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("prices.csv"), "a,1\nb,2\n").unwrap();
    let script = dir.path().join("tool.sh");
    std::fs::write(&script, "#!/bin/sh\necho ran\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let code = r#"
import os, subprocess
print(open("/data/prices/prices.csv").read().split())
for what, f in [("write", lambda: open("/data/prices/new", "w")),
                ("overwrite", lambda: open("/data/prices/prices.csv", "a")),
                ("run", lambda: subprocess.run(["/data/prices/tool.sh"]))]:
    try:
        f()
        print(what, "allowed")
    except OSError as e:
        print(what, e.errno)
print(sorted(os.listdir("/data")))
print([l.split()[5] for l in open("/proc/self/mountinfo") if " /data/prices " in l])
"#;
    let data = RequestData {
        files: Files::default(),
        datasets: vec![(PathBuf::from(dir.path()), "prices".into())],
    };
    let r = run(&fx, None, &launch, code, data).await;
    assert_eq!(r.outcome.status, Status::Ok, "{r:?}");
    let out = r.stdout();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "['a,1', 'b,2']");
    // EROFS for writes, EACCES for exec on a noexec mount.
    assert_eq!(
        &lines[1..4],
        ["write 30", "overwrite 30", "run 13"],
        "{out}"
    );
    assert_eq!(lines[4], "['prices']");
    let options = lines[5];
    for flag in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(options.contains(flag), "{flag} missing: {options}");
    }
    assert!(
        !out.contains(dir.path().to_str().unwrap()),
        "host path shown: {out}"
    );
    fx.assert_clean().await;
}
