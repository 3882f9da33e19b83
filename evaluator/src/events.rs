//! The driver event channel, supervisor side. Nothing that comes out of a sandbox is
//! trusted: the driver writes JSON lines on its event channel (fd 4 of the payload),
//! but the snippet runs in the same process and can write anything there, as on stdout,
//! stderr and in the JShell class-vetting exchange.
//!
//! - [`Bounds`] is the one place the bounds of an evaluation are defined, all derived
//!   from its request (output limit, components, code and id sizes): the longest event
//!   line, the bytes and lines of the channel, the records kept (values, diagnostics,
//!   exceptions, violations, internal messages) and their bytes, the length of each
//!   text, the class-file batches vetted.
//! - [`LineReader`] (the sandbox's, `crate::sandbox::framing`, re-exported here) frames
//!   the channel for the supervisor: a line over the bound is skipped up to its newline
//!   without being buffered, and past the channel's budget everything is dropped (the
//!   supervisor then stops the sandbox).
//! - [`Translator`] turns what the supervisor forwards into [`Output`]s. Output is
//!   attributed to the component the supervisor knows is running: the request's
//!   components start in the order they were sent, each at most once, and an event that
//!   names any other component (or one that does not exist) is dropped. Component ids
//!   in outputs are always the request's own, never copied from an event. Whatever does
//!   not fit or does not check is dropped and counted, never accumulated, and reported
//!   once at the end ([`Translator::finish`]).
//!
//! The sandbox can only make its own result worse: what the node holds for an
//! evaluation is bounded by its request, whatever the sandbox writes.

use base64::Engine;
use serde::Deserialize;

pub use crate::sandbox::framing::{Dropped, Frame, Framing, LineReader};
use crate::sandbox::{Event, Job, Limits};
use crate::snippet::{Component, Output};

/// Statements per JShell component (jsheets' cap), sent to the driver.
pub const MAX_STATEMENTS: usize = 100;
/// Largest rendering of a value, in characters, sent to the drivers.
pub const MAX_VALUE_CHARS: usize = 10_000;
/// Largest Python traceback, in characters, sent to the driver.
pub const MAX_TRACEBACK_CHARS: usize = 20_000;

/// Kept of a value or an exception message, in characters: what the drivers send
/// (JShell does not cut exception messages) and room for their truncation markers.
const VALUE_CHARS: usize = MAX_VALUE_CHARS + 64;
/// Kept of a diagnostic or internal message (the Python driver cuts these at 20 000).
const MESSAGE_CHARS: usize = 20_000 + 64;
/// Kept of a traceback: the JShell driver does not cut them (a stack overflow has
/// 1024 frames).
const TRACEBACK_CHARS: usize = 64 << 10;
/// Kept of a name: exception type, diagnostic code, denied reference, class name.
const NAME_CHARS: usize = 1024;
/// What replaces the end of a text cut here.
const TRUNCATED: &str = "... [truncated]";
/// The longest line of any event but output and class batches (an exception with
/// JShell's uncut message and traceback, escaped), the id aside.
const RECORD_LINE: u64 = 512 << 10;
/// What a kept record is charged besides its text.
const RECORD_CHARGE: u64 = 64;
/// Bytes of events in flight from the supervisor to the translator, at most.
const QUEUE_BYTES: u64 = 8 << 20;
/// How the drivers begin an output event (the supervisor relies on nothing else).
const STDOUT_HEAD: &[u8] = br#"{"event":"output","stream":"stdout","#;
const STDERR_HEAD: &[u8] = br#"{"event":"output","stream":"stderr","#;

