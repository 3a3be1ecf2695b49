//! ZooKeeper and Redis servers on loopback, each on a free port with a data
//! directory of its own, started and stopped by PID: for the tests, the local
//! cluster (`scripts/cluster`) and the load harness. Nothing here listens
//! beyond 127.0.0.1. A [`Proxy`] between two of them makes partitions.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

mod proxy;

pub use proxy::Proxy;

/// How long a server may take to accept its first session.
const STARTUP: Duration = Duration::from_secs(30);
/// How often readiness is probed while waiting.
const PROBE_EVERY: Duration = Duration::from_millis(50);

/// Where Debian's `zookeeper` package puts the server's classes.
const ZOOKEEPER_CLASSPATH: &str = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar";

/// Why a server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// Spawning, files or sockets failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        source: io::Error,
    },
    /// The server did not become ready in time; its log may say why.
    #[error("{kind} did not become ready within {STARTUP:?}; see {log}")]
    NotReady {
        /// Which server.
        kind: &'static str,
        /// Its log file.
        log: String,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> LocalError {
    let what = what.into();
    move |source| LocalError::Io { what, source }
}

/// Which server a [`LocalServer`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// Apache ZooKeeper, standalone.
    ZooKeeper,
    /// Redis: nothing written to disk unless started durable.
    Redis,
    /// NATS, the load harness's reference broker.
    Nats,
}

impl ServerKind {
    fn name(self) -> &'static str {
        match self {
            Self::ZooKeeper => "zookeeper",
            Self::Redis => "redis",
            Self::Nats => "nats",
        }
    }
}

/// A server process on `127.0.0.1:port`. Dropping it kills the process.
#[derive(Debug)]
pub struct LocalServer {
    kind: ServerKind,
    port: u16,
    dir: PathBuf,
    /// Redis: an append-only file synced on every write.
    durable: bool,
    /// Redis: a password, TLS, or both.
    secured: Option<RedisSecurity>,
    child: Option<Child>,
}

/// How a local Redis is run.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// Every write synced to an append-only file before it is answered.
    pub durable: bool,
    /// What its clients must prove.
    pub security: RedisSecurity,
}

/// How a local Redis makes its clients prove who they are.
#[derive(Debug, Clone, Default)]
pub struct RedisSecurity {
    /// `requirepass`: AUTH before anything else.
    pub password: Option<String>,
    /// TLS on a port of its own, with client certificates of the same CA
    /// required.
    pub tls: Option<RedisTlsFiles>,
}

/// A local Redis's TLS files (PEM).
#[derive(Debug, Clone)]
pub struct RedisTlsFiles {
    /// The server's certificate, valid for 127.0.0.1.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The CA its clients' certificates must chain to.
    pub ca: PathBuf,
    /// Where TLS is served.
    pub port: u16,
}

impl LocalServer {
    /// Starts ZooKeeper with its data in `dir` and waits until it accepts
    /// sessions. tickTime is 500 ms, so session timeouts from 1 s are allowed.
    pub fn zookeeper(dir: &Path) -> Result<Self, LocalError> {
        Self::start(ServerKind::ZooKeeper, dir, free_port()?)
    }

    /// Starts Redis (nothing written to disk) in `dir` and waits for PONG.
    pub fn redis(dir: &Path) -> Result<Self, LocalError> {
        Self::start(ServerKind::Redis, dir, free_port()?)
    }

    /// Starts Redis in `dir` as `options` say and waits until it answers.
    /// Durable: every write in an append-only file, synced before it
    /// answers, so a restart (or kill -9) keeps all it acknowledged. With a
    /// password or TLS, its plain port stays open on loopback for the
    /// readiness probe, and asks for the password too.
    pub fn redis_with(dir: &Path, options: RedisOptions) -> Result<Self, LocalError> {
        let mut server = Self::new(ServerKind::Redis, dir, free_port()?)?;
        server.durable = options.durable;
        server.secured = Some(options.security);
        server.spawn()?;
        Ok(server)
    }

