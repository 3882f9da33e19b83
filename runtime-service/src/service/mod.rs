//! The `jsheets.SnippetRuntime` service: the node and how it is built from the
//! configuration, admission control, the mapping between the protocol and the
//! evaluator, the gRPC implementation, the pools of pre-started sandboxes a node keeps,
//! and the one place errors become gRPC statuses.

mod admission;
mod error;
mod grpc;
mod node;
pub mod pools;
mod wire;

pub use error::ServiceError;
pub use grpc::RuntimeService;
pub use node::Node;
