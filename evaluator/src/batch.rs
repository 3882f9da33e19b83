//! One program, many inputs: the components run once per input, each run an
//! evaluation of its own in a fresh sandbox (a pre-started one when the caller has
//! one), several at once, each run's outcome, output and match reported as it ends.
//!
//! Runs share nothing: every run is [`evaluate_in`] with its own sandbox, its own
//! stdin and files; what is shared is only what never runs snippet code (the warm
//! interpreter of a zygote the sandboxes are forked from).

use futures_util::stream::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::evaluate::{evaluate_in, EvaluateError, RequestData};
use crate::lang::Launch;
use crate::sandbox::files::InputFile;
use crate::sandbox::{Limits, Outcome, Sandboxes, Waiting};
use crate::snippet::{Component, Output};

/// One input of a many-input request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Input {
    pub stdin: Vec<u8>,
    /// Put in `/work` after the request's own files.
    pub files: Vec<InputFile>,
    /// Compared with the run's stdout when given.
    pub expected: Option<Vec<u8>>,
}

/// How a run's stdout is compared with its expected output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MatchMode {
    #[default]
    Exact,
    /// Whitespace at the end of each line, and blank lines at the end, do not count.
    IgnoreTrailingWhitespace,
}

/// Whether `actual` matches `expected` under `mode`.
pub fn output_matches(mode: MatchMode, expected: &[u8], actual: &[u8]) -> bool {
    match mode {
        MatchMode::Exact => expected == actual,
        MatchMode::IgnoreTrailingWhitespace => {
            let lines = |b: &[u8]| -> Vec<Vec<u8>> {
                let mut lines: Vec<Vec<u8>> = b
                    .split(|&c| c == b'\n')
                    .map(|l| l.trim_ascii_end().to_vec())
                    .collect();
                while lines.last().is_some_and(|l| l.is_empty()) {
                    lines.pop();
                }
                lines
            };
            lines(expected) == lines(actual)
        }
    }
}

/// How one run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// The input's index in the request.
    pub index: usize,
    pub outcome: Outcome,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Everything else the driver reported: diagnostics, exceptions, violations,
    /// values, problems of its own.
    pub outputs: Vec<Output>,
    /// `None` when the input had no expected output.
    pub matched: Option<bool>,
}

/// What the runs share: the program, its limits and the request's own files.
#[derive(Debug)]
pub struct Program<'a> {
    pub launch: &'a Launch,
    pub components: &'a [Component],
    /// Each run's limits.
    pub limits: Limits,
    /// The request's files (put before each input's), files to return, datasets.
    pub data: RequestData,
    pub mode: MatchMode,
}

/// Runs `program` once per input, at most `parallel` at a time, each in the sandbox
/// `take` gives it (or a fresh cold one), reporting every run on `done` as it ends.
/// Stops starting runs when `cancel` fires or `done` is gone; a run already going is
/// cancelled with it.
pub async fn run_inputs<F, Fut>(
    sandboxes: &Sandboxes,
    program: &Program<'_>,
    inputs: Vec<Input>,
    parallel: usize,
    take: F,
    done: mpsc::Sender<RunReport>,
    cancel: CancellationToken,
) -> Result<(), EvaluateError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<Waiting>>,
{
    let take = &take;
    let done_ref = &done;
    let cancel_ref = &cancel;
    let mut runs = futures_util::stream::iter(inputs.into_iter().enumerate())
        .map(|(index, input)| async move {
            if cancel_ref.is_cancelled() || done_ref.is_closed() {
                return Ok(());
            }
            let waiting = if program.data.datasets.is_empty() {
                take().await
            } else {
                None
            };
            let report = run_one(
                sandboxes,
                program,
                index,
                input,
                waiting,
                cancel_ref.child_token(),
            )
            .await?;
            if done_ref.send(report).await.is_err() {
                cancel_ref.cancel();
            }
            Ok::<(), EvaluateError>(())
        })
        .buffer_unordered(parallel.max(1));
    let mut first_error = None;
    while let Some(r) = runs.next().await {
        if let Err(e) = r {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn run_one(
    sandboxes: &Sandboxes,
    program: &Program<'_>,
    index: usize,
    input: Input,
    waiting: Option<Waiting>,
    cancel: CancellationToken,
) -> Result<RunReport, EvaluateError> {
    let mut data = program.data.clone();
    data.files.put.extend(input.files);
    let (tx, mut rx) = mpsc::channel::<Output>(64);
    let collect = async move {
        let (mut stdout, mut stderr, mut outputs) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(o) = rx.recv().await {
            match o {
                Output::Stdout { data, .. } => stdout.extend(data),
                Output::Stderr { data, .. } => stderr.extend(data),
                Output::Started { .. } => {}
                other => outputs.push(other),
            }
        }
        (stdout, stderr, outputs)
    };
    let run = evaluate_in(
        sandboxes,
        waiting,
        program.launch,
        program.components,
        input.stdin,
        program.limits.clone(),
        data,
        tx,
        cancel,
    );
    let (outcome, (stdout, stderr, outputs)) = tokio::join!(run, collect);
    let outcome = outcome?;
    let matched = input
        .expected
        .as_deref()
        .map(|e| output_matches(program.mode, e, &stdout));
    Ok(RunReport {
        index,
        outcome,
        stdout,
        stderr,
        outputs,
        matched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_match_exactly_or_up_to_trailing_whitespace() {
        use MatchMode::*;
        assert!(output_matches(Exact, b"1 2\n", b"1 2\n"));
        assert!(!output_matches(Exact, b"1 2\n", b"1 2"));
        assert!(!output_matches(Exact, b"1 2\n", b"1 2 \n"));
        let loose = IgnoreTrailingWhitespace;
        assert!(output_matches(loose, b"1 2\n3", b"1 2  \n3\n\n"));
        assert!(output_matches(loose, b"", b"\n \n"));
        assert!(output_matches(loose, b"a\r\n", b"a"));
        assert!(!output_matches(loose, b" 1", b"1"));
        assert!(!output_matches(loose, b"1\n\n2", b"1\n2"));
        assert!(!output_matches(loose, b"12", b"1 2"));
    }
}
