//! ADD's node rules (the masquerade and the forward rules), read once before ADD changes
//! anything and changed at its end only where that read found them wrong.
//!
//! [`Network::preflight_node_rules`] opens the one netfilter socket of the run and makes one
//! chain dump, which answers both "does this network have a masquerade table" and "which
//! forward base chains does the host have"; with ipMasq on one table request more, with host
//! forward chains one rule dump per table holding them. When that shows a change that needs
//! `nft`, `nft` is looked up then (code 106 before the node is touched when it is missing);
//! nothing is ever exec'd on the fast path. [`Network::finish_node_rules`] then does nothing
//! at all when the node was right, and otherwise the full, locked read-modify-write of
//! [`Network::ensure_masq`] / [`Network::ensure_forward`].
//!
//! An IPAM that does not declare its ranges (an exec'd plugin) only tells the pod's subnets
//! after allocation: for such a network the decision is left to the end, as before, and `nft`
//! is looked up in the preflight whenever it might be needed.

use std::cell::OnceCell;

use ipnetwork::IpNetwork;

use super::{Network, PluginKeys};
use crate::Result;
use crate::kernel::netlink::netfilter::{self, Netfilter};
use crate::node::forward::{self, Needed};
use crate::node::masq;

/// What [`Network::preflight_node_rules`] found, for [`Network::finish_node_rules`].
pub struct NodeRules {
    nf: Netfilter,
    masq: bool,
    forward: bool,
}

impl<K: PluginKeys> Network<K> {
    /// Before ADD changes anything: reads the node's masquerade and forward rules (one
    /// netfilter socket, one chain dump; see the module doc) and decides what the end of ADD
    /// must change. When a change needs `nft` and it is missing: code 106 naming the key to
    /// turn off, so a node without nftables fails up front.
    pub fn preflight_node_rules(&self) -> Result<NodeRules> {
        let mut nf = Netfilter::new()?;
        let chains = nf.chains(None)?;
        let name = &self.conf.name;
        let ranges = if self.l2_only {
            None
        } else {
            self.pod_ranges()?
        };
        let grow = !self.l2_only && ranges.is_none();
        // The cluster space only when rules are there to compare it with: a node without a
        // masquerade table or host forward chains needs nothing of the view here.
        // It comes from the network's space file while the view file is unchanged.
        let space: OnceCell<Vec<IpNetwork>> = OnceCell::new();
        let cluster = || -> Result<&Vec<IpNetwork>> {
            if let Some(c) = space.get() {
                return Ok(c);
            }
            let s = self.cluster_space()?;
            Ok(space.get_or_init(|| s))
        };

        let (masq, masq_nft) = match (&ranges, self.ip_masq) {
            (_, false) => (!masq::tables_in(&chains, name)?.is_empty(), false),
            _ if self.l2_only => (false, false),
            (Some(_), true) if masq::tables_in(&chains, name)?.is_empty() => (true, true),
            (Some(r), true) => {
                let change = !masq::in_sync(&mut nf, &chains, name, r, cluster()?)?;
                (change, change)
            }
            (None, true) => (true, true),
        };

        let (forward, forward_nft) = if !self.forward_rules() {
            let n = forward::needed(&mut nf, name, &chains, None)?;
            (n != Needed::Nothing, false)
        } else if self.l2_only || forward::host_chains(&chains).is_empty() {
            // No host forward chain: nothing to accept in, nothing of ours anywhere.
            (false, false)
        } else if let Some(r) = &ranges {
            let space: Vec<IpNetwork> = cluster()?.iter().chain(r).copied().collect();
            let n = forward::needed(&mut nf, name, &chains, Some(&space))?;
            (n != Needed::Nothing, n == Needed::Write)
        } else {
            let host = !forward::host_chains(&chains).is_empty();
            (grow, host)
        };

        if (masq_nft || forward_nft) && netfilter::find_nft().is_none() {
            return Err(if masq_nft {
                netfilter::nft_missing("ipMasq", "ipMasq")
            } else {
                netfilter::nft_missing(
                    "accepting pod traffic in the host's forward chains",
                    "forwardRules",
                )
            });
        }
        Ok(NodeRules { nf, masq, forward })
    }

    /// At the end of ADD: makes the rules [`Network::preflight_node_rules`] found wrong
    /// right (nothing, not even a request, when it found none), over its socket.
    /// `pod_subnets` (this pod's) are only used for an IPAM that does not declare its ranges.
    pub fn finish_node_rules(&self, rules: NodeRules, pod_subnets: &[IpNetwork]) -> Result<()> {
        let NodeRules {
            mut nf,
            masq,
            forward,
        } = rules;
        if masq {
            self.ensure_masq(&mut nf, pod_subnets)?;
        }
        if forward {
            self.ensure_forward(&mut nf, pod_subnets)?;
        }
        Ok(())
    }
}
