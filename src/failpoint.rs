//! Crash injection for tests: when the environment variable `STRATA_FAILPOINT` names a step,
//! the process kills itself with SIGKILL on reaching it, exactly as a power cut or an OOM kill
//! would stop it there. Used by the crash tests to stop between a filesystem change and the
//! database commit that goes with it. Costs one environment lookup per named step.

/// Steps that can be failed.
pub const STEPS: &[&str] = &[
    "create-after-rename",
    "apply-after-pending",
    "apply-after-exchange",
    "remove-after-rename",
    "get-after-mount",
    "put-after-unmount",
];

/// Kills the process if `STRATA_FAILPOINT` is `step`.
pub fn hit(step: &str) {
    debug_assert!(STEPS.contains(&step), "unknown failpoint {step}");
    if std::env::var_os("STRATA_FAILPOINT").is_some_and(|v| v == step) {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}
