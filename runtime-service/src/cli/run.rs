//! `jsheets-runtime run`: a snippet evaluated on this host in a fresh sandbox, its
//! output printed as it streams.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use evaluator::access::catalog::Catalog;
use evaluator::access::AccessList;
use evaluator::evaluate::RequestData;
use evaluator::runtime::Runtime;
use evaluator::sandbox::files::{Files, InputFile, Oversize, Wanted};
use evaluator::sandbox::{Limits, Status};
use evaluator::snippet::Component;

use super::files::{from_evaluator, local_dataset, write_returned, FileArgs};
use super::local::{evaluate_printing, load_registry, print_outcome};
use crate::config::DEFAULT_ACCESS_LISTS_DIR;
use crate::report::{EX_SOFTWARE, EX_USAGE};
use crate::sandboxes::sandboxes;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Runtime: a name, name@version, language:version or a bare language.
    #[arg(long, short)]
    pub runtime: String,
    /// Code of one component; repeat for several components.
    #[arg(long = "code", short = 'e')]
    pub code: Vec<String>,
    /// Files whose contents are further components, in order.
    #[arg(value_name = "FILE")]
    pub sources: Vec<PathBuf>,
    /// File fed to the snippet's standard input.
    #[arg(long)]
    pub stdin: Option<PathBuf>,
    /// Access list: a name (looked up in /etc/jsheets-runtime/access-lists, then among
    /// the built-in lists), a FILE.access, or `none`. Default: the runtime's own.
    #[arg(long)]
    pub access_list: Option<String>,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub files: FileArgs,
    /// A host directory mounted read-only (nosuid, nodev, noexec) at /data/NAME:
    /// NAME=DIR; repeatable.
    #[arg(long = "dataset", value_name = "NAME=DIR")]
    pub datasets: Vec<String>,
}

#[derive(Debug, Args, Clone)]
pub struct LimitArgs {
    /// Wall-clock limit in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub wall_time: f64,
    /// CPU-time limit in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub cpu_time: f64,
    /// Memory limit in MiB (no swap).
    #[arg(long, default_value_t = 256)]
    pub memory: u64,
    /// Maximum number of processes and threads.
    #[arg(long, default_value_t = 64)]
    pub processes: u64,
    /// Cap of stdout and of stderr, each, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub output: u64,
}

impl LimitArgs {
    pub fn to_limits(&self) -> Result<Limits> {
        let secs = |v: f64, what: &str| {
            if v.is_finite() && v > 0.0 && v <= 3600.0 {
                Ok(Duration::from_secs_f64(v))
            } else {
                bail!("--{what} must be between 0 and 3600 seconds, got {v}")
            }
        };
        if self.memory < 8 {
            bail!("--memory must be at least 8 MiB, got {}", self.memory);
        }
        if self.processes == 0 {
            bail!("--processes must be at least 1");
        }
        Ok(Limits {
            wall_time: secs(self.wall_time, "wall-time")?,
            cpu_time: secs(self.cpu_time, "cpu-time")?,
            memory_bytes: self.memory << 20,
            max_processes: self.processes,
            output_bytes: self.output,
            ..Limits::default()
        })
    }
}

pub async fn run(runtimes_dir: &Path, state_dir: &Path, args: RunArgs) -> Result<ExitCode> {
    let limits = match args.limits.to_limits() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("jsheets-runtime: {e}");
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    let mut components: Vec<Component> = args
        .code
        .iter()
        .enumerate()
        .map(|(i, code)| Component {
            id: format!("e{}", i + 1),
            code: code.clone(),
        })
        .collect();
    for file in &args.sources {
        let code =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        components.push(Component {
            id: file.display().to_string(),
            code,
        });
    }
    if components.is_empty() {
        eprintln!("jsheets-runtime: nothing to run: give -e CODE or a FILE");
        return Ok(ExitCode::from(EX_USAGE));
    }
    let stdin = match &args.stdin {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => Vec::new(),
    };
    let data = match request_data(&args) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("jsheets-runtime: {e:#}");
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    let registry = load_registry(runtimes_dir);
    let runtime = match registry.resolve(&args.runtime) {
        Ok(r) => r.clone(),
        Err(e) => {
            eprintln!("jsheets-runtime: {e}");
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    let access_list = match cli_access_list(&runtime, args.access_list.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("jsheets-runtime: {e:#}");
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    let sandboxes = sandboxes(state_dir)?;
    let (mut outcome, failed) = evaluate_printing(
        &sandboxes,
        &runtime,
        access_list,
        components,
        stdin,
        limits,
        data,
    )
    .await?;
    print_outcome(&runtime, &outcome);
    if !args.files.get.is_empty() {
        let returned = from_evaluator(std::mem::take(&mut outcome.files));
        write_returned(&args.files.output_dir, &args.files.get, &returned)?;
    }
    Ok(match outcome.status {
        Status::Ok if !failed => ExitCode::SUCCESS,
        Status::SetupFailed => ExitCode::from(EX_SOFTWARE),
        _ => ExitCode::FAILURE,
    })
}

/// The files and datasets of `run`: returned files capped as a node's maxima cap them
/// by default (16 MiB a file, 64 MiB in all, 1000 files).
fn request_data(args: &RunArgs) -> Result<RequestData> {
    let node = crate::config::EvaluationConfig::default();
    let put = args
        .files
        .inputs()?
        .into_iter()
        .map(|f| InputFile {
            path: f.remote,
            content: f.content,
            executable: f.executable,
        })
        .collect();
    let get = (!args.files.get.is_empty()).then(|| Wanted {
        patterns: args.files.get.clone(),
        max_file_bytes: node.max_returned_file_bytes,
        max_total_bytes: node.max_returned_total_bytes,
        max_files: node.max_returned_files as usize,
        oversize: Oversize::Truncate,
    });
    let datasets = args
        .datasets
        .iter()
        .map(|d| local_dataset(d))
        .collect::<Result<Vec<_>>>()?;
    Ok(RequestData {
        files: Files { put, get },
        datasets,
    })
}

/// The list `run` holds a snippet to: `--access-list` (name, file or `none`) over
/// the runtime's own.
fn cli_access_list(runtime: &Runtime, flag: Option<&str>) -> Result<Option<Arc<AccessList>>> {
    if let Some(path) = flag.filter(|f| f.contains('/') || f.ends_with(".access")) {
        return Ok(Some(Arc::new(AccessList::load(Path::new(path))?)));
    }
    let catalog = Catalog::new(Some(PathBuf::from(DEFAULT_ACCESS_LISTS_DIR)));
    Ok(catalog
        .for_runtime(runtime.access_list(), flag)
        .with_context(|| format!("access list of runtime {}", runtime.name()))?
        .map(Arc::new))
}
