//! The fleet: registration in a real ZooKeeper (Curator's layout with a `null` payload,
//! the node's details in a znode of their own beside Curator's tree), re-registration
//! after ZooKeeper restarts and session expiry, serving while ZooKeeper is down, the
//! discovery client failing over when a node dies under load, and the client using
//! nodes that published no details.

#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{EvalRequest, Fleet, FleetOptions};
use nix::sys::signal::Signal;
use support::*;

const BASE: &str = "/jsheets/services/runtime";
/// Where the nodes' details go for [`BASE`] (`client::fleet::details_path`).
const DETAILS: &str = "/jsheets/runtime-nodes";

/// The details znode of a node.
fn details_of(id: &str) -> String {
    format!("{DETAILS}/{id}")
}

/// The ServiceInstance and the details of the node `id`, once both are registered.
async fn wait_registered(
    zkc: &zookeeper_client::Client,
    id: &str,
    limit: Duration,
) -> Option<(serde_json::Value, serde_json::Value)> {
    let instance = wait_for_znode(zkc, &format!("{BASE}/{id}"), limit).await?;
    let details = wait_for_znode(zkc, &details_of(id), limit).await?;
    Some((
        serde_json::from_slice(&instance).unwrap(),
        serde_json::from_slice(&details).unwrap(),
    ))
}

/// Creates `path` (and its parents) holding `data`, ephemeral in `zkc`'s session.
async fn create_ephemeral(zkc: &zookeeper_client::Client, path: &str, data: &[u8]) {
    let parent = path.rsplit_once('/').unwrap().0;
    let persistent =
        zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
    let _ = zkc.mkdir(parent, &persistent).await;
    let ephemeral =
        zookeeper_client::CreateMode::Ephemeral.with_acls(zookeeper_client::Acls::anyone_all());
    zkc.create(path, data, &ephemeral).await.unwrap();
}

