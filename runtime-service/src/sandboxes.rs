//! Sandboxes whose helper is this very binary, re-executed with [`SANDBOX_INIT`] as
//! its first argument.

use std::path::Path;

use evaluator::sandbox::{SandboxConfig, Sandboxes};

/// Hidden first argument under which the binary acts as the sandbox helper.
pub const SANDBOX_INIT: &str = "sandbox-init";

/// Errors preparing sandboxes.
#[derive(Debug, thiserror::Error)]
pub enum SandboxesError {
    #[error("locating the jsheets-runtime binary")]
    Executable(#[source] std::io::Error),
    #[error("preparing sandboxes")]
    Start(#[source] evaluator::sandbox::SandboxError),
}

/// The zygote library's file name; it is installed beside the binary.
pub const ZYGOTE_LIBRARY: &str = "libjsheets_zygote.so";

/// The sandbox configuration with this binary as helper, mounted under `state_dir`,
/// and the zygote library beside it if it is there (without it, pools start every
/// sandbox's interpreter).
pub fn config(state_dir: &Path) -> Result<SandboxConfig, SandboxesError> {
    let exe = std::env::current_exe().map_err(SandboxesError::Executable)?;
    let library = exe.with_file_name(ZYGOTE_LIBRARY);
    let mut config = SandboxConfig::with_helper(exe, vec![SANDBOX_INIT.into()]);
    config.state_dir = state_dir.to_path_buf();
    config.zygote_library = library.is_file().then_some(library);
    Ok(config)
}

/// Starts sandboxes as [`config`] describes them.
pub fn start(config: SandboxConfig) -> Result<Sandboxes, SandboxesError> {
    Sandboxes::start(config).map_err(SandboxesError::Start)
}

/// Sandboxes with this binary as helper, mounted under `state_dir`.
pub fn sandboxes(state_dir: &Path) -> Result<Sandboxes, SandboxesError> {
    start(config(state_dir)?)
}
