//! Partitions between one node and one server it depends on: every node's
//! ZooKeeper connection and every room-svc's Redis connection go through a
//! proxy of their own ([`Proxy`]), so the suite can cut exactly one path
//! (a room-svc from ZooKeeper but not from its peers or Redis, say) while
//! the rest of the cluster stays connected. Network namespaces would need
//! privileges this suite does not ask for; a proxy per path cuts the same
//! connections, both ways.

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::Context as _;
use chatroom_cluster::local::Proxy;

use crate::local::Servers;

/// A node's paths that can be cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// The node to ZooKeeper.
    ZooKeeper,
    /// A room-svc to Redis.
    Redis,
}

/// The proxies of every node's paths, by node id.
#[derive(Debug, Default)]
pub struct Partitions {
    proxies: HashMap<(String, Path), Proxy>,
}

impl Partitions {
    /// A proxy to ZooKeeper for each of `nodes`, and to Redis for each of
    /// `room_svcs`.
    pub async fn start(
        servers: &Servers,
        nodes: &[String],
        room_svcs: &[String],
    ) -> anyhow::Result<Self> {
        let zookeeper: SocketAddr = servers.zookeeper.addr().parse()?;
        let redis: SocketAddr = servers.redis.addr().parse()?;
        let mut proxies = HashMap::new();
        for node in nodes {
            let proxy = Proxy::start(zookeeper).await.context("a ZooKeeper proxy")?;
            proxies.insert((node.clone(), Path::ZooKeeper), proxy);
        }
        for node in room_svcs {
            let proxy = Proxy::start(redis).await.context("a Redis proxy")?;
            proxies.insert((node.clone(), Path::Redis), proxy);
        }
        Ok(Self { proxies })
    }

    /// Where each node reaches ZooKeeper.
    pub fn zk_via(&self) -> HashMap<String, String> {
        self.via(Path::ZooKeeper, |addr| addr.to_string())
    }

    /// Where each room-svc reaches Redis.
    pub fn redis_via(&self) -> HashMap<String, String> {
        self.via(Path::Redis, |addr| format!("redis://{addr}"))
    }

    fn via(&self, path: Path, show: impl Fn(SocketAddr) -> String) -> HashMap<String, String> {
        self.proxies
            .iter()
            .filter(|((_, p), _)| *p == path)
            .map(|((node, _), proxy)| (node.clone(), show(proxy.addr())))
            .collect()
    }

    /// Cuts `node`'s `path`.
    pub fn cut(&self, node: &str, path: Path) -> anyhow::Result<()> {
        self.proxy(node, path)?.cut();
        Ok(())
    }

    /// Heals `node`'s `path`.
    pub fn heal(&self, node: &str, path: Path) -> anyhow::Result<()> {
        self.proxy(node, path)?.heal();
        Ok(())
    }

    fn proxy(&self, node: &str, path: Path) -> anyhow::Result<&Proxy> {
        self.proxies
            .get(&(node.to_owned(), path))
            .with_context(|| format!("no {path:?} proxy for {node}"))
    }
}
