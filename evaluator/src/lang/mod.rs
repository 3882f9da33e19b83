//! The languages snippets are written in: one submodule per evaluator kind, each saying
//! how its interpreter is started in a sandbox and how the code reaches it.
//!
//! [`job`] is the frame every language shares (the sandbox's environment, filesystem
//! and working directory) around what the runtime's kind adds: the interpreter's
//! arguments after the runtime's own, its input (on fd 3), its stdin, and whether a
//! driver reports on the event channel (fd 4). A sandbox started ahead of its request
//! ([`waiting_job`]) gets the first part of that input at once and the rest
//! (`waiting_input`) at hand-off.

mod command;
pub mod jshell;
mod node;
mod python;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::access::AccessList;
use crate::sandbox::{Filesystem, Job, Limits};
use crate::snippet::Component;

/// How a runtime runs snippets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvaluatorKind {
    Python,
    Jshell,
    Node,
    /// `program [args] /proc/self/fd/3` (shell-like runtimes).
    Command,
}

impl EvaluatorKind {
    pub const ALL: [EvaluatorKind; 4] = [Self::Python, Self::Jshell, Self::Node, Self::Command];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Python => "python",
            Self::Jshell => "jshell",
            Self::Node => "node",
            Self::Command => "command",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// A snippet that proves a runtime of this kind works, and the stdout it must print.
    pub fn smoke_test(self) -> (&'static str, &'static str) {
        language(self).smoke_test()
    }
}

impl fmt::Display for EvaluatorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the sandbox needs from a runtime.
#[derive(Debug, Clone)]
pub struct Launch {
    pub kind: EvaluatorKind,
    pub program: String,
    pub args: Vec<String>,
    /// (host source, sandbox target), all read-only.
    pub mounts: Vec<(PathBuf, PathBuf)>,
    pub environment: Vec<(String, String)>,
    /// The access list snippets are held to; `None` runs them unchecked.
    pub access_list: Option<Arc<AccessList>>,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("the snippet has no code components")]
    Empty,
    #[error("encoding the snippet for the sandbox")]
    Encode(#[source] serde_json::Error),
}

/// The input of a payload (read from fd 3) and what it finds on its stdin.
#[derive(Debug)]
struct Input {
    input: Vec<u8>,
    stdin: Vec<u8>,
}

/// What one evaluator kind adds to a job.
///
/// The defaults are those of a plain script runner (Node, shells): no driver, the
/// components joined into one script as the whole input, read as it comes, so a
/// waiting sandbox gets nothing before its request.
trait Language {
    /// Whether the interpreter runs a driver that reports on the event channel.
    fn events(&self) -> bool {
        false
    }

    /// Arguments after the runtime's program and its own arguments.
    fn args(&self, launch: &Launch, limits: &Limits) -> Vec<String>;

    /// The whole input of a cold sandbox running `components` with `stdin`.
    fn input(
        &self,
        _launch: &Launch,
        components: &[Component],
        stdin: Vec<u8>,
    ) -> Result<Input, JobError> {
        Ok(Input {
            input: joined(components).into_bytes(),
            stdin,
        })
    }

    /// The first part of a waiting sandbox's input, written when it starts.
    fn preface(&self, _launch: &Launch) -> Result<Vec<u8>, JobError> {
        Ok(Vec::new())
    }

    /// The preface that makes the driver a zygote (see `sandbox::zygote`); `None` for
    /// kinds without one.
    fn zygote_preface(&self, _launch: &Launch) -> Result<Option<Vec<u8>>, JobError> {
        Ok(None)
    }

    /// The rest of a waiting sandbox's input, written at hand-off.
    fn rest(
        &self,
        launch: &Launch,
        components: &[Component],
        stdin: Vec<u8>,
    ) -> Result<Input, JobError> {
        self.input(launch, components, stdin)
    }

    /// A snippet that proves a runtime works, and the stdout it must print.
    fn smoke_test(&self) -> (&'static str, &'static str);
}

fn language(kind: EvaluatorKind) -> &'static dyn Language {
    match kind {
        EvaluatorKind::Python => &python::Python,
        EvaluatorKind::Jshell => &jshell::Jshell,
        EvaluatorKind::Node => &node::Node,
        EvaluatorKind::Command => &command::Command,
    }
}

/// Builds the sandbox job for `components` on `launch`.
pub fn job(
    launch: &Launch,
    components: &[Component],
    stdin: Vec<u8>,
    limits: Limits,
) -> Result<Job, JobError> {
    if components.is_empty() {
        return Err(JobError::Empty);
    }
    let language = language(launch.kind);
    let args = language.args(launch, &limits);
    let Input { input, stdin } = language.input(launch, components, stdin)?;
    Ok(frame(launch, args, input, stdin, language.events(), limits))
}

