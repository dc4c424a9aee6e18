//! A private `redis-server` for tests that must disturb Redis (`SCRIPT FLUSH`,
//! `DEBUG SLEEP`, `CLIENT PAUSE`, a kill or restart) without affecting the
//! shared Redis that other tests use in parallel.
//!
//! Each [`PrivateRedis`] runs its own server on a free port of 127.0.0.1 with
//! persistence off (unless the test turns it on with [`PrivateRedis::start_with`])
//! and its own working directory, and stops it when dropped. A test can
//! [`kill`](PrivateRedis::kill) it with SIGKILL, as a crash or an OOM kill
//! would, and [`restart`](PrivateRedis::restart) it on the same port and
//! directory, so that clients reconnect to the same address and an append-only
//! file, if enabled, is replayed.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a start or restart may take before the helper gives up (a
/// restart replays the append-only file first).
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A private `redis-server`, killed (and its directory removed) on drop.
pub struct PrivateRedis {
    child: Option<Child>,
    binary: String,
    port: u16,
    dir: PathBuf,
    extra_args: Vec<String>,
}

impl PrivateRedis {
    /// Starts `redis-server` (or `$REDIS_SERVER_BIN`) on a free port and
    /// waits until it answers `PING`. Panics if no server comes up: a test
    /// helper, the test cannot proceed without it.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Like [`PrivateRedis::start`], with extra `redis-server` arguments
    /// after the defaults (a later option wins), e.g.
    /// `["--appendonly", "yes", "--appendfsync", "always"]` or
    /// `["--enable-debug-command", "local"]` (Redis 7 refuses `DEBUG` without it).
    /// [`PrivateRedis::restart`] starts the server again with the same arguments.
    pub fn start_with(extra_args: &[&str]) -> Self {
        let binary = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
        let dir =
            std::env::temp_dir().join(format!("private-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create the private redis directory");
        let mut server = Self {
            child: None,
            binary,
            port: 0,
            dir,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        };
        // The port is free when probed but could be taken before the server
        // binds it; a server that exits is retried on another port.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn_and_wait() {
                return server;
            }
        }
        panic!("no private redis-server came up after 5 attempts");
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/0`, for `REDIS_URL`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The server's working directory (where an append-only file lives).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills the server with SIGKILL (no shutdown, no final write: like a
    /// crash) and waits for it to exit. Nothing listens on the port
    /// afterwards. Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it is running, then starts it again on the same
    /// port, directory and arguments, and waits until it answers `PING`
    /// (Redis answers `-LOADING` until an append-only file is replayed).
    /// Panics if it does not come up (e.g. the port was taken meanwhile).
    pub fn restart(&mut self) {
        self.kill();
        for _ in 0..5 {
            if self.spawn_and_wait() {
                return;
            }
            // The old socket may linger for a moment after SIGKILL.
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the private redis-server did not restart on port {}",
            self.port
        );
    }

    /// Spawns the server on `self.port`; true once it answers `PING`. On
    /// failure nothing is left running.
    fn spawn_and_wait(&mut self) -> bool {
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(self.extra_args.iter().map(OsString::from))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary));
        self.child = Some(child);
        if self.wait_until_ready(READY_WITHIN) {
            return true;
        }
        self.kill();
        false
    }

    fn wait_until_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => {}
                _ => return false,
            }
            if ping(self.port) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP port of 127.0.0.1 that was free when probed (the OS's choice of
/// an ephemeral port). Another process may take it before it is bound, so a
/// caller retries on another port when binding fails.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}
