//! Metrics pushed to InfluxDB every `monitoring.influx.step` seconds: jsheets'
//! measurements with their names and fields (existing dashboards keep working), and
//! measurements tagged by service id, runtime and status.
//!
//! Recording is an in-memory update under a short lock; pushing runs in its own
//! task, so a slow or absent InfluxDB never touches evaluations. Points wait in a
//! bounded buffer while InfluxDB is unreachable; beyond the bound the oldest are
//! dropped and counted (`jsheets_runtime_metrics dropped_points`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::config::InfluxConfig;

/// Everything known about one finished evaluation.
#[derive(Debug, Clone)]
pub struct EvaluationRecord {
    pub runtime: String,
    /// The completion status, e.g. `ok`, `wall_timeout`.
    pub status: &'static str,
    pub outcome: Verdict,
    pub wall: Duration,
    pub cpu: Duration,
    pub peak_memory: u64,
    pub queue_wait: Duration,
    pub setup: Duration,
    pub access_denials: u64,
    /// `timeout`, `cpu`, `memory`, `output`, `processes` when a limit ended it.
    pub limit: Option<&'static str>,
}

/// jsheets' three-way classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Completed without errors.
    Successful,
    /// Completed with errors in user code (diagnostics, exceptions, limits).
    Erroneous,
    /// An internal failure or an access-list violation.
    Failed,
}

#[derive(Debug, Default)]
struct Samples {
    wall_ms: Vec<f64>,
    queue_ms: Vec<f64>,
    setup_ms: Vec<f64>,
    cpu_ms_sum: f64,
    peak_memory_max: u64,
}

