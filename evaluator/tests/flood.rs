//! A sandbox that floods every channel it has (stdout, stderr, the driver's event
//! channel: garbage, endless lines, millions of small events, forged ids of 4 MiB,
//! huge values and diagnostics) makes only its own result worse: the node's memory does
//! not grow with what it writes. The supervisor runs in this process, so the test
//! process's own RSS is the node's.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Fixture, Run};
use evaluator::events::Bounds;
use evaluator::sandbox::{Limits, Status};
use evaluator::snippet::{Component, Output};

/// (VmRSS, VmHWM) of this process, in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets VmHWM to the current RSS (Linux: `5` in clear_refs).
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

const MIB: u64 = 1 << 20;

/// What the snippets share: the driver's event channel (the write-only pipe that is
/// neither stdout nor stderr) and a flood that says on stdout (a pipe the supervisor
/// reads apart) how much it wrote, every 8 MiB.
const PRELUDE: &str = r#"
import os
def _events_fd():
    for fd in range(3, 256):
        try:
            link = os.readlink("/proc/self/fd/%d" % fd)
            with open("/proc/self/fdinfo/%d" % fd) as f:
                flags = int(f.read().split("flags:")[1].split()[0], 8)
        except (OSError, IndexError, ValueError):
            continue
        if link.startswith("pipe:") and flags & 3 == os.O_WRONLY and fd > 2:
            return fd
    raise SystemExit("no event channel")
EV = _events_fd()
def flood(fd, blocks, total):
    written = step = 0
    i = 0
    while written < total:
        block = blocks[i % len(blocks)]
        i += 1
        n = os.write(fd, block)
        written += n
        step += n
        if step >= 8 << 20:
            os.write(1 if fd != 1 else 2, b"%d\n" % step)
            step = 0
    os.write(1 if fd != 1 else 2, b"%d\n" % step)
"#;

struct Flood {
    name: &'static str,
    code: String,
    /// What the evaluation must end with.
    status: Status,
    /// Whether the one report of dropped events is expected.
    report: bool,
}

fn flood(name: &'static str, code: &str, status: Status, report: bool) -> Flood {
    Flood {
        name,
        code: code.into(),
        status,
        report,
    }
}

fn floods() -> Vec<Flood> {
    let total = 400 * MIB;
    vec![
        flood(
            "garbage",
            &format!(
                "import random\nr = random.Random(1)\nblocks = [bytes(r.getrandbits(8) for _ in range(1 << 16)) * 16 for _ in range(4)]\nflood(EV, blocks, {total})"
            ),
            Status::OutputLimit,
            true,
        ),
        flood(
            "one endless line",
            &format!("flood(EV, [b'x' * (1 << 20)], {total})"),
            Status::OutputLimit,
            true,
        ),
        flood(
            "huge lines",
            &format!("flood(EV, [b'y' * (3 << 20) + b'\\n'], {total})"),
            Status::OutputLimit,
            true,
        ),
        flood(
            "millions of small events",
            &format!(
                "events = [b'{{\"event\":\"done\"}}\\n', b'{{\"event\":\"internal\",\"message\":\"x\"}}\\n', b'{{\"event\":\"value\",\"id\":\"c1\",\"repr\":\"1\"}}\\n', b'{{\"event\":\"start\",\"id\":\"c1\"}}\\n', b'{{\"event\":\"output\",\"stream\":\"stdout\",\"data\":\"\"}}\\n', b'\\n']\nflood(EV, [b''.join(events) * 1000], {total})"
            ),
            Status::OutputLimit,
            true,
        ),
        flood(
            "forged ids of 4 MiB",
            &format!(
                "line = b'{{\"event\":\"value\",\"id\":\"' + b'i' * (4 << 20) + b'\",\"repr\":\"x\"}}\\n'\nflood(EV, [line], {total})"
            ),
            Status::OutputLimit,
            true,
        ),
        // The review's attack: a start that sets a huge id, then unreadable lines
        // (each of which used to become an error record carrying a copy of the id).
        flood(
            "forged start, then garbage",
            &format!(
                "flood(EV, [b'{{\"event\":\"start\",\"id\":\"' + b's' * (1 << 20) + b'\"}}\\n', b'not json\\n' * (1 << 17)], {total})"
            ),
            Status::OutputLimit,
            true,
        ),
        flood(
            "forged ids of 512 KiB",
            &format!(
                "line = b'{{\"event\":\"exception\",\"id\":\"' + b'i' * (512 << 10) + b'\",\"type\":\"E\",\"message\":\"m\",\"traceback\":\"t\",\"line\":1}}\\n'\nflood(EV, [line], {total})"
            ),
            Status::OutputLimit,
            true,
        ),
        flood(
            "huge values and diagnostics",
            &format!(
                "v = b'{{\"event\":\"value\",\"id\":\"c1\",\"repr\":\"' + b'v' * (1 << 20) + b'\"}}\\n'\nd = b'{{\"event\":\"syntax_error\",\"id\":\"c1\",\"type\":\"K\",\"message\":\"' + b'm' * (1 << 20) + b'\",\"start\":0,\"end\":99999999}}\\n'\nflood(EV, [v, d], {total})"
            ),
            Status::OutputLimit,
            true,
        ),
        flood(
            "stdout",
            &format!("flood(1, [b'o' * (1 << 20)], {total})"),
            Status::OutputLimit,
            false,
        ),
        flood(
            "stderr",
            &format!("flood(2, [b'e' * (1 << 20)], {total})"),
            Status::OutputLimit,
            false,
        ),
        flood(
            "print",
            "import sys\nwhile True:\n    sys.stdout.write('p' * 60000 + '\\n')",
            Status::OutputLimit,
            false,
        ),
    ]
}

