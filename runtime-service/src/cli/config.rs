//! `jsheets-runtime config`: the effective configuration (defaults, file,
//! environment, flags), secrets redacted.

use std::path::Path;
use std::process::ExitCode;

use crate::config::{self, Overrides};
use crate::report::{error_chain, EX_USAGE};

/// Loads and validates the configuration; a bad value is one line and exit code 64.
pub fn show(file: Option<&Path>, flags: &Overrides) -> ExitCode {
    match config::load(file, flags) {
        Ok((config, warnings)) => {
            for w in warnings {
                eprintln!("warning: {w}");
            }
            print!("{}", config.redacted_toml());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("jsheets-runtime: {}", error_chain(&e));
            ExitCode::from(EX_USAGE)
        }
    }
}
