//! Round-robin candidate order over a range set, the same order as the reference host-local so
//! that the two can take turns on one data directory.
//!
//! With a cursor (the last reserved address) inside the set, candidates start right after it,
//! move on to the next range's start after a range's end, wrap from the last range to the first,
//! and end after one full cycle (the cursor itself comes last). Without a usable cursor they start
//! at the first range's start. Excluded addresses (gateway, IPv4 network and broadcast) are
//! skipped.

use super::config::{Range, RangeSet, from_u128, to_u128};
use std::net::IpAddr;

/// Iterator over the allocation candidates of one range set (see the module doc).
#[derive(Debug, Clone)]
pub struct Candidates<'a> {
    set: &'a RangeSet,
    idx: usize,
    cur: Option<u128>,
    start: Option<u128>,
    done: bool,
}

impl<'a> Candidates<'a> {
    /// Candidates of `set` after `cursor` (ignored when not inside the set).
    pub fn new(set: &'a RangeSet, cursor: Option<IpAddr>) -> Self {
        let mut it = Candidates {
            set,
            idx: 0,
            cur: None,
            start: None,
            done: set.ranges.is_empty(),
        };
        if let Some(c) = cursor
            && let Some(idx) = set.ranges.iter().position(|r| r.contains(c))
        {
            it.idx = idx;
            it.cur = Some(to_u128(c));
        }
        it
    }
}

impl<'a> Iterator for Candidates<'a> {
    type Item = (IpAddr, &'a Range);

    fn next(&mut self) -> Option<Self::Item> {
        let ranges = &self.set.ranges;
        loop {
            if self.done {
                return None;
            }
            let cur = match self.cur {
                None => {
                    let s = to_u128(ranges[self.idx].range_start);
                    self.start = Some(s);
                    s
                }
                Some(c) => {
                    let next = if c == to_u128(ranges[self.idx].range_end) {
                        self.idx = (self.idx + 1) % ranges.len();
                        to_u128(ranges[self.idx].range_start)
                    } else {
                        c + 1
                    };
                    match self.start {
                        None => self.start = Some(next),
                        Some(s) if s == next => {
                            self.done = true;
                            return None;
                        }
                        Some(_) => {}
                    }
                    next
                }
            };
            self.cur = Some(cur);
            let range = &ranges[self.idx];
            let ip = from_u128(cur, range.is_ipv4());
            if !range.is_excluded(ip) {
                return Some((ip, range));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::Config;
    use super::*;
    use serde_json::json;

    fn set(ranges: serde_json::Value) -> RangeSet {
        let c = Config::parse("n", "1.0.0", &json!({"ranges": [ranges]}), None).unwrap();
        c.range_sets.into_iter().next().unwrap()
    }

    fn all(set: &RangeSet, cursor: Option<&str>) -> Vec<String> {
        Candidates::new(set, cursor.map(|c| c.parse().unwrap()))
            .map(|(ip, _)| ip.to_string())
            .collect()
    }

    #[test]
    fn from_start_skipping_gateway() {
        let s = set(json!([{"subnet": "10.0.0.0/29"}]));
        assert_eq!(
            all(&s, None),
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
    }

    #[test]
    fn after_cursor_with_wrap_cursor_last() {
        let s = set(json!([{"subnet": "10.0.0.0/29"}]));
        assert_eq!(
            all(&s, Some("10.0.0.4")),
            ["10.0.0.5", "10.0.0.6", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
        );
        assert_eq!(
            all(&s, Some("10.0.0.6")),
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
    }

    #[test]
    fn cursor_outside_set_starts_over() {
        let s = set(json!([{"subnet": "10.0.0.0/29"}]));
        assert_eq!(
            all(&s, Some("10.9.9.9")).first().map(String::as_str),
            Some("10.0.0.2")
        );
        assert_eq!(all(&s, Some("fd00::1")).len(), 5);
    }

    #[test]
    fn multiple_ranges_in_order() {
        let s = set(json!([
            {"subnet": "10.0.0.0/30"},
            {"subnet": "10.0.1.0/24", "rangeStart": "10.0.1.10", "rangeEnd": "10.0.1.11"}
        ]));
        assert_eq!(all(&s, None), ["10.0.0.2", "10.0.1.10", "10.0.1.11"]);
        assert_eq!(
            all(&s, Some("10.0.0.2")),
            ["10.0.1.10", "10.0.1.11", "10.0.0.2"]
        );
        assert_eq!(
            all(&s, Some("10.0.1.11")),
            ["10.0.0.2", "10.0.1.10", "10.0.1.11"]
        );
    }

    #[test]
    fn network_and_broadcast_skipped_when_in_range() {
        let s = set(json!([{"subnet": "10.0.0.0/30", "rangeStart": "10.0.0.0",
                             "rangeEnd": "10.0.0.3", "gateway": "10.0.0.2"}]));
        assert_eq!(all(&s, None), ["10.0.0.1"]);
    }

    #[test]
    fn ipv6_keeps_last_address() {
        let s = set(json!([{"subnet": "fd00::/126"}]));
        assert_eq!(all(&s, None), ["fd00::2", "fd00::3"]);
        assert_eq!(all(&s, Some("fd00::2")), ["fd00::3", "fd00::2"]);
    }

    #[test]
    fn only_gateway_in_range_gives_nothing() {
        let s = set(
            json!([{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.1", "rangeEnd": "10.0.0.1"}]),
        );
        assert!(all(&s, None).is_empty());
        assert!(all(&s, Some("10.0.0.1")).is_empty());
    }
}
