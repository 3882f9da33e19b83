//! The mapping between the protocol and the evaluator: a `start` request checked
//! against the node's bounds and turned into components and limits; the evaluator's
//! outputs and outcome turned into responses, errors in jsheets' vocabulary, and the
//! completion message.

use std::collections::HashMap;
use std::time::Duration;

use evaluator::pool::Pool;
use evaluator::runtime::Runtime;
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
