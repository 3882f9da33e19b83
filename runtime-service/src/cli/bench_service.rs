//! `jsheets-runtime bench-service`: the node benchmark's arguments, the warm-up
//! evaluation and the table's header and rows.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use client::{ClientError, EvalRequest};

use super::remote::{concurrency_levels, exit_code, seconds, NodeArgs, CONNECT_TIMEOUT};
use crate::bench_service::{header, measure, not_ok_reason, PoolCounters, Target};
use crate::report::EX_USAGE;

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

fn check(args: &ServiceBenchArgs) -> Result<(Duration, Duration)> {
    concurrency_levels(&args.concurrency, "concurrency")?;
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
        eprintln!(
            "jsheets-runtime: {endpoint}: {}",
            crate::report::error_chain(e)
        );
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
            "jsheets-runtime: warning: the warm-up evaluation ended with {}",
            not_ok_reason(&warm_up)
        );
    }
    let c = &warm_up.completion;
    // The name the node resolved `--runtime` to: its pool counters go by it.
    let runtime_name = c
        .runtime
        .as_ref()
        .map_or_else(|| args.runtime.clone(), |r| r.name.clone());
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
    println!("{}", header());
    let mut every_row_ok = true;
    let service = [Target::Service(channel.clone(), request)];
    let host = args.baseline.as_deref().map(|b| {
        [Target::Host(Arc::from(vec![
            "/bin/sh".to_string(),
            "-c".into(),
            b.into(),
        ]))]
    });
    let pause = Duration::from_millis(args.pause);
    for &concurrency in &args.concurrency {
        // A node that cannot list its pools still gets measured, without hit rates.
        let before = PoolCounters::read(&channel).await.ok();
        let row = measure(&service, concurrency, duration, deadline, pause).await;
        let after = PoolCounters::read(&channel).await.ok();
        let hits = before
            .zip(after)
            .and_then(|(b, a)| b.hit_rate(&a, &runtime_name, row[0].requests()));
        row[0].print("service", &runtime_name, hits);
        every_row_ok &= !row[0].latencies.is_empty();
        if let Some(host) = &host {
            let row = measure(host, concurrency, duration, deadline, pause).await;
            row[0].print("host", "-", None);
            every_row_ok &= !row[0].latencies.is_empty();
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
}
