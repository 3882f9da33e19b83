//! A running sandbox, watched until it ends: its plan sent, stdout, stderr and driver
//! events streamed with their caps, the wall-clock, CPU and output limits enforced,
//! cancellation honoured, its usage read and its cgroup removed. What happened comes
//! back as facts ([`Finished`]); [`super::status`] decides what they mean.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::cgroup::SandboxCgroup;
use super::control::{self, ControlError, Decoder};
use super::files::{self, ReturnedFile};
use super::framing::{Frame, Framing, LineReader};
use super::limits::CPU_POLL;
use super::plan::FilesPlaced;
use super::plan::{Plan, Report, MAX_CONTROL_MESSAGE};
use super::spawn::HelperProcess;
use super::spawn::Prepared;
use super::status::{self, DriverFacts, KillReason, SandboxFacts};
use super::{Event, Filesystem, Job, Outcome, SetupError};
use std::os::fd::OwnedFd;

/// How long the streams may stay open after a kill.
const DRAIN: Duration = Duration::from_secs(2);

/// How a sandbox's run went, its status not decided yet: the driver's events may
/// still add to it (see [`Finished::outcome`]).
#[derive(Debug)]
pub struct Finished {
    facts: SandboxFacts,
    wall_time: Duration,
    peak_memory: u64,
    setup_time: Duration,
    stdout_bytes: u64,
    stderr_bytes: u64,
    stdout_truncated: bool,
    stderr_truncated: bool,
    files: Vec<ReturnedFile>,
}

impl Finished {
    /// A sandbox that could not be set up.
    pub(super) fn failed(start: Instant, error: SetupError) -> Self {
        Finished {
            facts: SandboxFacts {
                setup_error: Some(error),
                ..SandboxFacts::default()
            },
            wall_time: start.elapsed(),
            peak_memory: 0,
            setup_time: Duration::ZERO,
            stdout_bytes: 0,
            stderr_bytes: 0,
            stdout_truncated: false,
            stderr_truncated: false,
            files: Vec::new(),
        }
    }

    /// The outcome, its status decided by [`status::classify`] from what the
    /// supervisor saw and what the driver's events showed.
    pub fn outcome(self, driver: &DriverFacts) -> Outcome {
        let (status, error) = status::classify(&self.facts, driver);
        Outcome {
            status,
            exit_code: self.facts.exit_code,
            signal: self.facts.signal,
            wall_time: self.wall_time,
            cpu_time: self.facts.cpu_time,
            peak_memory: self.peak_memory,
            setup_time: self.setup_time,
            stdout_bytes: self.stdout_bytes,
            stderr_bytes: self.stderr_bytes,
            stdout_truncated: self.stdout_truncated,
            stderr_truncated: self.stderr_truncated,
            error,
            files: self.files,
        }
    }
}

/// Everything one supervision needs.
pub(super) struct Supervision {
    pub job: Job,
    /// Bounds on what is read from the driver's event channel.
    pub framing: Framing,
    /// The plan to send; `None` for a sandbox started ahead, which has it already.
    pub plan: Option<Plan>,
    pub prepared: Prepared,
    /// `/work` of a sandbox started ahead (a cold one's comes in its init's report).
    pub work: Option<OwnedFd>,
    /// The payload's uid, who owns the files put in.
    pub owner: u32,
    /// The input of a sandbox started ahead, written to its pipe.
    pub deferred_input: Option<Vec<u8>>,
    /// Stdin after `job.stdin`, until the sender goes away.
    pub more_stdin: Option<mpsc::Receiver<Vec<u8>>>,
    pub events: mpsc::Sender<Event>,
    pub cancel: CancellationToken,
    /// When the request came: wall time counts from here.
    pub start: Instant,
    /// Sandboxes whose outcome is out and whose teardown is still going.
    pub teardowns: Arc<AtomicUsize>,
}

struct Streams {
    stdout: Option<tokio::net::unix::pipe::Receiver>,
    stderr: Option<tokio::net::unix::pipe::Receiver>,
    events: Option<tokio::net::unix::pipe::Receiver>,
    control: Option<tokio::net::UnixStream>,
}

/// The output counted on one pipe.
#[derive(Default)]
struct Counted {
    bytes: u64,
    truncated: bool,
}

