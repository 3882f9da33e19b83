//! `jsheets-runtime bench-service`: latency percentiles and throughput of a running
//! node, measured over gRPC with N concurrent loops of back-to-back evaluations.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use client::{Channel, ClientError, Code, EvalRequest};
use tokio::task::JoinSet;

use super::remote::{exit_code, seconds, NodeArgs, CONNECT_TIMEOUT};
use crate::report::EX_USAGE;

/// Largest accepted `--concurrency` level.
const MAX_CONCURRENCY: usize = 10_000;
/// Pause of a loop after a refused or failed call, so that fast refusals
/// (admission control, connection errors) do not turn it into a busy loop.
const FAILURE_PAUSE: Duration = Duration::from_millis(10);

#[derive(Debug, Args)]
pub struct ServiceBenchArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Runtime to evaluate with.
    #[arg(long, short, default_value = "python-3.11")]
    pub runtime: String,
    /// Code of the (single-component) snippet evaluated each time.
    #[arg(long = "code", short = 'e', default_value = "print(1)")]
    pub code: String,
    /// Concurrency levels to measure, e.g. 1,4,16: one row each.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub concurrency: Vec<usize>,
    /// Seconds of evaluations per concurrency level.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub duration: f64,
    /// Deadline of each evaluation, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub timeout: f64,
    /// A host command (run with `sh -c`) measured the same way after each row, as the
    /// baseline: e.g. `jshell -R-Xshare:auto /tmp/one.jsh` for Java.
    #[arg(long, value_name = "COMMAND")]
    pub baseline: Option<String>,
    /// Pause of each loop after each evaluation, in milliseconds (not measured): an
    /// offered load below the maximum, e.g. one a node's pre-started sandboxes keep up with.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub pause: u64,
}

/// How one evaluation went.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// Completed with status OK and no errors.
    Ok,
    /// Completed, but with another status or with errors.
    NotOk(String),
    /// Refused with RESOURCE_EXHAUSTED (admission control).
    Exhausted(String),
    /// Any other failure: other gRPC statuses, deadline, connection, protocol.
    Other(String),
}

#[derive(Debug)]
struct Sample {
    latency: Duration,
    outcome: Outcome,
}

/// One evaluation, classified.
async fn evaluate_once(channel: &Channel, request: &EvalRequest, deadline: Duration) -> Sample {
    let started = Instant::now();
    let result = client::evaluate(channel, request, deadline, |_| {}).await;
    let latency = started.elapsed();
    let outcome = match result {
        Ok(e) if e.succeeded() => Outcome::Ok,
        Ok(e) => {
            let mut why = format!("status {}", e.status().as_str_name().to_ascii_lowercase());
            if let Some(err) = e.errors.first() {
                why.push_str(&format!(
                    ", {}: {}",
                    err.kind,
                    err.message.lines().next().unwrap_or_default()
                ));
            }
            Outcome::NotOk(why)
        }
        Err(e) if e.code() == Some(Code::ResourceExhausted) => Outcome::Exhausted(e.to_string()),
        Err(e) => Outcome::Other(e.to_string()),
    };
    Sample { latency, outcome }
}

/// The measurements of one concurrency level.
#[derive(Debug)]
struct Row {
    concurrency: usize,
    /// Latencies of successful evaluations, sorted.
    latencies: Vec<Duration>,
    elapsed: Duration,
    not_ok: usize,
    exhausted: usize,
    other: usize,
    /// The first reason of each failure kind.
    examples: Vec<(&'static str, String)>,
}

impl Row {
    fn new(concurrency: usize, samples: Vec<Sample>, elapsed: Duration) -> Row {
        let mut row = Row {
            concurrency,
            latencies: Vec::new(),
            elapsed,
            not_ok: 0,
            exhausted: 0,
            other: 0,
            examples: Vec::new(),
        };
        for s in samples {
            let (counter, kind, why) = match s.outcome {
                Outcome::Ok => {
                    row.latencies.push(s.latency);
                    continue;
                }
                Outcome::NotOk(why) => (&mut row.not_ok, "not ok", why),
                Outcome::Exhausted(why) => (&mut row.exhausted, "exhausted", why),
                Outcome::Other(why) => (&mut row.other, "other", why),
            };
            *counter += 1;
            if !row.examples.iter().any(|(k, _)| *k == kind) {
                row.examples.push((kind, why));
            }
        }
        row.latencies.sort();
        row
    }

