//! How an evaluation ended, decided in one place: [`classify`] weighs what the
//! supervisor saw and what the driver's events showed, and nothing else sets a status.

use std::time::Duration;

use super::{SetupError, Status};

/// Why the supervisor stopped a sandbox itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    Wall,
    Cpu,
    Output,
    Cancelled,
}

/// What the supervisor saw of one sandbox, without judging it.
#[derive(Debug, Default)]
pub struct SandboxFacts {
    /// The sandbox was not set up, or said something the supervisor cannot read.
    pub setup_error: Option<SetupError>,
    pub kill: Option<KillReason>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Forks the cgroup's process limit refused.
    pub pids_limit_hits: u64,
    /// Processes the cgroup's memory limit killed.
    pub oom_kills: u64,
    pub cpu_time: Duration,
    pub cpu_limit: Duration,
}

/// What the evaluation learnt from the driver's events, which can only make its own
/// result worse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverFacts {
    /// The driver reported a heap its runtime exhausted (the JVM's OutOfMemoryError),
    /// which no cgroup kill shows.
    pub memory_limit: bool,
    /// Output (on the pipes and in events together) went over its limit: the evaluation
    /// stopped the sandbox through its cancellation.
    pub output_exceeded: bool,
    /// The caller cancelled the evaluation itself.
    pub caller_cancelled: bool,
}

/// The status of an evaluation, and for a setup failure the text that says why.
pub fn classify(s: &SandboxFacts, d: &DriverFacts) -> (Status, Option<String>) {
    if let Some(e) = &s.setup_error {
        return (Status::SetupFailed, Some(error_text(e)));
    }
    let status = if s.pids_limit_hits > 0
        && matches!(s.kill, Some(KillReason::Wall | KillReason::Cpu))
    {
        // A fork failed before the clock ran out (the kill stops every fork): the
        // process limit was the first limit hit, however long the snippet went on.
        Status::ProcessLimit
    } else if let Some(k) = s.kill {
        match k {
            KillReason::Wall => Status::WallTimeout,
            KillReason::Cpu => Status::CpuLimit,
            KillReason::Output => Status::OutputLimit,
            // Stopped for its output by the evaluation, not by the caller.
            KillReason::Cancelled if d.output_exceeded && !d.caller_cancelled => {
                Status::OutputLimit
            }
            KillReason::Cancelled => Status::Cancelled,
        }
    } else if s.oom_kills > 0 {
        Status::MemoryLimit
    } else if s.signal == Some(libc::SIGXCPU)
        || (s.signal == Some(libc::SIGKILL) && s.cpu_time >= s.cpu_limit)
    {
        Status::CpuLimit
    } else if s.pids_limit_hits > 0 {
        // Reported even when the payload coped with the failed fork: a limit was hit.
        Status::ProcessLimit
    } else {
        match (s.exit_code, s.signal) {
            (Some(_), _) if d.memory_limit => Status::MemoryLimit,
            (Some(0), _) => Status::Ok,
            (Some(_), _) => Status::ExitedNonZero,
            (None, Some(_)) => Status::Signaled,
            (None, None) => return (Status::SetupFailed, Some(error_text(&SetupError::NoStatus))),
        }
    };
    (status, None)
}