/// Bytes the snippet said it wrote to its flooded channel.
fn written(run: &Run, flooded_stdout: bool) -> u64 {
    run.outputs
        .iter()
        .filter_map(|o| match o {
            Output::Stdout { data, .. } if !flooded_stdout => Some(data),
            Output::Stderr { data, .. } if flooded_stdout => Some(data),
            _ => None,
        })
        .flat_map(|d| {
            String::from_utf8_lossy(d)
                .lines()
                .filter_map(|l| l.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

#[tokio::test]
async fn flooding_every_channel_does_not_grow_the_node() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    // No access list: the snippet has `os` and writes on the event channel directly.
    let launch = python.launch();
    let limits = Limits {
        wall_time: Duration::from_secs(120),
        cpu_time: Duration::from_secs(120),
        ..Limits::default()
    };
    let component = |code: &str| {
        vec![Component {
            id: "c1".into(),
            code: format!("{PRELUDE}\n{code}"),
        }]
    };
    let bounds = Bounds::for_request(&component(""), &limits);
    // Warm up: the runtime, the allocator, the first sandbox.
    let run = fx
        .eval_launch(&launch, component("print(EV)"), limits.clone())
        .await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    let (baseline, _) = memory();
    reset_peak();
    let mut total = 0u64;
    for f in floods() {
        let started = std::time::Instant::now();
        let run = fx
            .eval_launch(&launch, component(&f.code), limits.clone())
            .await;
        let (rss, peak) = memory();
        let wrote = written(&run, f.name == "stdout");
        total += wrote;
        eprintln!(
            "{:<28} {:>5} MiB written  {:>6.1} s  {:<14}  RSS {:+.1} MiB, peak {:+.1} MiB over the baseline",
            f.name,
            wrote / MIB,
            started.elapsed().as_secs_f64(),
            run.outcome.status.as_str(),
            (rss as f64 - baseline as f64) / MIB as f64,
            (peak as f64 - baseline as f64) / MIB as f64,
        );
        assert_eq!(run.outcome.status, f.status, "{}: {run:#?}", f.name);
        if f.report {
            // The snippet ran and flooded the event channel until it was stopped.
            assert!(wrote >= 16 * MIB, "{}: {run:#?}", f.name);
        }
        // Everything is the request's one component's, within its bounds.
        let mut records = 0;
        let mut reports = Vec::new();
        let (mut stdout, mut stderr) = (0, 0);
        for o in &run.outputs {
            match o {
                Output::Stdout { component, data } => {
                    assert_eq!(component, "c1");
                    stdout += data.len() as u64;
                }
                Output::Stderr { component, data } => {
                    assert_eq!(component, "c1");
                    stderr += data.len() as u64;
                }
                Output::Started { component } => assert_eq!(component, "c1"),
                Output::Value { component, text } => {
                    assert_eq!(component, "c1");
                    assert!(text.len() < 64 << 10, "{}", text.len());
                    records += 1;
                }
                Output::Diagnostic {
                    component,
                    message,
                    end,
                    ..
                } => {
                    assert_eq!(component, "c1");
                    assert!(message.len() < 64 << 10);
                    assert!(*end <= f.code.len() as u64 + PRELUDE.len() as u64 + 1);
                    records += 1;
                }
                Output::Internal { component, message } => {
                    assert_eq!(component, "c1");
                    assert!(message.len() < 64 << 10);
                    if message.starts_with("the driver's events exceeded") {
                        reports.push(message.clone());
                    }
                    records += 1;
                }
                Output::Exception { component, .. } | Output::Violation { component, .. } => {
                    assert_eq!(component, "c1");
                    records += 1;
                }
            }
        }
        assert!(stdout <= limits.output_bytes && stderr <= limits.output_bytes);
        assert!(
            records <= bounds.records + 1,
            "{}: {records} records",
            f.name
        );
        assert_eq!(
            reports.len(),
            usize::from(f.report),
            "{}: {reports:?}",
            f.name
        );
        drop(run);
    }
    let (rss, peak) = memory();
    eprintln!(
        "in all: {} MiB written; RSS {:+.1} MiB, peak {:+.1} MiB over the baseline of {:.1} MiB",
        total / MIB,
        (rss as f64 - baseline as f64) / MIB as f64,
        (peak as f64 - baseline as f64) / MIB as f64,
        baseline as f64 / MIB as f64
    );
    assert!(
        total >= 300 * MIB,
        "the floods wrote only {} MiB",
        total / MIB
    );
    assert!(
        peak.saturating_sub(baseline) < 32 * MIB,
        "the node grew by {} MiB while sandboxes wrote {} MiB",
        peak.saturating_sub(baseline) / MIB,
        total / MIB
    );
    fx.assert_clean().await;
}
