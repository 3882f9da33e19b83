//! A many-input run's compile pass, supervisor side: the driver compiles the components
//! once in record mode (nothing of them runs), and the supervisor records the program
//! each input's run replays: the class batches it allowed, with the bytes it vetted (its
//! own copy, never bytes sent again), and the snippet invocations, in order, each
//! checked to name JShell's entry point in a class of an allowed batch. What the
//! compile pass says is hostile input like any driver's events: the program is bounded,
//! and anything that does not check ends the recording as an internal error.

use std::collections::HashSet;

use tokio::sync::mpsc;

use super::vetting::Verdicts;
use super::DO_IT;
use crate::events::{ClassFile, Step, Translator, MAX_STATEMENTS};
use crate::lang::Launch;
use crate::snippet::{Component, Output};

/// Class bytes of a recorded program, at most (every replay gets them all).
pub const MAX_PROGRAM_BYTES: u64 = 32 << 20;
/// Wrapper lines mapped, at most.
const MAX_LINES: u64 = 1 << 20;

/// Why a recording is no program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the compile pass invoked {method:.100} of {class:.200}, which is not a snippet class it was allowed to load")]
    Invoke { class: String, method: String },
    #[error("the recorded program is over its bound of {0}")]
    TooLarge(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ProgramStep {
    Load(Vec<ClassFile>),
    Invoke { class: String, value: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Wrapper {
    class: String,
    component: usize,
    lines: Vec<u32>,
}

/// A recorded program: per component, the batches to load and the snippets to invoke,
/// in order, and the line tables of the wrapper classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    ids: Vec<String>,
    steps: Vec<Vec<ProgramStep>>,
    wrappers: Vec<Wrapper>,
}

impl Program {
    /// The rest of a replay's input (after its header): `stdin`, the line tables, the
    /// steps (see PROTOCOL.md).
    pub(crate) fn input(&self, stdin: &[u8]) -> Vec<u8> {
        fn int(out: &mut Vec<u8>, n: usize) {
            out.extend_from_slice(&i32::try_from(n).unwrap_or(i32::MAX).to_be_bytes());
        }
        fn put(out: &mut Vec<u8>, bytes: &[u8]) {
            int(out, bytes.len());
            out.extend_from_slice(bytes);
        }
        let mut out = Vec::new();
        put(&mut out, stdin);
        int(&mut out, self.wrappers.len());
        for w in &self.wrappers {
            put(&mut out, w.class.as_bytes());
            put(&mut out, self.ids[w.component].as_bytes());
            int(&mut out, w.lines.len());
            for line in &w.lines {
                out.extend_from_slice(&line.to_be_bytes());
            }
        }
        int(&mut out, self.ids.len());
        for (id, steps) in self.ids.iter().zip(&self.steps) {
            put(&mut out, id.as_bytes());
            int(&mut out, steps.len());
            for step in steps {
                match step {
                    ProgramStep::Load(classes) => {
                        out.push(1);
                        int(&mut out, classes.len());
                        for c in classes {
                            put(&mut out, c.name.as_bytes());
                            put(&mut out, &c.bytes);
                        }
                    }
                    ProgramStep::Invoke { class, value } => {
                        out.push(2);
                        put(&mut out, class.as_bytes());
                        out.push(u8::from(*value));
                    }
                }
            }
        }
        out
    }

    /// Snippet invocations in the program.
    pub fn invocations(&self) -> usize {
        self.steps
            .iter()
            .flatten()
            .filter(|s| matches!(s, ProgramStep::Invoke { .. }))
            .count()
    }
}

/// One compile pass being recorded.
#[derive(Debug)]
pub struct Recorder {
    verdicts: Verdicts,
    program: Program,
    /// Names of the classes of allowed batches.
    allowed: HashSet<String>,
    bytes: u64,
    invocations: u64,
    max_invocations: u64,
    lines: u64,
    /// A batch was denied (a violation, or over the event bounds).
    denied: bool,
    error: Option<RecordError>,
}

/// How a recording ended without a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The access list denied a batch (its violations are in the outputs).
    Denied,
    Invalid(RecordError),
}

impl Recorder {
    /// For a compile pass of `components` on `launch`, and the verdicts for the
    /// driver's stdin.
    pub fn new(launch: &Launch, components: &[Component]) -> (Recorder, mpsc::Receiver<Vec<u8>>) {
        let (verdicts, rx) = Verdicts::for_recording(launch, components);
        let recorder = Recorder {
            verdicts,
            program: Program {
                ids: components.iter().map(|c| c.id.clone()).collect(),
                steps: vec![Vec::new(); components.len()],
                wrappers: Vec::new(),
            },
            allowed: HashSet::new(),
            bytes: 0,
            invocations: 0,
            max_invocations: (MAX_STATEMENTS as u64).saturating_mul(components.len() as u64),
            lines: 0,
            denied: false,
            error: None,
        };
        (recorder, rx)
    }

    /// Takes one step of the compile pass's driver (a class batch to vet and record,
    /// an invocation or a line table to record).
    pub fn step(&mut self, step: Step, translator: &mut Translator<'_>, outputs: &mut Vec<Output>) {
        let component = translator.running_index();
        match step {
            Step::Output(o) => outputs.push(o),
            Step::Vet { seq, classes } => {
                let bytes: u64 = classes.iter().map(|c| c.bytes.len() as u64).sum();
                if self.bytes.saturating_add(bytes) > MAX_PROGRAM_BYTES {
                    self.fail(RecordError::TooLarge("class bytes"));
                }
                if self.error.is_some() {
                    // No program comes of this recording: nothing more is vetted.
                    self.verdicts.deny(seq, translator);
                    return;
                }
                if !self.verdicts.vet(seq, &classes, translator, outputs) {
                    self.denied = true;
                    return;
                }
                self.bytes += bytes;
                self.allowed.extend(classes.iter().map(|c| c.name.clone()));
                if let Some(steps) = self.program.steps.get_mut(component) {
                    steps.push(ProgramStep::Load(classes));
                }
            }
            Step::Deny { seq } => {
                self.denied = true;
                self.verdicts.deny(seq, translator);
            }
            Step::Invoke {
                class,
                method,
                value,
            } => {
                if method != DO_IT || !self.allowed.contains(&class) {
                    self.fail(RecordError::Invoke { class, method });
                    return;
                }
                self.invocations += 1;
                if self.invocations > self.max_invocations {
                    self.fail(RecordError::TooLarge("invocations"));
                    return;
                }
                if let Some(steps) = self.program.steps.get_mut(component) {
                    steps.push(ProgramStep::Invoke { class, value });
                }
            }
            Step::Lines {
                class,
                component,
                lines,
            } => {
                self.lines = self.lines.saturating_add(lines.len() as u64);
                if self.lines > MAX_LINES {
                    self.fail(RecordError::TooLarge("wrapper lines"));
                    return;
                }
                self.program.wrappers.push(Wrapper {
                    class,
                    component,
                    lines,
                });
            }
        }
    }

    fn fail(&mut self, error: RecordError) {
        self.error.get_or_insert(error);
    }

    /// The program, or why there is none.
    pub fn finish(self) -> Result<Program, Failure> {
        if let Some(e) = self.error {
            return Err(Failure::Invalid(e));
        }
        if self.denied {
            return Err(Failure::Denied);
        }
        Ok(self.program)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Bounds;
    use crate::lang::EvaluatorKind;

    fn launch() -> Launch {
        Launch {
            kind: EvaluatorKind::Jshell,
            program: "/usr/bin/java".into(),
            args: vec![],
            mounts: vec![],
            environment: vec![],
            access_list: None,
        }
    }

    fn event(t: &mut Translator<'_>, line: &str) -> Step {
        t.event(crate::sandbox::Event::Driver(line.as_bytes().to_vec()))
            .unwrap()
    }

    #[test]
    fn only_entry_points_of_allowed_classes_are_recorded() {
        let components = [Component {
            id: "c1".into(),
            code: "1".into(),
        }];
        let bounds = Bounds::for_request(&components, &Default::default());
        let mut t = Translator::new(&components, bounds, false).recording();
        let (mut r, mut verdicts) = Recorder::new(&launch(), &components);
        let mut outputs = Vec::new();
        for line in [
            r#"{"event":"start","id":"c1"}"#,
            r#"{"event":"classes","seq":1,"id":"c1","classes":[{"name":"REPL.$JShell$7","bytes":"yv66vg=="}]}"#,
            r#"{"event":"invoke","id":"c1","class":"REPL.$JShell$7","method":"do_it$","value":true}"#,
        ] {
            let step = event(&mut t, line);
            r.step(step, &mut t, &mut outputs);
        }
        assert_eq!(verdicts.try_recv().unwrap(), b"1 allow\n");
        assert_eq!(r.program.invocations(), 1);
        let input = r.program.input(b"in");
        assert!(input.windows(4).any(|w| w == [0xca, 0xfe, 0xba, 0xbe]));
        // Another method, or a class never allowed: the recording is no program.
        for bad in [
            r#"{"event":"invoke","id":"c1","class":"REPL.$JShell$7","method":"main","value":true}"#,
            r#"{"event":"invoke","id":"c1","class":"java.lang.Runtime","method":"do_it$","value":true}"#,
        ] {
            let (mut r2, _rx) = Recorder::new(&launch(), &components);
            r2.allowed = r.allowed.clone();
            let step = event(&mut t, bad);
            r2.step(step, &mut t, &mut outputs);
            assert!(matches!(
                r2.finish(),
                Err(Failure::Invalid(RecordError::Invoke { .. }))
            ));
        }
        assert!(r.finish().is_ok());
    }
}