    /// Latency at percentile `p` (0..=1, nearest rank), in ms; NaN without samples.
    fn percentile_ms(&self, p: f64) -> f64 {
        let n = self.latencies.len();
        if n == 0 {
            return f64::NAN;
        }
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
        self.latencies[rank - 1].as_secs_f64() * 1e3
    }

    /// Successful evaluations per second.
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn print(&self, what: &str) {
        let ms = |p: f64| {
            let v = self.percentile_ms(p);
            if v.is_nan() {
                "-".to_string()
            } else {
                format!("{v:.1}")
            }
        };
        println!(
            "{:>7} {:>5} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9.1} {:>7} {:>9} {:>6}",
            what,
            self.concurrency,
            self.latencies.len(),
            ms(0.5),
            ms(0.95),
            ms(0.99),
            ms(1.0),
            self.rate(),
            self.not_ok,
            self.exhausted,
            self.other,
        );
        for (kind, why) in &self.examples {
            println!("      first {kind}: {why}");
        }
    }
}

/// One run of the baseline command: OK when it exits 0 within `deadline`.
async fn baseline_once(command: &str, deadline: Duration) -> Sample {
    let started = Instant::now();
    let run = tokio::process::Command::new("/bin/sh")
        .args(["-c", command])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .output();
    let outcome = match tokio::time::timeout(deadline, run).await {
        Ok(Ok(out)) if out.status.success() => Outcome::Ok,
        Ok(Ok(out)) => Outcome::NotOk(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or_default()
        )),
        Ok(Err(e)) => Outcome::Other(format!("running /bin/sh: {e}")),
        Err(_) => Outcome::Other("deadline exceeded".into()),
    };
    Sample {
        latency: started.elapsed(),
        outcome,
    }
}

/// What a measurement loop does once.
#[derive(Clone)]
enum Target {
    Service(Channel, Arc<EvalRequest>),
    Host(Arc<str>),
}

impl Target {
    async fn once(&self, deadline: Duration) -> Sample {
        match self {
            Target::Service(channel, request) => evaluate_once(channel, request, deadline).await,
            Target::Host(command) => baseline_once(command, deadline).await,
        }
    }
}

/// Runs `concurrency` loops of back-to-back evaluations for `duration`. A loop
/// starts no evaluation after `duration`; each evaluation is bounded by `deadline`
/// and followed by `pause`.
async fn measure(
    target: &Target,
    concurrency: usize,
    duration: Duration,
    deadline: Duration,
    pause: Duration,
) -> Row {
    let started = Instant::now();
    let end = started + duration;
    let mut loops = JoinSet::new();
    for _ in 0..concurrency {
        let target = target.clone();
        loops.spawn(async move {
            let mut samples = Vec::new();
            while Instant::now() < end {
                let sample = target.once(deadline).await;
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                let refused = matches!(sample.outcome, Outcome::Exhausted(_) | Outcome::Other(_));
                samples.push(sample);
                if refused {
                    tokio::time::sleep(FAILURE_PAUSE).await;
                }
            }
            samples
        });
    }
    let mut samples = Vec::new();
    while let Some(done) = loops.join_next().await {
        match done {
            Ok(s) => samples.extend(s),
            Err(e) => samples.push(Sample {
                latency: Duration::ZERO,
                outcome: Outcome::Other(format!("benchmark loop failed: {e}")),
            }),
        }
    }
    Row::new(concurrency, samples, started.elapsed())
}

fn check(args: &ServiceBenchArgs) -> Result<(Duration, Duration)> {
    if args.concurrency.is_empty()
        || args
            .concurrency
            .iter()
            .any(|&c| c == 0 || c > MAX_CONCURRENCY)
    {
        bail!("every --concurrency level must be between 1 and {MAX_CONCURRENCY}");
    }
    Ok((
        seconds(args.duration, "duration")?,
        seconds(args.timeout, "timeout")?,
    ))
}