impl Supervision {
    pub async fn run(self) -> Finished {
        let Supervision {
            mut job,
            framing,
            plan,
            prepared,
            work,
            owner,
            deferred_input,
            mut more_stdin,
            events,
            cancel,
            start,
            teardowns,
        } = self;
        let Prepared {
            mut child,
            control,
            events: ev_read,
            input: input_pipe,
            cg,
        } = prepared;
        // CPU the sandbox spent before its request (warming up) is not the request's.
        let cpu_base = if plan.is_none() {
            cg.cpu_time()
        } else {
            Duration::ZERO
        };
        // A sandbox started ahead gets the request's files before its input: its
        // payload waits for that input, so nothing of the request runs yet.
        if deferred_input.is_some() && !job.files.put.is_empty() {
            let Some(dir) = work.as_ref().and_then(|w| w.try_clone().ok()) else {
                return Finished::failed(start, SetupError::NoWork);
            };
            let put = std::mem::take(&mut job.files.put);
            let placed =
                tokio::task::spawn_blocking(move || files::place(&dir, &put, owner, owner)).await;
            match placed {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Finished::failed(start, SetupError::PlaceFiles(e)),
                Err(e) => return Finished::failed(start, SetupError::Watch(e.into())),
            }
        }
        match deferred_input {
            Some(input) => {
                let pipe = std::fs::File::from(input_pipe);
                // Written alongside supervision: a payload that reads slowly (or not at
                // all) cannot stall it; the pipe closes when the writer is done.
                tokio::task::spawn_blocking(move || {
                    let mut pipe = pipe;
                    let _ = std::io::Write::write_all(&mut pipe, &input);
                });
            }
            None => drop(input_pipe),
        }
        let connect = || -> std::io::Result<_> {
            let control = std::os::unix::net::UnixStream::from(control);
            control.set_nonblocking(true)?;
            let ev = if job.events {
                Some(tokio::net::unix::pipe::Receiver::from_owned_fd(ev_read)?)
            } else {
                None
            };
            Ok((tokio::net::UnixStream::from_std(control)?, ev))
        };
        let (mut control, ev_read) = match connect() {
            Ok(x) => x,
            Err(e) => return Finished::failed(start, SetupError::Watch(e)),
        };
        // The plan, then the raw input bytes it announces (a waiting sandbox has its plan).
        if let Some(plan) = &plan {
            if let Err(e) = control::send_plan(&mut control, plan, job.input.as_deref()).await {
                // A helper that failed a step before its plan said which: that is the
                // setup error, not the closed socket it left.
                let said = said_before_going(&control).await;
                return Finished::failed(start, said.unwrap_or(SetupError::SendPlan(e)));
            }
        }
        if let Some(mut stdin) = child.take_stdin() {
            let data = job.stdin.clone();
            let mut more = more_stdin.take();
            tokio::spawn(async move {
                // A payload that never reads stdin is fine: the write just stops (and the
                // task ends with the pipe when the sandbox dies).
                if stdin.write_all(&data).await.is_err() {
                    return;
                }
                if let Some(more) = more.as_mut() {
                    while let Some(chunk) = more.recv().await {
                        if stdin.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
        let (stdout, stderr) = child.take_output();
        let streams = Streams {
            stdout,
            stderr,
            events: ev_read,
            control: Some(control),
        };
        Watch {
            job,
            framing,
            child,
            cg,
            streams,
            events,
            cancel,
            start,
            cpu_base,
            teardowns,
            work,
            owner,
        }
        .run()
        .await
    }
}

/// The supervision loop's state once the sandbox has what it needs.
struct Watch {
    job: Job,
    framing: Framing,
    child: HelperProcess,
    cg: SandboxCgroup,
    streams: Streams,
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
    start: Instant,
    cpu_base: Duration,
    teardowns: Arc<AtomicUsize>,
    work: Option<OwnedFd>,
    owner: u32,
}

impl Watch {
    async fn run(self) -> Finished {
        let Watch {
            mut job,
            framing,
            mut child,
            mut cg,
            mut streams,
            events,
            cancel,
            start,
            cpu_base,
            teardowns,
            mut work,
            owner,
        } = self;
        // Placed (cold sandboxes) when init passes out `/work`; not held twice.
        let mut put = std::mem::take(&mut job.files.put);
        let limits = &job.limits;
        let deadline = tokio::time::Instant::from_std(start + limits.wall_time);
        let mut cpu_tick = tokio::time::interval(CPU_POLL);
        cpu_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut kill: Option<KillReason> = None;
        let mut report: Option<Report> = None;
        let mut setup_error: Option<SetupError> = None;
        let mut setup_time = Duration::ZERO;
        let mut helper_done = false;
        let (mut out, mut err) = (Counted::default(), Counted::default());
        // Nothing on the event channel is trusted: lines are bounded, one is held at
        // most, past the channel's budget everything is dropped, and a line the end (or
        // a kill) cuts is no event: the drivers end every line (see `super::framing`).
        let mut reader = LineReader::new(framing);
        let mut reports = Decoder::new(MAX_CONTROL_MESSAGE);
        let mut buf_out = vec![0u8; 64 * 1024];
        let mut buf_err = vec![0u8; 64 * 1024];
        let mut buf_ev = vec![0u8; 64 * 1024];
        let mut buf_ctl = vec![0u8; 4096];
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        let mut receiver_gone = false;
        let mut pending_fd: Option<OwnedFd> = None;

        let may_end_early = matches!(job.filesystem, Filesystem::Runtime(_));
        loop {
            let open = streams.stdout.is_some()
                || streams.stderr.is_some()
                || streams.events.is_some()
                || streams.control.is_some();
            if helper_done && !open {
                break;
            }
            // The payload has ended and its output is all read: the outcome is known.
            // Its init and the helper still exit and the namespaces go (about a
            // millisecond); that finishes after the outcome is returned. Not for a
            // sandbox with host paths bound writable (runtime builds): its caller works
            // on them next, and nothing of the sandbox may still run then.
            let ended = matches!(
                report,
                Some(Report::Exited { .. } | Report::Signaled { .. })
            );
            if ended
                && may_end_early
                && kill.is_none()
                && streams.stdout.is_none()
                && streams.stderr.is_none()
                && streams.events.is_none()
            {
                break;
            }
            if kill.is_some() && drain_deadline.is_none() {
                let (back, killed) = off_worker(cg, |cg| cg.kill()).await;
                cg = back;
                if let Err(e) = killed {
                    tracing::error!(error = &e as &dyn std::error::Error, "killing the sandbox");
                }
                // Pipes close as the processes die; never wait on them forever.
                drain_deadline = Some(tokio::time::Instant::now() + DRAIN);
            }
            // Biased: output first. The driver flushes stdout and stderr before it
            // writes an event, so reading them first keeps output attributed to the
            // right component.
            tokio::select! {
                biased;
                r = read_opt(&mut streams.stdout, &mut buf_out) => match r {
                    Some(chunk) => {
                        if forward(chunk, &mut out, limits.output_bytes, &events, Event::Stdout).await.is_err() { receiver_gone = true; }
                        if out.truncated && kill.is_none() { kill = Some(KillReason::Output); }
                    }
                    None => streams.stdout = None,
                },
                r = read_opt(&mut streams.stderr, &mut buf_err) => match r {
                    Some(chunk) => {
                        if forward(chunk, &mut err, limits.output_bytes, &events, Event::Stderr).await.is_err() { receiver_gone = true; }
                        if err.truncated && kill.is_none() { kill = Some(KillReason::Output); }
                    }
                    None => streams.stderr = None,
                },
                r = read_opt(&mut streams.events, &mut buf_ev) => match r {
                    Some(mut chunk) => {
                        while let Some(frame) = reader.next_frame(&mut chunk) {
                            if events.send(driver_event(frame)).await.is_err() { receiver_gone = true; }
                        }
                        // Python-level output travels as events: past the channel's
                        // budget the sandbox is stopped, as for output over its limit.
                        if reader.over_budget() && kill.is_none() {
                            kill = Some(KillReason::Output);
                        }
                    }
                    None => streams.events = None,
                },
                r = recv_opt(&streams.control, &mut buf_ctl) => match r {
                    Some((n, fds)) => {
                        reports.feed(&buf_ctl[..n]);
                        // Only init sends a descriptor, once, with its `work` report.
                        pending_fd = pending_fd.or(fds.into_iter().next());
                        loop {
                            match reports.next::<Report>() {
                                Ok(None) => break,
                                Ok(Some(Report::Work)) => {
                                    if work.is_none() {
                                        work = pending_fd.take();
                                    }
                                    if !put.is_empty() {
                                        let placed = place_files(&work, std::mem::take(&mut put), owner).await;
                                        let said = FilesPlaced { placed: placed.is_ok() };
                                        if let Err(e) = placed {
                                            setup_error = Some(e);
                                            kill = kill.or(Some(KillReason::Cancelled));
                                        }
                                        if let Some(control) = streams.control.as_mut() {
                                            if let Ok(line) = control::encode(&said) {
                                                let _ = control.write_all(&line).await;
                                            }
                                        }
                                    }
                                }
                                Ok(Some(Report::Started)) => setup_time = start.elapsed(),
                                Ok(Some(Report::SetupFailed { step, errno, detail })) => {
                                    setup_error = Some(SetupError::Step { step, errno, detail });
                                }
                                Ok(Some(r)) => report = Some(r),
                                Err(ControlError::Garbage(e)) => setup_error = Some(SetupError::Report(e)),
                                Err(_) => {
                                    setup_error = Some(SetupError::OversizedReport);
                                    streams.control = None;
                                    break;
                                }
                            }
                        }
                    }
                    None => streams.control = None,
                },
                _ = child.wait(), if !helper_done => {
                    // Reaped: it reaped init before it exited, so nothing of the sandbox
                    // is left unless the helper was killed (then init's inheritor reaps
                    // it).
                    helper_done = true;
                    cg.helper_reaped();
                }
                _ = tokio::time::sleep_until(deadline), if kill.is_none() => kill = Some(KillReason::Wall),
                _ = cpu_tick.tick(), if kill.is_none() => {
                    if cg.cpu_time().saturating_sub(cpu_base) >= limits.cpu_time { kill = Some(KillReason::Cpu); }
                },
                _ = cancel.cancelled(), if kill.is_none() => kill = Some(KillReason::Cancelled),
                _ = sleep_opt(drain_deadline) => {
                    tracing::warn!("sandbox streams still open after the kill; closing them");
                    break;
                }
            }
            if receiver_gone && kill.is_none() {
                kill = Some(KillReason::Cancelled);
            }
        }
        let mut usage;
        if helper_done {
            // Background processes of the payload die with its pid namespace; this also
            // covers anything still alive when a limit stopped the run.
            let (_, u) = off_worker(cg, |cg| {
                if let Err(e) = cg.kill() {
                    tracing::error!(error = &e as &dyn std::error::Error, "killing the sandbox");
                }
                let usage = cg.usage();
                if let Err(e) = cg.destroy() {
                    tracing::error!(
                        error = &e as &dyn std::error::Error,
                        "removing the sandbox cgroup"
                    );
                }
                usage
            })
            .await;
            usage = u;
        } else {
            // Ended early (see the loop): the usage is final, the rest goes in the
            // background, counted until it is done. Files to read back are read with
            // nothing of the sandbox running: what init's last kill left dying is
            // killed with the cgroup first.
            usage = cg.usage();
            if job.files.get.is_some() {
                let (back, killed) = off_worker(cg, |cg| cg.kill()).await;
                cg = back;
                if let Err(e) = killed {
                    tracing::error!(error = &e as &dyn std::error::Error, "killing the sandbox");
                }
            }
            teardowns.fetch_add(1, Ordering::SeqCst);
            drop(streams);
            tokio::spawn(async move {
                // Waited for (or failing), the helper's pid is no longer known to be its
                // own.
                if tokio::time::timeout(DRAIN, child.wait()).await.is_ok() {
                    cg.helper_reaped();
                }
                let _ = tokio::task::spawn_blocking(move || {
                    if let Err(e) = cg.destroy() {
                        tracing::error!(
                            error = &e as &dyn std::error::Error,
                            "removing the sandbox cgroup"
                        );
                    }
                })
                .await;
                // Before the count goes down: a lane this sandbox was the last to hold
                // starts its own teardown (counted) as it goes.
                drop(child);
                teardowns.fetch_sub(1, Ordering::SeqCst);
            });
        }
        usage.cpu_time = usage.cpu_time.saturating_sub(cpu_base);
        // Read once nothing of the payload runs any more (init killed what it left
        // behind when it ended; a limit or cancel killed the cgroup).
        let returned = match (&job.files.get, work) {
            (Some(wanted), Some(dir)) if setup_error.is_none() => {
                let wanted = wanted.clone();
                tokio::task::spawn_blocking(move || files::collect(&dir, &wanted, owner, owner))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .unwrap_or_else(|e| {
                        vec![ReturnedFile {
                            path: String::new(),
                            size: 0,
                            content: Vec::new(),
                            truncated: false,
                            error: Some(e),
                        }]
                    })
            }
            _ => Vec::new(),
        };
        let (exit_code, signal) = match report {
            Some(Report::Exited { code }) => (Some(code), None),
            Some(Report::Signaled { signal }) => (None, Some(signal)),
            _ => (None, None),
        };
        Finished {
            facts: SandboxFacts {
                setup_error,
                kill,
                exit_code,
                signal,
                pids_limit_hits: usage.pids_limit_hits,
                oom_kills: usage.oom_kills,
                cpu_time: usage.cpu_time,
                cpu_limit: limits.cpu_time,
            },
            wall_time: start.elapsed(),
            peak_memory: usage.peak_memory,
            setup_time,
            stdout_bytes: out.bytes,
            stderr_bytes: err.bytes,
            stdout_truncated: out.truncated,
            stderr_truncated: err.truncated,
            files: returned,
        }
    }
}

/// The failed step a helper reported before its end of the socket closed, if any
/// (what is there to read within a moment).
async fn said_before_going(control: &tokio::net::UnixStream) -> Option<SetupError> {
    let mut decoder = Decoder::new(MAX_CONTROL_MESSAGE);
    let mut buf = vec![0u8; 4096];
    let read = async {
        loop {
            match control::recv_async(control, &mut buf).await {
                Ok((0, _)) | Err(_) => return None,
                Ok((n, _)) => {
                    decoder.feed(&buf[..n]);
                    while let Ok(Some(report)) = decoder.next::<Report>() {
                        if let Report::SetupFailed {
                            step,
                            errno,
                            detail,
                        } = report
                        {
                            return Some(SetupError::Step {
                                step,
                                errno,
                                detail,
                            });
                        }
                    }
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_millis(200), read)
        .await
        .ok()
        .flatten()
}

/// Puts the job's files in `work` off the async workers.
async fn place_files(
    work: &Option<OwnedFd>,
    put: Vec<files::InputFile>,
    owner: u32,
) -> Result<(), SetupError> {
    let dir = work
        .as_ref()
        .and_then(|w| w.try_clone().ok())
        .ok_or(SetupError::NoWork)?;
    tokio::task::spawn_blocking(move || files::place(&dir, &put, owner, owner))
        .await
        .map_err(|e| SetupError::Watch(e.into()))?
        .map_err(SetupError::PlaceFiles)
}

/// Runs `f` on `cg` on a blocking thread and gives `cg` back: killing and waiting for
/// a sandbox's release can take seconds, which no async worker may spend. Dropped
/// while it waits, the closure still finishes, and `cg` is then torn down by its own
/// `Drop`.
async fn off_worker<R: Send + 'static>(
    mut cg: SandboxCgroup,
    f: impl FnOnce(&mut SandboxCgroup) -> R + Send + 'static,
) -> (SandboxCgroup, R) {
    match tokio::task::spawn_blocking(move || {
        let r = f(&mut cg);
        (cg, r)
    })
    .await
    {
        Ok(done) => done,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only at runtime shutdown, when nothing waits for this any more.
            Err(_) => panic!("the runtime shut down while a sandbox was being killed"),
        },
    }
}

fn driver_event(frame: Frame) -> Event {
    match frame {
        Frame::Line(line) => Event::Driver(line),
        Frame::Dropped(d) => Event::DriverDropped(d),
    }
}

/// Sends what fits under `cap` and records whether anything was dropped.
async fn forward(
    chunk: &[u8],
    counted: &mut Counted,
    cap: u64,
    events: &mpsc::Sender<Event>,
    wrap: fn(Vec<u8>) -> Event,
) -> Result<(), ()> {
    let room = cap.saturating_sub(counted.bytes) as usize;
    let keep = &chunk[..chunk.len().min(room)];
    counted.bytes += keep.len() as u64;
    if keep.len() < chunk.len() {
        counted.truncated = true;
    }
    if keep.is_empty() {
        return Ok(());
    }
    events.send(wrap(keep.to_vec())).await.map_err(|_| ())
}

async fn read_opt<'a, R: tokio::io::AsyncRead + Unpin>(
    r: &mut Option<R>,
    buf: &'a mut [u8],
) -> Option<&'a [u8]> {
    match r {
        Some(r) => match r.read(buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(&buf[..n]),
        },
        None => std::future::pending().await,
    }
}

async fn recv_opt(
    socket: &Option<tokio::net::UnixStream>,
    buf: &mut [u8],
) -> Option<(usize, Vec<OwnedFd>)> {
    match socket {
        Some(s) => match control::recv_async(s, buf).await {
            Ok((0, _)) | Err(_) => None,
            Ok(r) => Some(r),
        },
        None => std::future::pending().await,
    }
}

async fn sleep_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
