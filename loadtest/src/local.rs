//! A whole cluster on loopback: ZooKeeper, Redis, room services and message
//! services as real processes on free ports, with every log and the state
//! (ports, PIDs) in one directory.
//!
//! Tests hold a [`LocalCluster`] and kill, restart or pause its processes;
//! `scripts/cluster up` ([`ClusterCommand`]) starts one and detaches it,
//! `down` and `status` find it again from its state file.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chatroom_cluster::auth::{SecretSource, TokenKey};
use chatroom_cluster::link::tls::{self, LinkTlsArgs};
use chatroom_cluster::local::{LocalError, LocalServer, RedisOptions, RedisSecurity, free_port};
use chatroom_cluster::quic::TlsIdentity;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

mod command;

pub use command::ClusterCommand;

/// How long a node may take to report ready.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long `down` waits for a node to drain after SIGTERM.
const STOP_WITHIN: Duration = Duration::from_secs(10);
/// The cluster's link CA and certificates, in the cluster's directory.
const LINK_CERTS_DIR: &str = "link-certs";
/// Redis' password, in the cluster's directory.
const REDIS_PASSWORD_FILE: &str = "redis-password";
/// The nodes' ZooKeeper digest credentials, `chatroom:SECRET`, and the
/// secret they are made from, in the cluster's directory.
const ZK_AUTH_FILE: &str = "zk-auth";
const ZK_SECRET_FILE: &str = "zk-secret";
/// How long a local cluster's link certificates stay valid.
const LINK_CERTS_VALID_FOR: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why the cluster could not be started or found.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// ZooKeeper or Redis failed to start.
    #[error(transparent)]
    Server(#[from] LocalError),
    /// Files, processes or sockets failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        source: io::Error,
    },
    /// A service binary is missing.
    #[error(
        "{0} not found; build it first: cargo build -p room-svc -p msg-svc -p chatroom-embedded"
    )]
    MissingBinary(PathBuf),
    /// A node did not become ready.
    #[error("{node} did not become ready within {READY_WITHIN:?}; see {log}; it ends:\n{tail}")]
    NotReady {
        /// The node.
        node: String,
        /// Its log.
        log: String,
        /// The log's last lines.
        tail: String,
    },
    /// The token secret could not be made.
    #[error("token secret: {0}")]
    Secret(#[from] chatroom_cluster::auth::SecretError),
    /// The QUIC certificate could not be made.
    #[error("quic certificate: {0}")]
    Certificate(#[from] chatroom_cluster::quic::TlsError),
    /// The state file is missing or unreadable.
    #[error("no cluster state in {0} (is a cluster up there?)")]
    NoState(PathBuf),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// The shape of a cluster to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Room services.
    pub room_svcs: usize,
    /// Message services.
    pub msg_svcs: usize,
    /// ZooKeeper session timeout of every node: how long a dead node keeps
    /// its share.
    pub zk_session_timeout: Duration,
    /// Client heartbeat of the message services.
    pub heartbeat: Duration,
    /// Where `room-svc` and `msg-svc` are; by default next to this program.
    pub bin_dir: Option<PathBuf>,
    /// Extra `--flag value` pairs for every node (e.g. `--log debug`).
    pub node_args: Vec<String>,
    /// The link address each room-svc registers in place of its own, in
    /// order (a proxy in front of it); missing entries register their own.
    pub public_link_addrs: Vec<String>,
    /// Redis writes every change to an append-only file before answering,
    /// so a restarted Redis has all it acknowledged.
    pub durable_redis: bool,
    /// Where a node reaches ZooKeeper instead of ZooKeeper's own address,
    /// by node id (a proxy that can cut it off).
    pub zk_via: HashMap<String, String>,
    /// Where a room service reaches Redis instead (a `redis://` URL), by
    /// node id.
    pub redis_via: HashMap<String, String>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            room_svcs: 2,
            msg_svcs: 3,
            zk_session_timeout: Duration::from_secs(4),
            heartbeat: Duration::from_secs(10),
            bin_dir: None,
            node_args: Vec::new(),
            public_link_addrs: Vec::new(),
            durable_redis: false,
            zk_via: HashMap::new(),
            redis_via: HashMap::new(),
        }
    }
}

