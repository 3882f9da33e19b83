//! The Docker image and compose file users run, as a fleet: run by `scripts/ci-docker`
//! against `docker-compose up --scale runtime=3` with deploy/ci/docker's override, and
//! ignored otherwise. Nodes, ZooKeeper and the Influx stand-in are reached by their names
//! on the compose network, which the script resolves for this process (a private
//! /etc/hosts), so that the fleet client uses the addresses the nodes register.
//!
//! Environment (set by the script):
//! - `JSHEETS_CI_DOCKER_NODES`: the runtime containers' host names, comma separated;
//! - `JSHEETS_CI_DOCKER_ZOOKEEPER`: ZooKeeper's connection string;
//! - `JSHEETS_CI_DOCKER_INFLUX`: the Influx stand-in's URL (VictoriaMetrics);
//! - `JSHEETS_CI_DOCKER_KILL`, `JSHEETS_CI_DOCKER_STOP`: the node to kill, to stop;
//! - `JSHEETS_CI_DOCKER`: the docker client (with `DOCKER_HOST`).

#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{evaluate, Channel, EvalRequest, Evaluated, Fleet, FleetOptions};
use proto::jsheets::completion::Status;
use proto::jsheets::evaluation_result::Kind;
use proto::jsheets::Limits;
use serde_json::Value;

const BASE: &str = "/jsheets/services/runtime";
const DETAILS: &str = "/jsheets/runtime-nodes";
/// The nodes' `zookeeper.sessionTimeoutMs` (the default, which the compose file keeps).
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// ZooKeeper expires sessions on its tick (2 s in the stand-in, as in the official
/// image): a dead node's session may outlive the timeout by up to a tick or two.
const EXPIRY_SLACK: Duration = Duration::from_secs(4);
const EVAL: Duration = Duration::from_secs(60);

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/ci-docker"))
}

