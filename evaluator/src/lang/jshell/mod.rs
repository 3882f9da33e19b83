//! JShell: a JVM runs `JShellDriver` (compiled into the runtime at install), which reads
//! its request from the input, runs each statement in JShell and reports on the event
//! channel; held to an access list, it asks before loading any class ([`vetting`]).
//! [`build`] compiles the driver into a runtime when it is installed.
//!
//! The driver's input is binary, big-endian and length-prefixed (see the driver's
//! header): a header the driver reads before it starts JShell, then the request
//! (the snippet's stdin and the components). The snippet's stdin travels in the input
//! because the driver's own stdin carries the supervisor's verdicts.

pub mod build;
pub mod record;
pub mod vetting;

use super::{frame, Input, JobError, Language, Launch};
use crate::events::{MAX_STATEMENTS, MAX_VALUE_CHARS};
use crate::sandbox::Job;
use crate::sandbox::Limits;
use crate::snippet::Component;

/// The driver's source, compiled into every JShell runtime when it is installed.
pub const DRIVER: &str = include_str!("../../drivers/JShellDriver.java");
pub const DRIVER_SOURCE_FILE: &str = "JShellDriver.java";
/// Where a JShell runtime carries its compiled driver (inside the sandbox).
pub const DRIVER_DIR: &str = "/opt/jsheets-runtime/jshell";
/// Version 4: the driver serves compile jobs (the compile host) and replays warm.
const DRIVER_VERSION: i32 = 4;
/// The driver's modes (the input's mode byte).
const MODE_RUN: u8 = 0;
const MODE_RECORD: u8 = 1;
const MODE_REPLAY: u8 = 2;
const MODE_SERVE: u8 = 3;
/// The method JShell generates to run an executable snippet, the only one a recorded
/// program invokes.
pub const DO_IT: &str = "do_it$";
/// The class-data-sharing archive in [`DRIVER_DIR`].
pub const ARCHIVE_FILE: &str = "jshell.jsa";
/// The driver's agent jar in [`DRIVER_DIR`] (`-javaagent`): it gives the driver
/// `java.lang.instrument`, to redefine classes in place as JShell's JDI engine does.
pub const AGENT_FILE: &str = "jshell-agent.jar";
/// The agent jar's manifest: the driver's class (on the class path) is the agent.
pub const AGENT_MANIFEST: &str = "Premain-Class: JShellDriver\nCan-Redefine-Classes: true\n";

/// The JShell evaluator kind.
#[derive(Debug)]
pub(super) struct Jshell;

impl Language for Jshell {
    fn events(&self) -> bool {
        true
    }

    fn args(&self, _launch: &Launch, limits: &Limits) -> Vec<String> {
        jvm_args(limits, true)
    }

    fn input(
        &self,
        launch: &Launch,
        components: &[Component],
        stdin: Vec<u8>,
    ) -> Result<Input, JobError> {
        Ok(Input {
            input: input(components, &stdin, launch.access_list.is_some()),
            // The snippet's stdin travels in the input: fd 0 carries the verdicts.
            stdin: Vec::new(),
        })
    }

    fn preface(&self, launch: &Launch) -> Result<Vec<u8>, JobError> {
        Ok(header(launch.access_list.is_some(), true, MODE_RUN))
    }

    fn rest(
        &self,
        _launch: &Launch,
        components: &[Component],
        stdin: Vec<u8>,
    ) -> Result<Input, JobError> {
        Ok(Input {
            input: request(components, &stdin),
            stdin: Vec::new(),
        })
    }

    fn smoke_test(&self) -> (&'static str, &'static str) {
        ("System.out.println(1 + 1);", "2\n")
    }
}

/// The compile pass of a many-input run: the driver in record mode, compiling
/// `components` without running any of them (see `record`). Its verdicts come on its
/// stdin, as a run's.
pub(crate) fn record_job(
    launch: &Launch,
    components: &[Component],
    limits: Limits,
) -> Result<Job, JobError> {
    if components.is_empty() {
        return Err(JobError::Empty);
    }
    let mut input = header(launch.access_list.is_some(), false, MODE_RECORD);
    input.extend(request(components, &[]));
    let args = jvm_args(&limits, true);
    Ok(frame(launch, args, input, Vec::new(), true, limits))
}

/// One input's run of a recorded program: the driver in replay mode, without its agent
/// (nothing is redefined), with `stdin` for the snippet in its input.
pub(crate) fn replay_job(
    launch: &Launch,
    program: &record::Program,
    stdin: &[u8],
    limits: Limits,
) -> Job {
    let mut input = header(false, false, MODE_REPLAY);
    input.extend(program.input(stdin));
    let args = replay_args(&limits);
    frame(launch, args, input, Vec::new(), true, limits)
}

/// A replay started ahead of its program (a pooled sandbox for the compile host's
/// programs): the job and the preface it waits after; [`replay_rest`] is the rest.
pub(crate) fn replay_waiting_job(launch: &Launch, limits: Limits) -> (Job, Vec<u8>) {
    let args = replay_args(&limits);
    let mut job = frame(launch, args, Vec::new(), Vec::new(), true, limits);
    job.input = None;
    (job, header(false, true, MODE_REPLAY))
}

/// The rest of a waiting replay's input: `program` with `stdin` for the snippet.
pub(crate) fn replay_rest(program: &record::Program, stdin: &[u8]) -> Vec<u8> {
    program.input(stdin)
}

