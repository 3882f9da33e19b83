//! The mapping between the protocol and the evaluator: a `start` request checked
//! against the node's bounds and turned into components and limits; the evaluator's
//! outputs and outcome turned into responses, errors in jsheets' vocabulary, and the
//! completion message.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use evaluator::batch::{self, MatchMode};
use evaluator::pool::Pool;
use evaluator::runtime::Runtime;
use evaluator::sandbox::files::{self, Files, InputFile, Oversize, ReturnedFile, Wanted};
use evaluator::sandbox::{Limits, Outcome, Status as SandboxStatus};
use evaluator::snippet::{Component, Output};
use proto::jsheets::completion::Status as WireStatus;
use proto::jsheets::evaluation_result::Kind as ResultKind;
use proto::jsheets::{
    CodeSpan, Completion, EvaluateResponse, EvaluationError, EvaluationResult, RuntimeInfo,
    RuntimeRef, StartEvaluationRequest,
};

use super::error::ServiceError;
use crate::config::{EvaluationConfig, LimitValues};

/// The inputs of a many-input `start` (taken out of it), checked against the node's
/// bounds and against the request's own files, and how outputs are matched.
pub fn inputs(
    start: &mut StartEvaluationRequest,
    put: &[InputFile],
    config: &EvaluationConfig,
) -> Result<(Vec<batch::Input>, MatchMode), ServiceError> {
    let invalid = |m: String| Err(ServiceError::InvalidArgument(m));
    let mode = match proto::jsheets::OutputMatch::try_from(start.output_match) {
        Ok(proto::jsheets::OutputMatch::Exact) => MatchMode::Exact,
        Ok(proto::jsheets::OutputMatch::IgnoreTrailingWhitespace) => {
            MatchMode::IgnoreTrailingWhitespace
        }
        Err(_) => return invalid(format!("output_match {} is unknown", start.output_match)),
    };
    if start.inputs.is_empty() {
        return Ok((Vec::new(), mode));
    }
    if !start.stdin.is_empty() {
        return invalid(
            "stdin: a many-input request gives each input its stdin (inputs[i].stdin)".into(),
        );
    }
    let max = config.max_inputs as usize;
    if start.inputs.len() > max {
        return invalid(format!(
            "inputs: {} inputs, above this node's maximum of {max} (evaluation.maxInputs)",
            start.inputs.len()
        ));
    }
    let bytes: u64 = start
        .inputs
        .iter()
        .map(|i| {
            let files: u64 = i
                .files
                .iter()
                .map(|f| (f.content.len() + f.path.len()) as u64)
                .sum();
            i.stdin.len() as u64 + files + i.expected_output.as_ref().map_or(0, |e| e.len() as u64)
        })
        .sum();
    if bytes > config.max_inputs_bytes {
        return invalid(format!(
            "inputs: {bytes} bytes, above this node's maximum of {} (evaluation.maxInputsBytes)",
            config.max_inputs_bytes
        ));
    }
    let shared: HashMap<&str, ()> = put.iter().map(|f| (f.path.as_str(), ())).collect();
    let mut out = Vec::with_capacity(start.inputs.len());
    for (i, input) in std::mem::take(&mut start.inputs).into_iter().enumerate() {
        if input.files.len() > config.max_input_files as usize {
            return invalid(format!(
                "inputs[{i}].files: {} files, above this node's maximum of {} \
                 (evaluation.maxInputFiles)",
                input.files.len(),
                config.max_input_files
            ));
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (j, f) in input.files.iter().enumerate() {
            if let Err(e) = files::check_name(&f.path) {
                return invalid(format!("inputs[{i}].files[{j}].path {:?} {e}", f.path));
            }
            if shared.contains_key(f.path.as_str()) {
                return invalid(format!(
                    "inputs[{i}].files[{j}].path {:?} is also one of the request's files",
                    f.path
                ));
            }
            if let Some(k) = seen.insert(f.path.clone(), j) {
                return invalid(format!(
                    "inputs[{i}].files[{j}].path {:?} is given twice (also files[{k}])",
                    f.path
                ));
            }
        }
        // A name under another file's (`a` and `a/b`), within the input or across it
        // and the request, either way.
        for (j, f) in input.files.iter().enumerate() {
            for (end, _) in f.path.match_indices('/') {
                let dir = &f.path[..end];
                if seen.contains_key(dir) || shared.contains_key(dir) {
                    return invalid(format!(
                        "inputs[{i}].files[{j}].path {:?} puts a file under {dir:?}, which is a file",
                        f.path
                    ));
                }
            }
        }
        for shared_file in put {
            for (end, _) in shared_file.path.match_indices('/') {
                let dir = &shared_file.path[..end];
                if let Some(j) = seen.get(dir) {
                    return invalid(format!(
                        "files path {:?} is under inputs[{i}].files[{j}].path {dir:?}, which is a file",
                        shared_file.path
                    ));
                }
            }
        }
        out.push(batch::Input {
            stdin: input.stdin,
            files: input
                .files
                .into_iter()
                .map(|f| InputFile {
                    path: f.path,
                    content: f.content,
                    executable: f.executable,
                })
                .collect(),
            expected: input.expected_output,
        });
    }
    Ok((out, mode))
}

/// One run of a many-input request as its response: its completion (the run's status
/// and usage), its stdout and stderr, its errors in jsheets' vocabulary (a limit hit
/// among them) and whether its output matched.
pub fn input_result(
    report: batch::RunReport,
    limits: &Limits,
    runtime: &Runtime,
    service_id: &str,
    evaluation_id: &str,
    first_component: &str,
) -> (proto::jsheets::InputResult, Vec<ReturnedFile>) {
    use proto::jsheets::input_result::Match;
    let batch::RunReport {
        index,
        mut outcome,
        stdout,
        stderr,
        outputs,
        matched,
    } = report;
    let mut scratch = EvaluateResponse::default();
    let mut pending = Pending::default();
    let mut last = first_component.to_owned();
    for o in outputs {
        record(o, &mut pending, &mut scratch, &mut last);
    }
    if let Some(e) = limit_error(&outcome, limits, &last) {
        scratch.error.push(e);
    }
    let files = std::mem::take(&mut outcome.files);
    let id = format!("{evaluation_id}/{index}");
    let result = proto::jsheets::InputResult {
        index: u32::try_from(index).unwrap_or(u32::MAX),
        completion: Some(completion(&outcome, runtime, service_id, &id)),
        stdout,
        stderr,
        error: scratch.error,
        r#match: match matched {
            None => Match::NotChecked,
            Some(true) => Match::Matched,
            Some(false) => Match::Mismatched,
        } as i32,
    };
    (result, files)
}