/// The text of a setup failure for the outcome: the error and its causes on one line.
/// The one place the evaluator turns an error into text; typed errors travel until here.
fn error_text(e: &SetupError) -> String {
    crate::error::error_chain(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: i32) -> SandboxFacts {
        SandboxFacts {
            exit_code: Some(code),
            cpu_limit: Duration::from_secs(1),
            ..SandboxFacts::default()
        }
    }

    fn signaled(signal: i32) -> SandboxFacts {
        SandboxFacts {
            signal: Some(signal),
            cpu_limit: Duration::from_secs(1),
            ..SandboxFacts::default()
        }
    }

    fn status(s: &SandboxFacts) -> Status {
        classify(s, &DriverFacts::default()).0
    }

    #[test]
    fn the_payload_s_end_decides_when_nothing_else_happened() {
        assert_eq!(
            classify(&exited(0), &DriverFacts::default()),
            (Status::Ok, None)
        );
        assert_eq!(status(&exited(1)), Status::ExitedNonZero);
        assert_eq!(status(&signaled(libc::SIGSEGV)), Status::Signaled);
        assert_eq!(status(&signaled(libc::SIGKILL)), Status::Signaled);
    }

    #[test]
    fn no_status_at_all_is_a_setup_failure_that_says_so() {
        let (status, error) = classify(&SandboxFacts::default(), &DriverFacts::default());
        assert_eq!(status, Status::SetupFailed);
        assert_eq!(
            error.as_deref(),
            Some("the sandbox ended without reporting the payload's status")
        );
    }

    #[test]
    fn a_setup_error_comes_first_with_its_causes() {
        let facts = SandboxFacts {
            setup_error: Some(SetupError::SendPlan(
                super::super::control::ControlError::Io(std::io::Error::from_raw_os_error(
                    libc::EPIPE,
                )),
            )),
            kill: Some(KillReason::Wall),
            oom_kills: 1,
            ..exited(0)
        };
        let driver = DriverFacts {
            memory_limit: true,
            output_exceeded: true,
            caller_cancelled: false,
        };
        let (status, error) = classify(&facts, &driver);
        assert_eq!(status, Status::SetupFailed);
        let error = error.unwrap();
        assert!(
            error.starts_with("sending the plan: the channel failed: Broken pipe"),
            "{error}"
        );
        let step = SandboxFacts {
            setup_error: Some(SetupError::Step {
                step: "exec /bin/x".into(),
                errno: 2,
                detail: "No such file or directory".into(),
            }),
            ..SandboxFacts::default()
        };
        assert_eq!(
            classify(&step, &DriverFacts::default()).1.as_deref(),
            Some("exec /bin/x: No such file or directory (errno 2)")
        );
    }

    #[test]
    fn the_supervisor_s_kill_names_the_limit() {
        for (kill, want) in [
            (KillReason::Wall, Status::WallTimeout),
            (KillReason::Cpu, Status::CpuLimit),
            (KillReason::Output, Status::OutputLimit),
            (KillReason::Cancelled, Status::Cancelled),
        ] {
            let facts = SandboxFacts {
                kill: Some(kill),
                oom_kills: 1,
                ..signaled(libc::SIGKILL)
            };
            assert_eq!(status(&facts), want, "{kill:?}");
        }
    }

    #[test]
    fn a_refused_fork_before_a_clock_ran_out_is_the_process_limit() {
        for kill in [KillReason::Wall, KillReason::Cpu] {
            let facts = SandboxFacts {
                kill: Some(kill),
                pids_limit_hits: 1,
                ..signaled(libc::SIGKILL)
            };
            assert_eq!(status(&facts), Status::ProcessLimit, "{kill:?}");
        }
        // Not for a stop that is no clock's.
        for (kill, want) in [
            (KillReason::Output, Status::OutputLimit),
            (KillReason::Cancelled, Status::Cancelled),
        ] {
            let facts = SandboxFacts {
                kill: Some(kill),
                pids_limit_hits: 1,
                ..signaled(libc::SIGKILL)
            };
            assert_eq!(status(&facts), want, "{kill:?}");
        }
    }

    #[test]
    fn without_a_kill_the_cgroup_s_counters_decide() {
        let oom = SandboxFacts {
            oom_kills: 1,
            pids_limit_hits: 1,
            ..signaled(libc::SIGKILL)
        };
        assert_eq!(status(&oom), Status::MemoryLimit);
        let pids = SandboxFacts {
            pids_limit_hits: 1,
            ..exited(0)
        };
        assert_eq!(status(&pids), Status::ProcessLimit);
    }

    #[test]
    fn the_cpu_backstop_is_the_cpu_limit() {
        assert_eq!(status(&signaled(libc::SIGXCPU)), Status::CpuLimit);
        let used_up = SandboxFacts {
            cpu_time: Duration::from_secs(1),
            pids_limit_hits: 1,
            ..signaled(libc::SIGKILL)
        };
        assert_eq!(status(&used_up), Status::CpuLimit);
        let below = SandboxFacts {
            cpu_time: Duration::from_millis(999),
            ..signaled(libc::SIGKILL)
        };
        assert_eq!(status(&below), Status::Signaled);
    }

    #[test]
    fn the_driver_s_memory_limit_only_makes_an_exit_worse() {
        let driver = DriverFacts {
            memory_limit: true,
            ..DriverFacts::default()
        };
        assert_eq!(classify(&exited(0), &driver).0, Status::MemoryLimit);
        assert_eq!(classify(&exited(1), &driver).0, Status::MemoryLimit);
        assert_eq!(
            classify(&signaled(libc::SIGSEGV), &driver).0,
            Status::Signaled
        );
        let killed = SandboxFacts {
            kill: Some(KillReason::Wall),
            ..signaled(libc::SIGKILL)
        };
        assert_eq!(classify(&killed, &driver).0, Status::WallTimeout);
        let pids = SandboxFacts {
            pids_limit_hits: 1,
            ..exited(0)
        };
        assert_eq!(classify(&pids, &driver).0, Status::ProcessLimit);
    }

    #[test]
    fn a_stop_for_output_is_the_output_limit_unless_the_caller_stopped_too() {
        let stopped = SandboxFacts {
            kill: Some(KillReason::Cancelled),
            ..signaled(libc::SIGKILL)
        };
        let over = DriverFacts {
            output_exceeded: true,
            ..DriverFacts::default()
        };
        assert_eq!(classify(&stopped, &over).0, Status::OutputLimit);
        let both = DriverFacts {
            caller_cancelled: true,
            ..over
        };
        assert_eq!(classify(&stopped, &both).0, Status::Cancelled);
        // Over its output limit but ended on its own: its own end decides.
        assert_eq!(classify(&exited(0), &over).0, Status::Ok);
    }
}
