//! `jsheets-runtime eval`: evaluate a snippet on a running node over gRPC and print
//! the outcome like `jsheets-runtime run` does locally; with `--input`, run it once per
//! input and print each run as it ends.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use client::{ClientError, EvalRequest, Evaluated};
use proto::jsheets::completion::Status;
use proto::jsheets::evaluation_result::Kind;
use proto::jsheets::input_result::Match;
use proto::jsheets::{
    Completion, EvaluateResponse, EvaluationError, EvaluationResult, InputResult, Limits,
    OutputMatch,
};

use super::files::{write_returned, FileArgs};
use super::remote::{exit_code, seconds, NodeArgs, CONNECT_TIMEOUT, MAX_SECS};
use crate::report::{EX_INTERRUPTED, EX_SOFTWARE, EX_UNAVAILABLE, EX_USAGE};

/// Default client deadline of one evaluation, in seconds.
const DEFAULT_TIMEOUT_SECS: f64 = 120.0;
/// Added to `--wall-time` for the default deadline, so the node can report a
/// wall-time overrun before the client gives up.
const WALL_TIME_MARGIN_SECS: f64 = 30.0;

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Runtime name as listed by the node; empty: the node's default runtime.
    #[arg(long, short, default_value = "")]
    pub runtime: String,
    /// Code of one component; repeat for several components (they run first,
    /// in order, then the FILEs).
    #[arg(long = "code", short = 'e', value_name = "CODE")]
    pub code: Vec<String>,
    /// Files whose contents are further components, in order.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// File fed to the snippet's standard input (`-`: this command's standard input).
    #[arg(long, value_name = "FILE")]
    pub stdin: Option<PathBuf>,
    /// Wall-clock limit in seconds (default: the node's).
    #[arg(long, value_name = "SECS")]
    pub wall_time: Option<f64>,
    /// Memory limit in MiB (default: the node's).
    #[arg(long, value_name = "MIB")]
    pub memory: Option<u64>,
    /// Give up after this many seconds [default: 120, or --wall-time + 30 if larger].
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Find nodes in ZooKeeper (`zk1:2181,zk2:2181`) instead of --endpoint: the
    /// evaluation goes to the less loaded of two live nodes and moves to another node
    /// if one fails before it started.
    #[arg(
        long,
        value_name = "HOSTS",
        env = "JSHEETS_RUNTIME_ZOOKEEPER_CONNECTION_STRING"
    )]
    pub zookeeper: Option<String>,
    /// Where the nodes register in ZooKeeper.
    #[arg(long, value_name = "PATH", default_value = "/jsheets/services/runtime")]
    pub zookeeper_base_path: String,
    #[command(flatten)]
    pub put_get: FileArgs,
    /// A dataset of the node (its `evaluation.datasets`), mounted read-only at
    /// /data/NAME; repeatable.
    #[arg(long = "dataset", value_name = "NAME")]
    pub datasets: Vec<String>,
    /// One program, many inputs: the code runs once per --input, each run in a fresh
    /// sandbox with STDIN_FILE on its standard input, its standard output compared
    /// with EXPECTED_FILE if given (split at the first `:`); repeatable. Each run is
    /// printed as it ends; its returned files go to OUTPUT_DIR/INDEX/.
    #[arg(
        long = "input",
        value_name = "STDIN_FILE[:EXPECTED_FILE]",
        conflicts_with = "stdin"
    )]
    pub inputs: Vec<String>,
    /// How a run's standard output is compared with its expected output.
    #[arg(long = "match", value_enum, default_value = "exact")]
    pub output_match: MatchArg,
}

/// `--match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MatchArg {
    /// Byte for byte.
    Exact,
    /// Whitespace at the end of each line, and at the end of the output, does not
    /// count.
    TrailingWhitespace,
}

/// Reads `--input STDIN_FILE[:EXPECTED_FILE]` (split at the first `:`).
fn read_run_input(spec: &str) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
    let (stdin, expected) = match spec.split_once(':') {
        Some((stdin, expected)) => (stdin, Some(expected)),
        None => (spec, None),
    };
    let read = |path: &str| {
        if path.is_empty() {
            bail!("--input {spec}: a file name is missing");
        }
        std::fs::read(path).with_context(|| format!("--input {spec}: reading {path}"))
    };
    Ok((read(stdin)?, expected.map(read).transpose()?))
}