    /// Starts Debian's nats-server with its defaults and waits for its INFO.
    pub fn nats(dir: &Path) -> Result<Self, LocalError> {
        Self::start(ServerKind::Nats, dir, free_port()?)
    }

    fn start(kind: ServerKind, dir: &Path, port: u16) -> Result<Self, LocalError> {
        let mut server = Self::new(kind, dir, port)?;
        server.spawn()?;
        Ok(server)
    }

    fn new(kind: ServerKind, dir: &Path, port: u16) -> Result<Self, LocalError> {
        fs::create_dir_all(dir).map_err(io_error(format!("creating {}", dir.display())))?;
        Ok(Self {
            kind,
            port,
            dir: dir.to_owned(),
            durable: false,
            secured: None,
            child: None,
        })
    }

    fn spawn(&mut self) -> Result<(), LocalError> {
        let log_path = self.log_path();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_error(format!("opening {}", log_path.display())))?;
        let stderr = log
            .try_clone()
            .map_err(io_error("cloning the log handle"))?;
        let mut command = match self.kind {
            ServerKind::ZooKeeper => self.zookeeper_command()?,
            ServerKind::Redis => self.redis_command(),
            ServerKind::Nats => self.nats_command(),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(io_error(format!("starting {}", self.kind.name())))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn zookeeper_command(&self) -> Result<Command, LocalError> {
        let data = self.dir.join("data");
        fs::create_dir_all(&data).map_err(io_error(format!("creating {}", data.display())))?;
        let config = format!(
            "tickTime=500\ndataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\nmaxClientCnxns=0\n\
             admin.enableServer=false\n4lw.commands.whitelist=ruok,srvr,stat,mntr\n",
            data.display(),
            self.port
        );
        let config_path = self.dir.join("zoo.cfg");
        fs::write(&config_path, config)
            .map_err(io_error(format!("writing {}", config_path.display())))?;
        let mut command = Command::new("java");
        command
            .arg("-Xmx256m")
            .arg("-Dzookeeper.admin.enableServer=false")
            .arg("-cp")
            .arg(ZOOKEEPER_CLASSPATH)
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(config_path);
        Ok(command)
    }

    fn redis_command(&self) -> Command {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(if self.durable {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "everysec"]
            })
            .arg("--dir")
            .arg(&self.dir);
        let security = self.secured.as_ref();
        if let Some(password) = security.and_then(|s| s.password.as_ref()) {
            command.args(["--requirepass", password]);
        }
        if let Some(tls) = security.and_then(|s| s.tls.as_ref()) {
            command
                .args(["--tls-port", &tls.port.to_string()])
                .arg("--tls-cert-file")
                .arg(&tls.cert)
                .arg("--tls-key-file")
                .arg(&tls.key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca)
                .args(["--tls-auth-clients", "yes"]);
        }
        command
    }

