//! Choosing and claiming this node's subnet, in flannel's order: 1) the lease that holds this
//! node's PublicIP (a leased key is adopted when its lease is alive; a key without a lease is a
//! reservation, ours for good); 2) else the subnet of the existing subnet file, when free;
//! 3) else one at random among the free ones. A claim is a create-if-absent, retried with a
//! fresh list when another node got there first; a write whose outcome is unknown is settled
//! by listing again (the key is ours if it carries our PublicIP).

use ipnetwork::IpNetwork;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::config::NetConfig;
use super::record::Record;
use super::subnet::{Pool, Subnets, lease_key, subnets_prefix};
use crate::store::{Kv, Store, StoreError};

/// How many lists a claim makes before it gives up for this round (another node won every
/// race, or writes kept ending ambiguous).
pub const MAX_ATTEMPTS: usize = 32;

/// This node as its lease shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Me {
    /// The public IPv4 address.
    pub ip: Ipv4Addr,
    /// The public IPv6 address, needed on a dual-stack network.
    pub ipv6: Option<Ipv6Addr>,
}

/// The lease value this node publishes on `cfg`'s network (its IPv6 address only on a
/// dual-stack network, as flanneld).
pub fn our_record(cfg: &NetConfig, me: &Me) -> Record {
    let ipv6 = me.ipv6.filter(|_| cfg.v6.is_some());
    Record::ours(me.ip, ipv6, cfg.backend.kind, cfg.backend.vni)
}

/// How the subnet was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// A live lease carrying our PublicIP, adopted (restart with the lease kept).
    Adopted,
    /// A key without a lease carrying our PublicIP.
    Reservation,
    /// The subnet of the existing subnet file.
    Previous,
    /// Chosen at random among the free subnets.
    Random,
}

/// The subnet this node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The full key.
    pub key: String,
    /// Its subnets.
    pub subnets: Subnets,
    /// The store lease the key is bound to; 0 for a reservation (never renewed).
    pub lease: i64,
    /// How it was chosen.
    pub how: How,
}

/// One listed key, read.
pub struct Entry<'a> {
    /// The key as listed.
    pub kv: &'a Kv,
    /// Its subnets.
    pub subnets: Subnets,
    /// Its value, or why it does not parse.
    pub record: Result<Record, String>,
}

/// The listed keys that are flannel lease keys under `prefix` (others are ignored).
pub fn entries<'a>(prefix: &str, kvs: impl IntoIterator<Item = &'a Kv>) -> Vec<Entry<'a>> {
    let p = subnets_prefix(prefix);
    kvs.into_iter()
        .filter_map(|kv| {
            let subnets = Subnets::parse_key_name(kv.key.strip_prefix(&p)?)?;
            Some(Entry {
                kv,
                subnets,
                record: Record::parse(&kv.value),
            })
        })
        .collect()
}

/// Whether `s` is one of the subnets `cfg` hands out (both families as configured).
pub fn fits(cfg: &NetConfig, s: &Subnets) -> bool {
    cfg.v4.holds(IpNetwork::V4(s.v4))
        && match (&cfg.v6, s.v6) {
            (None, None) => true,
            (Some(p), Some(n)) => p.holds(IpNetwork::V6(n)),
            _ => false,
        }
}

/// A free subnet of `pool` (not in `taken`), chosen with `rng`; None when all are taken.
fn random_free(
    pool: &Pool,
    taken: &BTreeSet<IpNetwork>,
    rng: &mut dyn FnMut() -> u64,
) -> Option<IpNetwork> {
    let count = pool.count();
    if count <= 1 << 16 {
        let free: Vec<IpNetwork> = (0..count)
            .map(|i| pool.nth(i))
            .filter(|n| !taken.contains(n))
            .collect();
        let len = free.len() as u64;
        return (len > 0).then(|| free[(rng() % len) as usize]);
    }
    // A huge pool (IPv6, or a /8 of /30s): a few random draws find a free one.
    let draw = |r: u64| pool.nth(u128::from(r) % count);
    (0..1000).map(|_| draw(rng())).find(|n| !taken.contains(n))
}

