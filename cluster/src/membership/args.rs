//! The flags of a node that joins a cluster (a room service or a message
//! service): where membership is kept and who the node is.

use std::time::Duration;

use chatroom_proto::ids::{IdError, check_id};

use std::path::PathBuf;

use super::{BadZkDigest, ZkConfig, ZkDigest};
use crate::link::tls::LinkTlsArgs;

/// Where a node joins its cluster and as whom.
#[derive(Debug, Clone, clap::Args)]
pub struct JoinArgs {
    /// ZooKeeper to join through (host:port[,host:port...]); required.
    #[arg(long, env = "CHATROOM_ZK")]
    pub zk: Option<String>,
    /// The cluster's name: its nodes register under /chatroom/NAME (and
    /// room services keep its rooms under chatroom:NAME: in Redis).
    #[arg(long, env = "CHATROOM_CLUSTER", default_value = "default")]
    pub cluster: String,
    /// This node's id, unique in the cluster; required.
    #[arg(long, env = "CHATROOM_NODE_ID")]
    pub node_id: Option<String>,
    /// How long ZooKeeper keeps this node registered without hearing from
    /// it, ms: how soon its rooms or users move if it dies.
    #[arg(long, env = "CHATROOM_ZK_SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    pub zk_session_timeout_ms: u64,
    /// A file holding ZooKeeper digest credentials, USER:PASSWORD (every
    /// node of the cluster the same): the node authenticates with them and
    /// creates the cluster's znodes for that identity only.
    #[arg(long, env = "CHATROOM_ZK_AUTH_FILE")]
    pub zk_auth_file: Option<PathBuf>,
    /// How the node links between msg-svcs and room services are secured.
    #[command(flatten)]
    pub link: LinkTlsArgs,
}

/// Why the flags cannot join a cluster.
#[derive(Debug, thiserror::Error)]
pub enum JoinArgsError {
    /// `--zk` or `--node-id` is missing.
    #[error("joining a cluster needs --zk and --node-id")]
    Missing,
    /// The node id is not a valid id.
    #[error("node id {0}")]
    NodeId(#[from] IdError),
    /// The ZooKeeper credentials file cannot be read.
    #[error("--zk-auth-file {path}: {source}")]
    ZkAuthFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The ZooKeeper credentials are malformed.
    #[error("--zk-auth-file {path}: {source}")]
    ZkAuth {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: BadZkDigest,
    },
}

impl JoinArgs {
    /// Where to join, and this node's id.
    pub fn config(&self) -> Result<(ZkConfig, String), JoinArgsError> {
        let (Some(zk), Some(node_id)) = (&self.zk, &self.node_id) else {
            return Err(JoinArgsError::Missing);
        };
        check_id(node_id)?;
        let auth = match &self.zk_auth_file {
            None => None,
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| JoinArgsError::ZkAuthFile {
                        path: path.clone(),
                        source,
                    })?;
                let digest = ZkDigest::new(&text).map_err(|source| JoinArgsError::ZkAuth {
                    path: path.clone(),
                    source,
                })?;
                Some(digest)
            }
        };
        let zookeeper = ZkConfig {
            connect: zk.clone(),
            root: format!("/chatroom/{}", self.cluster),
            session_timeout: Duration::from_millis(self.zk_session_timeout_ms),
            auth,
        };
        Ok((zookeeper, node_id.clone()))
    }
}