/// A checked `eval` command line.
#[derive(Debug)]
struct Prepared {
    request: EvalRequest,
    deadline: Duration,
}

fn prepare(args: &EvalArgs) -> Result<Prepared> {
    let mut request = EvalRequest::new(args.runtime.clone());
    for (i, code) in args.code.iter().enumerate() {
        request = request.component(format!("e{}", i + 1), code.clone());
    }
    for file in &args.files {
        let code =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        request = request.component(file.display().to_string(), code);
    }
    if request.components.is_empty() {
        bail!("nothing to evaluate: give -e CODE or a FILE");
    }
    if let Some(path) = &args.stdin {
        request.stdin = if path.as_os_str() == "-" {
            let mut data = Vec::new();
            std::io::stdin()
                .read_to_end(&mut data)
                .context("reading standard input")?;
            data
        } else {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
        };
    }
    let mut limits = Limits::default();
    if let Some(wall) = args.wall_time {
        let wall = seconds(wall, "wall-time")?;
        limits.wall_time_ms = u64::try_from(wall.as_millis()).unwrap_or(u64::MAX).max(1);
    }
    if let Some(mib) = args.memory {
        if mib == 0 {
            bail!("--memory must be at least 1 MiB");
        }
        limits.memory_bytes = mib.checked_mul(1 << 20).context("--memory is too large")?;
    }
    if limits != Limits::default() {
        request.limits = Some(limits);
    }
    for f in args.put_get.inputs()? {
        request = request.file(f.remote, f.content, f.executable);
    }
    for p in &args.put_get.get {
        request = request.get(p.clone());
    }
    for d in &args.datasets {
        request = request.dataset(d.clone());
    }
    for spec in &args.inputs {
        let (stdin, expected) = read_run_input(spec)?;
        request = request.input(stdin, expected);
    }
    request.output_match = match args.output_match {
        MatchArg::Exact => OutputMatch::Exact,
        MatchArg::TrailingWhitespace => OutputMatch::IgnoreTrailingWhitespace,
    };
    let deadline = match args.timeout {
        Some(t) => seconds(t, "timeout")?,
        None => {
            let wall = args.wall_time.unwrap_or(0.0) + WALL_TIME_MARGIN_SECS;
            Duration::from_secs_f64(DEFAULT_TIMEOUT_SECS.max(wall).min(MAX_SECS))
        }
    };
    Ok(Prepared { request, deadline })
}

pub async fn run(args: EvalArgs) -> Result<ExitCode> {
    let Prepared { request, deadline } = match prepare(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("jsheets-runtime: {e:#}");
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    if let Some(zookeeper) = &args.zookeeper {
        return run_on_fleet(&args, zookeeper, request, deadline).await;
    }
    let endpoint = &args.node.endpoint;
    let channel = match args.node.connect(CONNECT_TIMEOUT.min(deadline)).await {
        Ok(c) => c,
        Err(e) => return Ok(report_error(endpoint, &e)),
    };

    // Ctrl-C stops the evaluation on the node (which then reports CANCELLED);
    // a second Ctrl-C gives up at once.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let interrupts = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("jsheets-runtime: stopping the evaluation (Ctrl-C again to quit)");
            let _ = stop_tx.send(());
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(EX_INTERRUPTED);
            }
        }
    });
    let mut printer = LivePrinter::new(&request);
    let outcome =
        client::evaluate_with_stop(&channel, &request, deadline, stop_rx, |r| printer.live(r))
            .await;
    interrupts.abort();
    match outcome {
        Ok(evaluated) => finish(&args, &request, &evaluated, &mut printer),
        Err(e) => Ok(report_error(endpoint, &e)),
    }
}