/// Why a run of a many-input request did not end well (for the final response), or
/// `None` if it did: ok, no error, and its output matched where it was checked.
pub fn run_problem(result: &proto::jsheets::InputResult) -> Option<String> {
    use proto::jsheets::input_result::Match;
    let status = result
        .completion
        .as_ref()
        .map_or(WireStatus::Unspecified, |c| c.status());
    let mut why = Vec::new();
    if status != WireStatus::Ok {
        why.push(status.as_str_name().to_ascii_lowercase());
    }
    if let Some(e) = result.error.first() {
        why.push(format!(
            "{} ({}{})",
            e.kind,
            e.message
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect::<String>(),
            if result.error.len() > 1 {
                format!(", and {} more", result.error.len() - 1)
            } else {
                String::new()
            }
        ));
    }
    if result.r#match() == Match::Mismatched {
        why.push("output mismatched".into());
    }
    (!why.is_empty()).then(|| why.join(", "))
}

/// The request's limits over the node's defaults, each checked against its maximum.
pub fn limits(
    requested: Option<&proto::jsheets::Limits>,
    config: &EvaluationConfig,
) -> Result<Limits, ServiceError> {
    let d = &config.limits.defaults;
    let max = &config.limits.maxima;
    let r = requested.cloned().unwrap_or_default();
    let pick = |name: &str, asked: u64, default: u64, maximum: u64| {
        if asked > maximum {
            Err(ServiceError::InvalidArgument(format!(
                "limits.{name} is {asked}, above this node's maximum of {maximum}"
            )))
        } else if asked == 0 {
            Ok(default)
        } else {
            Ok(asked)
        }
    };
    let wall = pick(
        "wall_time_ms",
        r.wall_time_ms,
        d.wall_time_ms,
        max.wall_time_ms,
    )?;
    let cpu = pick("cpu_time_ms", r.cpu_time_ms, d.cpu_time_ms, max.cpu_time_ms)?;
    let memory = pick(
        "memory_bytes",
        r.memory_bytes,
        d.memory_bytes,
        max.memory_bytes,
    )?;
    if memory < 8 << 20 {
        return Err(ServiceError::InvalidArgument(format!(
            "limits.memory_bytes is {memory}, below the minimum of {}",
            8u64 << 20
        )));
    }
    let processes = pick(
        "max_processes",
        u64::from(r.max_processes),
        d.max_processes,
        max.max_processes,
    )?;
    let output = pick(
        "output_bytes",
        r.output_bytes,
        d.output_bytes,
        max.output_bytes,
    )?;
    Ok(Limits {
        wall_time: Duration::from_millis(wall),
        cpu_time: Duration::from_millis(cpu),
        memory_bytes: memory,
        max_processes: processes,
        output_bytes: output,
        ..Limits::default()
    })
}