/// Everything the node keeps of one evaluation's sandbox, at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Framing of the event channel (the supervisor's part).
    pub framing: Framing,
    /// Events in flight from the supervisor to the translator (a channel capacity):
    /// with the line bound, what the queue can hold.
    pub queue: usize,
    /// Stdout and stderr, each: the output limit. Output events count with the pipes.
    pub output_bytes: u64,
    /// Values, diagnostics, exceptions, violations and internal messages kept.
    pub records: u64,
    /// Their text, the component id and a fixed charge each included.
    pub record_bytes: u64,
    /// Class-file batches vetted (the JShell driver asks before each load or
    /// redefinition).
    pub class_batches: u64,
    /// Classes in one batch.
    pub classes_per_batch: u64,
    /// Decoded class bytes of one batch, and of all batches.
    pub class_batch_bytes: u64,
    pub class_bytes: u64,
}

fn base64_len(bytes: u64) -> u64 {
    bytes.div_ceil(3).saturating_mul(4)
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl Bounds {
    /// The bounds of an evaluation with output limit `output_bytes` (each stream) of
    /// `components` components, `code_bytes` of code in all, whose longest component id
    /// has `id_bytes` bytes.
    pub fn new(output_bytes: u64, components: usize, code_bytes: u64, id_bytes: u64) -> Bounds {
        let n = components.max(1) as u64;
        let o = output_bytes;
        let statements = n.saturating_mul(MAX_STATEMENTS as u64);
        // JShell: each statement's classes, and redefinitions of earlier ones; their
        // size follows the code (and a wrapper class per statement).
        let class_batch_bytes = (64u64 << 10).saturating_add(code_bytes.saturating_mul(4));
        let classes_per_batch = 64 + code_bytes / 32;
        let class_batches = statements.saturating_mul(4).saturating_add(16);
        let class_bytes = statements
            .saturating_mul(16 << 10)
            .saturating_add(code_bytes.saturating_mul(8));
        // A value per statement, a failure per statement, a compilation's diagnostics.
        let records = n
            .saturating_mul(2 * MAX_STATEMENTS as u64 + 100)
            .saturating_add(64);
        // Values are output too: the output limit, and room for every component's error.
        let record_bytes = o.saturating_add(n.saturating_add(1).saturating_mul(64 << 10));
        // An id in JSON: at worst six bytes (\u001f) a byte.
        let escaped_id = id_bytes.saturating_mul(6);
        let line_bytes = [
            // An output event carrying the whole output limit (the JShell driver writes
            // a byte array as one event); Python's carry at most 64 KiB.
            base64_len(o).saturating_add(256),
            base64_len(class_batch_bytes)
                .saturating_add(classes_per_batch.saturating_mul(512))
                .saturating_add(escaped_id)
                .saturating_add(256),
            RECORD_LINE.saturating_add(escaped_id),
        ]
        .into_iter()
        .max()
        .unwrap_or(RECORD_LINE);
        let framing = Framing {
            line_bytes: to_usize(line_bytes),
            // Output events of a byte each (about 50 bytes apiece, on either stream),
            // every class batch twice over, the records escaped, and slack.
            channel_bytes: (16u64 << 20)
                .saturating_add(o.saturating_mul(64))
                .saturating_add(base64_len(class_bytes).saturating_mul(2))
                .saturating_add(record_bytes.saturating_mul(8)),
            // Output events carry a byte at least; a start, end and exit per statement.
            lines: o
                .saturating_mul(2)
                .saturating_add(statements.saturating_mul(8))
                .saturating_add(records.saturating_mul(2))
                .saturating_add(4096),
        };
        Bounds {
            framing,
            queue: to_usize((QUEUE_BYTES / line_bytes.max(1)).clamp(2, 64)),
            output_bytes: o,
            records,
            record_bytes,
            class_batches,
            classes_per_batch,
            class_batch_bytes,
            class_bytes,
        }
    }

    /// The bounds of evaluating `components` under `limits`.
    pub fn for_request(components: &[Component], limits: &Limits) -> Bounds {
        let code = components.iter().map(|c| c.code.len() as u64).sum();
        let id = components.iter().map(|c| c.id.len() as u64).max();
        Bounds::new(limits.output_bytes, components.len(), code, id.unwrap_or(0))
    }

    /// The bounds of a job run without its components known (`Sandboxes::run`): its
    /// whole input counts as code, in one component.
    pub fn for_job(job: &Job) -> Bounds {
        let input = job.input.as_ref().map_or(0, |i| i.len() as u64);
        Bounds::new(job.limits.output_bytes, 1, input, 0)
    }
}

/// A driver event, as the drivers write it.
#[derive(Debug, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum DriverEvent {
    Start {
        id: String,
    },
    /// Python-level (and JShell) stdout/stderr, base64, in order with the other events.
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
        classes: Vec<RawClass>,
    },
    /// JShell, record mode: a snippet's invocation, recorded instead of run.
    Invoke {
        id: String,
        class: String,
        method: String,
        value: bool,
    },
    /// JShell, record mode: the component lines of a wrapper class's lines.
    Lines {
        id: String,
        class: String,
        component: String,
        lines: Vec<u32>,
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
struct RawClass {
    name: String,
    bytes: String,
}

/// A class file the driver asks about, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassFile {
    /// At most [`NAME_CHARS`] characters.
    pub name: String,
    pub bytes: Vec<u8>,
}

