//! A snippet as the evaluator sees it: code components in, outputs out.
//!
//! Shared by the languages (jobs built from components), the event channel (driver
//! events turned into outputs) and the evaluation that streams them.

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