/// `eval --zookeeper`: the evaluation on whichever registered node the fleet picks.
async fn run_on_fleet(
    args: &EvalArgs,
    zookeeper: &str,
    request: EvalRequest,
    deadline: Duration,
) -> Result<ExitCode> {
    let fleet = client::Fleet::from_zookeeper(
        zookeeper,
        &args.zookeeper_base_path,
        client::FleetOptions {
            tls: args.node.tls(),
            connect_timeout: CONNECT_TIMEOUT.min(deadline),
            ..client::FleetOptions::default()
        },
    );
    let what = format!("the nodes in {zookeeper}{}", args.zookeeper_base_path);
    if fleet.wait_for_nodes(1, CONNECT_TIMEOUT.min(deadline)).await == 0 {
        eprintln!("jsheets-runtime: no node registered under {what}");
        return Ok(ExitCode::from(EX_UNAVAILABLE));
    }
    let mut printer = LivePrinter::new(&request);
    match fleet
        .evaluate(&request, deadline, |r| printer.live(r))
        .await
    {
        Ok(evaluated) => finish(args, &request, &evaluated, &mut printer),
        Err(e) => Ok(report_error(&what, &e)),
    }
}

/// Prints the outcome and writes the returned files; the exit code is the outcome's.
fn finish(
    args: &EvalArgs,
    request: &EvalRequest,
    evaluated: &Evaluated,
    printer: &mut LivePrinter,
) -> Result<ExitCode> {
    let code = print_outcome(request, evaluated, printer);
    if !request.get_files.is_empty() {
        if request.inputs.is_empty() {
            write_returned(
                &args.put_get.output_dir,
                &args.put_get.get,
                &evaluated.files,
            )?;
        } else {
            // Each run's files under INDEX/, named so for the writer: nothing of a run
            // goes outside its directory, through a link planted there or otherwise.
            let mut runs: Vec<&client::Run> = evaluated.runs.iter().collect();
            runs.sort_by_key(|r| r.result.index);
            let files: Vec<client::ReturnedFile> = runs
                .iter()
                .flat_map(|run| {
                    run.files.iter().map(|f| client::ReturnedFile {
                        path: format!("{}/{}", run.result.index, f.path),
                        ..f.clone()
                    })
                })
                .collect();
            let asked: Vec<String> = args
                .put_get
                .get
                .iter()
                .map(|p| format!("[0-9]*/{p}"))
                .collect();
            write_returned(&args.put_get.output_dir, &asked, &files)?;
        }
    }
    Ok(code)
}

/// Prints a failed call and chooses the exit code.
fn report_error(endpoint: &str, e: &ClientError) -> ExitCode {
    match e {
        ClientError::Timeout(d) => eprintln!(
            "jsheets-runtime: no answer from {endpoint} within {:.0} s (see --timeout)",
            d.as_secs_f64()
        ),
        ClientError::Status(s) => eprintln!(
            "jsheets-runtime: {endpoint} refused the evaluation: {}: {}",
            client::code_name(s.code()),
            s.message()
        ),
        _ => eprintln!("jsheets-runtime: {}", crate::report::error_chain(e)),
    }
    ExitCode::from(exit_code(e))
}

/// Writes live output, and the runs of a many-input evaluation, as they arrive.
#[derive(Debug)]
struct LivePrinter {
    /// Whether the last byte written to stdout ended a line.
    stdout_at_line_start: bool,
    /// The components, to place errors in them.
    components: Vec<(String, String)>,
}

impl LivePrinter {
    fn new(request: &EvalRequest) -> Self {
        LivePrinter {
            stdout_at_line_start: true,
            components: request.components.clone(),
        }
    }

    /// Prints a live-output response: stdout (INFO) and stderr (ERROR) as is; and a
    /// run that ended, if the response carries one.
    fn live(&mut self, response: &EvaluateResponse) {
        if !client::is_live_output(response) {
            return;
        }
        for r in &response.result {
            self.raw(r);
        }
        if let Some(run) = &response.input_result {
            self.run(run);
        }
    }