/// What happened since the last push.
#[derive(Debug, Default)]
struct Window {
    successful: u64,
    erroneous: u64,
    failed: u64,
    durations_ms: Vec<f64>,
    by_runtime_status: BTreeMap<(String, &'static str), Samples>,
    denials: BTreeMap<String, u64>,
    limits: BTreeMap<(String, &'static str), u64>,
    rejected: u64,
    queued: u64,
}

/// The node's metrics; cheap to share.
#[derive(Debug)]
pub struct Metrics {
    service_id: String,
    window: Mutex<Window>,
    dropped: AtomicU64,
    /// Sandboxes started since the last push (jsheets' `fork_startedBoxes`).
    started_boxes: AtomicU64,
}

/// Gauges read at push time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub active_evaluations: usize,
    pub live_sandboxes: usize,
    pub idle_sandboxes: usize,
}

/// A runtime's pool of pre-started sandboxes, at push time.
#[derive(Debug, Clone, Default)]
pub struct PoolGauge {
    pub runtime: String,
    pub size: usize,
    pub idle: usize,
    /// Since the node started.
    pub taken: u64,
    pub misses: u64,
    pub replaced: u64,
    /// Lanes started for many-input requests.
    pub lanes: u64,
    /// Java: compiled by the compile host, given no program by it, hosts started.
    pub compiled: u64,
    pub compile_fallbacks: u64,
    pub compile_host_starts: u64,
}

impl Metrics {
    pub fn new(service_id: &str) -> Arc<Metrics> {
        Arc::new(Metrics {
            service_id: service_id.to_owned(),
            window: Mutex::new(Window::default()),
            dropped: AtomicU64::new(0),
            started_boxes: AtomicU64::new(0),
        })
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn sandbox_started(&self) {
        self.started_boxes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejected(&self) {
        self.window().rejected += 1;
    }

    pub fn record(&self, r: &EvaluationRecord) {
        let mut w = self.window();
        match r.outcome {
            Verdict::Successful => w.successful += 1,
            Verdict::Erroneous => w.erroneous += 1,
            Verdict::Failed => w.failed += 1,
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        w.durations_ms.push(ms(r.wall));
        if r.queue_wait > Duration::from_millis(1) {
            w.queued += 1;
        }
        let s = w
            .by_runtime_status
            .entry((r.runtime.clone(), r.status))
            .or_default();
        s.wall_ms.push(ms(r.wall));
        s.queue_ms.push(ms(r.queue_wait));
        s.setup_ms.push(ms(r.setup));
        s.cpu_ms_sum += ms(r.cpu);
        s.peak_memory_max = s.peak_memory_max.max(r.peak_memory);
        if r.access_denials > 0 {
            *w.denials.entry(r.runtime.clone()).or_default() += r.access_denials;
        }
        if let Some(limit) = r.limit {
            *w.limits.entry((r.runtime.clone(), limit)).or_default() += 1;
        }
    }

    /// The points of the window that ends now, in line protocol (ms precision), and a
    /// fresh window.
    pub fn take_points(&self, gauges: Gauges, pools: &[PoolGauge], now_ms: u128) -> Vec<String> {
        let w = std::mem::take(&mut *self.window());
        let id = tag_value(&self.service_id);
        let mut lines = Vec::new();
        let mut line = |measurement: &str, tags: &str, fields: String| {
            lines.push(format!(
                "{measurement},service_id={id}{tags} {fields} {now_ms}"
            ));
        };
        // jsheets' measurements.
        let gauge = ",metric_type=gauge";
        let counter = ",metric_type=counter";
        line(
            "jsheets_runtime_evaluation_activeEvaluations",
            gauge,
            format!("value={}", gauges.active_evaluations),
        );
        for (name, value) in [
            ("successfulEvaluations", w.successful),
            ("erroneousEvaluations", w.erroneous),
            ("failedEvaluations", w.failed),
        ] {
            line(
                &format!("jsheets_runtime_evaluation_{name}"),
                counter,
                format!("value={value}"),
            );
        }
        let count = w.durations_ms.len();
        let sum: f64 = w.durations_ms.iter().sum();
        let upper = w.durations_ms.iter().copied().fold(0.0, f64::max);
        let mean = if count == 0 { 0.0 } else { sum / count as f64 };
        line(
            "jsheets_runtime_evaluation_duration",
            ",metric_type=histogram",
            format!("sum={sum:.3},count={count}i,mean={mean:.3},upper={upper:.3}"),
        );
        line(
            "jsheets_runtime_evaluation_fork_activeBoxCount",
            gauge,
            format!("value={}", gauges.live_sandboxes),
        );
        line(
            "jsheets_runtime_evaluation_fork_startedBoxes",
            counter,
            format!("value={}", self.started_boxes.swap(0, Ordering::Relaxed)),
        );
        // Ours.
        for ((runtime, status), mut s) in w.by_runtime_status {
            let tags = format!(
                ",runtime={},status={}",
                tag_value(&runtime),
                tag_value(status)
            );
            line(
                "jsheets_runtime_evaluations",
                &tags,
                format!(
                    "count={}i,wall_ms_p50={:.3},wall_ms_p95={:.3},wall_ms_p99={:.3},cpu_ms_sum={:.3},peak_memory_bytes_max={}i,queue_wait_ms_p50={:.3},setup_ms_p50={:.3}",
                    s.wall_ms.len(),
                    percentile(&mut s.wall_ms, 0.5),
                    percentile(&mut s.wall_ms, 0.95),
                    percentile(&mut s.wall_ms, 0.99),
                    s.cpu_ms_sum,
                    s.peak_memory_max,
                    percentile(&mut s.queue_ms, 0.5),
                    percentile(&mut s.setup_ms, 0.5),
                ),
            );
        }
        line(
            "jsheets_runtime_admission",
            "",
            format!("rejected={}i,queued={}i", w.rejected, w.queued),
        );
        for (runtime, n) in w.denials {
            line(
                "jsheets_runtime_access",
                &format!(",runtime={}", tag_value(&runtime)),
                format!("denials={n}i"),
            );
        }
        for ((runtime, limit), n) in w.limits {
            line(
                "jsheets_runtime_limits",
                &format!(",runtime={},limit={limit}", tag_value(&runtime)),
                format!("hits={n}i"),
            );
        }
        line(
            "jsheets_runtime_sandboxes",
            "",
            format!(
                "live={}i,idle={}i",
                gauges.live_sandboxes, gauges.idle_sandboxes
            ),
        );
        for p in pools {
            line(
                "jsheets_runtime_pool",
                &format!(",runtime={}", tag_value(&p.runtime)),
                format!(
                    "size={}i,idle={}i,taken={}i,misses={}i,replaced={}i,lanes={}i,\
                     compiled={}i,compile_fallbacks={}i,compile_host_starts={}i",
                    p.size,
                    p.idle,
                    p.taken,
                    p.misses,
                    p.replaced,
                    p.lanes,
                    p.compiled,
                    p.compile_fallbacks,
                    p.compile_host_starts
                ),
            );
        }
        line(
            "jsheets_runtime_metrics",
            "",
            format!("dropped_points={}i", self.dropped.load(Ordering::Relaxed)),
        );
        lines
    }
}

/// Nearest-rank percentile; 0 for no samples.
fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// A tag value escaped for line protocol (commas, spaces, equals signs).
fn tag_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, ',' | ' ' | '=' | '\\') {
            out.push('\\');
        }
        if c.is_control() {
            out.push('_');
        } else {
            out.push(c);
        }
    }
    if out.is_empty() {
        out.push('-');
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("building the InfluxDB client")]
    Client(#[source] reqwest::Error),
    #[error("writing to InfluxDB: {0}")]
    Write(String),
    #[error("{0}")]
    Url(String),
}

/// Where points go.
#[derive(Debug)]
enum Sink {
    /// InfluxDB 2: `/api/v2/write` with org, bucket and token.
    V2 {
        client: influxdb2::Client,
        org: String,
        bucket: String,
    },
    /// InfluxDB 1: `/write?db=` with optional user and password.
    V1 {
        client: reqwest::Client,
        url: String,
        db: String,
        user: Option<(String, String)>,
    },
}

impl Sink {
    fn new(config: &InfluxConfig, timeout: Duration) -> Result<Sink, MetricsError> {
        let http = || {
            reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(5)))
        };
        let base = config.uri.trim_end_matches('/').to_owned();
        // influxdb2 panics on a URL it cannot parse: refuse it here, clearly.
        reqwest::Url::parse(&base).map_err(|e| {
            MetricsError::Url(format!("monitoring.influx.uri {base:?} is not a URL: {e}"))
        })?;
        Ok(match &config.org {
            Some(org) => Sink::V2 {
                client: influxdb2::ClientBuilder::with_builder(
                    http(),
                    base,
                    org.clone(),
                    config
                        .auth_token
                        .as_ref()
                        .map(|t| t.expose().to_owned())
                        .unwrap_or_default(),
                )
                .build()
                .map_err(|e| MetricsError::Write(e.to_string()))?,
                org: org.clone(),
                bucket: config.bucket.clone(),
            },
            None => Sink::V1 {
                client: http().build().map_err(MetricsError::Client)?,
                url: format!("{base}/write"),
                db: config.db.clone(),
                user: match (&config.user_name, &config.password) {
                    (Some(u), Some(p)) => Some((u.clone(), p.expose().to_owned())),
                    _ => None,
                },
            },
        })
    }