fn hosts() -> Vec<String> {
    env("JSHEETS_CI_DOCKER_NODES")
        .split(',')
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn zookeeper() -> zookeeper_client::Client {
    let connection = env("JSHEETS_CI_DOCKER_ZOOKEEPER");
    tokio::time::timeout(
        Duration::from_secs(20),
        zookeeper_client::Client::connector()
            .with_session_timeout(Duration::from_secs(10))
            .connect(&connection),
    )
    .await
    .unwrap_or_else(|_| panic!("connecting to ZooKeeper at {connection} timed out"))
    .unwrap()
}

/// Every registration under [`BASE`]: znode name → Curator's `ServiceInstance` JSON.
async fn registrations(zk: &zookeeper_client::Client) -> BTreeMap<String, Value> {
    let mut found = BTreeMap::new();
    let Ok(children) = zk.list_children(BASE).await else {
        return found;
    };
    for child in children {
        if let Ok((data, _)) = zk.get_data(&format!("{BASE}/{child}")).await {
            found.insert(child, serde_json::from_slice(&data).unwrap());
        }
    }
    found
}

/// The service id each host registered as, once every host has exactly one registration
/// and nothing else is registered; panics after `limit` showing what is there.
async fn registered_ids(
    zk: &zookeeper_client::Client,
    hosts: &[String],
    limit: Duration,
) -> BTreeMap<String, String> {
    let deadline = Instant::now() + limit;
    loop {
        let all = registrations(zk).await;
        let mut ids = BTreeMap::new();
        for (id, instance) in &all {
            if let Some(address) = instance["address"].as_str() {
                if hosts.iter().any(|h| h == address) {
                    ids.insert(address.to_owned(), id.clone());
                }
            }
        }
        if ids.len() == hosts.len() && all.len() == hosts.len() {
            return ids;
        }
        assert!(
            Instant::now() < deadline,
            "expected one registration per node ({hosts:?}) within {limit:?}; registered: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// When `path` stopped existing, polling every 50 ms; `None` if it still exists after
/// `limit`.
async fn wait_gone(zk: &zookeeper_client::Client, path: &str, limit: Duration) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        if matches!(zk.check_stat(path).await, Ok(None)) {
            return Some(Instant::now());
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn channel(host: &str) -> Channel {
    client::connect(&format!("http://{host}:8080"), None, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("connecting to {host}:8080: {e}"))
}

fn python(code: &str) -> EvalRequest {
    EvalRequest::new("python-3.11").component("c1", code)
}

fn with_limits(mut request: EvalRequest, limits: Limits) -> EvalRequest {
    request.limits = Some(limits);
    request
}

async fn run(channel: &Channel, request: &EvalRequest) -> Evaluated {
    evaluate(channel, request, EVAL, |_| {})
        .await
        .unwrap_or_else(|e| panic!("evaluating {:?}: {e}", request.components))
}

/// Everything the snippet wrote to stdout (live output and the final response).
fn stdout(e: &Evaluated) -> String {
    e.responses
        .iter()
        .filter(|r| r.completion.is_none())
        .flat_map(|r| &r.result)
        .filter(|r| r.kind() == Kind::Info)
        .map(|r| r.output.as_str())
        .collect()
}

/// The values of the final response (`42` for `6 * 7`).
fn values(e: &Evaluated) -> Vec<&str> {
    e.results
        .iter()
        .filter(|r| r.kind() == Kind::Info && !r.output.is_empty())
        .map(|r| r.output.trim())
        .collect()
}

fn usage(e: &Evaluated) -> String {
    let c = &e.completion;
    format!(
        "{:?}, wall {} ms, cpu {} ms, peak {:.1} MiB",
        e.status(),
        c.wall_time_ms,
        c.cpu_time_ms,
        c.peak_memory_bytes as f64 / f64::from(1 << 20)
    )
}

/// The value of `key:` in /proc/<pid>/status text.
fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key} in /proc/self/status:\n{status}"))
}

/// Per node: gRPC, registration, Python and Java, the access list, the memory and
/// process limits, usage figures, the sandbox as seen from inside; then the metrics of
/// every node in the Influx stand-in.
#[tokio::test]
#[ignore = "run by scripts/ci-docker against a compose fleet"]
async fn every_node_serves_registers_and_sandboxes() {
    let hosts = hosts();
    let zk = zookeeper().await;
    let ids = registered_ids(&zk, &hosts, Duration::from_secs(30)).await;
    let mut report = Vec::new();
    for host in &hosts {
        let id = &ids[host];
        // Curator's layout, as jsheets' backend reads it.
        let (data, _) = zk.get_data(&format!("{BASE}/{id}")).await.unwrap();
        let instance: Value = serde_json::from_slice(&data).unwrap();
        let object = instance.as_object().unwrap();
        assert_eq!(object.get("payload"), Some(&Value::Null), "{instance}");
        assert_eq!(instance["name"], "runtime", "{instance}");
        assert_eq!(instance["id"], id.as_str(), "{instance}");
        assert_eq!(instance["port"], 8080, "{instance}");
        assert_eq!(instance["serviceType"], "DYNAMIC", "{instance}");
        let (details, _) = zk.get_data(&format!("{DETAILS}/{id}")).await.unwrap();
        let details: Value = serde_json::from_slice(&details).unwrap();
        let offered = details.to_string();
        assert!(
            offered.contains("python-3.11") && offered.contains("openjdk-17"),
            "{details}"
        );
        report.push(format!(
            "{host}: registered as {id} with payload null ({})",
            String::from_utf8_lossy(&data)
        ));

        let ch = channel(host).await;
        // Python, two components sharing state.
        let e = run(
            &ch,
            &EvalRequest::new("python-3.11")
                .component("c1", "x = 6\nprint('hello')")
                .component("c2", "x * 7"),
        )
        .await;
        assert!(e.succeeded(), "{e:#?}");
        assert_eq!(stdout(&e), "hello\n", "{e:#?}");
        assert_eq!(values(&e), ["42"], "{e:#?}");
        assert_eq!(e.completion.service_id, *id, "{e:#?}");
        assert!(e.completion.cpu_time_ms > 0, "no CPU time: {e:#?}");
        assert!(e.completion.peak_memory_bytes > 0, "no peak memory: {e:#?}");
        report.push(format!("  python ok: {}", usage(&e)));

        // Files in and out of /work: the node has no capability over files in its
        // container, so it does this as the sandbox's user.
        let e = run(
            &ch,
            &python(
                "import os\nrows = open('in/data.csv').read().split()\n\
                 os.makedirs('out', exist_ok=True)\n\
                 open('out/sum.txt', 'w').write(str(sum(map(int, rows))))\n\
                 os.chmod('out/sum.txt', 0o600)\n\
                 os.symlink('/etc/passwd', 'out/passwd')",
            )
            .file("in/data.csv", b"1\n2\n39\n".to_vec(), false)
            .get("out/*"),
        )
        .await;
        assert!(e.succeeded(), "{e:#?}");
        let sum = e.files.iter().find(|f| f.path == "out/sum.txt");
        assert_eq!(
            sum.map(|f| f.content.as_slice()),
            Some(&b"42"[..]),
            "{e:#?}"
        );
        let link = e.files.iter().find(|f| f.path == "out/passwd");
        assert!(
            link.is_some_and(|f| f.content.is_empty() && f.error.is_some()),
            "{e:#?}"
        );
        report.push("  files in and out of /work ok (a planted link refused)".to_string());

        // One program, many inputs: the runs go through lanes in the container too,
        // and none sees what another left in /tmp or /work.
        let lanes = |runtimes: Vec<proto::jsheets::RuntimeInfo>| {
            runtimes
                .iter()
                .find(|r| r.name == "python-3.11")
                .map_or(0, |r| r.pool_lanes)
        };
        let before = lanes(client::list_runtimes(&ch, EVAL).await.unwrap());
        let mut request = python(
            "import os, sys\n\
             seen = os.listdir('/tmp') + os.listdir('/work')\n\
             open('/tmp/t', 'w').write('x')\n\
             open('/work/w', 'w').write('x')\n\
             print(int(sys.stdin.read()) * 2, seen)",
        );
        for i in 0..6 {
            request = request.input(i.to_string(), Some(format!("{} []\n", i * 2).into_bytes()));
        }
        let e = run(&ch, &request).await;
        assert!(e.succeeded(), "{e:#?}");
        assert_eq!(e.runs.len(), 6, "{e:#?}");
        for r in &e.runs {
            assert_eq!(
                r.result.r#match(),
                proto::jsheets::input_result::Match::Matched,
                "{e:#?}"
            );
        }
        let after = lanes(client::list_runtimes(&ch, EVAL).await.unwrap());
        assert!(after > before, "no lane: {before} then {after}");
        report.push(format!("  6 inputs ok, in {} lanes", after - before));

        // Java (JShell), under java-default.
        let e = run(
            &ch,
            &EvalRequest::new("openjdk-17")
                .component("c1", "int x = 41;")
                .component("c2", "System.out.println(\"hi\"); x + 1"),
        )
        .await;
        assert_eq!(e.status(), Status::Ok, "{e:#?}");
        assert!(e.errors.is_empty(), "{e:#?}");
        assert!(stdout(&e).contains("hi"), "{e:#?}");
        assert!(values(&e).contains(&"42"), "{e:#?}");
        assert!(e.completion.cpu_time_ms > 0, "no CPU time: {e:#?}");
        report.push(format!("  java ok: {}", usage(&e)));
        let e = run(
            &ch,
            &EvalRequest::new("openjdk-17").component("c1", "System.exit(3);"),
        )
        .await;
        assert!(
            e.errors.iter().any(|x| x.kind == "sandbox"),
            "System.exit not denied by java-default: {e:#?}"
        );
        report.push("  java-default denies System.exit".into());

        // Java through the pool's compile host once it is up (until then the pool
        // counts no replay ready, and requests run as whole JShells, as above).
        let java = |runtimes: Vec<proto::jsheets::RuntimeInfo>| {
            runtimes
                .into_iter()
                .find(|r| r.name == "openjdk-17")
                .expect("openjdk-17 is installed")
        };
        let end = std::time::Instant::now() + std::time::Duration::from_secs(180);
        loop {
            let j = java(client::list_runtimes(&ch, EVAL).await.unwrap());
            if j.pool_idle > 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < end,
                "the Java pool's compile host never got up: {j:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let before = java(client::list_runtimes(&ch, EVAL).await.unwrap()).pool_compiled;
        let e = run(
            &ch,
            &EvalRequest::new("openjdk-17").component("c1", "System.out.println(6 * 7);"),
        )
        .await;
        assert_eq!(e.status(), Status::Ok, "{e:#?}");
        assert!(stdout(&e).contains("42"), "{e:#?}");
        let after = java(client::list_runtimes(&ch, EVAL).await.unwrap()).pool_compiled;
        assert!(
            after > before,
            "not compiled by the compile host: {before} then {after}"
        );
        report.push(format!(
            "  java compiled by the pool's compile host: {}",
            usage(&e)
        ));

        // A memory hog, at the limit, with its peak.
        let e = run(
            &ch,
            &with_limits(
                python("x = bytearray(512 << 20)\nprint('survived')"),
                Limits {
                    memory_bytes: 64 << 20,
                    ..Limits::default()
                },
            ),
        )
        .await;
        assert_eq!(e.status(), Status::MemoryLimit, "{e:#?}");
        assert!(!stdout(&e).contains("survived"), "{e:#?}");
        assert!(
            e.completion.peak_memory_bytes > 32 << 20,
            "peak memory not reported: {e:#?}"
        );
        report.push(format!("  memory hog (64 MiB): {}", usage(&e)));

        // A process bomb (the CI override lifts Python's access list; the sandbox holds).
        let bomb = "import os, time\n\
                    while True:\n    \
                        try:\n        \
                            if os.fork() == 0:\n            \
                                time.sleep(60)\n            \
                                os._exit(0)\n    \
                        except OSError:\n        \
                            time.sleep(0.01)";
        let e = run(
            &ch,
            &with_limits(
                python(bomb),
                Limits {
                    max_processes: 8,
                    wall_time_ms: 3000,
                    ..Limits::default()
                },
            ),
        )
        .await;
        assert_eq!(e.status(), Status::ProcessLimit, "{e:#?}");
        report.push(format!("  process bomb (8): {}", usage(&e)));

        // The sandbox from inside.
        let probe = "import os\n\
                     print(open('/proc/self/status').read())\n\
                     print('--cgroup--')\n\
                     print(open('/proc/self/cgroup').read())";
        let e = run(&ch, &python(probe)).await;
        assert!(e.succeeded(), "{e:#?}");
        let out = stdout(&e);
        let (status, cgroup) = out.split_once("--cgroup--").unwrap();
        let uid = status_field(status, "Uid");
        assert!(
            uid.split_whitespace().all(|u| u != "0"),
            "the sandbox runs as root: Uid {uid}"
        );
        assert_eq!(status_field(status, "CapEff"), "0000000000000000");
        assert_eq!(status_field(status, "CapPrm"), "0000000000000000");
        assert_eq!(status_field(status, "Seccomp"), "2");
        assert_eq!(status_field(status, "NoNewPrivs"), "1");
        let lines: Vec<&str> = cgroup.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!lines.is_empty(), "{out}");
        for line in &lines {
            assert!(
                line.ends_with(":/"),
                "/proc/self/cgroup not rooted at the sandbox: {line}\n{cgroup}"
            );
        }
        report.push(format!(
            "  sandbox: uid {}, CapEff 0, Seccomp 2, NoNewPrivs 1, cgroup view rooted at itself ({} hierarchies)",
            uid.split_whitespace().next().unwrap_or_default(),
            lines.len()
        ));
    }

    // Metrics: each node's CPU and peak-memory figures reach the Influx stand-in.
    let influx = env("JSHEETS_CI_DOCKER_INFLUX");
    let http = reqwest::Client::new();
    for host in &hosts {
        let id = &ids[host];
        let deadline = Instant::now() + Duration::from_secs(60);
        let (cpu, memory, ok) = loop {
            let _ = http
                .get(format!("{influx}/internal/force_flush"))
                .send()
                .await;
            let body = http
                .get(format!("{influx}/api/v1/export"))
                .query(&[("match[]", format!("{{service_id=\"{id}\"}}"))])
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let sum = |name: &str| -> f64 {
                body.lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .filter(|v| v["metric"]["__name__"] == name)
                    .flat_map(|v| {
                        v["values"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                            .into_iter()
                            .filter_map(|x| x.as_f64())
                    })
                    .fold(0.0, f64::max)
            };
            let figures = (
                sum("jsheets_runtime_evaluations_cpu_ms_sum"),
                sum("jsheets_runtime_evaluations_peak_memory_bytes_max"),
                sum("jsheets_runtime_evaluation_successfulEvaluations_value"),
            );
            if figures.0 > 0.0 && figures.1 > 0.0 && figures.2 > 0.0 {
                break figures;
            }
            assert!(
                Instant::now() < deadline,
                "no CPU, memory or success figures of {host} ({id}) in the Influx stand-in \
                 within 60 s: {figures:?}\n{body}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        report.push(format!(
            "{host}: metrics arrived: cpu_ms_sum {cpu:.1}, peak_memory_bytes_max {:.1} MiB, successful evaluations {ok}",
            memory / f64::from(1 << 20)
        ));
    }
    println!("{}", report.join("\n"));
}

/// Runs `docker ARGS`, failing the test if it fails; returns its stdout.
async fn docker(args: &[&str]) -> String {
    let out = tokio::process::Command::new(env("JSHEETS_CI_DOCKER"))
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    failed: Vec<String>,
    /// (when it finished, the node that answered)
    served: Vec<(Instant, String)>,
}

/// A fleet client runs evaluations throughout while one node is killed (SIGKILL): the
/// node's registration goes within the ZooKeeper session timeout, and no evaluation is
/// lost.
#[tokio::test]
#[ignore = "run by scripts/ci-docker against a compose fleet"]
async fn a_killed_node_leaves_and_the_fleet_loses_nothing() {
    let hosts = hosts();
    let victim = env("JSHEETS_CI_DOCKER_KILL");
    let zk = zookeeper().await;
    let ids = registered_ids(&zk, &hosts, Duration::from_secs(30)).await;
    let victim_id = ids[&victim].clone();
    let fleet = Fleet::from_zookeeper(
        &env("JSHEETS_CI_DOCKER_ZOOKEEPER"),
        BASE,
        FleetOptions {
            // A node dying mid-evaluation is retried on another.
            deliver_on_completion: true,
            ..FleetOptions::default()
        },
    );
    assert_eq!(
        fleet
            .wait_for_nodes(hosts.len(), Duration::from_secs(30))
            .await,
        hosts.len()
    );

    let tally = Arc::new(Mutex::new(Tally::default()));
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut workers = Vec::new();
    for w in 0..3 {
        let (fleet, tally, running) = (fleet.clone(), tally.clone(), running.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let request = python(&format!("print({w} * 1000000 + {i})"));
                let result = fleet.evaluate(&request, EVAL, |_| {}).await;
                let mut t = tally.lock().unwrap();
                match result {
                    Ok(e) if e.succeeded() && stdout(&e) == format!("{}\n", w * 1_000_000 + i) => {
                        t.ok += 1;
                        t.served
                            .push((Instant::now(), e.completion.service_id.clone()));
                    }
                    Ok(e) => t.failed.push(format!("{:?}: {:?}", e.status(), stdout(&e))),
                    Err(e) => t.failed.push(e.to_string()),
                }
            }
        }));
    }

    // Every node serves some first.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let served: BTreeSet<String> = tally
            .lock()
            .unwrap()
            .served
            .iter()
            .map(|(_, id)| id.clone())
            .collect();
        if served.len() == hosts.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every node served within 60 s: {served:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = tally.lock().unwrap().ok;

    docker(&["kill", &victim]).await;
    let killed = Instant::now();
    let gone = wait_gone(
        &zk,
        &format!("{BASE}/{victim_id}"),
        SESSION_TIMEOUT + EXPIRY_SLACK + Duration::from_secs(10),
    )
    .await;
    let gone = gone.unwrap_or_else(|| {
        panic!(
            "the killed node's registration {victim_id} is still there after the session timeout"
        )
    });
    let left_after = gone - killed;
    // The fleet goes on well past the node's removal.
    tokio::time::sleep(Duration::from_secs(5)).await;
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let t = std::mem::take(&mut *tally.lock().unwrap());
    let during = t
        .served
        .iter()
        .filter(|(at, _)| *at >= killed && *at <= gone)
        .count();
    let after_gone_on_victim = t
        .served
        .iter()
        .filter(|(at, id)| *at > gone + Duration::from_secs(1) && *id == victim_id)
        .count();
    let mut by_node: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, id) in &t.served {
        *by_node.entry(id.as_str()).or_default() += 1;
    }
    let state = docker(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.ExitCode}}",
        &victim,
    ])
    .await;
    println!(
        "killed {victim} ({victim_id}): registration gone after {:.1} s (session timeout {} s); \
         fleet client: {} evaluations ok ({before} before the kill, {during} between the kill and \
         the registration going), {} failed; by node: {by_node:?}; container: {state}",
        left_after.as_secs_f64(),
        SESSION_TIMEOUT.as_secs(),
        t.ok,
        t.failed.len()
    );
    assert!(
        left_after <= SESSION_TIMEOUT + EXPIRY_SLACK,
        "the registration outlived the session timeout: {left_after:?}"
    );
    assert!(t.failed.is_empty(), "evaluations lost: {:#?}", t.failed);
    assert!(
        during > 0,
        "no evaluation completed while the dead node was registered"
    );
    assert_eq!(
        after_gone_on_victim, 0,
        "evaluations answered by the dead node after it left"
    );
    assert!(state.starts_with("exited"), "{state}");
}