/// A Curator `ServiceInstance` as another implementation would write it.
fn curator_instance(id: &str, port: u16) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "name": "runtime",
        "id": id,
        "address": "127.0.0.1",
        "port": port,
        "sslPort": null,
        "payload": null,
        "registrationTimeUTC": 1_795_425_618_512_u64,
        "serviceType": "DYNAMIC",
        "uriSpec": null,
    }))
    .unwrap()
}

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
async fn a_node_registers_curator_json_and_its_details_and_deregisters_on_drain() {
    let zk = ZooKeeper::start();
    let started = Instant::now();
    let mut server = start_node(
        &zk,
        &[
            ("JSHEETS_RUNTIME_EVALUATION_MAX_CONCURRENT", "3"),
            ("JSHEETS_RUNTIME_EVALUATION_QUEUE_SIZE", "7"),
        ],
    );
    // Connected only now: starting a node may block this thread for a while (building
    // the shared runtimes), long enough for an earlier session to expire.
    let zkc = zk_client(&zk).await;
    let id = server.service_id.clone();
    let path = format!("{BASE}/{id}");
    let (v, details) = wait_registered(&zkc, &id, Duration::from_secs(60))
        .await
        .expect("the node registered");
    println!(
        "registration visible {:.0} ms after the node was started",
        started.elapsed().as_secs_f64() * 1e3
    );
    // Exactly Curator's keys, `payload` null (Curator readers built with `Void`
    // payloads drop an instance with anything else).
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "address",
            "id",
            "name",
            "payload",
            "port",
            "registrationTimeUTC",
            "serviceType",
            "sslPort",
            "uriSpec"
        ]
    );
    assert_eq!(v["name"], "runtime");
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["address"], "127.0.0.1");
    assert_eq!(v["port"], server.addr.port());
    assert!(v["sslPort"].is_null());
    assert!(v["payload"].is_null(), "{v}");
    assert_eq!(v["serviceType"], "DYNAMIC");
    assert!(v["uriSpec"].is_null());
    assert!(v["registrationTimeUTC"].as_u64().unwrap() > 1_700_000_000_000);

    // The details, outside Curator's tree.
    assert_eq!(details["id"], id.as_str());
    let runtimes = details["runtimes"].as_array().unwrap();
    let python = runtimes
        .iter()
        .find(|r| r["name"] == "python-3.11")
        .unwrap_or_else(|| panic!("no python-3.11 in {details}"));
    assert_eq!(python["language"], "python");
    assert!(python["version"].as_str().unwrap().starts_with("3.11"));
    assert!(runtimes.iter().any(|r| r["name"] == "shell"));
    assert_eq!(details["defaultRuntime"], "python-3.11");
    assert_eq!(details["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(details["maxConcurrent"], 3);
    assert_eq!(details["queueSize"], 7);
    assert_eq!(details["tls"], false);
    // What a Curator reader lists: one service name, one instance, nothing else.
    let (names, _) = zkc.get_children("/jsheets/services").await.unwrap();
    assert_eq!(names, ["runtime"]);
    let (instances, _) = zkc.get_children(BASE).await.unwrap();
    assert_eq!(instances, [id.as_str()]);
    // Both ephemeral, owned by the same session.
    let (_, stat) = zkc.get_data(&path).await.unwrap();
    let (_, details_stat) = zkc.get_data(&details_of(&id)).await.unwrap();
    assert_ne!(stat.ephemeral_owner, 0);
    assert_eq!(details_stat.ephemeral_owner, stat.ephemeral_owner);

    // Deleted by someone else: written again.
    zkc.delete(&details_of(&id), None).await.unwrap();
    assert!(
        wait_for_znode(&zkc, &details_of(&id), Duration::from_secs(10))
            .await
            .is_some(),
        "the details were not re-created"
    );
    zkc.delete(&path, None).await.unwrap();
    let again = wait_registered(&zkc, &id, Duration::from_secs(10)).await;
    assert_eq!(again.expect("not re-registered").1, details);

    server.signal(Signal::SIGTERM);
    assert!(
        wait_for_no_znode(&zkc, &path, Duration::from_secs(5)).await,
        "the znode outlived the drain"
    );
    assert!(
        wait_for_no_znode(&zkc, &details_of(&id), Duration::from_secs(5)).await,
        "the details outlived the drain"
    );
    assert!(server.wait_exit(Duration::from_secs(15)).await.success());
}

#[tokio::test]
async fn a_node_re_registers_after_restarts_and_session_expiry() {
    let mut zk = ZooKeeper::start();
    let server = start_node(&zk, &[]);
    let id = server.service_id.clone();
    {
        let zkc = zk_client(&zk).await;
        assert!(wait_registered(&zkc, &id, Duration::from_secs(20))
            .await
            .is_some());
    }

    // A quick restart keeping the data: the session survives, or is re-created.
    zk.restart();
    let zkc = zk_client(&zk).await;
    assert!(
        wait_registered(&zkc, &id, Duration::from_secs(20))
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
        wait_registered(&zkc, &id, Duration::from_secs(30))
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
        wait_registered(&zkc, &id, Duration::from_secs(30))
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
    assert!(
        wait_registered(&zkc, &server.service_id, Duration::from_secs(30))
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
            // A node killed after streaming output but before completing is retried
            // too: nothing reaches the caller until an attempt completes.
            deliver_on_completion: true,
            ..FleetOptions::default()
        },
    );
    assert_eq!(fleet.wait_for_nodes(3, Duration::from_secs(30)).await, 3);
    // The client read every node's details (written before the instance).
    for n in fleet.nodes() {
        let d = n
            .details
            .unwrap_or_else(|| panic!("no details for {}", n.id));
        assert_eq!(d.id, n.id);
        assert!(d.offers("python-3.11"), "{d:?}");
    }
    let zkc = zk_client(&zk).await;

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
    // Under load: the kill comes once evaluations complete through the fleet.
    let deadline = Instant::now() + Duration::from_secs(30);
    while completed.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "no evaluation completed within 30 s: {:?}",
            failed.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before_kill = completed.load(Ordering::Relaxed);

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
    // Its registration and its details go with its session (2 s).
    for path in [format!("{BASE}/{victim_id}"), details_of(&victim_id)] {
        assert!(
            wait_for_no_znode(&zkc, &path, Duration::from_secs(15)).await,
            "{path} outlived the killed node's session"
        );
    }
    // The fleet follows the registrations: the killed node leaves its list.
    let deadline = Instant::now() + Duration::from_secs(15);
    while fleet.nodes().iter().any(|n| n.id == victim_id) {
        assert!(
            Instant::now() < deadline,
            "the fleet still lists the killed node: {:?}",
            fleet.nodes()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

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
    // The fleet sends the newcomer work before the load stops.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !nodes
        .last()
        .unwrap()
        .stderr()
        .contains("evaluation finished")
    {
        assert!(
            Instant::now() < deadline,
            "the new node got no work from the fleet within 30 s:\n{}",
            nodes.last().unwrap().stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    assert!(
        wait_registered(&zkc, &server.service_id, Duration::from_secs(30))
            .await
            .is_some()
    );
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

#[tokio::test]
async fn the_fleet_client_uses_nodes_without_details() {
    let zk = ZooKeeper::start();
    // A node registered by someone else: a Curator instance, no details.
    let server = Server::start(&[]);
    let zkc = zk_client(&zk).await;
    create_ephemeral(
        &zkc,
        &format!("{BASE}/by-hand"),
        &curator_instance("by-hand", server.addr.port()),
    )
    .await;
    // A node whose details offer only `shell` (nothing listens there: choosing it for
    // python would fail, with one attempt per evaluation).
    let dead_port = free_port();
    create_ephemeral(
        &zkc,
        &format!("{BASE}/shell-only"),
        &curator_instance("shell-only", dead_port),
    )
    .await;
    let shell_only = serde_json::json!({
        "id": "shell-only",
        "runtimes": [{"name": "shell", "version": "5.2.15", "language": "shell"}],
        "defaultRuntime": "shell",
        "version": "0.0.1",
        "maxConcurrent": 1,
        "queueSize": 0,
        "tls": false,
    });
    let shell_only = serde_json::to_vec(&shell_only).unwrap();
    create_ephemeral(&zkc, &details_of("shell-only"), &shell_only).await;

    let fleet = Fleet::from_zookeeper(
        &zk.connection(),
        BASE,
        FleetOptions {
            max_attempts: 1,
            ..FleetOptions::default()
        },
    );
    assert_eq!(fleet.wait_for_nodes(2, Duration::from_secs(30)).await, 2);
    let details = |id: &str| {
        fleet
            .nodes()
            .into_iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("{id} unknown"))
            .details
    };
    assert!(details("by-hand").is_none());
    assert_eq!(details("shell-only").unwrap().default_runtime, "shell");
    assert_eq!(
        fleet
            .nodes()
            .iter()
            .find(|n| n.id == "by-hand")
            .unwrap()
            .url,
        server.url()
    );

    // Python goes to the node without details (taken to offer everything), never to
    // the one whose details say it has no python.
    let request = EvalRequest::new("python-3.11").component("c", "print(6 * 7)");
    for _ in 0..20 {
        let done = fleet
            .evaluate(&request, Duration::from_secs(30), |_| {})
            .await
            .expect("sent to the node without details");
        assert!(done.succeeded(), "{:?}", done.status());
    }

    // Details appear later (written after the instance): the client notices them.
    let by_hand = serde_json::json!({
        "id": "by-hand",
        "runtimes": [{"name": "python-3.11", "version": "3.11.2", "language": "python"}],
        "defaultRuntime": "python-3.11",
        "version": "0.0.1",
        "maxConcurrent": 2,
        "queueSize": 4,
        "tls": false,
    });
    create_ephemeral(
        &zkc,
        &details_of("by-hand"),
        &serde_json::to_vec(&by_hand).unwrap(),
    )
    .await;
    // And details going away make a node one that may offer anything.
    zkc.delete(&details_of("shell-only"), None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (details("by-hand").is_none() || details("shell-only").is_some())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(details("by-hand").unwrap().offers("python"));
    assert!(details("shell-only").is_none());
    // Now both may be chosen for python: with failover, every evaluation still lands.
    let fleet = Fleet::from_zookeeper(&zk.connection(), BASE, FleetOptions::default());
    assert_eq!(fleet.wait_for_nodes(2, Duration::from_secs(30)).await, 2);
    for _ in 0..10 {
        let done = fleet
            .evaluate(&request, Duration::from_secs(30), |_| {})
            .await
            .expect("failed over to the live node");
        assert!(done.succeeded(), "{:?}", done.status());
    }
}