/// The servers a cluster stands on, started before its nodes (so that
/// proxies can be put between them).
#[derive(Debug)]
pub struct Servers {
    /// ZooKeeper.
    pub zookeeper: LocalServer,
    /// Redis.
    pub redis: LocalServer,
}

impl Servers {
    /// Starts ZooKeeper and Redis under `dir`.
    pub fn start(spec: &ClusterSpec, dir: &Path) -> Result<Self, ClusterError> {
        fs::create_dir_all(dir).map_err(io_error(format!("creating {}", dir.display())))?;
        let zookeeper = LocalServer::zookeeper(&dir.join("zookeeper"))?;
        // A password, as a production Redis has: the nodes read it from a
        // file, as they would there. Kept with the cluster's directory, so
        // a cluster started again there finds its Redis the same.
        let (password, _) = SecretSource::File(dir.join(REDIS_PASSWORD_FILE)).bytes(true)?;
        let password = String::from_utf8_lossy(&password).into_owned();
        let options = RedisOptions {
            durable: spec.durable_redis,
            security: RedisSecurity {
                password: Some(password),
                tls: None,
            },
        };
        let redis = LocalServer::redis_with(&dir.join("redis"), options)?;
        Ok(Self { zookeeper, redis })
    }
}

/// A room-svc or msg-svc process.
#[derive(Debug)]
pub struct NodeProcess {
    /// Its node id.
    pub id: String,
    /// `room-svc` or `msg-svc`.
    pub program: &'static str,
    /// msg-svc: where clients connect.
    pub ws_url: Option<String>,
    /// msg-svc: where QUIC clients connect.
    pub quic_url: Option<String>,
    /// Its health and readiness endpoint, `host:port`.
    pub http_addr: String,
    /// room-svc: where it listens for node links, `host:port`.
    pub link_addr: Option<String>,
    command: Vec<String>,
    binary: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl NodeProcess {
    fn spawn(&mut self) -> Result<(), ClusterError> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io_error(format!("opening {}", self.log.display())))?;
        let stderr = log.try_clone().map_err(io_error("cloning a log handle"))?;
        let child = Command::new(&self.binary)
            .args(&self.command)
            .env("CHATROOM_LOG_FORMAT", "human")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            // Its own process group: a Ctrl-C in the terminal that started
            // `scripts/cluster up` does not reach the cluster.
            .process_group(0)
            .spawn()
            .map_err(io_error(format!("starting {}", self.id)))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&mut self) -> Result<(), ClusterError> {
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if self.is_ready() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(self.not_ready())
    }

    /// Whether `/readyz` answers 200 now.
    pub fn is_ready(&self) -> bool {
        http_get(&self.http_addr, "/readyz").is_some_and(|(status, _)| status == 200)
    }

    /// Waits until the node's membership view holds `(room_svcs, msg_svcs)`
    /// nodes: until then placement may differ between nodes.
    pub fn wait_members(&self, members: (usize, usize)) -> Result<(), ClusterError> {
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if self.sees_members(members) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(self.not_ready())
    }

    /// The value of `series` (a metric's name with its labels, if any) on
    /// the node's `/metrics` now; `None` when the node or the series is
    /// missing.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (status, metrics) = http_get(&self.http_addr, "/metrics")?;
        if status != 200 {
            return None;
        }
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Whether the node's membership view holds `(room_svcs, msg_svcs)` nodes
    /// now.
    pub fn sees_members(&self, (room_svcs, msg_svcs): (usize, usize)) -> bool {
        let want = [
            format!("chatroom_cluster_members{{role=\"room-svc\"}} {room_svcs}"),
            format!("chatroom_cluster_members{{role=\"msg-svc\"}} {msg_svcs}"),
        ];
        http_get(&self.http_addr, "/metrics").is_some_and(|(status, metrics)| {
            status == 200 && want.iter().all(|line| metrics.lines().any(|l| l == line))
        })
    }

    fn not_ready(&self) -> ClusterError {
        let log = self.log_text();
        let lines: Vec<&str> = log.lines().collect();
        ClusterError::NotReady {
            node: self.id.clone(),
            log: self.log.display().to_string(),
            tail: lines[lines.len().saturating_sub(20)..].join("\n"),
        }
    }

    /// The process's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`: no drain, no goodbye to ZooKeeper.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the node again with the same id, ports and flags, and waits
    /// until it is ready.
    pub fn restart(&mut self) -> Result<(), ClusterError> {
        self.kill9();
        self.spawn()?;
        self.wait_ready()
    }

    /// SIGSTOP: the process holds its sockets but does nothing.
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid().and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// Its log so far, for test failure messages.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A running cluster. Dropping it kills every process.
#[derive(Debug)]
pub struct LocalCluster {
    dir: PathBuf,
    /// ZooKeeper.
    pub zookeeper: LocalServer,
    /// Redis.
    pub redis: LocalServer,
    /// Room services, `room-svc-1`…
    pub room_svcs: Vec<NodeProcess>,
    /// Message services, `msg-svc-1`…
    pub msg_svcs: Vec<NodeProcess>,
    secret_file: PathBuf,
    admin_token_file: PathBuf,
    cert_file: PathBuf,
    cluster_name: String,
}

