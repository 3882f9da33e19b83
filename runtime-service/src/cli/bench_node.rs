//! `jsheets-runtime bench-node`: the benchmark suite's arguments, checked, and its
//! exit code; Ctrl-C or SIGTERM stop the nodes it started.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::remote::{concurrency_levels, seconds};
use crate::bench_node::{plan, Options, Section};
use crate::report::{EX_INTERRUPTED, EX_USAGE};

#[derive(Debug, Args)]
pub struct NodeBenchArgs {
    /// Rows to run: python, java, mixed, cold, inputs.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "python,java,mixed,cold,inputs"
    )]
    pub rows: Vec<Section>,
    /// Inputs of the inputs rows (one request with this many, beside as many
    /// requests).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub inputs: usize,
    /// Concurrency levels of the python, java and mixed rows.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub concurrency: Vec<usize>,
    /// Concurrency levels of the cold rows.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub cold_concurrency: Vec<usize>,
    /// Seconds of back-to-back evaluations per row.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub duration: f64,
    /// Deadline of each evaluation, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub timeout: f64,
    /// A running node with pools for the python, java and mixed rows (http://HOST:PORT),
    /// instead of starting one.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// A running node without pools for the cold rows, instead of starting one.
    #[arg(long, value_name = "URL")]
    pub cold_endpoint: Option<String>,
}

fn check(args: NodeBenchArgs, runtimes_dir: &Path) -> Result<Options> {
    if args.rows.is_empty() {
        anyhow::bail!("--rows names no rows");
    }
    concurrency_levels(&args.concurrency, "concurrency")?;
    concurrency_levels(&args.cold_concurrency, "cold-concurrency")?;
    Ok(Options {
        steps: plan(
            &args.rows,
            &args.concurrency,
            &args.cold_concurrency,
            args.inputs.max(1),
        ),
        duration: seconds(args.duration, "duration")?,
        deadline: seconds(args.timeout, "timeout")?,
        runtimes_dir: runtimes_dir.to_owned(),
        endpoints: [args.endpoint, args.cold_endpoint],
    })
}

pub async fn run(runtimes_dir: &Path, args: NodeBenchArgs) -> Result<ExitCode> {
    let options = match check(args, runtimes_dir) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("jsheets-runtime: {e:#}");
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // Leaving the select drops the suite, which stops the nodes it started.
    tokio::select! {
        done = crate::bench_node::run(&options) => Ok(if done? {
            ExitCode::SUCCESS
        } else {
            eprintln!("jsheets-runtime: a row had no successful evaluation");
            ExitCode::FAILURE
        }),
        _ = tokio::signal::ctrl_c() => interrupted(),
        _ = term.recv() => interrupted(),
    }
}

fn interrupted() -> Result<ExitCode> {
    eprintln!("jsheets-runtime: interrupted; the nodes started are stopped");
    Ok(ExitCode::from(EX_INTERRUPTED as u8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::time::Duration;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        args: NodeBenchArgs,
    }

    fn parse(argv: &[&str]) -> Result<Options> {
        let args =
            Cmd::try_parse_from(std::iter::once("bench-node").chain(argv.iter().copied()))?.args;
        check(args, Path::new("/rt"))
    }

    #[test]
    fn arguments() {
        let o = parse(&[]).unwrap();
        let all = [
            Section::Python,
            Section::Java,
            Section::Mixed,
            Section::Cold,
            Section::Inputs,
        ];
        assert_eq!(o.steps, plan(&all, &[1, 2, 4], &[1, 2], 100));
        assert_eq!(o.duration, Duration::from_secs(30));
        assert_eq!(o.deadline, Duration::from_secs(60));
        assert_eq!(o.runtimes_dir, Path::new("/rt"));
        assert_eq!(o.endpoints, [None, None]);
        let o = parse(&[
            "--rows",
            "python,cold",
            "--duration",
            "0.5",
            "--concurrency",
            "2",
            "--cold-concurrency",
            "1",
            "--endpoint",
            "http://127.0.0.1:1",
        ])
        .unwrap();
        assert_eq!(
            o.steps,
            plan(&[Section::Python, Section::Cold], &[2], &[1], 100)
        );
        assert_eq!(o.duration, Duration::from_millis(500));
        assert_eq!(o.endpoints, [Some("http://127.0.0.1:1".into()), None]);
        for bad in [
            &["--rows", "rust"][..],
            &["--rows", ""],
            &["--concurrency", "0"],
            &["--cold-concurrency", "1,0"],
            &["--concurrency", "10001"],
            &["--duration", "0"],
            &["--duration", "-1"],
            &["--timeout", "nan"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
