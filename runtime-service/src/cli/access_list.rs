//! `jsheets-runtime access-list check`: every problem of every access list file, one
//! per line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::report::{error_chain, EX_USAGE};

#[derive(Debug, Subcommand)]
pub enum AccessListCommand {
    /// Report syntax errors (file, line, column) and rules that can never decide
    /// anything (duplicated, shadowed, redundant). Exits 1 when there is any.
    Check { files: Vec<PathBuf> },
}

/// `access-list check`: every problem of every file, one per line.
pub fn check(files: &[PathBuf]) -> ExitCode {
    if files.is_empty() {
        eprintln!("jsheets-runtime: access-list check needs at least one FILE");
        return ExitCode::from(EX_USAGE);
    }
    let mut problems = 0;
    for file in files {
        match evaluator::access::AccessList::load(file) {
            Ok(list) => {
                let findings = evaluator::access::lint(&list);
                for f in &findings {
                    println!("{f}");
                }
                problems += findings.len();
                // API that instantiates or invokes classes named by data: allowed on
                // purpose in some lists (jsheets-original), so a warning, not a failure.
                let warnings = evaluator::access::lint::reflective_factories(&list);
                for w in &warnings {
                    println!("warning: {w}");
                }
                if findings.is_empty() {
                    println!(
                        "{}: {} rules, no problems{}",
                        file.display(),
                        list.rules().len(),
                        match warnings.len() {
                            0 => String::new(),
                            n => format!(", {n} warnings"),
                        }
                    );
                }
            }
            Err(e) => {
                println!("{}", error_chain(&e));
                problems += 1;
            }
        }
    }
    if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