/// `docker stop` while an evaluation runs: the node deregisters first, the evaluation
/// finishes ok, new ones are refused, and the container exits 0.
#[tokio::test]
#[ignore = "run by scripts/ci-docker against a compose fleet"]
async fn a_stopped_node_deregisters_first_and_finishes_its_evaluation() {
    let hosts = hosts();
    let host = env("JSHEETS_CI_DOCKER_STOP");
    let zk = zookeeper().await;
    let ids = registered_ids(&zk, &hosts, Duration::from_secs(30)).await;
    let id = ids[&host].clone();
    let ch = channel(&host).await;
    // `docker stop` waits this long before SIGKILL: the compose file's
    // stop_grace_period, above the node's 30 s of server.shutdownGraceSeconds.
    let stop_timeout: u64 = docker(&["inspect", "-f", "{{.Config.StopTimeout}}", &host])
        .await
        .parse()
        .unwrap_or(0);
    assert!(
        stop_timeout > 30,
        "docker stop would kill the node after {stop_timeout} s, before its drain ends"
    );

    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let request =
        python("import time\nprint('started', flush=True)\ntime.sleep(5)\nprint('finished')");
    let eval_ch = ch.clone();
    let evaluation = tokio::spawn(async move {
        let e = evaluate(&eval_ch, &request, EVAL, |r| {
            if r.result.iter().any(|x| x.output.contains("started")) {
                let _ = started_tx.send(());
            }
        })
        .await;
        (e, Instant::now())
    });
    tokio::time::timeout(Duration::from_secs(30), started_rx.recv())
        .await
        .expect("the evaluation did not start within 30 s");

    let stop_host = host.clone();
    let stopping = Instant::now();
    let stop = tokio::spawn(async move {
        docker(&["stop", &stop_host]).await;
        Instant::now()
    });
    let deregistered = wait_gone(&zk, &format!("{BASE}/{id}"), Duration::from_secs(30))
        .await
        .expect("the stopped node did not deregister within 30 s");
    // Draining: a new evaluation is refused while the running one goes on.
    let refused = evaluate(&ch, &python("print(1)"), Duration::from_secs(10), |_| {}).await;
    let (e, finished) = evaluation.await.unwrap();
    let e = e.unwrap_or_else(|err| panic!("the running evaluation failed: {err}"));
    let exited = stop.await.unwrap();
    let state = docker(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.ExitCode}}",
        &host,
    ])
    .await;
    println!(
        "stopped {host} ({id}) mid-evaluation: deregistered after {:.2} s, the evaluation finished \
         {} after {:.2} s, a new one was {}, the container exited after {:.2} s: {state} \
         (stop timeout {stop_timeout} s)",
        (deregistered - stopping).as_secs_f64(),
        usage(&e),
        (finished - stopping).as_secs_f64(),
        match &refused {
            Ok(r) => format!("answered ({:?})", r.status()),
            Err(err) => format!("refused ({err})"),
        },
        (exited - stopping).as_secs_f64()
    );
    assert!(e.succeeded(), "{e:#?}");
    assert_eq!(stdout(&e), "started\nfinished\n", "{e:#?}");
    assert!(
        deregistered < finished,
        "the node deregistered only after its evaluation finished"
    );
    assert!(refused.is_err(), "a draining node took a new evaluation");
    assert_eq!(state, "exited 0");
}

