//! Servers a test owns, so that stopping, killing and restarting them disturbs no other test.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-{what}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Sends SIGTERM (a polite stop) to a child process.
pub fn sigterm(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

/// A Redis server with AOF on, in a directory of its own, started as `make up` starts one: with a
/// `maxmemory` (`SLUICE_TEST_REDIS_MAXMEMORY`, default 512mb) and `noeviction`, so a full Redis
/// refuses writes rather than dropping keys.
pub struct OwnRedis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl OwnRedis {
    pub fn start() -> Self {
        let mut r = Self::stopped();
        r.restart();
        r
    }

    /// Started with extra server flags (they override the defaults), e.g. `["--maxmemory", "8mb"]`.
    pub fn start_with(args: &[&str]) -> Self {
        let mut r = Self::stopped();
        r.restart_with(args);
        r
    }

    /// A port and a directory, and no server yet: for a service that must wait for Redis to come
    /// up. `restart` starts it.
    pub fn stopped() -> Self {
        OwnRedis {
            port: free_port(),
            dir: temp_dir("redis"),
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port and data (replaying the AOF).
    pub fn restart(&mut self) {
        self.restart_with(&[]);
    }

    /// As `restart`, with extra server flags; e.g. `["--key-load-delay", "1000"]` makes it answer
    /// `LOADING` for a millisecond per key while it replays its data. Returns once the port is
    /// open, which is not yet "serving".
    pub fn restart_with(&mut self, args: &[&str]) {
        let maxmemory =
            std::env::var("SLUICE_TEST_REDIS_MAXMEMORY").unwrap_or_else(|_| "512mb".into());
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--appendonly", "yes", "--save", ""])
            .args([
                "--maxmemory",
                &maxmemory,
                "--maxmemory-policy",
                "noeviction",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        self.child = Some(child);
        wait_for_port(self.port, "redis", Duration::from_secs(10));
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The MongoDB stand-in (SecantusDB from the project's .venv) on a port and directory of its own.
pub struct OwnMongo {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
}

impl OwnMongo {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Started with extra server flags, e.g. `--enable-test-commands` for the `failCommand` fail
    /// point.
    pub fn start_with(args: &[&str]) -> Self {
        let mut m = OwnMongo {
            port: free_port(),
            dir: temp_dir("mongo"),
            child: None,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        };
        m.restart();
        m
    }

    pub fn url(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    fn binary() -> PathBuf {
        if let Ok(b) = std::env::var("SLUICE_SECANTUSD") {
            return b.into();
        }
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/secantusd-py")
    }

    pub fn restart(&mut self) {
        let child = Command::new(Self::binary())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--storage-path")
            .arg(&self.dir)
            .args(["--log-level", "ERROR"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("secantusd-py runs (make infra installs it into .venv)");
        self.child = Some(child);
        wait_for_port(self.port, "mongodb", Duration::from_secs(30));
    }

    /// Stops it politely and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            sigterm(&c);
            let deadline = Instant::now() + Duration::from_secs(15);
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for OwnMongo {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
