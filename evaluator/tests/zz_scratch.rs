#![allow(clippy::unwrap_used)]
mod common;
use common::Fixture;
use evaluator::sandbox::Limits;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch_fork_timing() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let launch = python.launch();
    let limits = Limits {
        memory_bytes: 512 << 20,
        ..Limits::default()
    };
    let (job, preface) = evaluator::lang::zygote_job(&launch, limits.clone())
        .unwrap()
        .unwrap();
    let cancel = CancellationToken::new();
    let z = fx
        .sandboxes
        .start_zygote(job, preface, &cancel)
        .await
        .unwrap();
    let mut t = Vec::new();
    let mut ws = Vec::new();
    for _ in 0..60 {
        let s = Instant::now();
        let w = fx.sandboxes.start_forked(&z, &cancel).await.unwrap();
        t.push(s.elapsed());
        ws.push(w);
        if ws.len() > 4 {
            ws.remove(0).destroy().await;
        }
    }
    t.sort();
    println!(
        "forked start p50 {:?} p90 {:?} max {:?}",
        t[30], t[54], t[59]
    );
    let mut t = Vec::new();
    for _ in 0..30 {
        let (job, preface) = evaluator::lang::waiting_job(&launch, limits.clone())
            .unwrap()
            .unwrap();
        let s = Instant::now();
        let w = fx
            .sandboxes
            .start_waiting(job, preface, &cancel)
            .await
            .unwrap();
        t.push(s.elapsed());
        ws.push(w);
        if ws.len() > 4 {
            ws.remove(0).destroy().await;
        }
    }
    t.sort();
    println!(
        "plain start p50 {:?} p90 {:?} max {:?}",
        t[15], t[27], t[29]
    );
    for w in ws {
        w.destroy().await;
    }
    let _ = Duration::ZERO;
}
