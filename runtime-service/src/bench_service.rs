//! The node benchmark: latency percentiles and throughput of a running node over
//! gRPC, from N concurrent loops of back-to-back evaluations, optionally beside a host
//! command measured the same way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{Channel, Code, EvalRequest};
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

    /// One line of the table, then the first reason of each kind of failure.
    pub fn print(&self, what: &str) {
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
#[derive(Debug, Clone)]
pub enum Target {
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
pub async fn measure(
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
        let empty = Row::new(1, Vec::new(), Duration::from_secs(1));
        assert!(empty.percentile_ms(0.5).is_nan());
        assert_eq!(empty.rate(), 0.0);
    }
}