pub async fn run(args: ServiceBenchArgs) -> Result<ExitCode> {
    let (duration, deadline) = match check(&args) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("jsheets-runtime: {e:#}");
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    let endpoint = &args.node.endpoint;
    let fail = |e: &ClientError| {
        eprintln!("jsheets-runtime: {endpoint}: {e}");
        Ok(ExitCode::from(exit_code(e)))
    };
    let channel = match args.node.connect(CONNECT_TIMEOUT).await {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let request =
        Arc::new(EvalRequest::new(args.runtime.clone()).component("bench", args.code.clone()));

    // One evaluation first: it checks the runtime and the code, and warms the node.
    let warm_up = match client::evaluate(&channel, &request, deadline, |_| {}).await {
        Ok(e) => e,
        Err(e) => return fail(&e),
    };
    if !warm_up.succeeded() {
        eprintln!(
            "jsheets-runtime: warning: the warm-up evaluation ended with status {}{}",
            warm_up.status().as_str_name().to_ascii_lowercase(),
            warm_up
                .errors
                .first()
                .map(|e| format!(
                    " ({}: {})",
                    e.kind,
                    e.message.lines().next().unwrap_or_default()
                ))
                .unwrap_or_default()
        );
    }
    let c = &warm_up.completion;
    let runtime = c
        .runtime
        .as_ref()
        .map(|r| format!("{}@{}", r.name, r.version))
        .unwrap_or_else(|| args.runtime.clone());
    println!(
        "jsheets-runtime bench-service: {endpoint} (node {}), runtime {runtime}, code {:?}, \
         {:.0} s per row, deadline {:.0} s",
        if c.service_id.is_empty() {
            "?"
        } else {
            &c.service_id
        },
        args.code,
        duration.as_secs_f64(),
        deadline.as_secs_f64(),
    );
    if let Some(b) = &args.baseline {
        println!("baseline (rows marked host): sh -c {b:?}");
    }
    println!(
        "{:>7} {:>5} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>6}",
        "what",
        "conc",
        "ok",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "ok/s",
        "not-ok",
        "exhausted",
        "other"
    );
    let mut every_row_ok = true;
    let service = Target::Service(channel, request);
    let host = args.baseline.as_deref().map(|b| Target::Host(b.into()));
    for &concurrency in &args.concurrency {
        let pause = Duration::from_millis(args.pause);
        let row = measure(&service, concurrency, duration, deadline, pause).await;
        row.print("service");
        every_row_ok &= !row.latencies.is_empty();
        if let Some(host) = &host {
            let row = measure(host, concurrency, duration, deadline, pause).await;
            row.print("host");
            every_row_ok &= !row.latencies.is_empty();
        }
    }
    Ok(if every_row_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        args: ServiceBenchArgs,
    }

    fn sample(ms: u64, outcome: Outcome) -> Sample {
        Sample {
            latency: Duration::from_millis(ms),
            outcome,
        }
    }

    #[test]
    fn arguments() {
        let args = Cmd::try_parse_from(["bench-service"]).unwrap().args;
        assert_eq!(args.runtime, "python-3.11");
        assert_eq!(args.code, "print(1)");
        assert_eq!(args.concurrency, [1]);
        assert_eq!(
            check(&args).unwrap(),
            (Duration::from_secs(10), Duration::from_secs(30))
        );
        let args =
            Cmd::try_parse_from(["bench-service", "--concurrency", "1,4", "--duration", "2"])
                .unwrap()
                .args;
        assert_eq!(args.concurrency, [1, 4]);
        assert_eq!(check(&args).unwrap().0, Duration::from_secs(2));
        for argv in [
            &["bench-service", "--concurrency", "0"][..],
            &["bench-service", "--duration", "0"],
        ] {
            let args = Cmd::try_parse_from(argv).unwrap().args;
            assert!(check(&args).is_err(), "{argv:?}");
        }
    }

    #[test]
    fn rows() {
        let mut samples: Vec<Sample> = (1..=100).map(|ms| sample(ms, Outcome::Ok)).collect();
        samples.push(sample(1, Outcome::Exhausted("busy".into())));
        samples.push(sample(1, Outcome::Exhausted("busy again".into())));
        samples.push(sample(5, Outcome::NotOk("status wall_timeout".into())));
        samples.push(sample(5, Outcome::Other("no answer".into())));
        let row = Row::new(4, samples, Duration::from_secs(2));
        assert_eq!(row.percentile_ms(0.5), 50.0);
        assert_eq!(row.percentile_ms(0.95), 95.0);
        assert_eq!(row.percentile_ms(0.99), 99.0);
        assert_eq!(row.percentile_ms(1.0), 100.0);
        assert_eq!(row.rate(), 50.0);
        assert_eq!((row.not_ok, row.exhausted, row.other), (1, 2, 1));
        assert_eq!(row.examples.len(), 3);
        assert_eq!(row.examples[0], ("exhausted", "busy".to_string()));
        let empty = Row::new(1, Vec::new(), Duration::from_secs(1));
        assert!(empty.percentile_ms(0.5).is_nan());
        assert_eq!(empty.rate(), 0.0);
    }
}
