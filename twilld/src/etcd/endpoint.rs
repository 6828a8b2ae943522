//! One etcd client URL (`http://10.0.0.5:2379`, `https://[fd00::5]:2379`, `https://etcd-1`).

use std::net::IpAddr;

/// A parsed client URL: scheme, host (brackets removed) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The URL as configured, for messages.
    pub url: String,
    /// True for `https`.
    pub https: bool,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port (2379 when the URL names none).
    pub port: u16,
}

impl Endpoint {
    /// Parses `scheme://host[:port][/]`; the error says what is wrong with the URL.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let bad = |why: &str| format!("etcd endpoint {url:?}: {why}");
        let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(bad("must start with http:// or https://"));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@']) || authority.is_empty() {
            return Err(bad(
                "must be scheme://host:port with no path, query or user",
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 address needs its closing ']'"))?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad(&format!("{h:?} is not an IPv6 address")));
            }
            match after {
                "" => (h, None),
                p => (
                    h,
                    Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
                ),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
        {
            return Err(bad(&format!("{host:?} is not a host name or IP address")));
        }
        let port = match port {
            None => 2379,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad(&format!("port {p:?} is not a number 1-65535")))?,
        };
        Ok(Endpoint {
            url: url.to_string(),
            https,
            host: host.to_string(),
            port,
        })
    }

    /// The `Host` header value (`host:port`, IPv6 in brackets).
    pub fn authority(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{}]:{}", self.host, self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_scheme_host_and_port() {
        let e = Endpoint::parse("http://10.0.0.5:2379").unwrap();
        assert_eq!(
            (e.https, e.host.as_str(), e.port),
            (false, "10.0.0.5", 2379)
        );
        let e = Endpoint::parse("https://[fd00::5]:4001/").unwrap();
        assert_eq!((e.https, e.host.as_str(), e.port), (true, "fd00::5", 4001));
        assert_eq!(e.authority(), "[fd00::5]:4001");
        let e = Endpoint::parse("https://etcd-1.example").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("etcd-1.example", 2379));
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, says) in [
            ("10.0.0.5:2379", "must start with http"),
            ("http://10.0.0.5:2379/v3", "no path"),
            ("http://10.0.0.5:99999", "port \"99999\""),
            ("http://", "no path"),
            ("http://[fd00::5:2379", "closing ']'"),
            ("http://a b:1", "not a host name"),
        ] {
            let e = Endpoint::parse(url).unwrap_err();
            assert!(e.contains(says) && e.contains(url), "{url}: {e}");
        }
    }
}