/// Components of every source, each source's in ascending `order`, sources in list
/// order; bounded in count and size.
pub fn components(
    start: &StartEvaluationRequest,
    config: &EvaluationConfig,
) -> Result<Vec<Component>, ServiceError> {
    let max_components = config.max_components as usize;
    let max_bytes = config.max_code_bytes;
    let mut components = Vec::new();
    let mut bytes = 0u64;
    for (i, source) in start.sources.iter().enumerate() {
        let mut parts: Vec<_> = source.code_components.iter().collect();
        parts.sort_by_key(|c| c.order);
        for c in parts {
            bytes += c.code.len() as u64;
            components.push(Component {
                id: c.id.clone(),
                code: c.code.clone(),
            });
            if components.len() > max_components {
                return Err(ServiceError::InvalidArgument(format!(
                    "the request has more than {max_components} code components (this node's maximum)"
                )));
            }
            if bytes > max_bytes {
                return Err(ServiceError::InvalidArgument(format!(
                    "the request's code exceeds {max_bytes} bytes (this node's maximum) at sources[{i}] component {:?}",
                    c.id
                )));
            }
        }
    }
    if components.is_empty() {
        return Err(ServiceError::InvalidArgument(
            "the start request has no code components (sources[].code_components is empty)".into(),
        ));
    }
    Ok(components)
}

/// Most patterns of files to return in one request.
pub const MAX_GET_PATTERNS: usize = 64;

