//! The sandbox benchmark: latency percentiles and throughput of our sandboxes, side
//! by side with baselines measured in the same run (a plain exec and bubblewrap),
//! printed as a table.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use evaluator::evaluate::evaluate_in;
use evaluator::lang::{JobError, Launch};
use evaluator::pool::{Pool, PoolError, PoolSettings};
use evaluator::runtime::Runtime;
use evaluator::sandbox::{Event, Job, Limits, Sandboxes, Status};
use evaluator::snippet::{Component, Output};
use tokio_util::sync::CancellationToken;

/// What stops a benchmark before its table is complete.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("starting a zygote")]
    Zygote(#[source] evaluator::sandbox::WaitError),
}

/// One measured scenario at one concurrency.
struct Row {
    name: String,
    concurrency: usize,
    latencies: Vec<Duration>,
    elapsed: Duration,
    failures: usize,
}

impl Row {
    fn print(&self) {
        let mut l = self.latencies.clone();
        l.sort();
        let pct = |p: f64| {
            if l.is_empty() {
                return f64::NAN;
            }
            let i = ((l.len() as f64 - 1.0) * p).round() as usize;
            l[i].as_secs_f64() * 1e3
        };
        let rate = l.len() as f64 / self.elapsed.as_secs_f64();
        println!(
            "{:<44} {:>4} {:>9.2} {:>9.2} {:>9.2} {:>10.1} {:>6}",
            self.name,
            self.concurrency,
            pct(0.5),
            pct(0.99),
            pct(1.0),
            rate,
            self.failures
        );
    }
}

/// One evaluation: whether it succeeded, and its latency when the work measures it
/// itself (pooled work leaves out waiting for the pool to refill).
type Work = Arc<
    dyn Fn()
            -> std::pin::Pin<Box<dyn std::future::Future<Output = (bool, Option<Duration>)> + Send>>
        + Send
        + Sync,
>;

async fn measure(name: &str, concurrency: usize, iterations: usize, work: Work) -> Row {
    // Warm caches (page cache, dentries) so the first sample is not an outlier.
    for _ in 0..3 {
        work().await;
    }
    let per_task = iterations.div_ceil(concurrency);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let work = work.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_task);
            let mut failures = 0;
            for _ in 0..per_task {
                let t = Instant::now();
                let (ok, own) = work().await;
                if !ok {
                    failures += 1;
                }
                lat.push(own.unwrap_or_else(|| t.elapsed()));
            }
            (lat, failures)
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    for t in tasks {
        if let Ok((l, f)) = t.await {
            latencies.extend(l);
            failures += f;
        }
    }
    Row {
        name: name.into(),
        concurrency,
        latencies,
        elapsed: start.elapsed(),
        failures,
    }
}

fn command_work(argv: Vec<String>) -> Work {
    Arc::new(move || {
        let argv = argv.clone();
        Box::pin(async move {
            let status = tokio::process::Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
            (status.map(|s| s.success()).unwrap_or(false), None)
        })
    })
}

fn sandbox_work(sandboxes: Arc<Sandboxes>, job: Job) -> Work {
    Arc::new(move || {
        let sandboxes = sandboxes.clone();
        let job = job.clone();
        Box::pin(async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(16);
            let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
            let framing = evaluator::events::Bounds::for_job(&job).framing;
            let outcome = sandboxes
                .run(job, framing, tx, CancellationToken::new())
                .await;
            let _ = drain.await;
            (outcome.status == Status::Ok, None)
        })
    })
}

