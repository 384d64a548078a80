//! A PostgreSQL server a test owns (initdb in a temp dir, a free port), so a test can stop it, lock
//! its tables or restart it without disturbing the shared server other tests use.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::servers::free_port;

const BIN: &str = "/usr/lib/postgresql/15/bin";

fn bin(name: &str) -> String {
    let dir = std::env::var("SLUICE_PG_BIN").unwrap_or_else(|_| BIN.to_owned());
    format!("{dir}/{name}")
}

/// Runs a PostgreSQL binary as the `postgres` user (the server refuses to run as root).
fn as_postgres(args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runuser runs")
}

pub struct OwnPostgres {
    pub port: u16,
    dir: PathBuf,
    running: bool,
}

impl OwnPostgres {
    /// A fresh cluster with `trust` auth for user `postgres`, fsync off; connect to database
    /// `postgres`.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("sluice-pg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "chown of {}", dir.display());
        let data = dir.join("data");
        let out = as_postgres(&[
            &bin("initdb"),
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = OwnPostgres {
            port: free_port(),
            dir,
            running: false,
        };
        pg.restart();
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts it (again) on the same port and data, and waits until it takes connections.
    pub fn restart(&mut self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50",
            self.port,
            self.dir.display()
        );
        let out = as_postgres(&[
            &bin("pg_ctl"),
            "-D",
            self.dir.join("data").to_str().unwrap(),
            "-l",
            self.dir.join("log").to_str().unwrap(),
            "-o",
            &opts,
            "-w",
            "-t",
            "30",
            "start",
        ]);
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
        self.running = true;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "postgres did not open {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it at once (`-m immediate`): connections are cut, new ones refused.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let _ = as_postgres(&[
            &bin("pg_ctl"),
            "-D",
            self.dir.join("data").to_str().unwrap(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ]);
        self.running = false;
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