    /// A run of a many-input evaluation: its header line on stderr, its stdout and
    /// stderr, then its errors.
    fn run(&mut self, run: &InputResult) {
        eprintln!("{}", run_header(run));
        if !run.stdout.is_empty() {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&run.stdout);
            let _ = out.flush();
            self.stdout_at_line_start = run.stdout.ends_with(b"\n");
        }
        let mut err = std::io::stderr().lock();
        if !run.stderr.is_empty() {
            let _ = err.write_all(&run.stderr);
            if !run.stderr.ends_with(b"\n") {
                let _ = writeln!(err);
            }
        }
        for error in &run.error {
            let _ = writeln!(err, "{}", format_error(&self.components, error));
        }
        let _ = err.flush();
    }

    fn raw(&mut self, r: &EvaluationResult) {
        if r.output.is_empty() {
            return;
        }
        if r.kind() == Kind::Error {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(r.output.as_bytes());
            let _ = err.flush();
        } else {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(r.output.as_bytes());
            let _ = out.flush();
            self.stdout_at_line_start = r.output.ends_with('\n');
        }
    }

    /// Prints a value of the final response on a line of its own.
    fn value(&mut self, text: &str) {
        let mut out = std::io::stdout().lock();
        if !self.stdout_at_line_start {
            let _ = writeln!(out);
        }
        let _ = writeln!(out, "{}", text.strip_suffix('\n').unwrap_or(text));
        let _ = out.flush();
        self.stdout_at_line_start = true;
    }
}

/// Prints the final values, the errors and the status line; returns the exit code.
fn print_outcome(request: &EvalRequest, e: &Evaluated, printer: &mut LivePrinter) -> ExitCode {
    for r in &e.results {
        match r.kind() {
            Kind::Error => printer.raw(r),
            // The empty value of a statement or a void call: jshell shows nothing.
            _ if r.output.is_empty() => {}
            _ => printer.value(&r.output),
        }
    }
    let _ = std::io::stdout().flush();
    for error in &e.errors {
        eprintln!("{}", format_error(&request.components, error));
    }
    eprintln!("{}", status_line(&e.completion));
    ExitCode::from(match e.status() {
        _ if e.succeeded() && runs_succeeded(request, e) => 0,
        Status::SetupFailed | Status::InternalError => EX_SOFTWARE,
        _ => 1,
    })
}

/// For a many-input evaluation: every input ran, each run ended `ok` without errors,
/// and no checked output mismatched. True for a single evaluation.
fn runs_succeeded(request: &EvalRequest, e: &Evaluated) -> bool {
    e.runs.len() == request.inputs.len()
        && e.runs.iter().all(|r| {
            let result = &r.result;
            result.completion.as_ref().map(Completion::status) == Some(Status::Ok)
                && result.error.is_empty()
                && result.r#match() != Match::Mismatched
        })
}

/// `input 3: ok, matched (12 ms)`, `input 4: exited_nonzero, exit 2, mismatched
/// (8 ms)`: a run's index, status, exit code or signal, match and wall time.
fn run_header(run: &InputResult) -> String {
    let c = run.completion.clone().unwrap_or_default();
    let mut line = format!(
        "input {}: {}",
        run.index,
        c.status().as_str_name().to_ascii_lowercase()
    );
    if c.signal != 0 {
        line.push_str(&format!(", signal {}", c.signal));
    } else if c.exit_code != 0 {
        line.push_str(&format!(", exit {}", c.exit_code));
    }
    match run.r#match() {
        Match::Matched => line.push_str(", matched"),
        Match::Mismatched => line.push_str(", mismatched"),
        Match::NotChecked => {}
    }
    line.push_str(&format!(" ({} ms)", c.wall_time_ms));
    line
}

/// `component:line:column: kind: message`, or `component: kind: message` without a
/// span; the position is computed from the span's start in the component's code.
fn format_error(components: &[(String, String)], error: &EvaluationError) -> String {
    let code = components
        .iter()
        .find(|(id, _)| *id == error.component_id)
        .map(|(_, code)| code.as_str());
    let place = match (&error.span, code) {
        (Some(span), Some(code)) => match line_column(code, span.start) {
            Some((line, column)) => format!("{}:{line}:{column}", error.component_id),
            None => error.component_id.clone(),
        },
        _ => error.component_id.clone(),
    };
    let message = error.message.trim_end_matches('\n');
    if place.is_empty() {
        format!("{}: {message}", error.kind)
    } else {
        format!("{place}: {}: {message}", error.kind)
    }
}

/// 1-based line and column of the character at `offset` in `code`.
fn line_column(code: &str, offset: i64) -> Option<(usize, usize)> {
    let offset = usize::try_from(offset).ok()?;
    let (mut line, mut column) = (1, 1);
    let mut chars = code.chars();
    for _ in 0..offset {
        match chars.next()? {
            '\n' => {
                line += 1;
                column = 1;
            }
            _ => column += 1,
        }
    }
    Some((line, column))
}