    /// Writes `body` (line protocol). Errors never carry credentials.
    async fn write(&self, body: String) -> Result<(), MetricsError> {
        match self {
            Sink::V2 {
                client,
                org,
                bucket,
            } => client
                .write_line_protocol_with_precision(
                    org,
                    bucket,
                    body,
                    influxdb2::api::write::TimestampPrecision::Milliseconds,
                )
                .await
                .map_err(|e| MetricsError::Write(redact(&e.to_string()))),
            Sink::V1 {
                client,
                url,
                db,
                user,
            } => {
                let mut req = client
                    .post(url)
                    .query(&[("db", db.as_str()), ("precision", "ms")])
                    .body(body);
                if let Some((u, p)) = user {
                    req = req.basic_auth(u, Some(p));
                }
                let resp = req
                    .send()
                    .await
                    .map_err(|e| MetricsError::Write(redact(&e.without_url().to_string())))?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(MetricsError::Write(format!("HTTP {}", resp.status())))
                }
            }
        }
    }
}

/// Error texts may quote the request; nothing after a credential-looking key stays.
fn redact(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    for key in ["token", "password", "authorization", "p="] {
        if let Some(i) = lower.find(key) {
            return format!("{} <redacted>", &text[..i]);
        }
    }
    text.to_owned()
}

