//! `jsheets-runtime soak`: the soak's arguments, its report (per case, then what the
//! node holds before and after) and its verdict. A node that serves for months must
//! come back to where it started after every kind of evaluation.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::remote::{NodeArgs, CONNECT_TIMEOUT};
use crate::soak::{cases, run_many, settled, Runtimes};

#[derive(Debug, Args)]
pub struct SoakArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Process id of the node, whose /proc entries and cgroups are sampled.
    #[arg(long)]
    pub pid: u32,
    /// Evaluations in all (after the warm-up).
    #[arg(long, default_value_t = 10_000)]
    pub count: usize,
    /// Evaluations before the first sample, so that the node's one-time caches
    /// (connections, pools, the allocator's arenas) are not counted as growth.
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    /// Evaluations in flight at once.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Seconds to wait after the last evaluation for sandboxes to be torn down.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub settle: f64,
    /// Python runtime (skipped when the node does not offer it).
    #[arg(long, default_value = "python-3.11")]
    pub python: String,
    /// Java runtime (skipped when the node does not offer it).
    #[arg(long, default_value = "openjdk-17")]
    pub java: String,
    /// Shell runtime, for the fork bomb (skipped when the node does not offer it).
    #[arg(long, default_value = "shell")]
    pub shell: String,
}

pub async fn run(args: SoakArgs) -> Result<ExitCode> {
    let channel = args
        .node
        .connect(CONNECT_TIMEOUT)
        .await
        .with_context(|| format!("cannot reach {}", args.node.endpoint))?;
    let offered: Vec<String> = client::list_runtimes(&channel, Duration::from_secs(10))
        .await?
        .into_iter()
        .map(|r| r.name)
        .collect();
    let runtimes = Runtimes {
        python: &args.python,
        java: &args.java,
        shell: &args.shell,
    };
    let mix = cases(runtimes, &offered);
    if mix.is_empty() {
        bail!(
            "the node offers none of {}, {}, {}",
            args.python,
            args.java,
            args.shell
        );
    }
    println!(
        "soak: {} evaluations ({} warm-up), concurrency {}, cases: {}",
        args.count,
        args.warmup,
        args.concurrency,
        mix.iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
    );
    run_many(&channel, &mix, args.warmup, args.concurrency).await;
    let settle = Duration::from_secs_f64(args.settle);
    let before = settled(args.pid, None, settle).await?;
    let started = Instant::now();
    let tally = run_many(&channel, &mix, args.count, args.concurrency).await;
    let elapsed = started.elapsed();
    let after = settled(args.pid, Some(&before), settle).await?;

    println!(
        "{:<26} {:>8} {:>10}  first mismatch",
        "case", "runs", "mismatch"
    );
    let per_case = tally
        .per_case
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let mut mismatches = 0;
    for (name, t) in &per_case {
        mismatches += t.mismatches;
        println!(
            "{name:<26} {:>8} {:>10}  {}",
            t.runs,
            t.mismatches,
            t.first.as_deref().unwrap_or("")
        );
    }
    let done = tally.done.load(Ordering::Relaxed);
    println!(
        "{done} evaluations in {:.1} s ({:.1}/s), {mismatches} not as expected",
        elapsed.as_secs_f64(),
        done as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    println!(
        "{:<12} {:>10} {:>10} {:>10}",
        "node holds", "before", "after", "change"
    );
    let row = |what: &str, b: i64, a: i64| {
        println!("{what:<12} {b:>10} {a:>10} {:>+10}", a - b);
    };
    row("rss KiB", before.rss_kib as i64, after.rss_kib as i64);
    row("open fds", before.fds as i64, after.fds as i64);
    row("processes", before.processes as i64, after.processes as i64);
    row("cgroups", before.cgroups as i64, after.cgroups as i64);
    row("mounts", before.mounts as i64, after.mounts as i64);

    let leaked = after.processes > before.processes
        || after.cgroups > before.cgroups
        || after.mounts > before.mounts
        || after.fds > before.fds;
    if leaked {
        println!("soak: the node holds more than before");
    }
    Ok(if mismatches > 0 || leaked || done < args.count {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
