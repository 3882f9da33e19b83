//! Talking to a running node from the command line (`eval`, `bench-service`, `soak`):
//! which node and how, checked durations, and the exit code of a failed call.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use client::{Channel, ClientError, ClientTls, Code};

use crate::report::{EX_SOFTWARE, EX_UNAVAILABLE, EX_USAGE};

/// Node used when neither `--endpoint` nor `JSHEETS_RUNTIME_ENDPOINT` is given.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8080";
/// Longest wait for the connection to a node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest accepted `--wall-time` and `--timeout`.
pub const MAX_SECS: f64 = 86_400.0;

/// Which node to talk to, and how.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// URL of the node: http://HOST:PORT, or https://HOST:PORT (needs --ca).
    #[arg(
        long,
        value_name = "URL",
        env = "JSHEETS_RUNTIME_ENDPOINT",
        default_value = DEFAULT_ENDPOINT
    )]
    pub endpoint: String,
    /// CA certificate (PEM) to check the node's certificate with (https://).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Key (PEM) of the client certificate.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Name to check the node's certificate against (default: the endpoint's host).
    #[arg(long, value_name = "NAME")]
    pub domain: Option<String>,
}

impl NodeArgs {
    /// The TLS options, if any is set.
    pub fn tls(&self) -> Option<ClientTls> {
        let tls = ClientTls {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            domain: self.domain.clone(),
        };
        (!tls.is_empty()).then_some(tls)
    }

    /// Connects to the node.
    pub async fn connect(&self, timeout: Duration) -> Result<Channel, ClientError> {
        client::connect(&self.endpoint, self.tls().as_ref(), timeout).await
    }
}

/// Checks a number of seconds given as `--{what}`.
pub fn seconds(value: f64, what: &str) -> Result<Duration> {
    if value.is_finite() && value > 0.0 && value <= MAX_SECS {
        Ok(Duration::from_secs_f64(value))
    } else {
        bail!("--{what} must be more than 0 and at most {MAX_SECS} seconds, got {value}")
    }
}

/// Largest accepted `--concurrency` level.
pub const MAX_CONCURRENCY: usize = 10_000;

/// Checks the concurrency levels given as `--{what}`: at least one, each from 1 to
/// [`MAX_CONCURRENCY`].
pub fn concurrency_levels(levels: &[usize], what: &str) -> Result<()> {
    if levels.is_empty() || levels.iter().any(|&c| c == 0 || c > MAX_CONCURRENCY) {
        bail!("every --{what} level must be between 1 and {MAX_CONCURRENCY}");
    }
    Ok(())
}

/// Exit code of a failed call: EX_USAGE for a rejected request or bad options,
/// EX_UNAVAILABLE if the node could not be reached or could not take the
/// evaluation, EX_SOFTWARE otherwise.
pub fn exit_code(e: &ClientError) -> u8 {
    if e.is_bad_request() {
        EX_USAGE
    } else if e.is_unavailable() || e.code() == Some(Code::DeadlineExceeded) {
        EX_UNAVAILABLE
    } else {
        EX_SOFTWARE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        let status = |code| ClientError::Status(client::Status::new(code, "x"));
        assert_eq!(exit_code(&status(Code::Unavailable)), EX_UNAVAILABLE);
        assert_eq!(exit_code(&status(Code::ResourceExhausted)), EX_UNAVAILABLE);
        assert_eq!(exit_code(&status(Code::InvalidArgument)), EX_USAGE);
        assert_eq!(exit_code(&status(Code::NotFound)), EX_USAGE);
        assert_eq!(exit_code(&status(Code::Internal)), EX_SOFTWARE);
        assert_eq!(
            exit_code(&ClientError::Timeout(Duration::from_secs(1))),
            EX_UNAVAILABLE
        );
        assert_eq!(exit_code(&ClientError::Protocol("x".into())), EX_SOFTWARE);
    }
}
