//! The node benchmark: latency percentiles and throughput of a running node over
//! gRPC, from N concurrent loops of back-to-back evaluations, optionally beside a host
//! command measured the same way, with the share of requests its pools served; the
//! table both node benchmarks print.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{Channel, ClientError, Code, EvalRequest, Evaluated};
use proto::jsheets::RuntimeInfo;
use tokio::task::JoinSet;

/// Pause of a loop after a refused or failed call, so that fast refusals
/// (admission control, connection errors) do not turn it into a busy loop.
const FAILURE_PAUSE: Duration = Duration::from_millis(10);

/// How one evaluation went.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
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
pub struct Sample {
    latency: Duration,
    outcome: Outcome,
}

impl Sample {
    pub fn new(latency: Duration, outcome: Outcome) -> Self {
        Sample { latency, outcome }
    }
}

/// One evaluation, classified.
async fn evaluate_once(channel: &Channel, request: &EvalRequest, deadline: Duration) -> Sample {
    let started = Instant::now();
    let result = client::evaluate(channel, request, deadline, |_| {}).await;
    let latency = started.elapsed();
    let outcome = match result {
        Ok(e) if e.succeeded() => Outcome::Ok,
        Ok(e) => Outcome::NotOk(not_ok_reason(&e)),
        Err(e) if e.code() == Some(Code::ResourceExhausted) => Outcome::Exhausted(e.to_string()),
        Err(e) => Outcome::Other(e.to_string()),
    };
    Sample { latency, outcome }
}

/// Why a completed evaluation did not succeed: its status and its first error.
pub fn not_ok_reason(e: &Evaluated) -> String {
    let mut why = format!("status {}", e.status().as_str_name().to_ascii_lowercase());
    if let Some(err) = e.errors.first() {
        why.push_str(&format!(
            ", {}: {}",
            err.kind,
            err.message.lines().next().unwrap_or_default()
        ));
    }
    why
}

