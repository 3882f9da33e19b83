//! The driver's build at install, with the runtime's own JDK (the copies in
//! `isolated/`, so the driver matches the JVM that runs it): javac compiles the driver,
//! jar makes its agent jar, a training run records the JDK classes snippets load and
//! the JVM dumps them as a class-data-sharing archive; a copy of the driver's source
//! lets a later version of the service recognise a stale driver.
//!
//! The installer runs each command (in a builder sandbox); this module says which.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};

use super::DRIVER_SOURCE_FILE;
use super::{training_input, AGENT_FILE, AGENT_MANIFEST, ARCHIVE_FILE, DRIVER, DRIVER_DIR};

#[derive(Debug, thiserror::Error)]
pub enum DriverBuildError {
    #[error("JShell runtimes need a JDK: no javac at {}", .0.display())]
    NoJavac(PathBuf),
    #[error("JShell runtimes need a JDK: no jar at {}", .0.display())]
    NoJar(PathBuf),
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

type Result<T, E = DriverBuildError> = std::result::Result<T, E>;

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DriverBuildError {
    let path = path.to_owned();
    move |source| DriverBuildError::Io {
        action,
        path,
        source,
    }
}

/// The driver's build in one runtime being built: host paths in its staging tree.
#[derive(Debug)]
pub struct DriverBuild {
    java: PathBuf,
    javac: PathBuf,
    jar: PathBuf,
    /// The driver's directory ([`DRIVER_DIR`]) in the runtime.
    out: PathBuf,
    /// Sources and intermediate files, in the build's scratch directory.
    scratch: PathBuf,
}

impl DriverBuild {
    /// For a runtime whose evaluator `program` is its JVM (a sandbox path): `host`
    /// gives the host path of a sandbox path in the runtime being built, and `tmp` is
    /// the build's scratch directory.
    pub fn new(program: &str, host: impl Fn(&Path) -> PathBuf, tmp: &Path) -> Self {
        let program = Path::new(program);
        DriverBuild {
            java: host(program),
            javac: host(&program.with_file_name("javac")),
            jar: host(&program.with_file_name("jar")),
            out: host(Path::new(DRIVER_DIR)),
            scratch: tmp.join("jshell-driver"),
        }
    }

    /// Builds the driver; `run` runs one command of the build.
    pub async fn run<E, F, Fut>(&self, mut run: F) -> Result<(), E>
    where
        E: From<DriverBuildError>,
        F: FnMut(Vec<String>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        let DriverBuild {
            java,
            javac,
            jar,
            out,
            scratch,
        } = self;
        if !javac.is_file() {
            return Err(DriverBuildError::NoJavac(javac.clone()).into());
        }
        for dir in [scratch, out] {
            std::fs::create_dir_all(dir).map_err(io_error("create", dir))?;
        }
        let source = scratch.join(DRIVER_SOURCE_FILE);
        write(&source, DRIVER)?;
        run(vec![
            javac.display().to_string(),
            "-encoding".into(),
            "UTF-8".into(),
            "-d".into(),
            out.display().to_string(),
            source.display().to_string(),
        ])
        .await?;

        // The agent jar: only a manifest, naming the driver (found on the class path)
        // as the agent that receives java.lang.instrument, through which it redefines
        // classes in place as JShell's default engine does (JVMTI RedefineClasses).
        if !jar.is_file() {
            return Err(DriverBuildError::NoJar(jar.clone()).into());
        }
        let manifest = scratch.join("agent.mf");
        write(&manifest, AGENT_MANIFEST)?;
        let agent = out.join(AGENT_FILE);
        run(vec![
            jar.display().to_string(),
            "--create".into(),
            "--file".into(),
            agent.display().to_string(),
            "--manifest".into(),
            manifest.display().to_string(),
        ])
        .await?;

        // A class-data-sharing archive of the JDK classes a typical snippet loads
        // (JShell, javac, the agent's java.lang.instrument): recorded by a training run
        // with the agent, dumped without the driver's own classes so that it stays
        // valid for the driver's directory inside the sandbox. Starting a JShell
        // evaluation is about a third faster with it.
        let training = scratch.join("training.bin");
        write(&training, training_input())?;
        let recorded = scratch.join("classes.recorded");
        run(vec![
            java.display().to_string(),
            "-Xshare:off".into(),
            format!("-XX:DumpLoadedClassList={}", recorded.display()),
            "-XX:+UseSerialGC".into(),
            "--enable-preview".into(),
            format!("-javaagent:{}", agent.display()),
            "-cp".into(),
            out.display().to_string(),
            "JShellDriver".into(),
            training.display().to_string(),
            "/dev/null".into(),
        ])
        .await?;
        let list = std::fs::read_to_string(&recorded).map_err(io_error("read", &recorded))?;
        let jdk_only: String = list
            .lines()
            .filter(|l| !l.contains("JShellDriver") && !l.contains("REPL/"))
            .map(|l| format!("{l}\n"))
            .collect();
        let class_list = scratch.join("classes.jdk");
        write(&class_list, jdk_only)?;
        let archive = out.join(ARCHIVE_FILE);
        run(vec![
            java.display().to_string(),
            "-Xshare:dump".into(),
            format!("-XX:SharedClassListFile={}", class_list.display()),
            format!("-XX:SharedArchiveFile={}", archive.display()),
            "-XX:+UseSerialGC".into(),
        ])
        .await?;

        write(&out.join(DRIVER_SOURCE_FILE), DRIVER)?;
        Ok(())
    }
}

fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    std::fs::write(path, contents).map_err(io_error("write", path))
}