/// Writes `contents` to `path`, readable by its owner only.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), ClusterError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let failed = io_error(format!("writing {}", path.display()));
    let mut file = match fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => file,
        Err(error) => return Err(failed(error)),
    };
    file.write_all(contents).map_err(failed)
}

impl LocalCluster {
    /// Starts a cluster with everything under `dir` (created if needed) and
    /// waits until every node is ready.
    pub fn start(spec: &ClusterSpec, dir: &Path) -> Result<Self, ClusterError> {
        let servers = Servers::start(spec, dir)?;
        Self::start_on(servers, spec, dir)
    }

    /// Starts a cluster's nodes on `servers`, with everything under `dir`,
    /// and waits until every node is ready.
    pub fn start_on(
        servers: Servers,
        spec: &ClusterSpec,
        dir: &Path,
    ) -> Result<Self, ClusterError> {
        let Servers { zookeeper, redis } = servers;
        let bin_dir = match &spec.bin_dir {
            Some(dir) => dir.clone(),
            None => default_bin_dir()?,
        };
        let binary = |name: &str| {
            let path = bin_dir.join(name);
            if path.exists() {
                Ok(path)
            } else {
                Err(ClusterError::MissingBinary(path))
            }
        };
        let (room_bin, msg_bin) = (binary("room-svc")?, binary("msg-svc")?);
        let secret_file = dir.join("token-secret");
        SecretSource::File(secret_file.clone()).load(true)?;
        let admin_token_file = dir.join("admin-token");
        SecretSource::File(admin_token_file.clone()).load_admin(true)?;
        // One certificate for every msg-svc, so a client that trusts it
        // follows redirects between them over QUIC.
        let (cert_file, key_file) = (dir.join("quic-cert.pem"), dir.join("quic-key.pem"));
        let identity = TlsIdentity::self_signed(&["localhost".into(), "127.0.0.1".into()])?;
        identity.write_cert(&cert_file)?;
        identity.write_key(&key_file)?;
        let cluster_name = "local".to_owned();
        // The cluster's CA and a link certificate per role: node links
        // are mutual TLS, as in production.
        let link_certs = dir.join(LINK_CERTS_DIR);
        tls::generate(&link_certs, &cluster_name, LINK_CERTS_VALID_FOR)?;
        // The cluster's znodes for its nodes only (digest credentials), as
        // in production; the same secret every time the directory is used,
        // for ZooKeeper keeps the znodes' ACLs.
        let (zk_secret, _) = SecretSource::File(dir.join(ZK_SECRET_FILE)).bytes(true)?;
        let zk_auth_file = dir.join(ZK_AUTH_FILE);
        let zk_auth = format!("chatroom:{}\n", String::from_utf8_lossy(&zk_secret));
        write_private(&zk_auth_file, zk_auth.as_bytes())?;
        let session_ms = spec.zk_session_timeout.as_millis().to_string();
        let common = |id: &str, role: &str| -> Vec<String> {
            let zk = spec.zk_via.get(id).cloned();
            let mut args = vec![
                "--zk".into(),
                zk.unwrap_or_else(|| zookeeper.addr()),
                "--cluster".into(),
                cluster_name.clone(),
                "--node-id".into(),
                id.into(),
                "--zk-session-timeout-ms".into(),
                session_ms.clone(),
                "--zk-auth-file".into(),
                zk_auth_file.display().to_string(),
            ];
            args.extend(LinkTlsArgs::from_dir(&link_certs, role).to_args());
            args.extend(spec.node_args.iter().cloned());
            args
        };
        let mut room_svcs = Vec::new();
        for i in 1..=spec.room_svcs {
            let id = format!("room-svc-{i}");
            let http_addr = format!("127.0.0.1:{}", free_port()?);
            let link_addr = format!("127.0.0.1:{}", free_port()?);
            let mut command = common(&id, tls::ROOM_SVC_NAME);
            let redis_url = spec.redis_via.get(&id).cloned();
            command.extend([
                "--redis".into(),
                redis_url.unwrap_or_else(|| redis.redis_url()),
                "--redis-password-file".into(),
                dir.join(REDIS_PASSWORD_FILE).display().to_string(),
                "--link-listen".into(),
                link_addr.clone(),
                "--http-listen".into(),
                http_addr.clone(),
                "--admin-token-file".into(),
                admin_token_file.display().to_string(),
            ]);
            if let Some(public) = spec.public_link_addrs.get(i - 1) {
                command.extend(["--public-link-addr".into(), public.clone()]);
            }
            room_svcs.push(NodeProcess {
                log: dir.join(format!("{id}.log")),
                id,
                program: "room-svc",
                ws_url: None,
                quic_url: None,
                http_addr,
                link_addr: Some(link_addr),
                command,
                binary: room_bin.clone(),
                child: None,
            });
        }
        let mut msg_svcs = Vec::new();
        for i in 1..=spec.msg_svcs {
            let id = format!("msg-svc-{i}");
            let ws_addr = format!("127.0.0.1:{}", free_port()?);
            let quic_addr = format!("127.0.0.1:{}", free_port()?);
            let http_addr = format!("127.0.0.1:{}", free_port()?);
            let mut command = common(&id, tls::MSG_SVC_NAME);
            command.extend([
                "--ws-listen".into(),
                ws_addr.clone(),
                "--quic-listen".into(),
                quic_addr.clone(),
                "--quic-cert".into(),
                cert_file.display().to_string(),
                "--quic-key".into(),
                key_file.display().to_string(),
                "--http-listen".into(),
                http_addr.clone(),
                "--token-secret-file".into(),
                secret_file.display().to_string(),
                "--heartbeat-ms".into(),
                spec.heartbeat.as_millis().to_string(),
                // Bots send as fast as the scenario's rate over its few
                // senders: the rooms' limits are under test, not a session's.
                "--session-send-per-s".into(),
                "0".into(),
            ]);
            msg_svcs.push(NodeProcess {
                log: dir.join(format!("{id}.log")),
                id,
                program: "msg-svc",
                ws_url: Some(format!("ws://{ws_addr}/ws")),
                quic_url: Some(format!("quic://{quic_addr}")),
                http_addr,
                link_addr: None,
                command,
                binary: msg_bin.clone(),
                child: None,
            });
        }
        let mut cluster = Self {
            dir: dir.to_owned(),
            zookeeper,
            redis,
            room_svcs,
            msg_svcs,
            secret_file,
            admin_token_file,
            cert_file,
            cluster_name,
        };
        for node in cluster
            .room_svcs
            .iter_mut()
            .chain(cluster.msg_svcs.iter_mut())
        {
            node.spawn()?;
        }
        for node in cluster
            .room_svcs
            .iter_mut()
            .chain(cluster.msg_svcs.iter_mut())
        {
            node.wait_ready()?;
        }
        let expected = (spec.room_svcs, spec.msg_svcs);
        for node in cluster.room_svcs.iter().chain(&cluster.msg_svcs) {
            node.wait_members(expected)?;
        }
        cluster.write_state()?;
        Ok(cluster)
    }

