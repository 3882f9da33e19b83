//! The fleet: registration in a real ZooKeeper (Curator's layout), re-registration
//! after ZooKeeper restarts and session expiry, serving while ZooKeeper is down, and
//! the discovery client failing over when a node dies under load.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{EvalRequest, Fleet, FleetOptions};
use nix::sys::signal::Signal;
use support::*;

const BASE: &str = "/jsheets/services/runtime";

fn node_env(zk: &ZooKeeper) -> Vec<(&'static str, String)> {
    vec![
        (
            "JSHEETS_RUNTIME_ZOOKEEPER_CONNECTION_STRING",
            zk.connection(),
        ),
        ("JSHEETS_RUNTIME_ZOOKEEPER_CONNECT_BACKOFF", "200".into()),
        (
            "JSHEETS_RUNTIME_ZOOKEEPER_SESSION_TIMEOUT_MS",
            "2000".into(),
        ),
        (
            "JSHEETS_RUNTIME_SERVICE_ADVERTISED_HOST",
            "127.0.0.1".into(),
        ),
    ]
}

fn start_node(zk: &ZooKeeper, extra: &[(&str, &str)]) -> Server {
    let env = node_env(zk);
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    Server::start(&all)
}

#[tokio::test]
async fn a_node_registers_curator_json_and_deregisters_on_drain() {
    let zk = ZooKeeper::start();
    let zkc = zk_client(&zk).await;
    let started = Instant::now();
    let mut server = start_node(&zk, &[]);
    let path = format!("{BASE}/{}", server.service_id);
    let data = wait_for_znode(&zkc, &path, Duration::from_secs(60))
        .await
        .expect("the node registered");
    println!(
        "registration visible {:.0} ms after the node was started",
        started.elapsed().as_secs_f64() * 1e3
    );
    let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(v["name"], "runtime");
    assert_eq!(v["id"], server.service_id.as_str());
    assert_eq!(v["address"], "127.0.0.1");
    assert_eq!(v["port"], server.addr.port());
    assert!(v["sslPort"].is_null());
    assert_eq!(v["serviceType"], "DYNAMIC");
    assert!(v["uriSpec"].is_null());
    assert!(v["registrationTimeUTC"].as_u64().unwrap() > 1_700_000_000_000);
    let runtimes = v["payload"]["runtimes"].as_array().unwrap();
    assert!(runtimes
        .iter()
        .any(|r| r.as_str().unwrap().starts_with("python-3.11@")));
    // Ephemeral: owned by a session.
    let (_, stat) = zkc.get_data(&path).await.unwrap();
    assert_ne!(stat.ephemeral_owner, 0);

    server.signal(Signal::SIGTERM);
    assert!(
        wait_for_no_znode(&zkc, &path, Duration::from_secs(5)).await,
        "the znode outlived the drain"
    );
    assert!(server.wait_exit(Duration::from_secs(15)).await.success());
}

#[tokio::test]
async fn a_node_re_registers_after_restarts_and_session_expiry() {
    let mut zk = ZooKeeper::start();
    let server = start_node(&zk, &[]);
    let path = format!("{BASE}/{}", server.service_id);
    {
        let zkc = zk_client(&zk).await;
        assert!(wait_for_znode(&zkc, &path, Duration::from_secs(20))
            .await
            .is_some());
    }

    // A quick restart keeping the data: the session survives, or is re-created.
    zk.restart();
    let zkc = zk_client(&zk).await;
    assert!(
        wait_for_znode(&zkc, &path, Duration::from_secs(20))
            .await
            .is_some(),
        "not registered after a restart"
    );
    drop(zkc);

    // Down longer than the session timeout (2 s): the session expires.
    zk.stop();
    tokio::time::sleep(Duration::from_secs(4)).await;
    zk.start_again();
    let zkc = zk_client(&zk).await;
    assert!(
        wait_for_znode(&zkc, &path, Duration::from_secs(30))
            .await
            .is_some(),
        "not registered after the session expired"
    );
    drop(zkc);

    // A new, empty ZooKeeper in its place: everything is registered again.
    zk.stop();
    zk.wipe();
    zk.start_again();
    let zkc = zk_client(&zk).await;
    assert!(
        wait_for_znode(&zkc, &path, Duration::from_secs(30))
            .await
            .is_some(),
        "not registered in a replaced ZooKeeper"
    );
    // Logged once per state change, not in a loop.
    let log = server.stderr();
    let unreachable = log.matches("zookeeper: unreachable").count();
    assert!(unreachable <= 4, "{unreachable} unreachable lines:\n{log}");
}