/// `status: ok  exit: 0  wall: 12 ms  cpu: 8 ms  peak memory: 6.9 MiB  runtime: ...`.
fn status_line(c: &Completion) -> String {
    let status = c.status();
    let mut line = format!("status: {}", status.as_str_name().to_ascii_lowercase());
    if c.signal != 0 {
        line.push_str(&format!("  signal: {}", c.signal));
    } else if c.exit_code != 0 || matches!(status, Status::Ok | Status::ExitedNonzero) {
        line.push_str(&format!("  exit: {}", c.exit_code));
    }
    line.push_str(&format!(
        "  wall: {} ms  cpu: {} ms  peak memory: {:.1} MiB",
        c.wall_time_ms,
        c.cpu_time_ms,
        c.peak_memory_bytes as f64 / f64::from(1 << 20),
    ));
    if let Some(r) = &c.runtime {
        line.push_str(&format!("  runtime: {}@{}", r.name, r.version));
    }
    if !c.service_id.is_empty() {
        line.push_str(&format!("  node: {}", c.service_id));
    }
    if !c.evaluation_id.is_empty() {
        line.push_str(&format!("  evaluation: {}", c.evaluation_id));
    }
    if c.output_truncated {
        line.push_str("  (output truncated)");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use proto::jsheets::{CodeSpan, RuntimeRef};

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        args: EvalArgs,
    }

    fn parse(argv: &[&str]) -> EvalArgs {
        Cmd::try_parse_from(std::iter::once("eval").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn components_limits_and_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.py");
        std::fs::write(&file, "print(x)").unwrap();
        let file = file.to_str().unwrap();
        let args = parse(&[
            "-e",
            "x = 1",
            "--code",
            "y = 2",
            file,
            "--wall-time",
            "200",
            "--memory",
            "64",
        ]);
        let p = prepare(&args).unwrap();
        let ids: Vec<&str> = p.request.components.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(ids, ["e1", "e2", file]);
        assert_eq!(p.request.components[2].1, "print(x)");
        let limits = p.request.limits.unwrap();
        assert_eq!(limits.wall_time_ms, 200_000);
        assert_eq!(limits.memory_bytes, 64 << 20);
        assert_eq!(p.deadline, Duration::from_secs(230));
        assert_eq!(p.request.runtime, "");

        let p = prepare(&parse(&["-e", "1", "--timeout", "5", "-r", "python-3.11"])).unwrap();
        assert_eq!(p.deadline, Duration::from_secs(5));
        assert!(p.request.limits.is_none());
        assert_eq!(p.request.runtime, "python-3.11");
        let p = prepare(&parse(&["-e", "1"])).unwrap();
        assert_eq!(p.deadline, Duration::from_secs(120));
    }

    #[test]
    fn bad_arguments() {
        for argv in [
            &[][..],
            &["-e", "1", "--wall-time", "0"],
            &["-e", "1", "--wall-time", "NaN"],
            &["-e", "1", "--memory", "0"],
            &["-e", "1", "--timeout=-1"],
            &["/nonexistent/file.py"],
            &["-e", "1", "--stdin", "/nonexistent/input"],
        ] {
            assert!(prepare(&parse(argv)).is_err(), "{argv:?}");
        }
        assert!(Cmd::try_parse_from(["eval", "-e", "1", "--cert", "c.pem"]).is_err());
    }

    #[test]
    fn inputs_and_their_match() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str, content: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, content).unwrap();
            p.display().to_string()
        };
        let (a, a_out, b) = (path("a", "1 2"), path("a.out", "3\n"), path("b", "4"));
        let p = prepare(&parse(&[
            "-e",
            "1",
            "--input",
            &format!("{a}:{a_out}"),
            "--input",
            &b,
            "--match",
            "trailing-whitespace",
        ]))
        .unwrap();
        let got: Vec<(&[u8], Option<&[u8]>)> = p
            .request
            .inputs
            .iter()
            .map(|i| (i.stdin.as_slice(), i.expected_output.as_deref()))
            .collect();
        assert_eq!(got, [(&b"1 2"[..], Some(&b"3\n"[..])), (&b"4"[..], None)]);
        assert_eq!(
            p.request.output_match,
            OutputMatch::IgnoreTrailingWhitespace
        );
        let p = prepare(&parse(&["-e", "1", "--input", &a])).unwrap();
        assert_eq!(p.request.output_match, OutputMatch::Exact);
        for argv in [
            vec!["-e", "1", "--input", "/nonexistent"],
            vec!["-e", "1", "--input", ""],
            vec!["-e", "1", "--input", &format!("{a}:")],
            vec!["-e", "1", "--input", &format!("{a}:/nonexistent")],
        ] {
            assert!(prepare(&parse(&argv)).is_err(), "{argv:?}");
        }
        for argv in [
            vec![
                "eval",
                "-e",
                "1",
                "--input",
                a.as_str(),
                "--stdin",
                a.as_str(),
            ],
            vec!["eval", "-e", "1", "--match", "loose"],
        ] {
            assert!(Cmd::try_parse_from(argv).is_err());
        }
    }

    #[test]
    fn run_headers() {
        let run = |status: Status, exit_code, signal, m: Match| InputResult {
            index: 3,
            completion: Some(Completion {
                status: status.into(),
                exit_code,
                signal,
                wall_time_ms: 12,
                ..Completion::default()
            }),
            r#match: m.into(),
            ..InputResult::default()
        };
        assert_eq!(
            run_header(&run(Status::Ok, 0, 0, Match::Matched)),
            "input 3: ok, matched (12 ms)"
        );
        assert_eq!(
            run_header(&run(Status::WallTimeout, 0, 9, Match::NotChecked)),
            "input 3: wall_timeout, signal 9 (12 ms)"
        );
        assert_eq!(
            run_header(&run(Status::ExitedNonzero, 2, 0, Match::Mismatched)),
            "input 3: exited_nonzero, exit 2, mismatched (12 ms)"
        );
    }

    #[test]
    fn tls_options() {
        let args = parse(&["-e", "1"]);
        assert!(args.node.tls().is_none());
        let args = parse(&["-e", "1", "--ca", "ca.pem", "--domain", "node"]);
        let tls = args.node.tls().unwrap();
        assert_eq!(tls.ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(tls.domain.as_deref(), Some("node"));
    }

    #[test]
    fn errors_and_status_line() {
        let request = EvalRequest::new("").component("e1", "x = 1\ny = z\n");
        let mut error = EvaluationError {
            component_id: "e1".into(),
            kind: "exception".into(),
            message: "NameError: name 'z' is not defined\n".into(),
            span: Some(CodeSpan { start: 10, end: 11 }),
        };
        assert_eq!(
            format_error(&request.components, &error),
            "e1:2:5: exception: NameError: name 'z' is not defined"
        );
        error.span = None;
        assert_eq!(
            format_error(&request.components, &error),
            "e1: exception: NameError: name 'z' is not defined"
        );
        error.component_id.clear();
        assert_eq!(
            format_error(&request.components, &error),
            "exception: NameError: name 'z' is not defined"
        );
        assert_eq!(line_column("ab", 5), None);

        let c = Completion {
            status: Status::Ok.into(),
            wall_time_ms: 12,
            cpu_time_ms: 8,
            peak_memory_bytes: 7_235_174,
            runtime: Some(RuntimeRef {
                name: "python-3.11".into(),
                version: "3.11.2".into(),
            }),
            service_id: "node-1".into(),
            ..Completion::default()
        };
        assert_eq!(
            status_line(&c),
            "status: ok  exit: 0  wall: 12 ms  cpu: 8 ms  peak memory: 6.9 MiB  \
             runtime: python-3.11@3.11.2  node: node-1"
        );
        let killed = Completion {
            status: Status::WallTimeout.into(),
            signal: 9,
            ..Completion::default()
        };
        assert!(status_line(&killed).starts_with("status: wall_timeout  signal: 9  wall: 0 ms"));
        let timed_out = Completion {
            status: Status::WallTimeout.into(),
            ..Completion::default()
        };
        assert!(status_line(&timed_out).starts_with("status: wall_timeout  wall: 0 ms"));
    }
}