    /// Where the cluster keeps its logs and state.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding the room services' admin token.
    pub fn admin_token_file(&self) -> &Path {
        &self.admin_token_file
    }

    /// The room services' admin token.
    pub fn admin_token(&self) -> Result<String, ClusterError> {
        let read = fs::read_to_string(&self.admin_token_file).map_err(io_error(format!(
            "reading {}",
            self.admin_token_file.display()
        )))?;
        Ok(read.trim().to_owned())
    }

    /// The key that signs client tokens for this cluster.
    pub fn token_key(&self) -> Result<TokenKey, ClusterError> {
        Ok(SecretSource::File(self.secret_file.clone()).load(false)?.0)
    }

    /// The cluster's name in ZooKeeper.
    pub fn name(&self) -> &str {
        &self.cluster_name
    }

    /// Where clients connect: every message service's URL.
    pub fn ws_urls(&self) -> Vec<String> {
        self.msg_svcs
            .iter()
            .filter_map(|n| n.ws_url.clone())
            .collect()
    }

    /// Where QUIC clients connect, one URL per message service.
    pub fn quic_urls(&self) -> Vec<String> {
        self.msg_svcs
            .iter()
            .filter_map(|n| n.quic_url.clone())
            .collect()
    }

    /// The link certificate flags of a node of `role`, as its nodes got.
    pub fn link_tls(&self, role: &str) -> LinkTlsArgs {
        LinkTlsArgs::from_dir(&self.dir.join(LINK_CERTS_DIR), role)
    }

