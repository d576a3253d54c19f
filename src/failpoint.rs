//! Fault injection for tests.
//!
//! * Crashes: when the environment variable `STRATA_FAILPOINT` names a step of [`STEPS`], the
//!   process kills itself with SIGKILL on reaching it, exactly as a power cut or an OOM kill
//!   would stop it there. Used by the crash tests to stop between a filesystem change and the
//!   database commit that goes with it. Costs one environment lookup per named step.
//! * Faults: a step of [`FAULTS`] makes an operation fail or panic in-process, so tests can
//!   check that the failure surfaces (e.g. that a consumer of a diff stream sees an error, not
//!   a short tar). A fault is armed for every scope by `STRATA_FAILPOINT=<fault>` (for the
//!   CLI), or for one scope (a layer id) by [`arm`] (for tests calling the library, which run
//!   in parallel threads of one process).

use std::sync::Mutex;

/// Steps that can be failed.
pub const STEPS: &[&str] = &[
    "create-after-rename",
    "apply-after-pending",
    "apply-after-exchange",
    "remove-after-rename",
    "get-after-mount",
    "put-after-unmount",
];

/// Faults that can be injected: the export of a diff stream fails (`export-error`) or panics
/// (`export-panic`) after writing part of the stream.
pub const FAULTS: &[&str] = &["export-error", "export-panic"];

/// Faults armed through [`arm`]: (fault, scope).
static ARMED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Kills the process if `STRATA_FAILPOINT` is `step`.
pub fn hit(step: &str) {
    debug_assert!(STEPS.contains(&step), "unknown failpoint {step}");
    if std::env::var_os("STRATA_FAILPOINT").is_some_and(|v| v == step) {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}

/// Arms `fault` (one of [`FAULTS`]) for operations on `scope` until [`disarm`]ed.
pub fn arm(fault: &str, scope: &str) {
    debug_assert!(FAULTS.contains(&fault), "unknown fault {fault}");
    ARMED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((fault.to_string(), scope.to_string()));
}

/// Disarms what [`arm`] armed for `scope`.
pub fn disarm(scope: &str) {
    ARMED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|(_, s)| s != scope);
}

/// Whether `fault` is armed for `scope` (by the environment or by [`arm`]).
pub fn fault(fault: &str, scope: &str) -> bool {
    debug_assert!(FAULTS.contains(&fault), "unknown fault {fault}");
    std::env::var_os("STRATA_FAILPOINT").is_some_and(|v| v == fault)
        || ARMED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|(f, s)| f == fault && s == scope)
}
