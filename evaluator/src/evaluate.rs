//! Language evaluation on top of the sandbox: turns a list of code components into a
//! sandbox job for the runtime's evaluator kind, and the driver's event stream back
//! into per-component results.
//!
//! Components run in order in one sandbox and share state (jsheets semantics). The
//! driver inside the sandbox reports on fd 4 (JSON lines); everything it says is
//! untrusted and parsed defensively: an unreadable line becomes an `internal` error,
//! never a panic.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::access::java::Generated;
use crate::access::AccessList;
use crate::runtime::Runtime;
use crate::sandbox::{Event, Job, Limits, Outcome, Sandboxes, Waiting};

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
/// Statements per component (jsheets' cap).
const MAX_STATEMENTS: i32 = 100;

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

/// Largest rendering of an expression value sent back.
const MAX_VALUE_CHARS: usize = 10_000;

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

/// One code component of a snippet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub id: String,
    pub code: String,
}

/// Results streamed while the snippet runs, attributed to a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A component began to run (so a limit hit can name the component it hit in).
    Started {
        component: String,
    },
    Stdout {
        component: String,
        data: Vec<u8>,
    },
    Stderr {
        component: String,
        data: Vec<u8>,
    },
    /// Value of a trailing expression.
    Value {
        component: String,
        text: String,
    },
    /// A compile-time diagnostic; `start..end` are character offsets into the component.
    Diagnostic {
        component: String,
        kind: String,
        message: String,
        line: u32,
        column: u32,
        start: u64,
        end: u64,
    },
    /// An uncaught exception with the snippet's own frames.
    Exception {
        component: String,
        kind: String,
        message: String,
        traceback: String,
        line: Option<u32>,
    },
    /// The snippet used something the access list denies.
    Violation {
        component: String,
        reference: String,
        message: String,
    },
    /// The driver reported a problem of its own.
    Internal {
        component: String,
        message: String,
    },
}

/// A driver event, as the driver writes it.
#[derive(Debug, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum DriverEvent {
    Start {
        id: String,
    },
    /// Python-level stdout/stderr, base64, in order with the other events.
    Output {
        stream: String,
        data: String,
    },
    Value {
        id: String,
        repr: String,
    },
    SyntaxError {
        id: String,
        #[serde(rename = "type")]
        kind: String,
        message: String,
        line: Option<u32>,
        column: Option<u32>,
        start: Option<u64>,
        end: Option<u64>,
    },
    Exception {
        id: String,
        #[serde(rename = "type")]
        kind: String,
        message: String,
        traceback: String,
        line: Option<u32>,
    },
    /// Python: the snippet reached something the list denies (already stopped).
    Violation {
        id: String,
        reference: String,
        message: String,
    },
    /// JShell: class files to vet before they are loaded.
    Classes {
        seq: u64,
        id: String,
        classes: Vec<ClassFile>,
    },
    /// JShell: the heap ran out.
    MemoryLimit {},
    /// A waiting sandbox is warm (normally consumed before the request).
    Ready {},
    Exit {},
    End {},
    Done {},
    Internal {
        message: String,
    },
}

