//! The supervisor's side of the driver's class exchange: held to an access list, the
//! driver sends the bytes of every class before JShell loads or redefines it (a
//! `classes` event), the supervisor vets them against the list outside the sandbox,
//! and its verdict goes back on the driver's stdin. Only the verdict decides.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::access::java::{names_resolution_exception, Generated, Vetting};
use crate::access::AccessList;
use crate::events::{ClassFile, Translator};
use crate::lang::{EvaluatorKind, Launch};
use crate::snippet::{Component, Output};

/// Verdicts queued for the driver, at most: it waits for each answer before it asks
/// again.
const QUEUE: usize = 4;

/// One evaluation's class vetting: what was allowed so far, and the way back to the
/// driver.
#[derive(Debug)]
pub struct Verdicts {
    /// `None` when recording without a list: every batch is allowed.
    list: Option<Arc<AccessList>>,
    /// Every class vetted in this evaluation, across components (see `Vetting`).
    vetting: Vetting,
    answers: mpsc::Sender<Vec<u8>>,
}

impl Verdicts {
    /// For an evaluation of `components` on `launch` whose driver asks before loading
    /// classes (JShell held to an access list): the vetting, and the verdicts for the
    /// driver's stdin.
    pub fn for_request(
        launch: &Launch,
        components: &[Component],
    ) -> Option<(Verdicts, mpsc::Receiver<Vec<u8>>)> {
        match (&launch.access_list, launch.kind) {
            (Some(_), EvaluatorKind::Jshell) => Some(Self::new(launch, components)),
            _ => None,
        }
    }

    /// For a compile pass of `components` on `launch` (the driver's record mode, which
    /// asks about every batch): held to the launch's list if it has one, else every
    /// batch is allowed.
    pub fn for_recording(
        launch: &Launch,
        components: &[Component],
    ) -> (Verdicts, mpsc::Receiver<Vec<u8>>) {
        Self::new(launch, components)
    }

    fn new(launch: &Launch, components: &[Component]) -> (Verdicts, mpsc::Receiver<Vec<u8>>) {
        let list = launch.access_list.clone();
        // JShell's own stub for unresolved references is not held to the list, unless a
        // component could have written it itself (see `Generated`).
        let generated = if components
            .iter()
            .any(|c| names_resolution_exception(&c.code))
        {
            Generated::Nothing
        } else {
            Generated::ResolutionStub
        };
        let (answers, verdicts) = mpsc::channel(QUEUE);
        let vetting = Vetting::new(generated);
        (
            Verdicts {
                list,
                vetting,
                answers,
            },
            verdicts,
        )
    }

    /// Vets the class files of batch `seq` (classes to load or to redefine) for the
    /// running component and answers it; every denied reference and every unreadable
    /// class becomes a violation in `outputs`, within the record bounds. True when the
    /// batch was allowed.
    pub fn vet(
        &mut self,
        seq: u64,
        classes: &[ClassFile],
        translator: &mut Translator<'_>,
        outputs: &mut Vec<Output>,
    ) -> bool {
        let allowed = self.check(classes, translator, outputs);
        self.answer(seq, allowed, translator);
        allowed
    }

    /// Denies batch `seq` without looking at it.
    pub fn deny(&self, seq: u64, translator: &mut Translator<'_>) {
        self.answer(seq, false, translator);
    }

    /// True when all of `classes` may be installed.
    fn check(
        &mut self,
        classes: &[ClassFile],
        translator: &mut Translator<'_>,
        outputs: &mut Vec<Output>,
    ) -> bool {
        let Some(list) = &self.list else {
            return true;
        };
        let mut allowed = true;
        // One batch: the classes know one another, and are remembered once allowed.
        let bytes: Vec<&[u8]> = classes.iter().map(|c| c.bytes.as_slice()).collect();
        let checked = self.vetting.check_batch(list, &bytes);
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
            self.vetting.commit();
        }
        allowed
    }

    /// Answers batch `seq`. A driver waits for each answer before it asks again, so a
    /// full queue means the sandbox asked without waiting: the answer is dropped (and
    /// counted), never waited for.
    fn answer(&self, seq: u64, allowed: bool, translator: &mut Translator<'_>) {
        let verdict = if allowed { "allow" } else { "deny" };
        match self
            .answers
            .try_send(format!("{seq} {verdict}\n").into_bytes())
        {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => translator.unanswered(),
            // A driver that is gone does not need its answer.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}
