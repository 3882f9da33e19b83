//! Language evaluation on top of the sandbox: turns a list of code components into a
//! sandbox job for the runtime's evaluator kind, and the driver's event stream back
//! into per-component results.
//!
//! Components run in order in one sandbox and share state (jsheets semantics). The
//! driver inside the sandbox reports on fd 4 (JSON lines); the snippet can write there
//! too, so nothing it says is trusted: [`crate::events`] bounds, frames, parses and
//! checks it against the request, and reports what it dropped once.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::access::java::{Generated, Vetting};
use crate::access::AccessList;
use crate::events::{Bounds, ClassFile, Step, Translator, MAX_STATEMENTS, MAX_VALUE_CHARS};
use crate::runtime::Runtime;
use crate::sandbox::{Event, Job, Limits, Outcome, Sandboxes, Waiting};

// The old path of the snippet's types, kept until runtime-service imports them from
// `crate::snippet`.
pub use crate::snippet::{Component, Output};

/// The Python driver, run inside the sandbox by `python -I -c BOOTSTRAP`.
const PYTHON_DRIVER: &str = include_str!("drivers/python_driver.py");
const PYTHON_BOOTSTRAP: &str = include_str!("drivers/python_bootstrap.txt");
/// The JShell driver's source, compiled into every JShell runtime when it is installed.
pub const JSHELL_DRIVER: &str = include_str!("drivers/JShellDriver.java");
pub const JSHELL_DRIVER_SOURCE_FILE: &str = "JShellDriver.java";
/// Where a JShell runtime carries its compiled driver (inside the sandbox).
pub const JSHELL_DRIVER_DIR: &str = "/opt/jsheets-runtime/jshell";
/// Version 2: the driver redefines classes in place through its agent jar.
const JSHELL_DRIVER_VERSION: i32 = 2;
/// The class-data-sharing archive in [`JSHELL_DRIVER_DIR`].
pub const JSHELL_ARCHIVE_FILE: &str = "jshell.jsa";
/// The driver's agent jar in [`JSHELL_DRIVER_DIR`] (`-javaagent`): it gives the driver
/// `java.lang.instrument`, to redefine classes in place as JShell's JDI engine does.
pub const JSHELL_AGENT_FILE: &str = "jshell-agent.jar";
/// The agent jar's manifest: the driver's class (on the class path) is the agent.
pub const JSHELL_AGENT_MANIFEST: &str = "Premain-Class: JShellDriver\nCan-Redefine-Classes: true\n";

/// Where the payload finds its input (the code) inside the sandbox.
const INPUT_PATH: &str = "/proc/self/fd/3";

/// All components as one program, in order.
fn joined(components: &[Component]) -> String {
    components
        .iter()
        .map(|c| c.code.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error("the snippet has no code components")]
    Empty,
    #[error("evaluator kind {0} is not supported for snippets")]
    Unsupported(String),
    #[error("encoding the snippet for the sandbox")]
    Encode(#[source] serde_json::Error),
}

pub use crate::runtime::EvaluatorKind as Kind;

/// What the sandbox needs from a runtime.
#[derive(Debug, Clone)]
pub struct Launch {
    pub kind: Kind,
    pub program: String,
    pub args: Vec<String>,
    /// (host source, sandbox target), all read-only.
    pub mounts: Vec<(PathBuf, PathBuf)>,
    pub environment: Vec<(String, String)>,
    /// The access list snippets are held to; `None` runs them unchecked.
    pub access_list: Option<Arc<AccessList>>,
}

impl Runtime {
    /// What the sandbox needs to run snippets on this runtime.
    pub fn launch(&self) -> Launch {
        let e = self.evaluator();
        Launch {
            kind: e.kind,
            program: e.program.clone(),
            args: e.args.clone(),
            mounts: self.mount_pairs(),
            environment: self
                .environment()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            access_list: None,
        }
    }

    /// A snippet that proves the runtime works, and the stdout it must print.
    pub fn smoke_test(&self) -> (&'static str, &'static str) {
        match self.evaluator().kind {
            Kind::Python => ("print(1 + 1)", "2\n"),
            Kind::Command => ("echo $((1 + 1))", "2\n"),
            Kind::Jshell => ("System.out.println(1 + 1);", "2\n"),
            Kind::Node => ("console.log(1 + 1)", "2\n"),
        }
    }

    /// Human-readable summary for `runtime info`.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "name: {}\nversion: {}\nlanguage: {}\ndescription: {}\nevaluator: {} ({})\ndirectory: {}\n",
            self.name(),
            self.version(),
            self.language(),
            self.description(),
            self.evaluator().kind,
            self.evaluator().program,
            self.dir().display()
        );
        if let Some(list) = self.access_list() {
            s.push_str(&format!("access list: {list}\n"));
        }
        s.push_str("mounts (read-only):\n");
        for m in self.mounts() {
            s.push_str(&format!(
                "  {} -> {}\n",
                m.source.display(),
                m.target.display()
            ));
        }
        s.push_str("environment:\n");
        for (k, v) in self.environment() {
            s.push_str(&format!("  {k}={v}\n"));
        }
        if !self.packages().is_empty() {
            s.push_str(&format!("packages: {}\n", self.packages().join(", ")));
        }
        s
    }
}

