//! Metrics pushed to a real Influx-protocol server (VictoriaMetrics): jsheets'
//! measurements and ours arrive with the expected names, tags and values after known
//! evaluations, over the InfluxDB 2 and 1 APIs; with the server down, evaluations are
//! unaffected and the drop counter rises.

mod support;

use std::time::Duration;

use support::*;

#[tokio::test]
async fn known_evaluations_arrive_with_names_tags_and_values() {
    let vm = VictoriaMetrics::start();
    let url = vm.url();
    let server = Server::start(&[
        ("JSHEETS_RUNTIME_MONITORING_BACKEND", "influx"),
        ("JSHEETS_RUNTIME_MONITORING_INFLUX_URI", &url),
        ("JSHEETS_RUNTIME_MONITORING_INFLUX_ORG", "jsheets"),
        ("JSHEETS_RUNTIME_MONITORING_INFLUX_BUCKET", "jsheets"),
        (
            "JSHEETS_RUNTIME_MONITORING_INFLUX_AUTH_TOKEN",
            "very-secret-token",
        ),
        ("JSHEETS_RUNTIME_MONITORING_INFLUX_STEP", "1"),
    ]);
    let mut client = server.client().await;
    for _ in 0..3 {
        let t = evaluate(&mut client, start_code("python-3.11", "print(1)"), NET).await;
        assert_eq!(t.stdout(), "1\n");
    }
    // An error in user code, and an access-list violation.
    evaluate(&mut client, start_code("python-3.11", "1/0"), NET).await;
    evaluate(&mut client, start_code("python-3.11", "import os"), NET).await;

    let id = server.service_id.as_str();
    let limit = Duration::from_secs(20);
    let ok = vm
        .wait_sum(
            "jsheets_runtime_evaluation_successfulEvaluations_value",
            &[("service_id", id), ("metric_type", "counter")],
            3.0,
            limit,
        )
        .await;
    assert_eq!(ok, 3.0);
    let erroneous = vm
        .wait_sum(
            "jsheets_runtime_evaluation_erroneousEvaluations_value",
            &[("service_id", id)],
            1.0,
            limit,
        )
        .await;
    assert_eq!(erroneous, 1.0);
    let failed = vm
        .wait_sum(
            "jsheets_runtime_evaluation_failedEvaluations_value",
            &[("service_id", id)],
            1.0,
            limit,
        )
        .await;
    assert_eq!(failed, 1.0);
    let durations = vm
        .wait_sum(
            "jsheets_runtime_evaluation_duration_count",
            &[("service_id", id)],
            5.0,
            limit,
        )
        .await;
    assert_eq!(durations, 5.0);
    let started = vm
        .wait_sum(
            "jsheets_runtime_evaluation_fork_startedBoxes_value",
            &[("service_id", id)],
            5.0,
            limit,
        )
        .await;
    assert_eq!(started, 5.0);
    let ours = vm
        .wait_sum(
            "jsheets_runtime_evaluations_count",
            &[
                ("service_id", id),
                ("runtime", "python-3.11"),
                ("status", "ok"),
            ],
            5.0,
            limit,
        )
        .await;
    assert_eq!(ours, 5.0, "all five ended with status ok");
    let denials = vm
        .wait_sum(
            "jsheets_runtime_access_denials",
            &[("runtime", "python-3.11")],
            1.0,
            limit,
        )
        .await;
    assert_eq!(denials, 1.0);
    let p50 = vm
        .wait_sum(
            "jsheets_runtime_evaluations_wall_ms_p50",
            &[("service_id", id)],
            0.1,
            limit,
        )
        .await;
    assert!(p50 > 0.0);
    assert!(
        vm.wait_for_series(
            "jsheets_runtime_evaluation_activeEvaluations_value",
            &[("service_id", id), ("metric_type", "gauge")],
            limit
        )
        .await
    );
    // The token never reaches a log line.
    assert!(!server.stderr().contains("very-secret-token"));
}

#[tokio::test]
async fn evaluations_do_not_wait_for_a_dead_influx_and_drops_are_counted() {
    let mut vm = VictoriaMetrics::start();
    let url = vm.url();
    // The InfluxDB 1 API (no org), a small buffer.
    let server = Server::start(&[
        ("JSHEETS_RUNTIME_MONITORING_BACKEND", "influx"),
        ("JSHEETS_RUNTIME_MONITORING_INFLUX_URI", &url),
        ("JSHEETS_RUNTIME_MONITORING_INFLUX_DB", "jsheets"),
        ("JSHEETS_RUNTIME_MONITORING_INFLUX_USER_NAME", "jsheets"),
        (
            "JSHEETS_RUNTIME_MONITORING_INFLUX_PASSWORD",
            "hunter2-password",
        ),
        ("JSHEETS_RUNTIME_MONITORING_INFLUX_STEP", "1"),
        ("JSHEETS_RUNTIME_MONITORING_INFLUX_BUFFER_POINTS", "20"),
    ]);
    let id = server.service_id.clone();
    assert!(
        vm.wait_for_series(
            "jsheets_runtime_admission_rejected",
            &[("db", "jsheets"), ("service_id", &id)],
            Duration::from_secs(10)
        )
        .await,
        "nothing arrived over the InfluxDB 1 API"
    );

    vm.stop();
    let mut client = server.client().await;
    let started = std::time::Instant::now();
    for _ in 0..5 {
        let t = evaluate(&mut client, start_code("python-3.11", "print(1)"), NET).await;
        assert_eq!(t.stdout(), "1\n");
    }
    // Unaffected: five cold Python evaluations take well under a second each.
    assert!(started.elapsed() < Duration::from_secs(10));
    // Several steps without a server overflow the 20-point buffer.
    tokio::time::sleep(Duration::from_secs(4)).await;
    vm.start_again();
    let dropped = vm
        .wait_sum(
            "jsheets_runtime_metrics_dropped_points",
            &[("service_id", &id)],
            1.0,
            Duration::from_secs(20),
        )
        .await;
    assert!(dropped >= 1.0, "no drops counted");
    assert!(!server.stderr().contains("hunter2-password"));
    let warnings = server.stderr().matches("influx: write failed").count();
    assert_eq!(warnings, 1, "{}", server.stderr());
}