/// What to do with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Pass it on.
    Output(Output),
    /// Vet these class files for the running component and answer `seq`.
    Vet { seq: u64, classes: Vec<ClassFile> },
    /// Answer `seq` with a denial without looking: the batch was over its bounds, or
    /// not the running component's.
    Deny { seq: u64 },
    /// Record mode: the running component would invoke `class`'s `method` now.
    Invoke {
        class: String,
        method: String,
        value: bool,
    },
    /// Record mode: the component lines of wrapper `class`'s lines; `component` is an
    /// index into the request's components, never after the running one.
    Lines {
        class: String,
        component: usize,
        lines: Vec<u32>,
    },
}

/// What was dropped, by reason.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Drops {
    /// Lines that are not an event of the protocol (or carry undecodable data).
    pub unreadable: u64,
    /// Lines over the line bound (but output, which counts as output over its limit).
    pub overlong: u64,
    /// Events naming a component that is not the one running: not in the request,
    /// another one, or a start out of the request's order.
    pub foreign: u64,
    /// Records over the bound of their number or bytes.
    pub records: u64,
    /// Class-file batches over their bounds, or where none are asked.
    pub class_batches: u64,
    /// Verdicts the driver did not take (it asked again before reading the last).
    pub verdicts: u64,
    /// The channel's budget ran out.
    pub over_budget: bool,
}

impl Drops {
    fn any(&self) -> bool {
        *self != Drops::default()
    }
}

/// Turns a sandbox's streams into [`Output`]s within [`Bounds`] (see the module).
#[derive(Debug)]
pub struct Translator<'a> {
    components: &'a [Component],
    /// Per component: characters and lines of its code (spans must be within it).
    shape: Vec<(u64, u32)>,
    bounds: Bounds,
    /// Whether the driver asks about class files (JShell with an access list, or
    /// recording).
    vetting: bool,
    /// Whether the driver records (JShell's record mode): `invoke` and `lines` events
    /// are read, not dropped.
    recording: bool,
    /// The running component (the first until one starts).
    current: usize,
    /// The one that may start next.
    next: usize,
    stdout: u64,
    stderr: u64,
    stdout_truncated: bool,
    stderr_truncated: bool,
    records: u64,
    record_bytes: u64,
    class_batches: u64,
    class_bytes: u64,
    memory_limit: bool,
    drops: Drops,
}

/// `text` cut to `chars` characters; what is kept holds no more memory than it needs.
fn cut(text: String, chars: usize) -> String {
    if text.len() <= chars {
        return text;
    }
    match text.char_indices().nth(chars) {
        // A copy: the original's capacity (the whole text) goes with it.
        Some((at, _)) => [&text[..at], TRUNCATED].concat(),
        None => text,
    }
}