/// Evaluates `code` through [`evaluate_in`] in a sandbox from `pool` (timed from the
/// hand-off: waiting for the pool to refill is left out), or cold without a pool.
fn evaluation_work(
    sandboxes: Arc<Sandboxes>,
    launch: Launch,
    code: &'static str,
    pool: Option<Pool>,
) -> Work {
    Arc::new(move || {
        let (sandboxes, launch, pool) = (sandboxes.clone(), launch.clone(), pool.clone());
        Box::pin(async move {
            // The request path only: the pool is full and quiet when the clock starts,
            // and refills (whose cgroup migration on v1 stalls every fork and exit on
            // the host for an RCU grace period) wait until the evaluation is done.
            let waiting = match &pool {
                Some(p) => {
                    while p.idle() < p.stats().size {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    p.set_paused(true);
                    p.take()
                }
                None => None,
            };
            let t = Instant::now();
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Output>(16);
            let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
            let components = [Component {
                id: "bench".into(),
                code: code.into(),
            }];
            let outcome = evaluate_in(
                &sandboxes,
                waiting,
                &launch,
                &components,
                Vec::new(),
                Limits::default(),
                Default::default(),
                tx,
                CancellationToken::new(),
            )
            .await;
            let _ = drain.await;
            let took = t.elapsed();
            if let Some(p) = &pool {
                p.set_paused(false);
            }
            let ok = outcome.is_ok_and(|o| o.status == Status::Ok);
            (ok, Some(took))
        })
    })
}

/// Gets one sandbox of `launch` warm and waiting (its interpreter started, or forked
/// from `zygote`): timed until it is ready, then destroyed (not timed). What a pool's
/// refill costs.
fn ready_work(
    sandboxes: Arc<Sandboxes>,
    launch: Launch,
    zygote: Option<Arc<evaluator::sandbox::zygote::Zygote>>,
) -> Work {
    Arc::new(move || {
        let (sandboxes, launch, zygote) = (sandboxes.clone(), launch.clone(), zygote.clone());
        Box::pin(async move {
            let cancel = CancellationToken::new();
            let t = Instant::now();
            let waiting = match &zygote {
                Some(z) => sandboxes.start_forked(z, &cancel).await,
                None => match evaluator::lang::waiting_job(&launch, Limits::default()) {
                    Ok(Some((job, preface))) => {
                        sandboxes.start_waiting(job, preface, &cancel).await
                    }
                    _ => return (false, None),
                },
            };
            let took = t.elapsed();
            match waiting {
                Ok(w) => {
                    w.destroy().await;
                    (true, Some(took))
                }
                Err(_) => (false, Some(took)),
            }
        })
    })
}

fn pool_of(sandboxes: &Arc<Sandboxes>, launch: &Launch, size: usize) -> Result<Pool, PoolError> {
    Pool::start(
        (**sandboxes).clone(),
        launch.clone(),
        PoolSettings {
            size,
            idle_limits: Limits::default(),
            max_age: Duration::from_secs(600),
            zygote: true,
        },
    )
}

/// `bwrap --unshare-all` running `program` on `runtime`'s files, mounted where a sandbox
/// has them: the baseline of a sandbox doing the same.
pub fn bwrap_argv(runtime: &Runtime, program: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = [
        "bwrap",
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (source, target) in runtime.launch().mounts {
        argv.extend([
            "--ro-bind".into(),
            source.display().to_string(),
            target.display().to_string(),
        ]);
    }
    argv.extend(
        [
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/work", "--chdir",
            "/work",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    argv.extend(program.iter().map(|s| s.to_string()));
    argv
}

/// The first file `name` in a directory of `PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Every scenario at every level of `concurrency`, `iterations` evaluations each, then
/// the cancellation latency; one printed row each. `shell` runs `/bin/true` and `:`,
/// `python` runs `print(1)`.
pub async fn run(
    sandboxes: Arc<Sandboxes>,
    shell: &Runtime,
    python: &Runtime,
    iterations: usize,
    concurrency: &[usize],
) -> Result<(), BenchError> {
    let bwrap = find_in_path("bwrap");

    let true_job = Job::new(shell.launch().mounts, vec!["/bin/true".into()]);
    let launch = python.launch();
    let py_job = evaluator::lang::job(
        &launch,
        &[Component {
            id: "bench".into(),
            code: "print(1)".into(),
        }],
        Vec::new(),
        Limits::default(),
    )?;
    let py_program = launch.program.clone();

    println!(
        "jsheets-runtime bench: {} iterations per row, cgroup {:?}, {} CPUs",
        iterations,
        sandboxes.cgroup_version(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "{:<44} {:>4} {:>9} {:>9} {:>9} {:>10} {:>6}",
        "scenario", "conc", "p50 ms", "p99 ms", "max ms", "evals/s", "failed"
    );
    for &c in concurrency {
        let n = iterations;
        measure(
            "true: plain exec on the host (no sandbox)",
            c,
            n,
            command_work(vec!["/bin/true".into()]),
        )
        .await
        .print();
        match &bwrap {
            Some(_) => measure(
                "true: bwrap --unshare-all",
                c,
                n,
                command_work(bwrap_argv(shell, &["/bin/true"])),
            )
            .await
            .print(),
            None => println!(
                "true: bwrap --unshare-all  (bwrap not installed: apt-get install bubblewrap)"
            ),
        }
        measure(
            "true: jsheets sandbox (cold)",
            c,
            n,
            sandbox_work(sandboxes.clone(), true_job.clone()),
        )
        .await
        .print();
        measure(
            "python print(1): host python3 -I -c",
            c,
            n,
            command_work(vec![
                py_host(&py_program),
                "-I".into(),
                "-c".into(),
                "print(1)".into(),
            ]),
        )
        .await
        .print();
        if bwrap.is_some() {
            measure(
                "python print(1): bwrap --unshare-all",
                c,
                n,
                command_work(bwrap_argv(python, &[&py_program, "-I", "-c", "print(1)"])),
            )
            .await
            .print();
        }
        measure(
            "python print(1): jsheets sandbox + driver (cold)",
            c,
            n,
            sandbox_work(sandboxes.clone(), py_job.clone()),
        )
        .await
        .print();
        // Pre-started sandboxes: from the hand-off (limits, code in) to the outcome.
        let shell_launch = shell.launch();
        measure(
            "noop (:): evaluation, cold sandbox",
            c,
            n,
            evaluation_work(sandboxes.clone(), shell_launch.clone(), ":", None),
        )
        .await
        .print();
        let pool = pool_of(&sandboxes, &shell_launch, c)?;
        measure(
            "noop (:): evaluation, pre-started sandbox",
            c,
            n,
            evaluation_work(
                sandboxes.clone(),
                shell_launch.clone(),
                ":",
                Some(pool.clone()),
            ),
        )
        .await
        .print();
        pool.shutdown().await;
        // What a refill costs: a sandbox made ready, its interpreter started or forked.
        measure(
            "python: ready to wait, interpreter started",
            c,
            n,
            ready_work(sandboxes.clone(), launch.clone(), None),
        )
        .await
        .print();
        match evaluator::lang::zygote_job(&launch, Limits::default())? {
            Some((job, preface)) => {
                let zygote = sandboxes
                    .start_zygote(job, preface, &CancellationToken::new())
                    .await
                    .map_err(BenchError::Zygote)?;
                measure(
                    "python: ready to wait, forked from a zygote",
                    c,
                    n,
                    ready_work(sandboxes.clone(), launch.clone(), Some(zygote)),
                )
                .await
                .print();
            }
            None => println!("python: no zygote for this runtime"),
        }
        let pool = pool_of(&sandboxes, &launch, c)?;
        measure(
            "python print(1): pre-started sandbox",
            c,
            n,
            evaluation_work(
                sandboxes.clone(),
                launch.clone(),
                "print(1)",
                Some(pool.clone()),
            ),
        )
        .await
        .print();
        pool.shutdown().await;
    }
    cancel_latency(&sandboxes, python, iterations.min(50)).await;
    Ok(())
}

/// Time from cancelling a running evaluation (a Python process asleep, with two
/// forked children) to the sandbox being gone: processes killed, cgroup removed.
async fn cancel_latency(sandboxes: &Sandboxes, python: &Runtime, n: usize) {
    let code = "import os, time\nos.fork()\nos.fork()\nprint('up', flush=True)\ntime.sleep(600)";
    let mut latencies = Vec::new();
    let mut failures = 0;
    let start = Instant::now();
    for _ in 0..n {
        let Ok(job) = evaluator::lang::job(
            &python.launch(),
            &[Component {
                id: "bench".into(),
                code: code.into(),
            }],
            Vec::new(),
            Limits::default(),
        ) else {
            failures += 1;
            continue;
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(16);
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        let watcher = tokio::spawn(async move {
            // Cancel once the snippet runs (its first output), then keep draining.
            let mut at = None;
            while let Some(e) = rx.recv().await {
                if at.is_none() && matches!(e, Event::Driver(_)) {
                    at = Some(Instant::now());
                    trigger.cancel();
                }
            }
            at
        });
        let framing = evaluator::events::Bounds::for_job(&job).framing;
        let outcome = sandboxes.run(job, framing, tx, cancel).await;
        let done = Instant::now();
        match watcher.await {
            Ok(Some(at)) if outcome.status == Status::Cancelled => latencies.push(done - at),
            _ => failures += 1,
        }
    }
    Row {
        name: "cancel: running python to sandbox gone".into(),
        concurrency: 1,
        latencies,
        elapsed: start.elapsed(),
        failures,
    }
    .print();
}

/// The host interpreter the runtime was built from, for the no-sandbox baseline.
fn py_host(program: &str) -> String {
    if Path::new(program).is_file() {
        program.into()
    } else {
        "python3".into()
    }
}