#[tokio::test]
async fn a_node_serves_while_zookeeper_is_down_and_registers_when_it_comes() {
    let port = free_port();
    let connection = format!("127.0.0.1:{port}");
    let server = Server::start(&[
        ("JSHEETS_RUNTIME_ZOOKEEPER_CONNECTION_STRING", &connection),
        ("JSHEETS_RUNTIME_ZOOKEEPER_CONNECT_BACKOFF", "200"),
        ("JSHEETS_RUNTIME_SERVICE_ADVERTISED_HOST", "127.0.0.1"),
    ]);
    let mut client = server.client().await;
    let t = evaluate(&mut client, start_code("python-3.11", "print(6 * 7)"), NET).await;
    assert_eq!(t.stdout(), "42\n", "{t:#?}");

    // ZooKeeper comes up on the configured port.
    let zk = ZooKeeper::start_on(port);
    let zkc = zk_client(&zk).await;
    let path = format!("{BASE}/{}", server.service_id);
    assert!(
        wait_for_znode(&zkc, &path, Duration::from_secs(30))
            .await
            .is_some(),
        "not registered once ZooKeeper came up:\n{}",
        server.stderr()
    );
}

#[tokio::test]
async fn the_fleet_client_loses_nothing_when_a_node_dies() {
    let zk = ZooKeeper::start();
    let mut nodes = vec![
        start_node(&zk, &[]),
        start_node(&zk, &[]),
        start_node(&zk, &[]),
    ];
    let fleet = Fleet::from_zookeeper(
        &zk.connection(),
        BASE,
        FleetOptions {
            zookeeper_session_timeout: Duration::from_secs(4),
            ..FleetOptions::default()
        },
    );
    assert_eq!(fleet.wait_for_nodes(3, Duration::from_secs(30)).await, 3);

    let request = Arc::new(EvalRequest::new("python-3.11").component("c", "print(1)"));
    let completed = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(tokio::sync::Notify::new());
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (fleet, request, completed, failed, running) = (
            fleet.clone(),
            request.clone(),
            completed.clone(),
            failed.clone(),
            running.clone(),
        );
        loops.push(tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                match fleet
                    .evaluate(&request, Duration::from_secs(30), |_| {})
                    .await
                {
                    Ok(e) if e.succeeded() => {
                        completed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(e) => failed.lock().unwrap().push(format!("{:?}", e.status())),
                    Err(e) => failed.lock().unwrap().push(e.to_string()),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_kill = completed.load(Ordering::Relaxed);
    assert!(before_kill > 0);

    // Kill one node outright, under load.
    let victim = nodes.remove(1);
    let victim_id = victim.service_id.clone();
    victim.signal(Signal::SIGKILL);
    let killed_at = Instant::now();
    drop(victim);
    // The client stops choosing it: it is marked down at its first failure, and its
    // registration goes away with its session.
    let mut marked_down = None;
    while killed_at.elapsed() < Duration::from_secs(15) {
        let status = fleet.nodes();
        let victim_state = status.iter().find(|n| n.id == victim_id);
        if victim_state.is_none_or(|n| n.down) {
            marked_down = Some(killed_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let marked_down = marked_down.expect("the killed node was still chosen after 15 s");
    println!(
        "client stopped sending to the killed node {:.0} ms after the kill",
        marked_down.as_secs_f64() * 1e3
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    // A new node joins and takes work.
    nodes.push(start_node(&zk, &[]));
    let newcomer = nodes.last().unwrap().service_id.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = false;
    while Instant::now() < deadline && !seen {
        seen = fleet.nodes().iter().any(|n| n.id == newcomer);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "the new node did not appear: {:?}", fleet.nodes());
    tokio::time::sleep(Duration::from_secs(3)).await;
    running.store(false, Ordering::Relaxed);
    stop.notify_waiters();
    for l in loops {
        l.await.unwrap();
    }
    let failed = failed.lock().unwrap().clone();
    let total = completed.load(Ordering::Relaxed);
    println!(
        "evaluations: {total} completed, {} lost ({before_kill} before the kill)",
        failed.len()
    );
    assert!(failed.is_empty(), "evaluations lost: {failed:?}");
    // The newcomer took work: its sandboxes ran.
    let newcomer_node = nodes.last().unwrap();
    let mut c = newcomer_node.client().await;
    let t = evaluate(&mut c, start_code("python-3.11", "print(2)"), NET).await;
    assert_eq!(t.stdout(), "2\n");
    assert!(
        newcomer_node
            .stderr()
            .matches("evaluation finished")
            .count()
            > 1,
        "the new node got no work from the fleet:\n{}",
        newcomer_node.stderr()
    );
}

#[tokio::test]
async fn the_cli_finds_a_node_through_zookeeper() {
    let zk = ZooKeeper::start();
    let server = start_node(&zk, &[]);
    let zkc = zk_client(&zk).await;
    let path = format!("{BASE}/{}", server.service_id);
    assert!(wait_for_znode(&zkc, &path, Duration::from_secs(30))
        .await
        .is_some());
    let out = tokio::process::Command::new(BIN)
        .args([
            "eval",
            "--zookeeper",
            &zk.connection(),
            "-r",
            "python-3.11",
            "-e",
            "print(5 * 5)",
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("25"));
    // Nothing registered under another path: a clear failure, not a hang.
    let out = tokio::process::Command::new(BIN)
        .args([
            "eval",
            "--zookeeper",
            &zk.connection(),
            "--zookeeper-base-path",
            "/nobody",
            "-e",
            "print(1)",
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no node registered"));
}