/// Builds the sandbox job for `components` on `launch`.
pub fn job(
    launch: &Launch,
    components: &[Component],
    mut stdin: Vec<u8>,
    limits: Limits,
) -> Result<Job, EvaluateError> {
    if components.is_empty() {
        return Err(EvaluateError::Empty);
    }
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
    let (input, events) = match launch.kind {
        Kind::Python => {
            argv.extend(["-I".into(), "-c".into(), PYTHON_BOOTSTRAP.trim().into()]);
            let mut doc = python_preface(launch, false)?;
            doc["components"] = python_components(components);
            (
                Some(serde_json::to_vec(&doc).map_err(EvaluateError::Encode)?),
                true,
            )
        }
        // The code travels as the input memfd, never in argv (which caps one argument
        // at 128 KiB): these interpreters read it from /proc/self/fd/3.
        Kind::Command => {
            argv.push(INPUT_PATH.into());
            (Some(joined(components).into_bytes()), false)
        }
        Kind::Node => {
            argv.extend([
                "-e".into(),
                "require('vm').runInThisContext(require('fs').readFileSync(3, 'utf8'), { filename: 'snippet.js' })"
                    .into(),
            ]);
            (Some(joined(components).into_bytes()), false)
        }
        Kind::Jshell => {
            // The driver compiles and runs each statement inside the sandboxed JVM. The
            // heap follows the memory limit (the rest is for metaspace, javac's code
            // and thread stacks) so that a big allocation is an OutOfMemoryError the
            // driver reports as the memory limit, not a kill nobody explains.
            let heap_mib = ((limits.memory_bytes / 2) >> 20).max(32);
            let metaspace_mib = ((limits.memory_bytes / 4) >> 20).max(64);
            argv.extend([
                "-XX:+UseSerialGC".into(),
                "-XX:TieredStopAtLevel=1".into(),
                format!("-Xmx{heap_mib}m"),
                format!("-XX:MaxMetaspaceSize={metaspace_mib}m"),
                "-XX:ReservedCodeCacheSize=32m".into(),
                "-Xss1m".into(),
                // Fewer JVM service threads: each counts against the process limit.
                "-XX:CICompilerCount=1".into(),
                "-XX:-UsePerfData".into(),
                format!("-XX:SharedArchiveFile={JSHELL_DRIVER_DIR}/{JSHELL_ARCHIVE_FILE}"),
                "-Xshare:auto".into(),
                // A rejected archive only costs time; it must not print into the output.
                "-Xlog:cds=off".into(),
                "-Xlog:cds+dynamic=off".into(),
                "--enable-preview".into(),
                "-Djava.util.logging.config.file=/dev/null".into(),
                "-Duser.home=/work".into(),
                format!("-javaagent:{JSHELL_DRIVER_DIR}/{JSHELL_AGENT_FILE}"),
                "-cp".into(),
                JSHELL_DRIVER_DIR.into(),
                "JShellDriver".into(),
            ]);
            let input = jshell_input(components, &stdin, launch.access_list.is_some());
            // The snippet's stdin travels in the input: fd 0 carries the verdicts.
            stdin = Vec::new();
            (Some(input), true)
        }
    };
    Ok(Job {
        filesystem: crate::sandbox::Filesystem::Runtime(launch.mounts.clone()),
        argv,
        env,
        cwd: PathBuf::from("/work"),
        input,
        events,
        stdin,
        isolate_network: true,
        limits,
        run_as: None,
    })
}