    /// The certificate every message service presents over QUIC.
    pub fn quic_cert_file(&self) -> &Path {
        &self.cert_file
    }

    /// A message service by id.
    pub fn msg_svc(&mut self, id: &str) -> Option<&mut NodeProcess> {
        self.msg_svcs.iter_mut().find(|n| n.id == id)
    }

    /// A room service by id.
    pub fn room_svc(&mut self, id: &str) -> Option<&mut NodeProcess> {
        self.room_svcs.iter_mut().find(|n| n.id == id)
    }

    fn state(&self) -> ClusterState {
        let node = |n: &NodeProcess| NodeState {
            id: n.id.clone(),
            program: n.program.to_owned(),
            pid: n.pid(),
            http_addr: n.http_addr.clone(),
            ws_url: n.ws_url.clone(),
            quic_url: n.quic_url.clone(),
            log: n.log.display().to_string(),
        };
        ClusterState {
            zookeeper: ServerState {
                addr: self.zookeeper.addr(),
                pid: self.zookeeper.pid(),
            },
            redis: ServerState {
                addr: self.redis.addr(),
                pid: self.redis.pid(),
            },
            nodes: self
                .room_svcs
                .iter()
                .chain(&self.msg_svcs)
                .map(node)
                .collect(),
            token_secret_file: self.secret_file.display().to_string(),
            admin_token_file: self.admin_token_file.display().to_string(),
            quic_cert_file: self.cert_file.display().to_string(),
        }
    }