/// The request's files to put in `/work` and to take back, checked against the node's
/// bounds: names, duplicates, a name that is also another's directory, count and
/// bytes; patterns; caps over the node's defaults, each at most its maximum. The files'
/// content is moved out of `start`, not copied.
pub fn files(
    start: &mut StartEvaluationRequest,
    config: &EvaluationConfig,
) -> Result<Files, ServiceError> {
    let invalid = |m: String| Err(ServiceError::InvalidArgument(m));
    let max_files = config.max_input_files as usize;
    if start.files.len() > max_files {
        return invalid(format!(
            "files: {} files, above this node's maximum of {max_files} (evaluation.maxInputFiles)",
            start.files.len()
        ));
    }
    let bytes: u64 = start.files.iter().map(|f| f.content.len() as u64).sum();
    if bytes > config.max_input_file_bytes {
        return invalid(format!(
            "files: {bytes} bytes, above this node's maximum of {} (evaluation.maxInputFileBytes)",
            config.max_input_file_bytes
        ));
    }
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(start.files.len());
    for (i, f) in start.files.iter().enumerate() {
        if let Err(e) = files::check_name(&f.path) {
            return invalid(format!("files[{i}].path {:?} {e}", f.path));
        }
        if let Some(j) = seen.insert(&f.path, i) {
            return invalid(format!(
                "files[{i}].path {:?} is given twice (also files[{j}])",
                f.path
            ));
        }
    }
    // A name that is a directory of another (`a` and `a/b`) cannot be both.
    for (i, f) in start.files.iter().enumerate() {
        for (end, _) in f.path.match_indices('/') {
            if let Some(&j) = seen.get(&f.path[..end]) {
                return invalid(format!(
                    "files[{i}].path {:?} puts a file under files[{j}].path {:?}, which is a file",
                    f.path,
                    &f.path[..end]
                ));
            }
        }
    }
    if start.get_files.len() > MAX_GET_PATTERNS {
        return invalid(format!(
            "get_files: {} patterns, above the maximum of {MAX_GET_PATTERNS}",
            start.get_files.len()
        ));
    }
    for (i, p) in start.get_files.iter().enumerate() {
        if let Err(e) = files::check_pattern(p) {
            return invalid(format!("get_files[{i}] {p:?} {e}"));
        }
    }
    let caps = start.file_caps.unwrap_or_default();
    let pick = |name: &str, asked: u64, default: u64, maximum: u64, key: &str| {
        if asked > maximum {
            Err(ServiceError::InvalidArgument(format!(
                "file_caps.{name} is {asked}, above this node's maximum of {maximum} ({key})"
            )))
        } else if asked == 0 {
            Ok(default)
        } else {
            Ok(asked)
        }
    };
    let max_file_bytes = pick(
        "max_file_bytes",
        caps.max_file_bytes,
        config.default_returned_file_bytes,
        config.max_returned_file_bytes,
        "evaluation.maxReturnedFileBytes",
    )?;
    let max_total_bytes = pick(
        "max_total_bytes",
        caps.max_total_bytes,
        config.default_returned_total_bytes,
        config.max_returned_total_bytes,
        "evaluation.maxReturnedTotalBytes",
    )?;
    let get = (!start.get_files.is_empty()).then(|| Wanted {
        patterns: start.get_files.clone(),
        max_file_bytes,
        max_total_bytes,
        max_files: config.max_returned_files as usize,
        oversize: if caps.refuse_oversized {
            Oversize::Refuse
        } else {
            Oversize::Truncate
        },
    });
    let put = std::mem::take(&mut start.files)
        .into_iter()
        .map(|f| InputFile {
            path: f.path,
            content: f.content,
            executable: f.executable,
        })
        .collect();
    Ok(Files { put, get })
}

/// The datasets a request names, as the operator's directories and their names:
/// each configured on this node, none twice.
pub fn datasets(
    names: &[String],
    configured: &BTreeMap<String, PathBuf>,
) -> Result<Vec<(PathBuf, String)>, ServiceError> {
    let mut out: Vec<(PathBuf, String)> = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let Some(dir) = configured.get(name) else {
            let there = if configured.is_empty() {
                "it has none".to_string()
            } else {
                let names: Vec<&str> = configured.keys().map(String::as_str).collect();
                format!("it has: {}", names.join(", "))
            };
            return Err(ServiceError::NotFound(format!(
                "dataset {name:?} is not on this node; {there}"
            )));
        };
        if out.iter().any(|(_, n)| n == name) {
            return Err(ServiceError::InvalidArgument(format!(
                "datasets[{i}] {name:?} is named twice"
            )));
        }
        out.push((dir.clone(), name.clone()));
    }
    Ok(out)
}

/// Most bytes of file content in one response.
pub const FILE_CHUNK_BYTES: usize = 1 << 20;
/// Most file entries in one response (refusals carry no content but a name each).
const FILE_ENTRIES_PER_RESPONSE: usize = 256;

/// Returned files as the `files` entries of responses, in groups of at most
/// [`FILE_CHUNK_BYTES`] of content: a file larger than that is split into chunks at
/// increasing offsets, the last one marked `last`; a refused file is one entry with
/// its error. Made one group at a time, so the node holds each chunk only while it is
/// sent.
#[derive(Debug)]
pub struct FileChunks {
    files: std::vec::IntoIter<ReturnedFile>,
    /// A file partly sent, and how much of it.
    current: Option<(ReturnedFile, usize)>,
}

impl FileChunks {
    pub fn new(files: Vec<ReturnedFile>) -> Self {
        FileChunks {
            files: files.into_iter(),
            current: None,
        }
    }
}