/// Claims this node's subnet under `prefix` (see the module doc); `previous` is the subnet
/// file's. Every lease granted has `ttl`. The error says why, for a person; the caller retries
/// later.
pub fn claim(
    store: &mut dyn Store,
    prefix: &str,
    cfg: &NetConfig,
    me: &Me,
    previous: Option<Subnets>,
    ttl: Duration,
    rng: &mut dyn FnMut() -> u64,
) -> Result<Claimed, String> {
    if cfg.v6.is_some() && me.ipv6.is_none() {
        return Err(
            "the network has EnableIPv6 but this node has no global IPv6 address to \
                    publish: give the interface one, or use --iface"
                .into(),
        );
    }
    let value = our_record(cfg, me).to_bytes();
    let failed = |what: &str, e: StoreError| format!("cannot {what}: {e}");
    let mut granted: Option<i64> = None;
    for _ in 0..MAX_ATTEMPTS {
        let (kvs, _) = store
            .list(&subnets_prefix(prefix))
            .map_err(|e| failed("list the subnet leases", e))?;
        let all = entries(prefix, &kvs);
        // 1) ours: a reservation first, else a live lease.
        let mut mine: Vec<&Entry> = all
            .iter()
            .filter(|e| {
                e.record.as_ref().is_ok_and(|r| r.public_ip == me.ip) && fits(cfg, &e.subnets)
            })
            .collect();
        mine.sort_by_key(|e| e.kv.lease != 0);
        if let Some(e) = mine.first() {
            let (lease, how) = if e.kv.lease == 0 {
                (0, How::Reservation)
            } else {
                match store.keepalive(e.kv.lease) {
                    Ok(Some(_)) => (e.kv.lease, How::Adopted),
                    // Its lease just ran out: the key is going; list again.
                    Ok(None) => continue,
                    Err(err) => return Err(failed("renew the lease of our subnet", err)),
                }
            };
            if e.kv.value != value {
                match store.put(&e.kv.key, &value, lease) {
                    Ok(()) => {}
                    Err(StoreError::Ambiguous(_)) => continue,
                    Err(err) => return Err(failed("update our lease's value", err)),
                }
            }
            return Ok(Claimed {
                key: e.kv.key.clone(),
                subnets: e.subnets,
                lease,
                how,
            });
        }
        let taken: BTreeSet<IpNetwork> = all
            .iter()
            .flat_map(|e| {
                std::iter::once(IpNetwork::V4(e.subnets.v4)).chain(e.subnets.v6.map(IpNetwork::V6))
            })
            .collect();
        // 2) the subnet file's, when it fits and is free.
        let prev = previous.filter(|p| {
            fits(cfg, p)
                && !taken.contains(&IpNetwork::V4(p.v4))
                && p.v6.is_none_or(|n| !taken.contains(&IpNetwork::V6(n)))
        });
        let (subnets, how) = match prev {
            Some(p) => (p, How::Previous),
            None => {
                // 3) at random among the free ones.
                let no_free = |pool: &Pool| {
                    format!(
                        "no free subnet left in {} (/{} from {} to {}, {} leases held): free one \
                         or widen the network",
                        pool.network,
                        pool.subnet_len,
                        pool.min,
                        pool.max,
                        all.len()
                    )
                };
                let v4 = match random_free(&cfg.v4, &taken, rng) {
                    Some(IpNetwork::V4(n)) => n,
                    _ => return Err(no_free(&cfg.v4)),
                };
                let v6 = match &cfg.v6 {
                    None => None,
                    Some(p) => match random_free(p, &taken, rng) {
                        Some(IpNetwork::V6(n)) => Some(n),
                        _ => return Err(no_free(p)),
                    },
                };
                (Subnets { v4, v6 }, How::Random)
            }
        };
        let lease = match granted {
            Some(l) => l,
            None => {
                let l = store.grant(ttl).map_err(|e| failed("grant a lease", e))?;
                granted = Some(l);
                l
            }
        };
        let key = lease_key(prefix, &subnets);
        match store.create(&key, &value, lease) {
            Ok(true) => {
                return Ok(Claimed {
                    key,
                    subnets,
                    lease,
                    how,
                });
            }
            // Taken meanwhile, or unknown: the next list tells (ours if it carries our IP).
            Ok(false) | Err(StoreError::Ambiguous(_)) => {}
            Err(StoreError::Refused(m)) if m.contains("lease") => granted = None,
            Err(e) => return Err(failed(&format!("create {key}"), e)),
        }
    }
    Err(format!(
        "no subnet claimed after {MAX_ATTEMPTS} attempts (other nodes won every race): trying \
         again later"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::memstore::{MemStore, Op};

    const P: &str = "/coreos.com/network";

    fn cfg() -> NetConfig {
        NetConfig::parse(br#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap()
    }

    fn me(last: u8) -> Me {
        Me {
            ip: Ipv4Addr::new(192, 168, 0, last),
            ipv6: None,
        }
    }

    fn seq(start: u64) -> impl FnMut() -> u64 {
        let mut n = start;
        move || {
            n = n
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            n >> 33
        }
    }

    fn sub(s: &str) -> Subnets {
        Subnets {
            v4: s.parse().unwrap(),
            v6: None,
        }
    }

    fn value(last: u8) -> Vec<u8> {
        Record::ours(me(last).ip, None, cfg().backend.kind, 1).to_bytes()
    }

    const TTL: Duration = Duration::from_secs(10);

    #[test]
    fn a_live_lease_with_our_ip_is_adopted_before_the_subnet_file_and_random() {
        let m = MemStore::new();
        let mut s = m.client();
        let lease = s.grant(TTL).unwrap();
        m.put_raw(&format!("{P}/subnets/10.244.9.0-24"), &value(1), lease);
        let c = claim(
            &mut *s,
            P,
            &cfg(),
            &me(1),
            Some(sub("10.244.4.0/24")),
            TTL,
            &mut seq(1),
        )
        .unwrap();
        assert_eq!(c.how, How::Adopted);
        assert_eq!(c.subnets, sub("10.244.9.0/24"));
        assert_eq!(c.lease, lease);
        assert_eq!(m.requests(Op::Keepalive), 1);
        assert_eq!(m.requests(Op::Grant), 1, "no new lease granted");
    }

    #[test]
    fn the_subnet_file_subnet_is_reused_when_free_else_a_random_free_one() {
        let m = MemStore::new();
        let mut s = m.client();
        let c = claim(
            &mut *s,
            P,
            &cfg(),
            &me(1),
            Some(sub("10.244.4.0/24")),
            TTL,
            &mut seq(1),
        )
        .unwrap();
        assert_eq!((c.how, c.subnets), (How::Previous, sub("10.244.4.0/24")));
        assert_eq!(c.key, format!("{P}/subnets/10.244.4.0-24"));
        let kv = &m.snapshot()[&c.key];
        assert_eq!(kv.value, value(1));
        assert_eq!(kv.lease, c.lease);
        // Node 2 had the same subnet file: taken, so a random free one, never the first.
        let c2 = claim(
            &mut *s,
            P,
            &cfg(),
            &me(2),
            Some(sub("10.244.4.0/24")),
            TTL,
            &mut seq(2),
        )
        .unwrap();
        assert_eq!(c2.how, How::Random);
        assert_ne!(c2.subnets, c.subnets);
        assert!(cfg().v4.holds(IpNetwork::V4(c2.subnets.v4)));
        // A subnet file from another network is not reused.
        let c3 = claim(
            &mut *s,
            P,
            &cfg(),
            &me(3),
            Some(sub("10.9.4.0/24")),
            TTL,
            &mut seq(3),
        )
        .unwrap();
        assert_eq!(c3.how, How::Random);
    }

    #[test]
    fn a_reservation_with_our_ip_is_ours_and_never_bound_to_a_lease() {
        let m = MemStore::new();
        let key = format!("{P}/subnets/10.244.77.0-24");
        m.put_raw(&key, br#"{"PublicIP":"192.168.0.1"}"#, 0);
        let mut s = m.client();
        let c = claim(
            &mut *s,
            P,
            &cfg(),
            &me(1),
            Some(sub("10.244.4.0/24")),
            TTL,
            &mut seq(1),
        )
        .unwrap();
        assert_eq!(
            (c.how, c.lease, c.key.as_str()),
            (How::Reservation, 0, key.as_str())
        );
        let kv = &m.snapshot()[&key];
        assert_eq!(
            (kv.lease, &kv.value),
            (0, &value(1)),
            "value updated, still no lease"
        );
        assert_eq!(m.requests(Op::Grant), 0);
        // Another node treats it as taken.
        let c2 = claim(
            &mut *s,
            P,
            &cfg(),
            &me(2),
            Some(sub("10.244.77.0/24")),
            TTL,
            &mut seq(2),
        )
        .unwrap();
        assert_ne!(c2.subnets, sub("10.244.77.0/24"));
    }

    #[test]
    fn a_conflicting_create_is_retried_with_a_fresh_list() {
        let m = MemStore::new();
        let mut s = m.client();
        // Another node takes the previous subnet between our list and our create.
        m.race_next_create(&format!("{P}/subnets/10.244.4.0-24"), &value(9));
        let c = claim(
            &mut *s,
            P,
            &cfg(),
            &me(1),
            Some(sub("10.244.4.0/24")),
            TTL,
            &mut seq(5),
        )
        .unwrap();
        assert_eq!(c.how, How::Random);
        assert_ne!(c.subnets, sub("10.244.4.0/24"));
        assert_eq!(m.requests(Op::List), 2);
        assert_eq!(
            m.requests(Op::Grant),
            1,
            "the lease granted is reused for the retry"
        );
        assert_eq!(
            m.snapshot()[&format!("{P}/subnets/10.244.4.0-24")].value,
            value(9)
        );
        assert_eq!(m.snapshot()[&c.key].value, value(1));
    }

    #[test]
    fn an_ambiguous_create_that_was_applied_is_recognised_as_ours_by_listing() {
        let m = MemStore::new();
        let mut s = m.client();
        m.fail_next(Op::Create, StoreError::Ambiguous("timed out".into()), true);
        let c = claim(
            &mut *s,
            P,
            &cfg(),
            &me(1),
            Some(sub("10.244.4.0/24")),
            TTL,
            &mut seq(1),
        )
        .unwrap();
        assert_eq!(c.subnets, sub("10.244.4.0/24"));
        assert_eq!(c.how, How::Adopted);
        assert_eq!(m.snapshot().len(), 1, "one key, not two");
        assert_eq!(m.requests(Op::Create), 1);
    }

    #[test]
    fn a_full_network_is_a_clear_error() {
        let m = MemStore::new();
        let cfg = NetConfig::parse(br#"{"Network":"10.244.0.0/22","Backend":{"Type":"host-gw"}}"#)
            .unwrap();
        for i in 1..=3 {
            m.put_raw(&format!("{P}/subnets/10.244.{i}.0-24"), &value(100 + i), 0);
        }
        let e = claim(&mut *m.client(), P, &cfg, &me(1), None, TTL, &mut seq(1)).unwrap_err();
        assert!(e.contains("no free subnet left in 10.244.0.0/22"), "{e}");
        m.fail_next(Op::List, StoreError::Unavailable("no leader".into()), false);
        let e = claim(&mut *m.client(), P, &cfg, &me(1), None, TTL, &mut seq(1)).unwrap_err();
        assert_eq!(
            e,
            "cannot list the subnet leases: store unavailable: no leader"
        );
    }

    #[test]
    fn fifty_claimers_racing_in_one_16_end_with_fifty_distinct_subnets() {
        let m = MemStore::new();
        let threads: Vec<_> = (1..=50u8)
            .map(|i| {
                let m = m.clone();
                std::thread::spawn(move || {
                    // Every node starts from the same stale subnet file: maximal contention.
                    claim(
                        &mut *m.client(),
                        P,
                        &cfg(),
                        &me(i),
                        Some(sub("10.244.4.0/24")),
                        TTL,
                        &mut seq(u64::from(i)),
                    )
                    .unwrap()
                })
            })
            .collect();
        let claims: Vec<Claimed> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let subnets: BTreeSet<Subnets> = claims.iter().map(|c| c.subnets).collect();
        assert_eq!(subnets.len(), 50);
        let snap = m.snapshot();
        assert_eq!(snap.len(), 50);
        let ips: BTreeSet<Ipv4Addr> = snap
            .values()
            .map(|kv| Record::parse(&kv.value).unwrap().public_ip)
            .collect();
        assert_eq!(ips.len(), 50, "each key carries its own node's IP");
    }

    #[test]
    fn dual_stack_claims_both_families_in_one_key() {
        let cfg = NetConfig::parse(
            br#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10::/56","Backend":{"Type":"vxlan"}}"#,
        )
        .unwrap();
        let m = MemStore::new();
        let me6 = Me {
            ip: "192.168.0.1".parse().unwrap(),
            ipv6: Some("fd00::1".parse().unwrap()),
        };
        let c = claim(&mut *m.client(), P, &cfg, &me6, None, TTL, &mut seq(1)).unwrap();
        let v6 = c.subnets.v6.unwrap();
        assert!(
            c.key.ends_with(&format!("&{}-64", v6.network())),
            "{}",
            c.key
        );
        let e = claim(&mut *m.client(), P, &cfg, &me(2), None, TTL, &mut seq(1)).unwrap_err();
        assert!(e.contains("no global IPv6 address"), "{e}");
        // On an IPv4 network a node's IPv6 address is not published.
        let m = MemStore::new();
        let c = claim(
            &mut *m.client(),
            P,
            &super::tests::cfg(),
            &me6,
            None,
            TTL,
            &mut seq(1),
        )
        .unwrap();
        let text = String::from_utf8(m.snapshot()[&c.key].value.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"PublicIP":"192.168.0.1","PublicIPv6":null,"#),
            "{text}"
        );
        assert!(!text.contains("BackendV6Data"), "{text}");
    }
}
