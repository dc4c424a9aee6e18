//! Figure 5: cold start of a function's release binary under a minimal
//! emulation of the Lambda runtime API, and its peak memory.
//!
//! The emulation is the part of the runtime API a function uses on its first
//! invocation ("AWS Lambda runtime API", Lambda developer guide), on
//! 127.0.0.1:
//!
//! - `GET /2018-06-01/runtime/invocation/next` answers one API Gateway v2
//!   event with `Lambda-Runtime-Aws-Request-Id`, `-Deadline-Ms`,
//!   `-Invoked-Function-Arn` and `-Trace-Id`; the next call is held open,
//!   as Lambda holds it until the next event (or freezes the instance);
//! - `POST /2018-06-01/runtime/invocation/<id>/response` (and `…/error`,
//!   `/runtime/init/error`) answers 202 and records when it arrived.
//!
//! The function is started with `AWS_LAMBDA_RUNTIME_API` pointing there and
//! the variables Lambda sets, measured from the spawn to its first `next`
//! (initialisation) and to its first response posted (cold start as a client
//! sees it, minus the network), then its `VmHWM` (peak resident set) is read
//! from `/proc/<pid>/status` while it waits for the next event, and it is
//! killed. The binary is x86_64: arm64 Lambda binaries do not run here.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the emulation saw of one start.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    /// Spawn to the first `next`, ms.
    pub init_ms: f64,
    /// Spawn to the first response, ms.
    pub first_response_ms: f64,
    /// `statusCode` of the response the function posted.
    pub status: u16,
    /// Peak resident set size, KiB.
    pub peak_rss_kib: f64,
}

enum Seen {
    Next(Instant),
    Response(Instant, Vec<u8>),
    Error(String),
}

/// Starts `binary` once with `env` and `event` (the API Gateway JSON event)
/// as its first invocation.
pub fn start_once(
    binary: &Path,
    function: &str,
    env: &[(String, String)],
    event: &serde_json::Value,
) -> Result<Start, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let server = {
        let (stop, event, function) = (Arc::clone(&stop), event.to_string(), function.to_string());
        std::thread::spawn(move || serve(listener, &stop, &tx, &event, &function))
    };

    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", function)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{function}"),
        )
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("TZ", ":UTC")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let spawned = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let outcome = (|| {
        let mut init = None;
        let deadline = spawned + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Seen::Next(at)) => {
                    init.get_or_insert(at);
                }
                Ok(Seen::Response(at, body)) => {
                    let peak = peak_rss_kib(child.id())?;
                    let status = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["statusCode"].as_u64())
                        .and_then(|s| u16::try_from(s).ok())
                        .unwrap_or(0);
                    let init = init.unwrap_or(at);
                    return Ok(Start {
                        init_ms: (init - spawned).as_secs_f64() * 1000.0,
                        first_response_ms: (at - spawned).as_secs_f64() * 1000.0,
                        status,
                        peak_rss_kib: peak,
                    });
                }
                Ok(Seen::Error(what)) => {
                    return Err(format!("{function} reported an error: {what}"))
                }
                Err(_) => return Err(format!("{function} did not answer within 30 s")),
            }
        }
    })();
    let _ = child.kill();
    let _ = child.wait();
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    outcome
}

/// `VmHWM` of a running process, KiB.
fn peak_rss_kib(pid: u32) -> Result<f64, String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmHWM in /proc/<pid>/status".into())
}

fn serve(
    listener: TcpListener,
    stop: &AtomicBool,
    tx: &mpsc::Sender<Seen>,
    event: &str,
    function: &str,
) {
    let mut connections = Vec::new();
    let delivered = Arc::new(AtomicBool::new(false));
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (tx, event, function, delivered) = (
                    tx.clone(),
                    event.to_string(),
                    function.to_string(),
                    Arc::clone(&delivered),
                );
                // A connection's thread ends when the function is killed and
                // its socket closes.
                connections.push(std::thread::spawn(move || {
                    let _ = connection(stream, &tx, &event, &function, &delivered);
                }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(_) => break,
        }
    }
    for c in connections {
        let _ = c.join();
    }
}

/// Serves the requests of one keep-alive connection until it closes.
fn connection(
    stream: TcpStream,
    tx: &mpsc::Sender<Seen>,
    event: &str,
    function: &str,
    delivered: &AtomicBool,
) -> Result<(), String> {
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(35)))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    loop {
        let Some((method, path, body)) = read_request(&mut reader)? else {
            return Ok(());
        };
        let now = Instant::now();
        if method == "GET" && path.ends_with("/runtime/invocation/next") {
            let _ = tx.send(Seen::Next(now));
            if delivered.swap(true, Ordering::Relaxed) {
                // The next event never comes: hold the call until the
                // function is killed and the socket closes.
                let mut sink = Vec::new();
                let _ = reader.read_to_end(&mut sink);
                return Ok(());
            }
            let deadline_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() + 30_000)
                .unwrap_or(0);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                 Lambda-Runtime-Aws-Request-Id: {id}\r\n\
                 Lambda-Runtime-Deadline-Ms: {deadline_ms}\r\n\
                 Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:{function}\r\n\
                 Lambda-Runtime-Trace-Id: Root=1-67b4a000-0123456789abcdef01234567;Parent=0123456789abcdef;Sampled=0\r\n\
                 Content-Length: {len}\r\n\r\n",
                id = uuid::Uuid::new_v4(),
                len = event.len(),
            );
            writer
                .write_all(head.as_bytes())
                .and_then(|()| writer.write_all(event.as_bytes()))
                .map_err(|e| e.to_string())?;
        } else if method == "POST" && path.ends_with("/response") {
            let _ = tx.send(Seen::Response(now, body));
            accepted(&mut writer)?;
        } else if method == "POST" && path.ends_with("/error") {
            let _ = tx.send(Seen::Error(String::from_utf8_lossy(&body).into_owned()));
            accepted(&mut writer)?;
        } else {
            writer
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .map_err(|e| e.to_string())?;
        }
    }
}

fn accepted(writer: &mut TcpStream) -> Result<(), String> {
    writer
        .write_all(b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"status\":\"OK\"}\n")
        .map_err(|e| e.to_string())
}

/// Reads one HTTP/1.1 request: method, path and body (`Content-Length` or
/// chunked). `None` when the connection closed.
fn read_request(reader: &mut impl BufRead) -> Result<Option<(String, String, Vec<u8>)>, String> {
    let mut line = String::new();
    if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let (mut length, mut chunked) = (0usize, false);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).map_err(|e| e.to_string())? == 0 {
            return Ok(None);
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "content-length" {
                length = value.parse().unwrap_or(0);
            } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).map_err(|e| e.to_string())?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|e| e.to_string())?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).map_err(|e| e.to_string())?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        body.resize(length, 0);
        reader.read_exact(&mut body).map_err(|e| e.to_string())?;
    }
    Ok(Some((method, path, body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_with_lengths_and_chunks_are_read() {
        let raw = b"POST /a/response HTTP/1.1\r\ncontent-length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
        let mut reader = BufReader::new(&raw[..]);
        let (m, p, b) = read_request(&mut reader).unwrap().unwrap();
        assert_eq!(
            (m.as_str(), p.as_str(), b.as_slice()),
            ("POST", "/a/response", &b"abc"[..])
        );
        let (_, _, b) = read_request(&mut reader).unwrap().unwrap();
        assert_eq!(b, b"hi");
        assert!(read_request(&mut reader).unwrap().is_none());
    }
}