impl<'a> Translator<'a> {
    /// For the request's `components` (in the order the driver was given them);
    /// `vetting` when the driver asks about class files.
    pub fn new(components: &'a [Component], bounds: Bounds, vetting: bool) -> Self {
        let shape = components
            .iter()
            .map(|c| {
                let lines = c.code.bytes().filter(|&b| b == b'\n').count() + 1;
                (
                    c.code.chars().count() as u64,
                    u32::try_from(lines).unwrap_or(u32::MAX),
                )
            })
            .collect();
        Translator {
            components,
            shape,
            bounds,
            vetting,
            recording: false,
            current: 0,
            next: 0,
            stdout: 0,
            stderr: 0,
            stdout_truncated: false,
            stderr_truncated: false,
            records: 0,
            record_bytes: 0,
            class_batches: 0,
            class_bytes: 0,
            memory_limit: false,
            drops: Drops::default(),
        }
    }

    /// A translator for a recording driver (JShell's record mode): it asks about every
    /// class batch, and its `invoke` and `lines` events are steps.
    pub fn recording(mut self) -> Self {
        self.vetting = true;
        self.recording = true;
        self
    }

    /// The bounds the translator holds the driver to.
    pub fn bounds(&self) -> &Bounds {
        &self.bounds
    }

    /// The index of the running component in the request.
    pub fn running_index(&self) -> usize {
        self.current
    }