/// After `docker-compose up -d --scale runtime=N`: every node registered once, and the
/// fleet client reaches each.
#[tokio::test]
#[ignore = "run by scripts/ci-docker against a compose fleet"]
async fn every_node_is_registered_and_reached_by_the_fleet() {
    let hosts = hosts();
    let zk = zookeeper().await;
    let ids = registered_ids(&zk, &hosts, Duration::from_secs(60)).await;
    let fleet = Fleet::from_zookeeper(
        &env("JSHEETS_CI_DOCKER_ZOOKEEPER"),
        BASE,
        FleetOptions::default(),
    );
    assert_eq!(
        fleet
            .wait_for_nodes(hosts.len(), Duration::from_secs(30))
            .await,
        hosts.len()
    );
    let mut served = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while served.len() < hosts.len() {
        assert!(
            Instant::now() < deadline,
            "the fleet reached only {served:?} of {ids:?} within 60 s"
        );
        let e = fleet
            .evaluate(&python("print(1)"), EVAL, |_| {})
            .await
            .unwrap();
        assert!(e.succeeded(), "{e:#?}");
        served.insert(e.completion.service_id.clone());
    }
    println!("{} nodes registered and serving: {ids:?}", hosts.len());
}

#[tokio::test]
#[ignore = "run by scripts/ci-docker against a compose fleet"]
async fn live_sandboxes_on_different_nodes_never_share_a_uid() {
    // Each node in a network namespace of its own draws uids from the same range:
    // only the shared claim directory keeps them apart. Two sandboxes per node (its
    // evaluation slots on 2 CPUs), all alive at once: each holds for 4 s, long after
    // the last has started. (Sandboxes that are not alive together may share a uid.)
    let hosts = hosts();
    let per_node = 2;
    let code = "import os, time\n\
                print(os.getuid(), flush=True)\n\
                time.sleep(4)";
    let mut running = Vec::new();
    for host in &hosts {
        let ch = channel(host).await;
        for _ in 0..per_node {
            let ch = ch.clone();
            let host = host.clone();
            running.push(tokio::spawn(async move {
                let e = run(&ch, &python(code)).await;
                (host, e)
            }));
        }
    }
    let mut uids: BTreeMap<u32, String> = BTreeMap::new();
    for task in running {
        let (host, e) = task.await.unwrap();
        assert!(e.succeeded(), "{host}: {e:#?}");
        let uid: u32 = stdout(&e).trim().parse().unwrap();
        if let Some(other) = uids.insert(uid, host.clone()) {
            panic!("uid {uid} ran on {other} and {host} at once");
        }
    }
    println!(
        "{} live sandboxes on {} nodes, uids {:?}",
        uids.len(),
        hosts.len(),
        uids.keys().collect::<Vec<_>>()
    );
}