/// The compile host (`crate::compile_host`): the driver in serve mode, compiling one
/// job after another (each [`host_request`]) in record mode, its verdicts and jobs on
/// its stdin.
pub(crate) fn host_job(launch: &Launch, limits: Limits) -> Job {
    let input = header(true, false, MODE_SERVE);
    let mut args = jvm_args(&limits, true);
    // A host lives for thousands of compiles: javac fully JIT-compiled (C2 too, with
    // room for its code) is worth its threads and warm-up there, not in a short-lived
    // JVM. Each compile leaves 20 MB or so of garbage and little else: a young
    // generation of two thirds of a heap of three fifths of the memory limit collects
    // once in a dozen compiles (measured: 23.6 against 28.4 ms of CPU per compile).
    args.retain(|a| {
        a != "-XX:TieredStopAtLevel=1"
            && a != "-XX:CICompilerCount=1"
            && !a.starts_with("-Xmx")
            && !a.starts_with("-XX:ReservedCodeCacheSize=")
    });
    let heap_mib = (limits.memory_bytes / 5 * 3) >> 20;
    args.splice(
        0..0,
        [
            format!("-Xmx{heap_mib}m"),
            format!("-Xmn{}m", heap_mib / 3 * 2),
            "-XX:ReservedCodeCacheSize=64m".to_string(),
        ],
    );
    frame(launch, args, input, Vec::new(), true, limits)
}

/// One compile job for the host, a line of its stdin.
pub(crate) fn host_request(components: &[Component]) -> Vec<u8> {
    use base64::Engine as _;
    let mut line = b"job ".to_vec();
    line.extend(
        base64::engine::general_purpose::STANDARD
            .encode(request(components, &[]))
            .into_bytes(),
    );
    line.push(b'\n');
    line
}

/// A replay's JVM: no agent (nothing is redefined), and methods JIT-compiled only
/// once eight times hotter than by default: a replay is short, and compiling its
/// start-up code took a fifth of its CPU (hot snippet code is still compiled).
fn replay_args(limits: &Limits) -> Vec<String> {
    let mut args = jvm_args(limits, false);
    args.insert(0, "-XX:CompileThresholdScaling=8".into());
    args
}

/// The JVM's options and the driver, with its agent jar or without.
fn jvm_args(limits: &Limits, agent: bool) -> Vec<String> {
    // The driver compiles and runs each statement inside the sandboxed JVM. The
    // heap follows the memory limit (the rest is for metaspace, javac's code and
    // thread stacks) so that a big allocation is an OutOfMemoryError the driver
    // reports as the memory limit, not a kill nobody explains.
    let heap_mib = ((limits.memory_bytes / 2) >> 20).max(32);
    let metaspace_mib = ((limits.memory_bytes / 4) >> 20).max(64);
    let mut args: Vec<String> = vec![
        "-XX:+UseSerialGC".into(),
        "-XX:TieredStopAtLevel=1".into(),
        format!("-Xmx{heap_mib}m"),
        format!("-XX:MaxMetaspaceSize={metaspace_mib}m"),
        "-XX:ReservedCodeCacheSize=32m".into(),
        "-Xss1m".into(),
        // Fewer JVM service threads: each counts against the process limit.
        "-XX:CICompilerCount=1".into(),
        "-XX:-UsePerfData".into(),
        format!("-XX:SharedArchiveFile={DRIVER_DIR}/{ARCHIVE_FILE}"),
        "-Xshare:auto".into(),
        // The archive mapped where it was dumped: relocating its pointers costs every
        // JVM start about 8 ms of CPU (this JDK relocates by default). Its address is
        // then known inside the sandbox, as it was before JDK 17 updates randomized it.
        "-XX:+UnlockDiagnosticVMOptions".into(),
        "-XX:ArchiveRelocationMode=0".into(),
        // A rejected archive only costs time; it must not print into the output.
        "-Xlog:cds=off".into(),
        "-Xlog:cds+dynamic=off".into(),
        "--enable-preview".into(),
        "-Djava.util.logging.config.file=/dev/null".into(),
        "-Duser.home=/work".into(),
    ];
    if agent {
        args.push(format!("-javaagent:{DRIVER_DIR}/{AGENT_FILE}"));
    }
    args.extend(["-cp".into(), DRIVER_DIR.into(), "JShellDriver".into()]);
    args
}

/// The driver's whole input for a cold start.
fn input(components: &[Component], stdin: &[u8], check_classes: bool) -> Vec<u8> {
    let mut out = header(check_classes, false, MODE_RUN);
    out.extend(request(components, stdin));
    out
}

/// What the driver reads before it starts JShell.
fn header(check_classes: bool, warm: bool, mode: u8) -> Vec<u8> {
    let mut out = b"JSHD".to_vec();
    out.extend_from_slice(&DRIVER_VERSION.to_be_bytes());
    out.extend_from_slice(&(MAX_STATEMENTS as i32).to_be_bytes());
    out.extend_from_slice(&(MAX_VALUE_CHARS as i32).to_be_bytes());
    out.push(u8::from(check_classes));
    out.push(u8::from(warm));
    out.push(mode);
    out
}

/// What the driver reads once JShell runs: the request.
fn request(components: &[Component], stdin: &[u8]) -> Vec<u8> {
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

/// The input of the install-time training run of the driver: the language features
/// snippets use most, so that their classes are in the runtime's archive.
fn training_input() -> Vec<u8> {
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
    input(&components, &[], false)
}