    /// The id of the running component (the request's own string).
    pub fn running(&self) -> &'a str {
        self.components
            .get(self.current)
            .map_or("", |c| c.id.as_str())
    }

    fn is_running(&self, id: &str) -> bool {
        self.next > 0 && self.running() == id
    }

    /// What to do with `event`, if anything.
    pub fn event(&mut self, event: Event) -> Option<Step> {
        match event {
            Event::Stdout(data) => self.output(true, data),
            Event::Stderr(data) => self.output(false, data),
            Event::Driver(line) => self.line(&line),
            Event::DriverDropped(Dropped::Overlong { prefix }) => {
                // Longer than the whole output limit in base64: over the limit.
                if prefix.starts_with(STDOUT_HEAD) {
                    self.stdout_truncated = true;
                } else if prefix.starts_with(STDERR_HEAD) {
                    self.stderr_truncated = true;
                } else {
                    self.drops.overlong += 1;
                }
                None
            }
            Event::DriverDropped(Dropped::OverBudget) => {
                self.drops.over_budget = true;
                None
            }
        }
    }

    fn output(&mut self, stdout: bool, mut data: Vec<u8>) -> Option<Step> {
        let (count, truncated) = if stdout {
            (&mut self.stdout, &mut self.stdout_truncated)
        } else {
            (&mut self.stderr, &mut self.stderr_truncated)
        };
        let room = self.bounds.output_bytes.saturating_sub(*count);
        if data.len() as u64 > room {
            data.truncate(to_usize(room));
            data.shrink_to_fit();
            *truncated = true;
        }
        *count += data.len() as u64;
        if data.is_empty() {
            return None;
        }
        let component = self.running().to_owned();
        Some(Step::Output(if stdout {
            Output::Stdout { component, data }
        } else {
            Output::Stderr { component, data }
        }))
    }

    fn line(&mut self, line: &[u8]) -> Option<Step> {
        let Ok(event) = serde_json::from_slice::<DriverEvent>(line) else {
            self.drops.unreadable += 1;
            return None;
        };
        let id = match &event {
            DriverEvent::Value { id, .. }
            | DriverEvent::SyntaxError { id, .. }
            | DriverEvent::Exception { id, .. }
            | DriverEvent::Violation { id, .. }
            | DriverEvent::Classes { id, .. }
            | DriverEvent::Invoke { id, .. }
            | DriverEvent::Lines { id, .. } => Some(id.as_str()),
            _ => None,
        };
        if let Some(id) = id {
            if !self.is_running(id) {
                self.drops.foreign += 1;
                return match event {
                    DriverEvent::Classes { seq, .. } if self.vetting => Some(Step::Deny { seq }),
                    _ => None,
                };
            }
        }
        match event {
            DriverEvent::Start { id } => {
                if self.components.get(self.next).is_some_and(|c| c.id == id) {
                    self.current = self.next;
                    self.next += 1;
                    Some(Step::Output(Output::Started {
                        component: self.running().to_owned(),
                    }))
                } else {
                    self.drops.foreign += 1;
                    None
                }
            }
            DriverEvent::Output { stream, data } => {
                let stdout = match stream.as_str() {
                    "stdout" => true,
                    "stderr" => false,
                    _ => {
                        self.drops.unreadable += 1;
                        return None;
                    }
                };
                match base64::engine::general_purpose::STANDARD.decode(data.as_bytes()) {
                    Ok(data) => self.output(stdout, data),
                    Err(_) => {
                        self.drops.unreadable += 1;
                        None
                    }
                }
            }
            DriverEvent::Value { repr, .. } => self.record(Output::Value {
                component: self.running().to_owned(),
                text: cut(repr, VALUE_CHARS),
            }),
            DriverEvent::SyntaxError {
                kind,
                message,
                line,
                column,
                start,
                end,
                ..
            } => {
                // Spans and lines are within the component's code.
                let (chars, lines) = self.shape.get(self.current).copied().unwrap_or((0, 1));
                let start = start.unwrap_or(0).min(chars);
                self.record(Output::Diagnostic {
                    component: self.running().to_owned(),
                    kind: cut(kind, NAME_CHARS),
                    message: cut(message, MESSAGE_CHARS),
                    line: line.unwrap_or(0).min(lines.saturating_add(1)),
                    column: column.unwrap_or(0),
                    start,
                    end: end.unwrap_or(0).clamp(start, chars),
                })
            }
            DriverEvent::Exception {
                kind,
                message,
                traceback,
                line,
                ..
            } => self.record(Output::Exception {
                component: self.running().to_owned(),
                kind: cut(kind, NAME_CHARS),
                message: cut(message, VALUE_CHARS),
                traceback: cut(traceback, TRACEBACK_CHARS),
                line,
            }),
            DriverEvent::Violation {
                reference, message, ..
            } => self.record(Output::Violation {
                component: self.running().to_owned(),
                reference: cut(reference, NAME_CHARS),
                message: cut(message, MESSAGE_CHARS),
            }),
            DriverEvent::Internal { message } => self.record(Output::Internal {
                component: self.running().to_owned(),
                message: cut(message, MESSAGE_CHARS),
            }),
            DriverEvent::Classes { seq, classes, .. } => self.classes(seq, classes),
            DriverEvent::Invoke {
                class,
                method,
                value,
                ..
            } => {
                if !self.recording || class.len() > NAME_CHARS || method.len() > NAME_CHARS {
                    self.drops.unreadable += 1;
                    return None;
                }
                Some(Step::Invoke {
                    class,
                    method,
                    value,
                })
            }
            DriverEvent::Lines {
                class,
                component,
                lines,
                ..
            } => {
                // The snippet is in the running component or an earlier one.
                let index = self
                    .components
                    .iter()
                    .take(self.current.saturating_add(1))
                    .position(|c| c.id == component);
                match index {
                    Some(component) if self.recording && class.len() <= NAME_CHARS => {
                        Some(Step::Lines {
                            class,
                            component,
                            lines,
                        })
                    }
                    _ => {
                        self.drops.unreadable += 1;
                        None
                    }
                }
            }
            DriverEvent::MemoryLimit {} => {
                self.memory_limit = true;
                None
            }
            DriverEvent::Ready {}
            | DriverEvent::Exit {}
            | DriverEvent::End {}
            | DriverEvent::Done {} => None,
        }
    }

    fn classes(&mut self, seq: u64, classes: Vec<RawClass>) -> Option<Step> {
        if !self.vetting {
            self.drops.class_batches += 1;
            return None;
        }
        let encoded: u64 = classes.iter().map(|c| c.bytes.len() as u64).sum();
        let decoded = encoded / 4 * 3 + 3;
        self.class_batches += 1;
        if self.class_batches > self.bounds.class_batches
            || classes.len() as u64 > self.bounds.classes_per_batch
            || decoded > self.bounds.class_batch_bytes
            || self.class_bytes.saturating_add(decoded) > self.bounds.class_bytes
        {
            self.drops.class_batches += 1;
            return Some(Step::Deny { seq });
        }
        let mut files = Vec::with_capacity(classes.len());
        for class in classes {
            match base64::engine::general_purpose::STANDARD.decode(class.bytes.as_bytes()) {
                Ok(bytes) => {
                    self.class_bytes += bytes.len() as u64;
                    files.push(ClassFile {
                        name: cut(class.name, NAME_CHARS),
                        bytes,
                    });
                }
                Err(_) => {
                    self.drops.unreadable += 1;
                    return Some(Step::Deny { seq });
                }
            }
        }
        Some(Step::Vet {
            seq,
            classes: files,
        })
    }

    fn record(&mut self, output: Output) -> Option<Step> {
        self.admit(output).map(Step::Output)
    }

    /// `output` (a record: value, diagnostic, exception, violation or internal
    /// message) if it is within the record bounds, which it is charged against.
    pub fn admit(&mut self, output: Output) -> Option<Output> {
        let text = match &output {
            Output::Value { component, text } => component.len() + text.len(),
            Output::Diagnostic {
                component,
                kind,
                message,
                ..
            } => component.len() + kind.len() + message.len(),
            Output::Exception {
                component,
                kind,
                message,
                traceback,
                ..
            } => component.len() + kind.len() + message.len() + traceback.len(),
            Output::Violation {
                component,
                reference,
                message,
            } => component.len() + reference.len() + message.len(),
            Output::Internal { component, message } => component.len() + message.len(),
            Output::Started { .. } | Output::Stdout { .. } | Output::Stderr { .. } => {
                return Some(output)
            }
        };
        let bytes = self
            .record_bytes
            .saturating_add(text as u64)
            .saturating_add(RECORD_CHARGE);
        if self.records >= self.bounds.records || bytes > self.bounds.record_bytes {
            self.drops.records += 1;
            return None;
        }
        self.records += 1;
        self.record_bytes = bytes;
        Some(output)
    }

    /// The driver did not take a verdict: it asked again before reading the last.
    pub fn unanswered(&mut self) {
        self.drops.verdicts += 1;
    }

    /// Whether output went over its limit on either stream (the sandbox is stopped).
    pub fn output_exceeded(&self) -> bool {
        self.stdout_truncated || self.stderr_truncated
    }

    /// Output bytes kept and whether any was dropped: (stdout, stderr).
    pub fn output_counts(&self) -> ((u64, bool), (u64, bool)) {
        (
            (self.stdout, self.stdout_truncated),
            (self.stderr, self.stderr_truncated),
        )
    }

    /// Whether the driver said the heap ran out.
    pub fn memory_limit(&self) -> bool {
        self.memory_limit
    }

    pub fn drops(&self) -> &Drops {
        &self.drops
    }

    /// The one report of everything dropped, if anything was, for the running
    /// component.
    pub fn finish(&self) -> Option<Output> {
        let d = &self.drops;
        if !d.any() {
            return None;
        }
        let b = &self.bounds;
        let mut parts = Vec::new();
        if d.unreadable > 0 {
            parts.push(format!("{} unreadable", d.unreadable));
        }
        if d.overlong > 0 {
            parts.push(format!(
                "{} longer than {} bytes",
                d.overlong, b.framing.line_bytes
            ));
        }
        if d.foreign > 0 {
            parts.push(format!(
                "{} naming a component that was not the one running",
                d.foreign
            ));
        }
        if d.records > 0 {
            parts.push(format!(
                "{} results over the bound of {} results and {} bytes",
                d.records, b.records, b.record_bytes
            ));
        }
        if d.class_batches > 0 {
            parts.push(format!(
                "{} class-file batches over their bounds or unasked for",
                d.class_batches
            ));
        }
        if d.verdicts > 0 {
            parts.push(format!(
                "{} class verdicts the driver did not take",
                d.verdicts
            ));
        }
        if d.over_budget {
            parts.push(format!(
                "everything after {} bytes or {} events (the evaluation was stopped)",
                b.framing.channel_bytes, b.framing.lines
            ));
        }
        Some(Output::Internal {
            component: self.running().to_owned(),
            message: format!(
                "the driver's events exceeded this evaluation's bounds or did not check, and were dropped: {}",
                parts.join("; ")
            ),
        })
    }
}