impl Iterator for FileChunks {
    type Item = Vec<proto::jsheets::ReturnedFile>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut group = Vec::new();
        let mut room = FILE_CHUNK_BYTES;
        while let Some((file, offset)) = self
            .current
            .take()
            .or_else(|| self.files.next().map(|f| (f, 0)))
        {
            let whole = file.content.len();
            let full = group.len() >= FILE_ENTRIES_PER_RESPONSE || (room == 0 && whole > 0);
            if full {
                self.current = Some((file, offset));
                break;
            }
            let n = room.min(whole - offset);
            let last = offset + n == whole;
            group.push(proto::jsheets::ReturnedFile {
                path: file.path.clone(),
                size: file.size,
                content: file.content[offset..offset + n].to_vec(),
                offset: offset as u64,
                truncated: file.truncated,
                error: file.error.clone().unwrap_or_default(),
                last,
            });
            room -= n;
            if !last {
                self.current = Some((file, offset + n));
                break;
            }
        }
        (!group.is_empty()).then_some(group)
    }
}

/// Live output waiting to be flushed, per component and stream, in arrival order.
#[derive(Debug, Default)]
pub struct Pending {
    order: Vec<(String, bool)>,
    data: HashMap<(String, bool), Vec<u8>>,
    /// Bytes waiting.
    pub bytes: usize,
}

impl Pending {
    pub fn push(&mut self, component: String, stdout: bool, data: Vec<u8>) {
        self.bytes += data.len();
        let key = (component, stdout);
        match self.data.get_mut(&key) {
            Some(buf) => buf.extend_from_slice(&data),
            None => {
                self.order.push(key.clone());
                self.data.insert(key, data);
            }
        }
    }

    /// The waiting output as one response, if there is any.
    pub fn take(&mut self) -> Option<EvaluateResponse> {
        if self.order.is_empty() {
            return None;
        }
        let mut result = Vec::new();
        for key in self.order.drain(..) {
            if let Some(data) = self.data.remove(&key) {
                result.push(EvaluationResult {
                    component_id: key.0,
                    kind: if key.1 {
                        ResultKind::Info
                    } else {
                        ResultKind::Error
                    } as i32,
                    output: String::from_utf8_lossy(&data).into_owned(),
                });
            }
        }
        self.bytes = 0;
        Some(EvaluateResponse {
            result,
            ..Default::default()
        })
    }
}

/// Adds one output of the evaluator to what the client gets: stdout and stderr to the
/// live output waiting in `pending`, values and errors to the final response
/// `finals`. `last_component` follows the component that is running, which a limit
/// hit is then reported on.
pub fn record(
    output: Output,
    pending: &mut Pending,
    finals: &mut EvaluateResponse,
    last_component: &mut String,
) {
    match output {
        Output::Stdout { component, data } => {
            last_component.clone_from(&component);
            pending.push(component, true, data)
        }
        Output::Stderr { component, data } => {
            last_component.clone_from(&component);
            pending.push(component, false, data)
        }
        Output::Value { component, text } => finals.result.push(EvaluationResult {
            component_id: component,
            kind: ResultKind::Info as i32,
            output: text,
        }),
        Output::Diagnostic {
            component,
            kind,
            message,
            start,
            end,
            ..
        } => finals.error.push(EvaluationError {
            component_id: component,
            kind,
            message,
            span: Some(CodeSpan {
                start: start as i64,
                end: end as i64,
            }),
        }),
        Output::Exception {
            component,
            kind,
            message,
            traceback,
            ..
        } => finals.error.push(EvaluationError {
            component_id: component,
            kind: "exception".into(),
            message: format!("{kind}: {message}\n{traceback}"),
            span: None,
        }),
        Output::Started { component } => *last_component = component,
        Output::Violation {
            component, message, ..
        } => finals.error.push(EvaluationError {
            component_id: component,
            kind: "sandbox".into(),
            message,
            span: None,
        }),
        Output::Internal { component, message } => finals.error.push(EvaluationError {
            component_id: component,
            kind: "internal".into(),
            message,
            span: None,
        }),
    }
}