/// The frame every language shares around `args` (after the runtime's program and its
/// own arguments), the payload's `input` and `stdin`.
fn frame(
    launch: &Launch,
    args: Vec<String>,
    input: Vec<u8>,
    stdin: Vec<u8>,
    events: bool,
    limits: Limits,
) -> Job {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ("HOME".into(), "/work".into()),
        ("LANG".into(), "C.UTF-8".into()),
    ];
    // The runtime's environment overrides the fixed minimum; the host's never enters.
    for (k, v) in &launch.environment {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    let mut argv = vec![launch.program.clone()];
    argv.extend(launch.args.iter().cloned());
    argv.extend(args);
    Job {
        filesystem: Filesystem::Runtime(launch.mounts.clone()),
        argv,
        env,
        cwd: PathBuf::from("/work"),
        input: Some(input),
        events,
        stdin,
        isolate_network: true,
        limits,
        run_as: None,
        datasets: Vec::new(),
        files: Default::default(),
    }
}

/// A sandbox of `launch` to start ahead of its request, and the first part of its
/// input (written at once): the interpreter starts, loads its driver (and for JShell
/// compiles and runs a statement), installs the access list, and waits for the rest;
/// a shell or Node starts and waits for its code. `None` if the kind cannot wait.
pub fn waiting_job(launch: &Launch, limits: Limits) -> Result<Option<(Job, Vec<u8>)>, JobError> {
    let placeholder = [Component {
        id: String::new(),
        code: String::new(),
    }];
    let mut job = job(launch, &placeholder, Vec::new(), limits)?;
    let preface = language(launch.kind).preface(launch)?;
    job.input = None;
    Ok(Some((job, preface)))
}

/// A zygote of `launch` (see `sandbox::zygote`): the job of the sandboxes it forks
/// (a waiting job's) and the zygote's input. `None` if the kind has no zygote.
pub fn zygote_job(launch: &Launch, limits: Limits) -> Result<Option<(Job, Vec<u8>)>, JobError> {
    let Some(preface) = language(launch.kind).zygote_preface(launch)? else {
        return Ok(None);
    };
    Ok(waiting_job(launch, limits)?.map(|(job, _)| (job, preface)))
}

/// The rest of a waiting sandbox's input, and its stdin pipe contents.
pub(crate) fn waiting_input(
    launch: &Launch,
    components: &[Component],
    stdin: Vec<u8>,
) -> Result<(Vec<u8>, Vec<u8>), JobError> {
    let Input { input, stdin } = language(launch.kind).rest(launch, components, stdin)?;
    Ok((input, stdin))
}

/// The class vetting of an evaluation of `components` on `launch` whose driver asks
/// before it loads code (JShell held to an access list), and the receiving end of its
/// verdicts, which becomes the driver's stdin; `None` for any other.
pub(crate) fn verdicts(
    launch: &Launch,
    components: &[Component],
) -> Option<(
    jshell::vetting::Verdicts,
    tokio::sync::mpsc::Receiver<Vec<u8>>,
)> {
    jshell::vetting::Verdicts::for_request(launch, components)
}

/// All components as one program, in order.
fn joined(components: &[Component]) -> String {
    components
        .iter()
        .map(|c| c.code.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_snippet_is_refused() {
        let launch = Launch {
            kind: EvaluatorKind::Python,
            program: "/usr/bin/python3".into(),
            args: vec![],
            mounts: vec![],
            environment: vec![],
            access_list: None,
        };
        assert!(matches!(
            job(&launch, &[], vec![], Limits::default()),
            Err(JobError::Empty)
        ));
    }

    #[test]
    fn host_environment_never_enters() {
        let launch = Launch {
            kind: EvaluatorKind::Command,
            program: "/bin/sh".into(),
            args: vec![],
            mounts: vec![],
            environment: vec![("LANG".into(), "C".into())],
            access_list: None,
        };
        let c = [Component {
            id: "1".into(),
            code: "true".into(),
        }];
        let job = job(&launch, &c, vec![], Limits::default()).unwrap();
        assert!(job.env.contains(&("LANG".into(), "C".into())));
        assert!(!job.env.iter().any(|(k, _)| k == "USER" || k == "CARGO"));
        assert_eq!(job.argv, ["/bin/sh", "/proc/self/fd/3"]);
        assert_eq!(job.input.as_deref(), Some(&b"true"[..]));
    }
}