/// The measurements of one target at one concurrency level.
#[derive(Debug)]
pub struct Row {
    concurrency: usize,
    /// Latencies of successful evaluations, sorted.
    pub latencies: Vec<Duration>,
    elapsed: Duration,
    not_ok: usize,
    exhausted: usize,
    other: usize,
    /// The first reason of each failure kind.
    examples: Vec<(&'static str, String)>,
}

impl Row {
    /// A row of `samples` taken over `elapsed` at `concurrency`.
    pub fn new(concurrency: usize, samples: Vec<Sample>, elapsed: Duration) -> Row {
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

    /// How long the row took.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Evaluations that did not succeed, of every kind.
    pub fn failures(&self) -> usize {
        self.not_ok + self.exhausted + self.other
    }

    /// Evaluations started (successful or not).
    pub fn requests(&self) -> usize {
        self.latencies.len() + self.failures()
    }

    /// The row's line of the table (see [`header`]); `pool_hits` is a percentage,
    /// `None` where no pool was involved.
    pub fn line(&self, what: &str, runtime: &str, pool_hits: Option<f64>) -> String {
        let ms = |p: f64| {
            let v = self.percentile_ms(p);
            if v.is_nan() {
                "-".to_string()
            } else {
                format!("{v:.1}")
            }
        };
        let hits = pool_hits.map_or_else(|| "-".to_string(), |h| format!("{h:.0}"));
        format!(
            "{what:<12} {runtime:<12} {:>4} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8.1} {:>6} {hits:>11}",
            self.concurrency,
            self.latencies.len(),
            ms(0.5),
            ms(0.95),
            ms(0.99),
            ms(1.0),
            self.rate(),
            self.failures(),
        )
    }

    /// Prints the row's line, then how many failures of each kind and the first reason.
    pub fn print(&self, what: &str, runtime: &str, pool_hits: Option<f64>) {
        println!("{}", self.line(what, runtime, pool_hits));
        for (kind, why) in &self.examples {
            let n = match *kind {
                "not ok" => self.not_ok,
                "exhausted" => self.exhausted,
                _ => self.other,
            };
            println!("      {n} {kind}, first: {why}");
        }
    }
}

/// The header line of the table [`Row::line`] prints.
pub fn header() -> String {
    format!(
        "{:<12} {:<12} {:>4} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>11}",
        "what",
        "runtime",
        "conc",
        "ok",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "evals/s",
        "not-ok",
        "pool hits %"
    )
}

/// One run of a host command (`argv`): OK when it exits 0 within `deadline`.
async fn baseline_once(argv: &[String], deadline: Duration) -> Sample {
    let started = Instant::now();
    let Some((program, args)) = argv.split_first() else {
        return Sample {
            latency: Duration::ZERO,
            outcome: Outcome::Other("no command".into()),
        };
    };
    let run = tokio::process::Command::new(program)
        .args(args)
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
        Ok(Err(e)) => Outcome::Other(format!("running {program}: {e}")),
        Err(_) => Outcome::Other("deadline exceeded".into()),
    };
    Sample {
        latency: started.elapsed(),
        outcome,
    }
}

/// What a measurement loop does once.
#[derive(Debug, Clone)]
pub enum Target {
    Service(Channel, Arc<EvalRequest>),
    /// A host command: program and arguments.
    Host(Arc<[String]>),
}

impl Target {
    async fn once(&self, deadline: Duration) -> Sample {
        match self {
            Target::Service(channel, request) => evaluate_once(channel, request, deadline).await,
            Target::Host(argv) => baseline_once(argv, deadline).await,
        }
    }
}

/// Runs `concurrency` loops of back-to-back evaluations for `duration`, and returns
/// a row for each of `targets`. Each loop goes through the targets in turn, loop `i`
/// starting with target `i % targets.len()`, so that every target gets the same offered
/// load at every concurrency and one that waits on another shows it in its latencies.
/// A loop starts no evaluation after `duration`; each evaluation is bounded by
/// `deadline` and followed by `pause`.
pub async fn measure(
    targets: &[Target],
    concurrency: usize,
    duration: Duration,
    deadline: Duration,
    pause: Duration,
) -> Vec<Row> {
    let started = Instant::now();
    let end = started + duration;
    let mut loops = JoinSet::new();
    for i in 0..concurrency {
        let targets = targets.to_vec();
        loops.spawn(async move {
            let mut samples = Vec::new();
            let mut next = i;
            while Instant::now() < end && !targets.is_empty() {
                let which = next % targets.len();
                next += 1;
                let sample = targets[which].once(deadline).await;
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                let refused = matches!(sample.outcome, Outcome::Exhausted(_) | Outcome::Other(_));
                samples.push((which, sample));
                if refused {
                    tokio::time::sleep(FAILURE_PAUSE).await;
                }
            }
            samples
        });
    }
    let mut per_target: Vec<Vec<Sample>> = targets.iter().map(|_| Vec::new()).collect();
    while let Some(done) = loops.join_next().await {
        match done {
            Ok(s) => {
                for (which, sample) in s {
                    per_target[which].push(sample);
                }
            }
            Err(e) => {
                for samples in &mut per_target {
                    samples.push(Sample {
                        latency: Duration::ZERO,
                        outcome: Outcome::Other(format!("benchmark loop failed: {e}")),
                    });
                }
            }
        }
    }
    let elapsed = started.elapsed();
    per_target
        .into_iter()
        .map(|samples| Row::new(concurrency, samples, elapsed))
        .collect()
}

/// One runtime's pool on a node, as `ListRuntimes` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolCounter {
    pub size: u32,
    pub idle: u32,
    /// Requests served by a pre-started sandbox since the node started.
    pub taken: u64,
}

/// Every runtime's pool on a node (runtime name → counters), read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolCounters(pub BTreeMap<String, PoolCounter>);

impl PoolCounters {
    pub fn from_runtimes(runtimes: &[RuntimeInfo]) -> PoolCounters {
        PoolCounters(
            runtimes
                .iter()
                .map(|r| {
                    let counter = PoolCounter {
                        size: r.pool_size,
                        idle: r.pool_idle,
                        taken: r.pool_taken,
                    };
                    (r.name.clone(), counter)
                })
                .collect(),
        )
    }

    /// Reads a node's counters (`ListRuntimes`).
    pub async fn read(channel: &Channel) -> Result<PoolCounters, ClientError> {
        let runtimes = client::list_runtimes(channel, LIST_DEADLINE).await?;
        Ok(PoolCounters::from_runtimes(&runtimes))
    }

    /// True when every pool has all its sandboxes waiting.
    pub fn full(&self) -> bool {
        self.0.values().all(|p| p.idle >= p.size)
    }