    fn write_state(&self) -> Result<(), ClusterError> {
        let path = state_path(&self.dir);
        // A struct of strings and numbers always serialises.
        let json = serde_json::to_string_pretty(&self.state()).expect("state serialises");
        fs::write(&path, json).map_err(io_error(format!("writing {}", path.display())))
    }

    /// Leaves every process running (for `scripts/cluster up`) and returns
    /// what `down` and `status` will need.
    pub fn detach(mut self) -> ClusterState {
        let state = self.state();
        for node in self.room_svcs.iter_mut().chain(self.msg_svcs.iter_mut()) {
            // Forgetting the handle leaves the process alone.
            std::mem::forget(node.child.take());
        }
        self.zookeeper.detach();
        self.redis.detach();
        state
    }
}

/// Starts the embedded server (`chatroom`) with its files in `dir` and
/// `extra` flags, and waits until it is ready. Its token secret is
/// `dir/token-secret`, its admin token `dir/admin-token`.
pub fn spawn_embedded(dir: &Path, extra: &[String]) -> Result<NodeProcess, ClusterError> {
    fs::create_dir_all(dir).map_err(io_error(format!("creating {}", dir.display())))?;
    let binary = default_bin_dir()?.join("chatroom");
    if !binary.exists() {
        return Err(ClusterError::MissingBinary(binary));
    }
    let ws_addr = format!("127.0.0.1:{}", free_port()?);
    let quic_addr = format!("127.0.0.1:{}", free_port()?);
    let http_addr = format!("127.0.0.1:{}", free_port()?);
    let mut command = vec![
        "--ws-listen".to_owned(),
        ws_addr.clone(),
        "--quic-listen".into(),
        quic_addr.clone(),
        "--quic-cert-out".into(),
        dir.join("quic-cert.pem").display().to_string(),
        "--http-listen".into(),
        http_addr.clone(),
        "--token-secret-file".into(),
        dir.join("token-secret").display().to_string(),
        "--admin-token-file".into(),
        dir.join("admin-token").display().to_string(),
        // As in a local cluster: the rooms' limits are under test.
        "--session-send-per-s".into(),
        "0".into(),
    ];
    command.extend(extra.iter().cloned());
    let mut node = NodeProcess {
        id: "embedded".into(),
        program: "chatroom",
        ws_url: Some(format!("ws://{ws_addr}/ws")),
        quic_url: Some(format!("quic://{quic_addr}")),
        http_addr,
        link_addr: None,
        command,
        binary,
        log: dir.join("embedded.log"),
        child: None,
    };
    node.spawn()?;
    node.wait_ready()?;
    Ok(node)
}

/// What `scripts/cluster` records about a running cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterState {
    /// ZooKeeper.
    pub zookeeper: ServerState,
    /// Redis.
    pub redis: ServerState,
    /// Room and message services.
    pub nodes: Vec<NodeState>,
    /// The secret client tokens are signed with.
    pub token_secret_file: String,
    /// The room services' admin token.
    #[serde(default)]
    pub admin_token_file: String,
    /// The certificate the message services present over QUIC.
    #[serde(default)]
    pub quic_cert_file: String,
}

/// A server process in [`ClusterState`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerState {
    /// `host:port`.
    pub addr: String,
    /// Its PID.
    pub pid: Option<u32>,
}

/// A node in [`ClusterState`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    /// Node id.
    pub id: String,
    /// `room-svc` or `msg-svc`.
    pub program: String,
    /// Its PID.
    pub pid: Option<u32>,
    /// Health and readiness.
    pub http_addr: String,
    /// msg-svc: where clients connect.
    pub ws_url: Option<String>,
    /// msg-svc: where QUIC clients connect.
    #[serde(default)]
    pub quic_url: Option<String>,
    /// Its log file.
    pub log: String,
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("cluster.json")
}