/// The completion message of an evaluation that ended with `outcome`.
pub fn completion(
    outcome: &Outcome,
    runtime: &Runtime,
    service_id: &str,
    evaluation_id: &str,
) -> Completion {
    Completion {
        status: status(outcome.status) as i32,
        exit_code: outcome.exit_code.unwrap_or(0),
        signal: outcome.signal.unwrap_or(0),
        wall_time_ms: outcome.wall_time.as_millis() as u64,
        cpu_time_ms: outcome.cpu_time.as_millis() as u64,
        peak_memory_bytes: outcome.peak_memory,
        runtime: Some(RuntimeRef {
            name: runtime.name().into(),
            version: runtime.version().into(),
        }),
        service_id: service_id.to_owned(),
        output_truncated: outcome.stdout_truncated || outcome.stderr_truncated,
        evaluation_id: evaluation_id.to_owned(),
    }
}

/// How `ListRuntimes` shows a runtime: with the node's default limits, the access
/// list in effect (configuration over the runtime's own) and its pool, if any.
pub fn runtime_info(
    runtime: &Runtime,
    defaults: &LimitValues,
    access_list: Option<&str>,
    is_default: bool,
    pool: Option<&Pool>,
) -> RuntimeInfo {
    let stats = pool.map(Pool::stats).unwrap_or_default();
    RuntimeInfo {
        name: runtime.name().into(),
        version: runtime.version().into(),
        language: runtime.language().into(),
        description: runtime.description().into(),
        default_limits: Some(limits_message(defaults)),
        access_list: access_list.unwrap_or_default().to_owned(),
        is_default,
        pool_size: stats.size as u32,
        pool_idle: stats.idle as u32,
        pool_taken: stats.taken,
        pool_misses: stats.misses,
        pool_lanes: stats.lanes,
        pool_compiled: stats.compiled,
        pool_compile_fallbacks: stats.compile_fallbacks,
        pool_compile_host_starts: stats.compile_host_starts,
    }
}

/// Configured limit values as the protocol's limits.
pub fn limits_message(v: &LimitValues) -> proto::jsheets::Limits {
    proto::jsheets::Limits {
        wall_time_ms: v.wall_time_ms,
        cpu_time_ms: v.cpu_time_ms,
        memory_bytes: v.memory_bytes,
        max_processes: u32::try_from(v.max_processes).unwrap_or(u32::MAX),
        output_bytes: v.output_bytes,
    }
}

/// The `kind`s of [`limit_error`] that are limits (for metrics).
pub const LIMIT_KINDS: [&str; 5] = ["timeout", "cpu", "memory", "output", "processes"];

/// The error a limit hit adds to the final response, in jsheets' `kind` vocabulary.
pub fn limit_error(o: &Outcome, l: &Limits, component: &str) -> Option<EvaluationError> {
    let (kind, message) = match o.status {
        SandboxStatus::WallTimeout => (
            "timeout",
            format!(
                "the evaluation exceeded its wall-clock limit of {} ms",
                l.wall_time.as_millis()
            ),
        ),
        SandboxStatus::CpuLimit => (
            "cpu",
            format!(
                "the evaluation exceeded its CPU-time limit of {} ms",
                l.cpu_time.as_millis()
            ),
        ),
        SandboxStatus::MemoryLimit => (
            "memory",
            format!(
                "the evaluation exceeded its memory limit of {} bytes",
                l.memory_bytes
            ),
        ),
        SandboxStatus::OutputLimit => (
            "output",
            format!(
                "the output exceeded its limit of {} bytes per stream; the rest was dropped",
                l.output_bytes
            ),
        ),
        SandboxStatus::ProcessLimit => (
            "processes",
            format!(
                "the evaluation hit its limit of {} processes",
                l.max_processes
            ),
        ),
        SandboxStatus::SetupFailed => (
            "internal",
            format!(
                "the sandbox could not be set up: {}",
                o.error.clone().unwrap_or_default()
            ),
        ),
        SandboxStatus::Cancelled => ("cancelled", "the evaluation was stopped".to_string()),
        SandboxStatus::Signaled => (
            "signal",
            format!(
                "the evaluation was killed by signal {}",
                o.signal.unwrap_or(0)
            ),
        ),
        SandboxStatus::Ok | SandboxStatus::ExitedNonZero => return None,
    };
    Some(EvaluationError {
        component_id: component.into(),
        kind: kind.into(),
        message,
        span: None,
    })
}