/// The JShell driver's input (see the driver's header): big-endian, length-prefixed.
fn jshell_input(components: &[Component], stdin: &[u8], check_classes: bool) -> Vec<u8> {
    let mut out = jshell_header(check_classes, false);
    out.extend(jshell_request(components, stdin));
    out
}

/// What the JShell driver reads before it starts JShell.
fn jshell_header(check_classes: bool, warm: bool) -> Vec<u8> {
    let mut out = b"JSHD".to_vec();
    out.extend_from_slice(&JSHELL_DRIVER_VERSION.to_be_bytes());
    out.extend_from_slice(&(MAX_STATEMENTS as i32).to_be_bytes());
    out.extend_from_slice(&(MAX_VALUE_CHARS as i32).to_be_bytes());
    out.push(u8::from(check_classes));
    out.push(u8::from(warm));
    out
}

/// What the JShell driver reads once JShell runs: the request.
fn jshell_request(components: &[Component], stdin: &[u8]) -> Vec<u8> {
    fn put(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    let mut out = Vec::new();
    put(&mut out, stdin);
    out.extend_from_slice(&(components.len() as i32).to_be_bytes());
    for c in components {
        put(&mut out, c.id.as_bytes());
        put(&mut out, c.code.as_bytes());
    }
    out
}

/// The Python driver's first document: everything but the components.
fn python_preface(launch: &Launch, deferred: bool) -> Result<serde_json::Value, EvaluateError> {
    let mut doc = serde_json::json!({
        "driver": PYTHON_DRIVER,
        "max_value_chars": MAX_VALUE_CHARS,
        "max_traceback_chars": crate::events::MAX_TRACEBACK_CHARS,
    });
    if let Some(list) = &launch.access_list {
        doc["access"] = python_rules(list);
    }
    if deferred {
        doc["deferred"] = serde_json::Value::Bool(true);
    }
    Ok(doc)
}

fn python_components(components: &[Component]) -> serde_json::Value {
    serde_json::Value::Array(
        components
            .iter()
            .map(|c| serde_json::json!({"id": c.id, "code": c.code}))
            .collect(),
    )
}

/// A sandbox of `launch` to start ahead of its request, and the first part of its
/// input (written at once): the interpreter starts, loads its driver (and for JShell
/// compiles and runs a statement), installs the access list, and waits for the rest;
/// a shell or Node starts and waits for its code. `None` if the kind cannot wait.
pub fn waiting_job(
    launch: &Launch,
    limits: Limits,
) -> Result<Option<(Job, Vec<u8>)>, EvaluateError> {
    let placeholder = [Component {
        id: String::new(),
        code: String::new(),
    }];
    let mut job = job(launch, &placeholder, Vec::new(), limits)?;
    let preface = match launch.kind {
        Kind::Python => {
            let mut line = serde_json::to_vec(&python_preface(launch, true)?)
                .map_err(EvaluateError::Encode)?;
            line.push(b'\n');
            line
        }
        Kind::Jshell => jshell_header(launch.access_list.is_some(), true),
        // The interpreter starts and reads its code from the pipe as it comes.
        Kind::Command | Kind::Node => Vec::new(),
    };
    job.input = None;
    Ok(Some((job, preface)))
}

/// The rest of a waiting sandbox's input, and its stdin pipe contents.
fn waiting_input(
    launch: &Launch,
    components: &[Component],
    stdin: Vec<u8>,
) -> Result<(Vec<u8>, Vec<u8>), EvaluateError> {
    Ok(match launch.kind {
        Kind::Python => (
            serde_json::to_vec(&serde_json::json!({ "components": python_components(components) }))
                .map_err(EvaluateError::Encode)?,
            stdin,
        ),
        Kind::Jshell => (jshell_request(components, &stdin), Vec::new()),
        Kind::Command | Kind::Node => (joined(components).into_bytes(), stdin),
    })
}

/// The input of the install-time training run of the JShell driver: the language
/// features snippets use most, so that their classes are in the runtime's archive.
pub fn jshell_training_input() -> Vec<u8> {
    let snippets = [
        "System.out.println(\"training\");\nint x = 20 + 22;\nx",
        "String s = \"a\" + x; s.length()",
        "record P(int a, int b) {}\nvar ps = List.of(new P(1, 2), new P(3, 4));",
        "ps.stream().map(p -> p.a() * 2).collect(Collectors.toList())",
        "class C { int f(int y) { return 10 / y; } }\nnew C().f(0)",
        "Object o = 5; switch (o) { case Integer i -> System.out.println(i); default -> {} }",
        "int broken = missing + 1;",
        "Map<String, Integer> m = new HashMap<>(); m.put(\"k\", 1); m",
        // A forward reference, resolved by redefining the class in place.
        "int later() { return sooner() + 1; }",
        "int sooner() { return 1; }\nlater()",
    ];
    let components: Vec<Component> = snippets
        .iter()
        .enumerate()
        .map(|(i, code)| Component {
            id: format!("t{i}"),
            code: (*code).into(),
        })
        .collect();
    jshell_input(&components, &[], false)
}

/// A list's rules as the Python driver takes them: `[segments, allow]` in file order.
fn python_rules(list: &AccessList) -> serde_json::Value {
    serde_json::json!({
        "list": list.name(),
        "rules": list
            .rules()
            .iter()
            .filter(|r| r.params().is_none() && r.return_type().is_none())
            .map(|r| serde_json::json!([r.segments(), !r.is_deny()]))
            .collect::<Vec<_>>(),
    })
}

/// Vets the class files of one `classes` event (classes to load or to redefine) for the
/// running component; every denied reference and every unreadable class becomes a
/// violation, within the record bounds. True when all may be installed.
fn vet_classes(
    list: &AccessList,
    vetting: &mut Vetting,
    classes: &[ClassFile],
    translator: &mut Translator<'_>,
    outputs: &mut Vec<Output>,
) -> bool {
    let mut allowed = true;
    // One batch: the classes know one another, and are remembered once allowed.
    let bytes: Vec<&[u8]> = classes.iter().map(|c| c.bytes.as_slice()).collect();
    let checked = vetting.check_batch(list, &bytes);
    for (class, checked) in classes.iter().zip(checked) {
        match checked {
            Ok(denials) => {
                for d in denials {
                    allowed = false;
                    outputs.extend(translator.admit(Output::Violation {
                        component: translator.running().to_owned(),
                        message: format!("{d} in {}", list.name()),
                        reference: d.reference,
                    }));
                }
            }
            Err(e) => {
                allowed = false;
                outputs.extend(translator.admit(Output::Violation {
                    component: translator.running().to_owned(),
                    reference: class.name.chars().take(200).collect(),
                    message: format!("class {:.200} was not loaded: {e}", class.name),
                }));
            }
        }
    }
    if allowed {
        vetting.commit();
    }
    allowed
}

/// Runs `components` in a fresh sandbox of `launch`, streaming [`Output`]s.
pub async fn evaluate(
    sandboxes: &Sandboxes,
    launch: &Launch,
    components: &[Component],
    stdin: Vec<u8>,
    limits: Limits,
    out: mpsc::Sender<Output>,
    cancel: CancellationToken,
) -> Result<Outcome, EvaluateError> {
    evaluate_in(
        sandboxes, None, launch, components, stdin, limits, out, cancel,
    )
    .await
}

/// [`evaluate`] in `waiting` (a sandbox of `launch` started ahead by [`waiting_job`])
/// if given, else in a fresh cold one.
#[allow(clippy::too_many_arguments)]
pub async fn evaluate_in(
    sandboxes: &Sandboxes,
    waiting: Option<Waiting>,
    launch: &Launch,
    components: &[Component],
    stdin: Vec<u8>,
    limits: Limits,
    out: mpsc::Sender<Output>,
    cancel: CancellationToken,
) -> Result<Outcome, EvaluateError> {
    if components.is_empty() {
        return Err(EvaluateError::Empty);
    }
    // Everything the sandbox says is held to bounds derived from this request.
    let bounds = Bounds::for_request(components, &limits);
    let framing = bounds.framing;
    let run = match waiting {
        Some(w) => {
            let (input, stdin) = waiting_input(launch, components, stdin)?;
            Run::Waiting(Box::new((w, input, stdin, limits)))
        }
        None => Run::Cold(Box::new(job(launch, components, stdin, limits)?)),
    };
    // JShell asks before loading each class; the verdicts go back on its stdin.
    let (verdict_tx, verdict_rx) = match (&launch.access_list, launch.kind) {
        (Some(_), Kind::Jshell) => {
            let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
            (Some(tx), Some(rx))
        }
        _ => (None, None),
    };
    let access_list = launch.access_list.clone();
    // JShell's own stub for unresolved references is not held to the list, unless a
    // component could have written it itself (see `Generated`).
    let generated = if components
        .iter()
        .any(|c| crate::access::java::names_resolution_exception(&c.code))
    {
        Generated::Nothing
    } else {
        Generated::ResolutionStub
    };
    // Every class vetted in this evaluation, across components (see `Vetting`).
    let mut vetting = Vetting::new(generated);
    // The queue holds a bounded number of bounded events.
    let (tx, mut rx) = mpsc::channel::<Event>(bounds.queue);
    // Output reaches us on the pipes and, from Python-level writes, as driver events;
    // the per-stream cap counts both, and going over stops the sandbox.
    let stop = cancel.child_token();
    let stopper = stop.clone();
    let mut translator = Translator::new(components, bounds, verdict_tx.is_some());
    let translator_ref = &mut translator;
    let translate = async move {
        let translator = translator_ref;
        let mut outputs = Vec::new();
        while let Some(event) = rx.recv().await {
            match translator.event(event) {
                Some(Step::Output(o)) => outputs.push(o),
                Some(Step::Vet { seq, classes }) => {
                    let allowed = match &access_list {
                        Some(list) => {
                            vet_classes(list, &mut vetting, &classes, translator, &mut outputs)
                        }
                        None => true,
                    };
                    answer(&verdict_tx, seq, allowed, translator);
                }
                Some(Step::Deny { seq }) => answer(&verdict_tx, seq, false, translator),
                None => {}
            }
            if translator.output_exceeded() {
                stopper.cancel();
            }
            for o in outputs.drain(..) {
                if out.send(o).await.is_err() {
                    // The caller went away: dropping rx makes the sandbox cancel itself.
                    return;
                }
            }
        }
        // What was dropped, once.
        if let Some(report) = translator.finish() {
            let _ = out.send(report).await;
        }
    };
    let running = async move {
        match run {
            Run::Cold(job) => {
                sandboxes
                    .run_with_stdin(*job, framing, verdict_rx, tx, stop)
                    .await
            }
            Run::Waiting(waiting) => {
                let (w, input, stdin, limits) = *waiting;
                sandboxes
                    .run_waiting(w, input, stdin, limits, framing, verdict_rx, tx, stop)
                    .await
            }
        }
    };
    let (mut outcome, ()) = tokio::join!(running, translate);
    // The driver's word can only make its own result worse; the JVM ends an exhausted
    // heap with an OutOfMemoryError, not with the cgroup's kill.
    if translator.memory_limit()
        && matches!(
            outcome.status,
            crate::sandbox::Status::Ok | crate::sandbox::Status::ExitedNonZero
        )
    {
        outcome.status = crate::sandbox::Status::MemoryLimit;
    }
    let ((stdout, stdout_truncated), (stderr, stderr_truncated)) = translator.output_counts();
    outcome.stdout_truncated |= stdout_truncated;
    outcome.stderr_truncated |= stderr_truncated;
    outcome.stdout_bytes = outcome.stdout_bytes.max(stdout);
    outcome.stderr_bytes = outcome.stderr_bytes.max(stderr);
    if translator.output_exceeded()
        && outcome.status == crate::sandbox::Status::Cancelled
        && !cancel.is_cancelled()
    {
        outcome.status = crate::sandbox::Status::OutputLimit;
    }
    Ok(outcome)
}

/// Answers the JShell driver's batch `seq`. A driver waits for each answer before it
/// asks again, so a full queue means the sandbox asked without waiting: the answer is
/// dropped (and counted), never waited for.
fn answer(
    verdicts: &Option<mpsc::Sender<Vec<u8>>>,
    seq: u64,
    allowed: bool,
    translator: &mut Translator<'_>,
) {
    let Some(tx) = verdicts else { return };
    let verdict = if allowed { "allow" } else { "deny" };
    match tx.try_send(format!("{seq} {verdict}\n").into_bytes()) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => translator.unanswered(),
        // A driver that is gone does not need its answer.
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

enum Run {
    Cold(Box<Job>),
    Waiting(Box<(Waiting, Vec<u8>, Vec<u8>, Limits)>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_snippet_is_refused() {
        let launch = Launch {
            kind: Kind::Python,
            program: "/usr/bin/python3".into(),
            args: vec![],
            mounts: vec![],
            environment: vec![],
            access_list: None,
        };
        assert!(matches!(
            job(&launch, &[], vec![], Limits::default()),
            Err(EvaluateError::Empty)
        ));
    }

    #[test]
    fn host_environment_never_enters() {
        let launch = Launch {
            kind: Kind::Command,
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