/// Reads the state a detached cluster left in `dir`.
pub fn read_state(dir: &Path) -> Result<ClusterState, ClusterError> {
    let text =
        fs::read_to_string(state_path(dir)).map_err(|_| ClusterError::NoState(dir.to_owned()))?;
    serde_json::from_str(&text).map_err(|_| ClusterError::NoState(dir.to_owned()))
}

/// Stops a detached cluster: nodes first (SIGTERM, so they drain and leave
/// ZooKeeper), then Redis and ZooKeeper. Returns what was stopped.
pub fn stop_detached(dir: &Path) -> Result<Vec<String>, ClusterError> {
    let state = read_state(dir)?;
    let mut stopped = Vec::new();
    let nodes: Vec<(String, Option<u32>)> =
        state.nodes.iter().map(|n| (n.id.clone(), n.pid)).collect();
    for (id, pid) in &nodes {
        if let Some(pid) = pid.filter(|p| alive(*p)) {
            signal(pid, Signal::SIGTERM);
            stopped.push(id.clone());
        }
    }
    let deadline = Instant::now() + STOP_WITHIN;
    for (_, pid) in &nodes {
        if let Some(pid) = *pid {
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if alive(pid) {
                signal(pid, Signal::SIGKILL);
            }
        }
    }
    for (name, server) in [("redis", &state.redis), ("zookeeper", &state.zookeeper)] {
        if let Some(pid) = server.pid.filter(|p| alive(*p)) {
            signal(pid, Signal::SIGKILL);
            stopped.push(name.to_owned());
        }
    }
    fs::remove_file(state_path(dir)).map_err(io_error("removing the state file"))?;
    Ok(stopped)
}

/// One line per process of a detached cluster: alive, ready.
pub fn status(dir: &Path) -> Result<Vec<String>, ClusterError> {
    let state = read_state(dir)?;
    let mut lines = Vec::new();
    for (name, server) in [("zookeeper", &state.zookeeper), ("redis", &state.redis)] {
        let up = server.pid.is_some_and(alive);
        lines.push(format!(
            "{name:<10} {:<5} {}",
            if up { "up" } else { "down" },
            server.addr
        ));
    }
    for node in &state.nodes {
        let up = node.pid.is_some_and(alive);
        let ready = match http_get(&node.http_addr, "/readyz") {
            Some((200, body)) => body.trim().to_owned(),
            Some((status, body)) => format!("{status} {}", body.trim()),
            None => "no answer".to_owned(),
        };
        let target = node.ws_url.as_deref().unwrap_or(&node.http_addr);
        lines.push(format!(
            "{:<10} {:<5} {target}  ({ready})",
            node.id,
            if up { "up" } else { "down" }
        ));
    }
    Ok(lines)
}

fn alive(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|pid| kill(Pid::from_raw(pid), None).is_ok())
}

fn signal(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// Where the service binaries are: next to this program (or, for a test,
/// next to its `deps/` directory).
fn default_bin_dir() -> Result<PathBuf, ClusterError> {
    let exe = std::env::current_exe().map_err(io_error("locating this program"))?;
    let dir = exe.parent().map(Path::to_owned).unwrap_or_default();
    Ok(if dir.ends_with("deps") {
        dir.parent().map(Path::to_owned).unwrap_or(dir)
    } else {
        dir
    })
}

/// A minimal HTTP/1.0 GET: status code and body, or `None` if nothing answered.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    get(addr, path, "")
}

/// [`http_get`] with the admin API's bearer `token`.
pub fn admin_get(addr: &str, path: &str, token: &str) -> Option<(u16, String)> {
    get(addr, path, &format!("Authorization: Bearer {token}\r\n"))
}

fn get(addr: &str, path: &str, headers: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}