#[derive(Debug, Deserialize)]
struct ClassFile {
    name: String,
    bytes: String,
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
    out.extend_from_slice(&MAX_STATEMENTS.to_be_bytes());
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

/// Vets the class files of one `classes` event (classes to load or to redefine); every
/// denied reference and every unreadable class becomes an output. True when all may be
/// installed.
fn vet_classes(
    list: &AccessList,
    generated: Generated,
    component: &str,
    classes: &[ClassFile],
    outputs: &mut Vec<Output>,
) -> bool {
    use base64::Engine;
    let mut allowed = true;
    for class in classes {
        let bytes = match base64::engine::general_purpose::STANDARD.decode(class.bytes.as_bytes()) {
            Ok(b) => b,
            Err(e) => {
                outputs.push(Output::Internal {
                    component: component.to_owned(),
                    message: format!("undecodable class file from the sandbox: {e}"),
                });
                allowed = false;
                continue;
            }
        };
        match crate::access::java::check_class_with(list, &bytes, generated) {
            Ok(denials) => {
                for d in denials {
                    allowed = false;
                    outputs.push(Output::Violation {
                        component: component.to_owned(),
                        message: format!("{d} in {}", list.name()),
                        reference: d.reference,
                    });
                }
            }
            Err(e) => {
                allowed = false;
                outputs.push(Output::Violation {
                    component: component.to_owned(),
                    reference: class.name.chars().take(200).collect(),
                    message: format!("class {:.200} was not loaded: {e}", class.name),
                });
            }
        }
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
    let output_cap = limits.output_bytes;
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
    let mut memory_limit = false;
    let first = components[0].id.clone();
    let (tx, mut rx) = mpsc::channel::<Event>(64);
    // Output reaches us on the pipes and, from Python-level writes, as driver events;
    // the per-stream cap counts both, and going over stops the sandbox.
    let stop = cancel.child_token();
    let stopper = stop.clone();
    let translate = async move {
        let mut current = first;
        let mut caps = OutputCaps {
            cap: output_cap,
            ..OutputCaps::default()
        };
        while let Some(event) = rx.recv().await {
            let output = match event {
                Event::Stdout(data) => caps.take(true, current.clone(), data),
                Event::Stderr(data) => caps.take(false, current.clone(), data),
                Event::Driver(line) => match driver_event(&line, &current) {
                    Ok(DriverEvent::Classes { seq, id, classes }) => {
                        let mut outputs = Vec::new();
                        let allowed = match &access_list {
                            Some(list) => vet_classes(list, generated, &id, &classes, &mut outputs),
                            None => true,
                        };
                        for o in outputs {
                            if out.send(o).await.is_err() {
                                return (caps, memory_limit);
                            }
                        }
                        let verdict = if allowed { "allow" } else { "deny" };
                        if let Some(tx) = &verdict_tx {
                            // A driver that is gone does not need its answer.
                            let _ = tx.send(format!("{seq} {verdict}\n").into_bytes()).await;
                        }
                        None
                    }
                    Ok(DriverEvent::MemoryLimit {}) => {
                        memory_limit = true;
                        None
                    }
                    Ok(event) => match translate_event(event, &mut current) {
                        Some(Output::Stdout { component, data }) => {
                            caps.take(true, component, data)
                        }
                        Some(Output::Stderr { component, data }) => {
                            caps.take(false, component, data)
                        }
                        other => other,
                    },
                    Err(internal) => Some(internal),
                },
            };
            if caps.exceeded() {
                stopper.cancel();
            }
            if let Some(o) = output {
                if out.send(o).await.is_err() {
                    // The caller went away: dropping rx makes the sandbox cancel itself.
                    return (caps, memory_limit);
                }
            }
        }
        (caps, memory_limit)
    };
    let running = async move {
        match run {
            Run::Cold(job) => sandboxes.run_with_stdin(*job, verdict_rx, tx, stop).await,
            Run::Waiting(waiting) => {
                let (w, input, stdin, limits) = *waiting;
                sandboxes
                    .run_waiting(w, input, stdin, limits, verdict_rx, tx, stop)
                    .await
            }
        }
    };
    let (mut outcome, (caps, memory_limit)) = tokio::join!(running, translate);
    // The driver's word can only make its own result worse; the JVM ends an exhausted
    // heap with an OutOfMemoryError, not with the cgroup's kill.
    if memory_limit
        && matches!(
            outcome.status,
            crate::sandbox::Status::Ok | crate::sandbox::Status::ExitedNonZero
        )
    {
        outcome.status = crate::sandbox::Status::MemoryLimit;
    }
    outcome.stdout_truncated |= caps.stdout_truncated;
    outcome.stderr_truncated |= caps.stderr_truncated;
    outcome.stdout_bytes = outcome.stdout_bytes.max(caps.stdout);
    outcome.stderr_bytes = outcome.stderr_bytes.max(caps.stderr);
    if caps.exceeded()
        && outcome.status == crate::sandbox::Status::Cancelled
        && !cancel.is_cancelled()
    {
        outcome.status = crate::sandbox::Status::OutputLimit;
    }
    Ok(outcome)
}

enum Run {
    Cold(Box<Job>),
    Waiting(Box<(Waiting, Vec<u8>, Vec<u8>, Limits)>),
}

/// Per-stream output accounting across pipes and driver events.
#[derive(Debug, Default)]
struct OutputCaps {
    cap: u64,
    stdout: u64,
    stderr: u64,
    stdout_truncated: bool,
    stderr_truncated: bool,
}

impl OutputCaps {
    fn take(&mut self, stdout: bool, component: String, mut data: Vec<u8>) -> Option<Output> {
        let (count, truncated) = if stdout {
            (&mut self.stdout, &mut self.stdout_truncated)
        } else {
            (&mut self.stderr, &mut self.stderr_truncated)
        };
        let room = self.cap.saturating_sub(*count) as usize;
        if data.len() > room {
            data.truncate(room);
            *truncated = true;
        }
        *count += data.len() as u64;
        if data.is_empty() {
            return None;
        }
        Some(if stdout {
            Output::Stdout { component, data }
        } else {
            Output::Stderr { component, data }
        })
    }

    fn exceeded(&self) -> bool {
        self.stdout_truncated || self.stderr_truncated
    }
}

fn driver_event(line: &[u8], current: &str) -> Result<DriverEvent, Output> {
    serde_json::from_slice(line).map_err(|e| Output::Internal {
        component: current.to_owned(),
        message: format!("unreadable driver event: {e}"),
    })
}

#[cfg(test)]
fn driver_output(line: &[u8], current: &mut String) -> Option<Output> {
    match driver_event(line, current.as_str()) {
        Ok(event) => translate_event(event, current),
        Err(internal) => Some(internal),
    }
}

fn translate_event(event: DriverEvent, current: &mut String) -> Option<Output> {
    match event {
        DriverEvent::Start { id } => {
            current.clone_from(&id);
            Some(Output::Started { component: id })
        }
        DriverEvent::Output { stream, data } => {
            use base64::Engine;
            let data = match base64::engine::general_purpose::STANDARD.decode(data.as_bytes()) {
                Ok(d) => d,
                Err(e) => {
                    return Some(Output::Internal {
                        component: current.clone(),
                        message: format!("undecodable output event: {e}"),
                    })
                }
            };
            let component = current.clone();
            match stream.as_str() {
                "stdout" => Some(Output::Stdout { component, data }),
                "stderr" => Some(Output::Stderr { component, data }),
                other => Some(Output::Internal {
                    component,
                    message: format!("output event for unknown stream {other:?}"),
                }),
            }
        }
        DriverEvent::Value { id, repr } => Some(Output::Value {
            component: id,
            text: repr,
        }),
        DriverEvent::SyntaxError {
            id,
            kind,
            message,
            line,
            column,
            start,
            end,
        } => Some(Output::Diagnostic {
            component: id,
            kind,
            message,
            line: line.unwrap_or(0),
            column: column.unwrap_or(0),
            start: start.unwrap_or(0),
            end: end.unwrap_or(0),
        }),
        DriverEvent::Exception {
            id,
            kind,
            message,
            traceback,
            line,
        } => Some(Output::Exception {
            component: id,
            kind,
            message,
            traceback,
            line,
        }),
        DriverEvent::Internal { message } => Some(Output::Internal {
            component: current.clone(),
            message,
        }),
        DriverEvent::Violation {
            id,
            reference,
            message,
        } => Some(Output::Violation {
            component: id,
            reference,
            message,
        }),
        // Handled by the caller, which can answer them.
        DriverEvent::Classes { .. } | DriverEvent::MemoryLimit {} => None,
        DriverEvent::Exit {}
        | DriverEvent::End {}
        | DriverEvent::Done {}
        | DriverEvent::Ready {} => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_events_are_translated() {
        let mut current = "a".to_string();
        assert_eq!(
            driver_output(br#"{"event":"start","id":"b"}"#, &mut current),
            Some(Output::Started {
                component: "b".into()
            })
        );
        assert_eq!(current, "b");
        assert_eq!(
            driver_output(br#"{"event":"value","id":"b","repr":"2"}"#, &mut current),
            Some(Output::Value {
                component: "b".into(),
                text: "2".into()
            })
        );
        assert_eq!(
            driver_output(br#"{"event":"end","id":"b","ok":true}"#, &mut current),
            None
        );
        assert_eq!(
            driver_output(br#"{"event":"exit","id":"b","code":3}"#, &mut current),
            None
        );
        let bad = driver_output(b"{not json", &mut current);
        assert!(
            matches!(bad, Some(Output::Internal { ref component, .. }) if component == "b"),
            "{bad:?}"
        );
    }

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
