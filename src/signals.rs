//! SIGTERM and SIGINT, taken synchronously with `sigwait` instead of a
//! handler: block them before threads start, then wait on the main thread.
//! glibc's sigset_t is 1024 bits on every Linux target.

use std::io;
use std::os::raw::c_int;

const SIGINT: c_int = 2;
const SIGTERM: c_int = 15;
const SIG_BLOCK: c_int = 0;

#[repr(C)]
struct SigSet([u64; 16]);

extern "C" {
    fn sigemptyset(set: *mut SigSet) -> c_int;
    fn sigaddset(set: *mut SigSet, signal: c_int) -> c_int;
    fn pthread_sigmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
    fn sigwait(set: *const SigSet, signal: *mut c_int) -> c_int;
}

/// The blocked set; `wait` returns when one of them arrives.
pub struct TerminationSignals(SigSet);

/// Blocks SIGTERM and SIGINT on this thread and all threads it starts later.
pub fn block_termination() -> io::Result<TerminationSignals> {
    let mut set = SigSet([0; 16]);
    // SAFETY: `set` is a valid, writable sigset_t-sized buffer.
    unsafe {
        sigemptyset(&mut set);
        sigaddset(&mut set, SIGTERM);
        sigaddset(&mut set, SIGINT);
    }
    // SAFETY: `set` was initialised above; the old mask is not needed.
    let rc = unsafe { pthread_sigmask(SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(TerminationSignals(set))
}

impl TerminationSignals {
    /// Blocks until SIGTERM or SIGINT; returns its name.
    pub fn wait(&self) -> io::Result<&'static str> {
        let mut signal: c_int = 0;
        // SAFETY: the set is initialised and `signal` is a valid out-pointer.
        let rc = unsafe { sigwait(&self.0, &mut signal) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(if signal == SIGTERM {
            "SIGTERM"
        } else {
            "SIGINT"
        })
    }
}
