//! SIGTERM and SIGINT, taken synchronously with `sigwait` instead of a
//! handler: block them before threads start, then wait on the main thread.
//! Signal sets and numbers come from `libc`, not hand-declared layouts.

use std::io;
use std::mem::MaybeUninit;

/// The blocked set; `wait` returns when one of them arrives.
pub struct TerminationSignals(libc::sigset_t);

/// Blocks SIGTERM and SIGINT on this thread and all threads it starts later.
pub fn block_termination() -> io::Result<TerminationSignals> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the whole set; sigaddset then only
    // writes into it, with valid signal numbers.
    let set = unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), libc::SIGTERM);
        libc::sigaddset(set.as_mut_ptr(), libc::SIGINT);
        set.assume_init()
    };
    // SAFETY: `set` is initialised; the old mask is not asked for.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(TerminationSignals(set))
}

impl TerminationSignals {
    /// Blocks until SIGTERM or SIGINT; returns its name.
    pub fn wait(&self) -> io::Result<&'static str> {
        let mut signal: libc::c_int = 0;
        // SAFETY: the set is initialised and `signal` is a valid out-pointer.
        let rc = unsafe { libc::sigwait(&self.0, &mut signal) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(if signal == libc::SIGTERM {
            "SIGTERM"
        } else {
            "SIGINT"
        })
    }
}
