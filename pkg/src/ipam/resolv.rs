//! resolv.conf parsing into the result's DNS settings (`ipam.resolvConf` of host-local).

use crate::cni::types::Dns;
use crate::error::{Error, Result};
use std::path::Path;

/// Reads the resolv.conf at `path`: `nameserver` lines add a server, `domain` sets the domain
/// (last one wins), `search` and `options` lines add their words. Comments (`#`, `;`), blank
/// lines and lines without a value are skipped. An unreadable file is code 7 naming the path.
pub fn read_resolv_conf(path: &Path) -> Result<Dns> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::invalid_config(format!("ipam.resolvConf: cannot read {}", path.display()))
            .with_details(e)
    })?;
    Ok(parse_resolv_conf(&text))
}

/// Parses resolv.conf text (see [`read_resolv_conf`]).
pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 2 {
            continue;
        }
        let words = fields[1..].iter().map(|s| s.to_string());
        match fields[0] {
            "nameserver" => dns.nameservers.push(fields[1].to_string()),
            "domain" => dns.domain = Some(fields[1].to_string()),
            "search" => dns.search.extend(words),
            "options" => dns.options.extend(words),
            _ => {}
        }
    }
    dns
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::code;

    #[test]
    fn parses_all_kinds_of_lines() {
        let dns = parse_resolv_conf(
            "# comment\n; other comment\n\nnameserver 10.0.0.10\nnameserver  fd00::10 \n\
             domain a.example\ndomain b.example\nsearch x.example y.example\nsearch z\n\
             options ndots:5 edns0\nsortlist 1.2.3.4\nnameserver\n",
        );
        assert_eq!(dns.nameservers, ["10.0.0.10", "fd00::10"]);
        assert_eq!(dns.domain.as_deref(), Some("b.example"));
        assert_eq!(dns.search, ["x.example", "y.example", "z"]);
        assert_eq!(dns.options, ["ndots:5", "edns0"]);
    }

    #[test]
    fn empty_file_is_empty_dns() {
        assert!(parse_resolv_conf("").is_empty());
    }

    #[test]
    fn missing_file_is_code_7() {
        let e = read_resolv_conf(Path::new("/nonexistent/twill/resolv.conf")).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.contains("/nonexistent/twill/resolv.conf"));
    }

    #[test]
    fn reads_a_real_file() {
        let p = std::env::temp_dir().join(format!("twill-resolv-{}", std::process::id()));
        std::fs::write(&p, "nameserver 192.0.2.53\nsearch svc.local\n").unwrap();
        let dns = read_resolv_conf(&p);
        std::fs::remove_file(&p).unwrap();
        let dns = dns.unwrap();
        assert_eq!(dns.nameservers, ["192.0.2.53"]);
        assert_eq!(dns.search, ["svc.local"]);
    }
}