/// Pushes every `step` until `stop`; returns when stopped (after a last push).
pub async fn push_loop(
    metrics: Arc<Metrics>,
    config: InfluxConfig,
    gauges: impl Fn() -> (Gauges, Vec<PoolGauge>) + Send + 'static,
    stop: CancellationToken,
) -> Result<(), MetricsError> {
    let step = Duration::from_secs(config.step.max(1));
    let sink = Sink::new(&config, step.min(Duration::from_secs(10)))?;
    let mut buffer: VecDeque<String> = VecDeque::new();
    let cap = config.buffer_points.max(1);
    let mut failing = false;
    let mut tick = tokio::time::interval(step);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.cancelled() => true,
        };
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let (g, pools) = gauges();
        buffer.extend(metrics.take_points(g, &pools, now_ms));
        while buffer.len() > cap {
            buffer.pop_front();
            metrics.dropped.fetch_add(1, Ordering::Relaxed);
        }
        let body = buffer.iter().fold(String::new(), |mut b, l| {
            b.push_str(l);
            b.push('\n');
            b
        });
        match sink.write(body).await {
            Ok(()) => {
                buffer.clear();
                if failing {
                    tracing::info!("influx: writing again");
                    failing = false;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, buffered = buffer.len(), "influx: write failed; buffering (bounded)");
                    failing = true;
                }
            }
        }
        if last {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: &'static str, outcome: Verdict, wall_ms: u64) -> EvaluationRecord {
        EvaluationRecord {
            runtime: "python-3.11".into(),
            status,
            outcome,
            wall: Duration::from_millis(wall_ms),
            cpu: Duration::from_millis(wall_ms / 2),
            peak_memory: 5 << 20,
            queue_wait: Duration::ZERO,
            setup: Duration::from_millis(2),
            access_denials: u64::from(outcome == Verdict::Failed),
            limit: (status == "wall_timeout").then_some("timeout"),
        }
    }

    #[test]
    fn points_carry_jsheets_names_and_our_tags() {
        let m = Metrics::new("node 1");
        m.record(&record("ok", Verdict::Successful, 10));
        m.record(&record("ok", Verdict::Successful, 30));
        m.record(&record("ok", Verdict::Failed, 20));
        m.record(&record("wall_timeout", Verdict::Erroneous, 1000));
        m.rejected();
        m.sandbox_started();
        let pools = [PoolGauge {
            runtime: "python-3.11".into(),
            size: 2,
            idle: 1,
            taken: 5,
            misses: 1,
            replaced: 0,
            lanes: 3,
            compiled: 7,
            compile_fallbacks: 2,
            compile_host_starts: 1,
        }];
        let lines = m.take_points(
            Gauges {
                active_evaluations: 2,
                live_sandboxes: 3,
                idle_sandboxes: 1,
            },
            &pools,
            1_700_000_000_000,
        );
        let find = |prefix: &str| -> &str {
            lines
                .iter()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("{prefix} missing in {lines:#?}"))
        };
        assert_eq!(
            find("jsheets_runtime_evaluation_activeEvaluations,"),
            "jsheets_runtime_evaluation_activeEvaluations,service_id=node\\ 1,metric_type=gauge value=2 1700000000000"
        );
        assert!(find("jsheets_runtime_evaluation_successfulEvaluations,").contains(" value=2 "));
        assert!(find("jsheets_runtime_evaluation_failedEvaluations,").contains(" value=1 "));
        assert!(find("jsheets_runtime_evaluation_erroneousEvaluations,").contains(" value=1 "));
        assert!(find("jsheets_runtime_evaluation_duration,")
            .contains("sum=1060.000,count=4i,mean=265.000,upper=1000.000"));
        assert!(find("jsheets_runtime_evaluation_fork_startedBoxes,").contains(" value=1 "));
        let ok =
            find("jsheets_runtime_evaluations,service_id=node\\ 1,runtime=python-3.11,status=ok ");
        assert!(ok.contains("count=3i,wall_ms_p50=20.000,"), "{ok}");
        assert!(find("jsheets_runtime_access,").contains("denials=1i"));
        assert!(find("jsheets_runtime_limits,").contains("limit=timeout hits=1i"));
        assert!(find("jsheets_runtime_admission,").contains("rejected=1i"));
        assert!(find("jsheets_runtime_sandboxes,").contains("live=3i,idle=1i"));
        assert!(
            find("jsheets_runtime_pool,service_id=node\\ 1,runtime=python-3.11 ").contains(
                "size=2i,idle=1i,taken=5i,misses=1i,replaced=0i,lanes=3i,\
                     compiled=7i,compile_fallbacks=2i,compile_host_starts=1i"
            )
        );
        // The window starts over.
        let again = m.take_points(Gauges::default(), &[], 1);
        assert!(again.iter().any(|l| l
            .starts_with("jsheets_runtime_evaluation_successfulEvaluations,")
            && l.contains(" value=0 ")));
        assert!(!again
            .iter()
            .any(|l| l.starts_with("jsheets_runtime_evaluations,")));
    }

    #[test]
    fn an_unparsable_uri_is_an_error_not_a_panic() {
        let config = InfluxConfig {
            uri: "http://[::1".into(),
            org: Some("o".into()),
            ..InfluxConfig::default()
        };
        let err = Sink::new(&config, Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("is not a URL"), "{err}");
    }

    #[test]
    fn percentiles_and_escaping() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&mut v, 0.5), 3.0);
        assert_eq!(percentile(&mut v, 0.99), 5.0);
        assert_eq!(percentile(&mut [], 0.5), 0.0);
        assert_eq!(tag_value("a,b c=d"), "a\\,b\\ c\\=d");
        assert_eq!(tag_value(""), "-");
        assert_eq!(
            redact("error sending request for url (http://x/write?token=abc)"),
            "error sending request for url (http://x/write? <redacted>"
        );
    }
}
