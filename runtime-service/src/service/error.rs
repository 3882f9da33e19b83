//! [`ServiceError`], the one error type at the gRPC edge, and the one place in the
//! crate where a [`Status`] is made: every refusal and failure a client sees converts
//! through it.

use evaluator::evaluate::EvaluateError;
use evaluator::lang::JobError;
use tonic::Status;

use super::admission::AdmissionError;
use crate::tls::ClientRejected;

/// Everything that can go wrong before or around an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("an evaluation is already running on this stream; send `stop` or wait for its final response")]
    AlreadyRunning,
    #[error(transparent)]
    Exhausted(#[from] AdmissionError),
    #[error("the node is shutting down")]
    Draining,
    #[error("the node is still loading its runtimes")]
    NotReady,
    /// The evaluator refused the request or failed to hand it to the sandbox.
    #[error(transparent)]
    Evaluate(#[from] EvaluateError),
    #[error("the evaluation task failed")]
    TaskFailed,
    /// The client's certificate does not let it in (mutual TLS).
    #[error(transparent)]
    Client(#[from] ClientRejected),
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Status {
        let message = e.to_string();
        match e {
            ServiceError::InvalidArgument(_) => Status::invalid_argument(message),
            ServiceError::NotFound(_) => Status::not_found(message),
            ServiceError::AlreadyRunning => Status::failed_precondition(message),
            ServiceError::Exhausted(_) => Status::resource_exhausted(message),
            ServiceError::Draining | ServiceError::NotReady => Status::unavailable(message),
            ServiceError::Evaluate(EvaluateError::Job(JobError::Empty)) => {
                Status::invalid_argument(message)
            }
            // The node could not encode a request it accepted: its fault, not the client's.
            ServiceError::Evaluate(EvaluateError::Job(JobError::Encode(_)))
            | ServiceError::TaskFailed => Status::internal(message),
            ServiceError::Client(ClientRejected::NoCertificate) => Status::unauthenticated(message),
            ServiceError::Client(ClientRejected::NotAllowed { .. }) => {
                Status::permission_denied(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use tonic::Code;

    use super::*;

    /// One error of every variant (and of every evaluator and TLS variant it wraps),
    /// with the code a client must see.
    fn every_error() -> Vec<(ServiceError, Code)> {
        let encode = serde_json::from_str::<u8>("not json").unwrap_err();
        vec![
            (
                ServiceError::InvalidArgument("bad".into()),
                Code::InvalidArgument,
            ),
            (
                ServiceError::NotFound("no such runtime".into()),
                Code::NotFound,
            ),
            (ServiceError::AlreadyRunning, Code::FailedPrecondition),
            (
                AdmissionError::OverBudget {
                    mib: 9,
                    budget_mib: 8,
                }
                .into(),
                Code::ResourceExhausted,
            ),
            (
                AdmissionError::QueueFull {
                    running: 2,
                    queue_size: 4,
                }
                .into(),
                Code::ResourceExhausted,
            ),
            (
                AdmissionError::NoSlot {
                    wait: Duration::from_millis(5),
                }
                .into(),
                Code::ResourceExhausted,
            ),
            (ServiceError::Draining, Code::Unavailable),
            (ServiceError::NotReady, Code::Unavailable),
            (
                EvaluateError::Job(JobError::Empty).into(),
                Code::InvalidArgument,
            ),
            (
                EvaluateError::Job(JobError::Encode(encode)).into(),
                Code::Internal,
            ),
            (ServiceError::TaskFailed, Code::Internal),
            (ClientRejected::NoCertificate.into(), Code::Unauthenticated),
            (
                ClientRejected::NotAllowed {
                    names: vec!["backend-9".into()],
                }
                .into(),
                Code::PermissionDenied,
            ),
        ]
    }

    /// The variant of `e`, down to the wrapped evaluator and TLS errors. No wildcard:
    /// a new variant fails to compile here until it is named, and then the test fails
    /// until [`every_error`] holds one of it.
    fn variant(e: &ServiceError) -> &'static str {
        match e {
            ServiceError::InvalidArgument(_) => "InvalidArgument",
            ServiceError::NotFound(_) => "NotFound",
            ServiceError::AlreadyRunning => "AlreadyRunning",
            ServiceError::Exhausted(AdmissionError::OverBudget { .. }) => "Exhausted(OverBudget)",
            ServiceError::Exhausted(AdmissionError::QueueFull { .. }) => "Exhausted(QueueFull)",
            ServiceError::Exhausted(AdmissionError::NoSlot { .. }) => "Exhausted(NoSlot)",
            ServiceError::Draining => "Draining",
            ServiceError::NotReady => "NotReady",
            ServiceError::Evaluate(EvaluateError::Job(JobError::Empty)) => "Evaluate(Empty)",
            ServiceError::Evaluate(EvaluateError::Job(JobError::Encode(_))) => "Evaluate(Encode)",
            ServiceError::TaskFailed => "TaskFailed",
            ServiceError::Client(ClientRejected::NoCertificate) => "Client(NoCertificate)",
            ServiceError::Client(ClientRejected::NotAllowed { .. }) => "Client(NotAllowed)",
        }
    }

    const VARIANTS: [&str; 13] = [
        "InvalidArgument",
        "NotFound",
        "AlreadyRunning",
        "Exhausted(OverBudget)",
        "Exhausted(QueueFull)",
        "Exhausted(NoSlot)",
        "Draining",
        "NotReady",
        "Evaluate(Empty)",
        "Evaluate(Encode)",
        "TaskFailed",
        "Client(NoCertificate)",
        "Client(NotAllowed)",
    ];

    #[test]
    fn every_error_has_its_status_code_and_message() {
        let errors = every_error();
        let seen: BTreeSet<&str> = errors.iter().map(|(e, _)| variant(e)).collect();
        assert_eq!(seen, BTreeSet::from(VARIANTS), "a variant is not covered");
        for (error, code) in errors {
            let message = error.to_string();
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{message}");
            assert_eq!(status.message(), message);
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        let full = ServiceError::from(AdmissionError::QueueFull {
            running: 2,
            queue_size: 4,
        });
        assert_eq!(
            full.to_string(),
            "node at capacity: 2 evaluations running and 4 waiting; retry later or on another node"
        );
        let denied = ServiceError::from(ClientRejected::NotAllowed { names: Vec::new() });
        assert_eq!(
            denied.to_string(),
            "client identity (none) is not allowed on this node"
        );
    }
}
