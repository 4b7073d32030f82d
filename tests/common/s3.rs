//! A real S3-compatible server for the tests of Tonbo on an object store: `moto`'s server mode
//! (PyPI: `pip install 'moto[server]'`, run as `python3 -m moto.server`), started on a free
//! port of this machine for the length of a test.
//!
//! Without it the tests that need it are skipped with a message saying
//! so, unless `FINTECH_REQUIRE_S3` is set (`.ci/run` sets it, after installing moto): then
//! they fail.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Access key and secret the tests use (moto accepts any).
pub const KEY_ID: &str = "fintech-test";
pub const SECRET: &str = "fintech-test-secret";

/// A running server, stopped when dropped.
pub struct S3Server {
    child: Child,
    pub endpoint: String,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3Server {
    /// Starts a server, or says why there is none (a test then returns early).
    pub fn start(test: &str) -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let skip = |why: String| {
            let why = format!(
                "{test}: skipped: no S3-compatible server ({why}; install one with \
                 pip install 'moto[server]')"
            );
            assert!(std::env::var_os("FINTECH_REQUIRE_S3").is_none(), "{why}");
            eprintln!("{why}");
            None
        };
        let child = match Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => return skip(format!("cannot run python3: {e}")),
        };
        let mut server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.try_wait().unwrap() {
                return skip(format!("python3 -m moto.server exited with {status}"));
            }
            assert!(
                Instant::now() < deadline,
                "moto's server did not listen on port {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(server)
    }

    /// One unsigned request (moto takes them): its status code and body.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let host = self.endpoint.trim_start_matches("http://");
        let mut conn = TcpStream::connect(host).unwrap();
        write!(
            conn,
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        conn.write_all(body).unwrap();
        let mut response = Vec::new();
        conn.read_to_end(&mut response).unwrap();
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("an HTTP response");
        let head = String::from_utf8_lossy(&response[..split]);
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, response[split + 4..].to_vec())
    }

    /// Creates `bucket`.
    pub fn create_bucket(&self, bucket: &str) {
        let (status, body) = self.request("PUT", &format!("/{bucket}"), b"");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }

    /// Writes `key` of `bucket`; whether the server took it.
    pub fn put_object(&self, bucket: &str, key: &str, body: &[u8]) -> bool {
        self.request("PUT", &format!("/{bucket}/{key}"), body).0 == 200
    }

    /// The object `key` of `bucket`, if there is one.
    pub fn get_object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let (status, body) = self.request("GET", &format!("/{bucket}/{key}"), b"");
        (status == 200).then_some(body)
    }

    /// The `SET` statements that point a session at this server.
    pub fn settings(&self) -> String {
        format!(
            "SET fintech.s3.endpoint = '{}'; SET fintech.s3.access_key_id = '{KEY_ID}';
             SET fintech.s3.secret_access_key = '{SECRET}';",
            self.endpoint
        )
    }
}