    fn nats_command(&self) -> Command {
        // Debian installs it in /usr/sbin, which a user's PATH may lack.
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|path| Path::new(path).exists())
            .unwrap_or("nats-server");
        let mut command = Command::new(binary);
        command.args(["-a", "127.0.0.1", "-p", &self.port.to_string()]);
        command
    }

    fn wait_ready(&mut self) -> Result<(), LocalError> {
        let deadline = Instant::now() + STARTUP;
        while Instant::now() < deadline {
            if self.probe() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                break;
            }
            std::thread::sleep(PROBE_EVERY);
        }
        Err(LocalError::NotReady {
            kind: self.kind.name(),
            log: self.log_path().display().to_string(),
        })
    }

    /// ZooKeeper answers `srvr` with a `Mode:` line once it takes sessions
    /// (`ruok` answers earlier); Redis answers PING with PONG; NATS sends
    /// INFO unasked.
    fn probe(&self) -> bool {
        let (request, expect): (&[u8], &str) = match self.kind {
            ServerKind::ZooKeeper => (b"srvr", "Mode:"),
            // A password-protected Redis is up once it asks for it.
            ServerKind::Redis if self.secured.as_ref().is_some_and(|s| s.password.is_some()) => {
                (b"PING\r\n", "-NOAUTH")
            }
            ServerKind::Redis => (b"PING\r\n", "+PONG"),
            // NATS greets every connection with INFO.
            ServerKind::Nats => (b"", "INFO"),
        };
        let ask = || -> io::Result<String> {
            let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port))?;
            stream.set_read_timeout(Some(Duration::from_secs(1)))?;
            stream.write_all(request)?;
            let mut answer = vec![0u8; 512];
            let n = stream.read(&mut answer)?;
            answer.truncate(n);
            Ok(String::from_utf8_lossy(&answer).into_owned())
        };
        ask().is_ok_and(|answer| answer.contains(expect))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.kind.name()))
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The address as a `redis://` URL, or `rediss://` to its TLS port.
    pub fn redis_url(&self) -> String {
        match self.secured.as_ref().and_then(|s| s.tls.as_ref()) {
            Some(tls) => format!("rediss://127.0.0.1:{}", tls.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The server's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Which server this is.
    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Leaves the process running past this handle (a detached local
    /// cluster); stop it by its PID.
    pub fn detach(mut self) {
        // Forgetting the handle leaves the process alone.
        std::mem::forget(self.child.take());
    }

    /// Starts the server again on the same port with the same directory.
    pub fn restart(&mut self) -> Result<(), LocalError> {
        self.kill();
        self.spawn()
    }

    /// Stops the process (SIGSTOP) without killing it: it holds its port but
    /// answers nothing, as a hung or partitioned server would.
    pub fn pause(&self) -> Result<(), LocalError> {
        self.signal(Signal::SIGSTOP)
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) -> Result<(), LocalError> {
        self.signal(Signal::SIGCONT)
    }

    fn signal(&self, signal: Signal) -> Result<(), LocalError> {
        let Some(pid) = self.pid().and_then(|pid| i32::try_from(pid).ok()) else {
            return Ok(());
        };
        kill(Pid::from_raw(pid), signal).map_err(|errno| LocalError::Io {
            what: format!("sending {signal} to {}", self.kind.name()),
            source: io::Error::from(errno),
        })
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Ports handed out for servers: below Linux's default ephemeral range
/// (32768-60999), so no outgoing connection can take one between the moment
/// it is chosen and the moment its server binds it.
const SERVER_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A loopback port for a server: free right now for TCP and for UDP (so a
/// QUIC endpoint may take it too), outside the ephemeral range, and never
/// handed out twice by this process.
pub fn free_port() -> Result<u16, LocalError> {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};

    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(Mutex::default);
    let span = u32::from(SERVER_PORTS.end - SERVER_PORTS.start);
    for _ in 0..1_000 {
        let port = SERVER_PORTS.start + (rand::random::<u32>() % span) as u16;
        let mut taken = handed_out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if taken.contains(&port)
            || TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err()
            || std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_err()
        {
            continue;
        }
        taken.insert(port);
        return Ok(port);
    }
    Err(LocalError::Io {
        what: "finding a free port".into(),
        source: io::Error::new(io::ErrorKind::AddrInUse, "no free port in 20000-32000"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_starts_restarts_pauses_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let mut redis = LocalServer::redis(dir.path()).unwrap();
        assert!(redis.probe());
        let port = redis.port;
        redis.pause().unwrap();
        assert!(!redis.probe(), "a paused server answers nothing");
        redis.resume().unwrap();
        assert!(redis.probe());
        redis.restart().unwrap();
        assert_eq!(redis.port, port, "a restart keeps the port");
        assert!(redis.probe());
        redis.kill();
        assert!(!redis.probe());
    }

    #[test]
    fn nats_starts_and_greets() {
        let dir = tempfile::tempdir().unwrap();
        let nats = LocalServer::nats(dir.path()).unwrap();
        assert!(nats.probe());
    }

    #[test]
    fn zookeeper_starts_and_takes_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let zookeeper = LocalServer::zookeeper(dir.path()).unwrap();
        assert!(zookeeper.probe());
        assert!(zookeeper.addr().starts_with("127.0.0.1:"));
    }
}