    /// Percentage of `requests` for `runtime` that a pre-started sandbox served between
    /// these counters and `after`'s; `None` if the runtime has no pool or there were no
    /// requests.
    pub fn hit_rate(&self, after: &PoolCounters, runtime: &str, requests: usize) -> Option<f64> {
        let now = after.0.get(runtime).filter(|p| p.size > 0)?;
        if requests == 0 {
            return None;
        }
        let before = self.0.get(runtime).map_or(0, |p| p.taken);
        Some(now.taken.saturating_sub(before) as f64 * 100.0 / requests as f64)
    }
}

/// Deadline of a `ListRuntimes` call.
const LIST_DEADLINE: Duration = Duration::from_secs(10);

/// Waits, at most `limit`, until every pool of the node is full, so that each row starts
/// from the same state; returns the counters last read.
pub async fn wait_for_pools(
    channel: &Channel,
    limit: Duration,
) -> Result<PoolCounters, ClientError> {
    let give_up = Instant::now() + limit;
    loop {
        let counters = PoolCounters::read(channel).await?;
        if counters.full() || Instant::now() >= give_up {
            return Ok(counters);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, outcome: Outcome) -> Sample {
        Sample {
            latency: Duration::from_millis(ms),
            outcome,
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
        assert_eq!((row.failures(), row.requests()), (4, 104));
        let empty = Row::new(1, Vec::new(), Duration::from_secs(1));
        assert!(empty.percentile_ms(0.5).is_nan());
        assert_eq!(empty.rate(), 0.0);
    }

    #[tokio::test]
    async fn loops_take_the_targets_in_turn() {
        let host = |p: &str| Target::Host(Arc::from(vec![p.to_string()]));
        let rows = measure(
            &[host("/bin/true"), host("/bin/false")],
            2,
            Duration::from_millis(300),
            Duration::from_secs(10),
            Duration::ZERO,
        )
        .await;
        assert_eq!(rows.len(), 2);
        assert!(!rows[0].latencies.is_empty());
        assert_eq!(rows[0].failures(), 0);
        assert!(rows[1].latencies.is_empty());
        assert!(rows[1].not_ok > 0);
        // Each loop alternates, and the two start on different targets.
        assert!(rows[0].requests().abs_diff(rows[1].requests()) <= 2);
    }

    #[test]
    fn table_lines_line_up_with_the_header() {
        let samples = (1..=10).map(|ms| sample(ms, Outcome::Ok)).collect();
        let row = Row::new(2, samples, Duration::from_secs(1));
        let line = row.line("node", "python-3.11", Some(62.5));
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            fields,
            [
                "node",
                "python-3.11",
                "2",
                "10",
                "5.0",
                "10.0",
                "10.0",
                "10.0",
                "10.0",
                "0",
                "62"
            ]
        );
        assert_eq!(line.len(), header().len());
        assert!(header().ends_with("pool hits %"));
        let empty = Row::new(
            1,
            vec![sample(3, Outcome::Other("down".into()))],
            Duration::from_secs(1),
        );
        let fields: Vec<String> = empty
            .line("bwrap", "shell", None)
            .split_whitespace()
            .map(String::from)
            .collect();
        assert_eq!(
            fields,
            ["bwrap", "shell", "1", "0", "-", "-", "-", "-", "0.0", "1", "-"]
        );
    }

    #[test]
    fn hit_rate_is_the_share_of_requests_a_pool_served_during_the_row() {
        let info = |name: &str, size, idle, taken| RuntimeInfo {
            name: name.into(),
            pool_size: size,
            pool_idle: idle,
            pool_taken: taken,
            ..RuntimeInfo::default()
        };
        let before =
            PoolCounters::from_runtimes(&[info("python-3.11", 2, 2, 10), info("shell", 0, 0, 0)]);
        assert!(before.full());
        let after =
            PoolCounters::from_runtimes(&[info("python-3.11", 2, 0, 25), info("shell", 0, 0, 0)]);
        assert!(!after.full());
        assert_eq!(before.hit_rate(&after, "python-3.11", 60), Some(25.0));
        assert_eq!(before.hit_rate(&after, "python-3.11", 15), Some(100.0));
        // No pool, an unknown runtime, no requests: nothing to show.
        assert_eq!(before.hit_rate(&after, "shell", 60), None);
        assert_eq!(before.hit_rate(&after, "openjdk-17", 60), None);
        assert_eq!(before.hit_rate(&after, "python-3.11", 0), None);
        // A pool the first reading did not show counts from zero.
        assert_eq!(
            PoolCounters::default().hit_rate(&after, "python-3.11", 50),
            Some(50.0)
        );
    }
}