/// Feeds `data`, cut in chunks of the sizes `cuts` gives, through a [`LineReader`] and a
/// [`Translator`] for `components` within `bounds`, as the supervisor and the evaluator
/// do (every class batch vetted, with a denial each), and checks
/// what comes out: every output belongs to one of `components` (by its own id), output
/// stays within the output limit, records within theirs, nothing buffered beyond the
/// line bound. Panics if not. For the fuzz target and the property tests.
pub fn check_channel(
    components: &[Component],
    bounds: Bounds,
    data: &[u8],
    mut cuts: impl FnMut() -> usize,
) -> Vec<Output> {
    let mut reader = LineReader::new(bounds.framing);
    let mut translator = Translator::new(components, bounds, true);
    let mut outputs = Vec::new();
    let mut rest = data;
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let n = cuts().clamp(1, rest.len());
        let mut chunk = &rest[..n];
        rest = &rest[n..];
        while let Some(frame) = reader.next_frame(&mut chunk) {
            frames.push(frame);
        }
        assert!(chunk.is_empty(), "a chunk was not used up");
        assert!(reader.held().0 <= bounds.framing.line_bytes);
        assert!(reader.held().1 <= bounds.framing.line_bytes);
    }
    for frame in frames {
        let event = match frame {
            Frame::Line(line) => {
                assert!(!line.is_empty() && line.len() <= bounds.framing.line_bytes);
                assert!(!line.contains(&b'\n'));
                Event::Driver(line)
            }
            Frame::Dropped(d) => Event::DriverDropped(d),
        };
        match translator.event(event) {
            Some(Step::Output(o)) => outputs.push(o),
            Some(Step::Vet { classes, .. }) => {
                assert!(classes.len() as u64 <= bounds.classes_per_batch);
                let bytes: usize = classes.iter().map(|c| c.bytes.len()).sum();
                assert!(bytes as u64 <= bounds.class_batch_bytes);
                outputs.extend(translator.admit(Output::Violation {
                    component: translator.running().to_owned(),
                    reference: classes.first().map(|c| c.name.clone()).unwrap_or_default(),
                    message: "denied".into(),
                }));
            }
            Some(Step::Deny { .. } | Step::Invoke { .. } | Step::Lines { .. }) | None => {}
        }
    }
    outputs.extend(translator.finish());
    let ids: Vec<&str> = components.iter().map(|c| c.id.as_str()).collect();
    let (mut stdout, mut stderr, mut records, mut reports) = (0u64, 0u64, 0u64, 0);
    for o in &outputs {
        let component = match o {
            Output::Started { component } => component,
            Output::Stdout { component, data } => {
                stdout += data.len() as u64;
                component
            }
            Output::Stderr { component, data } => {
                stderr += data.len() as u64;
                component
            }
            Output::Value { component, .. }
            | Output::Diagnostic { component, .. }
            | Output::Exception { component, .. }
            | Output::Violation { component, .. }
            | Output::Internal { component, .. } => {
                records += 1;
                if matches!(o, Output::Internal { message, .. } if message.starts_with("the driver's events exceeded"))
                {
                    reports += 1;
                }
                component
            }
        };
        assert!(
            ids.contains(&component.as_str()) || (ids.is_empty() && component.is_empty()),
            "output for a component not in the request: {:.100}",
            component
        );
    }
    assert!(stdout <= bounds.output_bytes && stderr <= bounds.output_bytes);
    assert!(records <= bounds.records + 1, "{records} records");
    assert!(reports <= 1, "{reports} reports");
    outputs
}

#[cfg(test)]
mod tests;
