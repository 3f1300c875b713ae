//! Starting the real parts the tests run beside them (Envoy, Prometheus, a registry): each
//! logs to a file of its own temp dir and dies with the test process.

use anyhow::{Context as _, Result};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Has the kernel kill the child if we die without running destructors (SIGKILL,
/// panic=abort in release builds, a test harness timeout): no orphaned processes.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        use std::os::unix::process::CommandExt as _;
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Starts `cmd` with no stdin and its stdout and stderr in the file `log` (created).
pub fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Child> {
    let file = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("start {}", cmd.get_program().to_string_lossy()))
}
