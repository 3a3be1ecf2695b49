//! Placement: which node owns a key, by rendezvous (highest random weight)
//! hashing. Every node computes the same owner from the same member list,
//! with no coordination, and a membership change moves only the keys it must:
//! a leaving node's keys spread over the rest, a joining node takes only the
//! keys it now scores highest for (about 1/n of them), nothing else moves.

/// The weight of `node` for `key`: FNV-1a over both, then a 64-bit finalizer
/// for avalanche. Stable across processes, versions and platforms, which the
/// standard library's hasher does not promise.
pub fn score(node: &str, key: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in node.bytes().chain([0xff]).chain(key.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    // MurmurHash3's fmix64.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// The node among `nodes` that owns `key`: the highest score, ties broken by
/// the larger id so every node agrees. `None` when there is no node.
pub fn owner<'a, N: AsRef<str>>(key: &str, nodes: &'a [N]) -> Option<&'a N> {
    nodes.iter().max_by(|a, b| {
        let (a, b) = (a.as_ref(), b.as_ref());
        (score(a, key), a).cmp(&(score(b, key), b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: usize = 100_000;

    fn nodes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    fn owners(nodes: &[String]) -> Vec<String> {
        (0..KEYS)
            .map(|k| owner(&format!("room-{k}"), nodes).unwrap().clone())
            .collect()
    }

    #[test]
    fn keys_spread_evenly() {
        let nodes = nodes(5);
        let owners = owners(&nodes);
        for node in &nodes {
            let share = owners.iter().filter(|o| *o == node).count() as f64 / KEYS as f64;
            assert!((share - 0.2).abs() < 0.01, "{node} owns {share:.3}");
        }
    }

    #[test]
    fn a_leaving_node_moves_only_its_own_keys() {
        let all = nodes(5);
        let before = owners(&all);
        let rest: Vec<String> = all.iter().filter(|n| *n != "node-2").cloned().collect();
        let after = owners(&rest);
        for (b, a) in before.iter().zip(&after) {
            if b != "node-2" {
                assert_eq!(a, b, "a key not owned by the leaver moved");
            }
        }
    }

    #[test]
    fn a_joining_node_takes_about_one_share_and_nothing_else_moves() {
        let before = owners(&nodes(5));
        let after = owners(&nodes(6));
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if a != b {
                assert_eq!(a, "node-5", "a key moved between old nodes");
                moved += 1;
            }
        }
        let share = moved as f64 / KEYS as f64;
        assert!(
            (share - 1.0 / 6.0).abs() < 0.01,
            "moved {share:.3}, expected ~0.167"
        );
    }

    #[test]
    fn no_nodes_no_owner_and_the_answer_is_stable() {
        assert_eq!(owner::<String>("room", &[]), None);
        // Pinned so that a change of hash, which would move every room of a
        // running cluster during a rolling upgrade, fails here first.
        assert_eq!(score("a", "b"), 0x7afd_4e29_979e_4afe);
    }
}
