//! `loadtest cluster up|down|status`: a local cluster left running for a
//! person (what `scripts/cluster` runs), and what it prints.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

use super::{ClusterError, ClusterSpec, LocalCluster, status, stop_detached};

/// A local cluster on loopback, in a directory of its own.
#[derive(Debug, clap::Args)]
pub struct ClusterCommand {
    #[command(subcommand)]
    action: ClusterAction,
    /// Where the cluster keeps its logs, data and state.
    #[arg(
        long,
        env = "CHATROOM_CLUSTER_DIR",
        default_value = ".chatroom/cluster",
        global = true
    )]
    dir: PathBuf,
}

#[derive(Debug, Subcommand)]
enum ClusterAction {
    /// Start a cluster and leave it running.
    Up {
        /// Room services to start.
        #[arg(long, default_value_t = 2)]
        room_svcs: usize,
        /// Message services to start.
        #[arg(long, default_value_t = 3)]
        msg_svcs: usize,
        /// ZooKeeper session timeout of every node, ms.
        #[arg(long, default_value_t = 4_000)]
        zk_session_timeout_ms: u64,
    },
    /// Stop the cluster started in --dir.
    Down,
    /// Show what runs in --dir and whether it is ready.
    Status,
}

impl ClusterCommand {
    /// Does what was asked; what to print.
    pub fn run(&self) -> Result<Vec<String>, ClusterError> {
        match self.action {
            ClusterAction::Up {
                room_svcs,
                msg_svcs,
                zk_session_timeout_ms,
            } => {
                let spec = ClusterSpec {
                    room_svcs,
                    msg_svcs,
                    zk_session_timeout: Duration::from_millis(zk_session_timeout_ms),
                    ..ClusterSpec::default()
                };
                let state = LocalCluster::start(&spec, &self.dir)?.detach();
                let mut lines = vec![
                    format!("cluster up in {}", self.dir.display()),
                    format!("  zookeeper  {}", state.zookeeper.addr),
                    format!("  redis      {}", state.redis.addr),
                ];
                for node in &state.nodes {
                    let at = node.ws_url.as_deref().unwrap_or(&node.http_addr);
                    let quic = node
                        .quic_url
                        .as_deref()
                        .map_or(String::new(), |url| format!(" {url}"));
                    lines.push(format!(
                        "  {:<10} {at}{quic}  (http {}, log {})",
                        node.id, node.http_addr, node.log
                    ));
                }
                lines.push(format!("  secret     {}", state.token_secret_file));
                lines.push(format!("  admin      {}", state.admin_token_file));
                lines.push(format!("  quic cert  {}", state.quic_cert_file));
                Ok(lines)
            }
            ClusterAction::Down => {
                let stopped = stop_detached(&self.dir)?;
                Ok(vec![format!("stopped: {}", stopped.join(", "))])
            }
            ClusterAction::Status => status(&self.dir),
        }
    }
}