/// The protocol's completion status of a sandbox outcome.
pub fn status(s: SandboxStatus) -> WireStatus {
    match s {
        SandboxStatus::Ok => WireStatus::Ok,
        SandboxStatus::ExitedNonZero => WireStatus::ExitedNonzero,
        SandboxStatus::Signaled => WireStatus::KilledBySignal,
        SandboxStatus::WallTimeout => WireStatus::WallTimeout,
        SandboxStatus::CpuLimit => WireStatus::CpuLimit,
        SandboxStatus::MemoryLimit => WireStatus::MemoryLimit,
        SandboxStatus::OutputLimit => WireStatus::OutputLimit,
        SandboxStatus::ProcessLimit => WireStatus::ProcessLimit,
        SandboxStatus::Cancelled => WireStatus::Cancelled,
        SandboxStatus::SetupFailed => WireStatus::SetupFailed,
    }
}

#[cfg(test)]
mod tests {
    use proto::jsheets::{File, FileCaps};

    use super::*;

    fn start_with(files: &[(&str, usize)]) -> StartEvaluationRequest {
        StartEvaluationRequest {
            files: files
                .iter()
                .map(|(path, len)| File {
                    path: (*path).into(),
                    content: vec![b'x'; *len],
                    executable: false,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn refusal(start: &StartEvaluationRequest, config: &EvaluationConfig) -> String {
        match files(&mut start.clone(), config) {
            Err(ServiceError::InvalidArgument(m)) => m,
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    #[test]
    fn input_files_are_checked_by_name_and_bound() {
        let config = EvaluationConfig {
            max_input_files: 3,
            max_input_file_bytes: 10,
            ..Default::default()
        };
        let ok = files(
            &mut start_with(&[("a/b", 2), ("a/c", 2), ("d", 0)]),
            &config,
        )
        .unwrap();
        assert_eq!(ok.put.len(), 3);
        assert!(ok.get.is_none());
        assert_eq!(
            refusal(&start_with(&[("x", 1), ("../x", 1)]), &config),
            "files[1].path \"../x\" has an empty, `.` or `..` component"
        );
        assert_eq!(
            refusal(&start_with(&[("/abs", 1)]), &config),
            "files[0].path \"/abs\" is absolute (names are relative to /work)"
        );
        assert_eq!(
            refusal(&start_with(&[("a\0b", 1)]), &config),
            "files[0].path \"a\\0b\" contains a NUL byte"
        );
        assert_eq!(
            refusal(&start_with(&[("a", 1), ("a", 1)]), &config),
            "files[1].path \"a\" is given twice (also files[0])"
        );
        assert_eq!(
            refusal(&start_with(&[("a/b/c", 1), ("a/b", 1)]), &config),
            "files[0].path \"a/b/c\" puts a file under files[1].path \"a/b\", which is a file"
        );
        assert_eq!(
            refusal(&start_with(&[("a", 1); 4]), &config),
            "files: 4 files, above this node's maximum of 3 (evaluation.maxInputFiles)"
        );
        assert_eq!(
            refusal(&start_with(&[("a", 6), ("b", 5)]), &config),
            "files: 11 bytes, above this node's maximum of 10 (evaluation.maxInputFileBytes)"
        );
    }

    #[test]
    fn returned_files_take_the_node_defaults_and_refuse_more_than_its_maxima() {
        let config = EvaluationConfig::default();
        let mut start = StartEvaluationRequest {
            get_files: vec!["out/*.txt".into(), "**/*.csv".into()],
            ..Default::default()
        };
        let wanted = files(&mut start.clone(), &config).unwrap().get.unwrap();
        assert_eq!(wanted.max_file_bytes, config.default_returned_file_bytes);
        assert_eq!(wanted.max_total_bytes, config.default_returned_total_bytes);
        assert_eq!(wanted.max_files, 1000);
        assert_eq!(wanted.oversize, Oversize::Truncate);
        start.file_caps = Some(FileCaps {
            max_file_bytes: 5,
            max_total_bytes: 0,
            refuse_oversized: true,
        });
        let wanted = files(&mut start.clone(), &config).unwrap().get.unwrap();
        assert_eq!(wanted.max_file_bytes, 5);
        assert_eq!(wanted.oversize, Oversize::Refuse);
        start.file_caps = Some(FileCaps {
            max_total_bytes: config.max_returned_total_bytes + 1,
            ..Default::default()
        });
        assert_eq!(
            refusal(&start, &config),
            format!(
                "file_caps.max_total_bytes is {}, above this node's maximum of {} \
                 (evaluation.maxReturnedTotalBytes)",
                config.max_returned_total_bytes + 1,
                config.max_returned_total_bytes
            )
        );
        start.file_caps = None;
        start.get_files = vec!["../*".into()];
        assert_eq!(
            refusal(&start, &config),
            "get_files[0] \"../*\" has an empty, `.` or `..` component"
        );
        start.get_files = vec!["a".into(); MAX_GET_PATTERNS + 1];
        assert_eq!(
            refusal(&start, &config),
            "get_files: 65 patterns, above the maximum of 64"
        );
    }

    #[test]
    fn datasets_must_be_configured_and_named_once() {
        let mut configured = BTreeMap::new();
        assert_eq!(
            datasets(&["x".into()], &configured)
                .unwrap_err()
                .to_string(),
            "dataset \"x\" is not on this node; it has none"
        );
        configured.insert("prices".to_string(), PathBuf::from("/srv/prices"));
        configured.insert("logs".to_string(), PathBuf::from("/srv/logs"));
        assert!(matches!(
            datasets(&["x".into()], &configured),
            Err(ServiceError::NotFound(m)) if m == "dataset \"x\" is not on this node; it has: logs, prices"
        ));
        assert!(matches!(
            datasets(&["logs".into(), "logs".into()], &configured),
            Err(ServiceError::InvalidArgument(m)) if m == "datasets[1] \"logs\" is named twice"
        ));
        assert_eq!(
            datasets(&["prices".into()], &configured).unwrap(),
            [(PathBuf::from("/srv/prices"), "prices".to_string())]
        );
    }

    fn returned(path: &str, len: usize, error: Option<&str>) -> ReturnedFile {
        ReturnedFile {
            path: path.into(),
            size: len as u64,
            content: (0..len).map(|i| i as u8).collect(),
            truncated: false,
            error: error.map(String::from),
        }
    }

    #[test]
    fn files_are_chunked_under_a_mebibyte_per_response() {
        let big = 3 * FILE_CHUNK_BYTES + 10;
        let mut refused = returned("refused", 0, Some("over its cap"));
        refused.size = 1 << 40;
        let files = vec![
            returned("a", 10, None),
            returned("big", big, None),
            refused,
            returned("empty", 0, None),
        ];
        let groups: Vec<_> = FileChunks::new(files).collect();
        for g in &groups {
            let bytes: usize = g.iter().map(|f| f.content.len()).sum();
            assert!(bytes <= FILE_CHUNK_BYTES, "{bytes}");
        }
        let entries: Vec<_> = groups.into_iter().flatten().collect();
        let shape: Vec<(&str, u64, usize, bool)> = entries
            .iter()
            .map(|f| (f.path.as_str(), f.offset, f.content.len(), f.last))
            .collect();
        let mib = FILE_CHUNK_BYTES;
        assert_eq!(
            shape,
            [
                ("a", 0, 10, true),
                ("big", 0, mib - 10, false),
                ("big", (mib - 10) as u64, mib, false),
                ("big", (2 * mib - 10) as u64, mib, false),
                ("big", (3 * mib - 10) as u64, 20, true),
                ("refused", 0, 0, true),
                ("empty", 0, 0, true),
            ]
        );
        let whole: Vec<u8> = entries
            .iter()
            .filter(|f| f.path == "big")
            .flat_map(|f| f.content.clone())
            .collect();
        assert_eq!(whole, returned("big", big, None).content);
        assert_eq!(entries[5].error, "over its cap");
        assert_eq!(entries[5].size, 1 << 40);
    }
}
