//! Child processes that never outlive the test binary that started them
//! (`redis-server`, `cargo lambda watch`), however it ends.
//!
//! Three exits to cover:
//! - a normal end of the run, passed or failed: libtest returns from `main`
//!   or calls `std::process::exit`, and both run the C `atexit` handlers, so
//!   [`at_exit`] stops what a fixture kept in a `static` (Rust never drops
//!   those);
//! - a crash or a kill of the test binary (SIGKILL, an abort, a timeout):
//!   on Linux every child from [`spawn_tied`] is asked by the kernel to stop
//!   (`PR_SET_PDEATHSIG`) with the signal its spawner chose;
//! - a fixture dropped while the run goes on: its own `Drop` stops the child.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that spawned the child exits,
//! not the process, and libtest runs each test on a thread of its own. So the
//! children are spawned by one keeper thread that lives as long as the
//! process.

use std::io;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, Once, OnceLock};

type Spawn = (Command, i32, mpsc::Sender<io::Result<Child>>);

/// Spawns `command` from the keeper thread, with `death_signal` (e.g.
/// `libc::SIGTERM`) delivered to it when the test binary dies (Linux only).
/// The child stays in the test binary's process group, so a Ctrl-C at the
/// terminal reaches it too, on every platform.
pub fn spawn_tied(command: Command, death_signal: i32) -> io::Result<Child> {
    static KEEPER: OnceLock<Mutex<mpsc::Sender<Spawn>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<Spawn>();
        std::thread::Builder::new()
            .name("child-process-keeper".into())
            .spawn(move || {
                for (mut command, signal, reply) in incoming {
                    let _ = reply.send(spawn_here(&mut command, signal));
                }
                // The senders live in a static: never reached, so the thread
                // (the children's "parent" for PR_SET_PDEATHSIG) lives on.
            })
            .expect("spawn the child process keeper thread");
        Mutex::new(requests)
    });
    let (reply, answer) = mpsc::channel();
    keeper
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((command, death_signal, reply))
        .map_err(|_| io::Error::other("the child process keeper thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the child process keeper thread is gone"))?
}

#[cfg(target_os = "linux")]
fn spawn_here(command: &mut Command, signal: i32) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the prctl took effect.
            if libc::getppid() != parent {
                libc::raise(signal);
            }
            Ok(())
        });
    }
    command.spawn()
}

#[cfg(not(target_os = "linux"))]
fn spawn_here(command: &mut Command, _signal: i32) -> io::Result<Child> {
    command.spawn()
}

type Hook = Box<dyn FnOnce() + Send>;

static HOOKS: Mutex<Vec<Hook>> = Mutex::new(Vec::new());

/// Runs `hook` when the test binary exits normally (all tests done, passed
/// or failed); hooks run in reverse order of registration.
pub fn at_exit(hook: impl FnOnce() + Send + 'static) {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers a plain `extern "C"` function.
        unsafe { libc::atexit(run_hooks) };
    });
    HOOKS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Box::new(hook));
}

extern "C" fn run_hooks() {
    let hooks = std::mem::take(&mut *HOOKS.lock().unwrap_or_else(|e| e.into_inner()));
    for hook in hooks.into_iter().rev() {
        // A panic must not unwind into C.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(hook));
    }
}

/// Sends `signal` to the process `pid` (nothing happens if it is gone).
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}
