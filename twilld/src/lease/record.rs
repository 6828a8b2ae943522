//! The value of a lease key, byte for byte as flanneld writes it:
//! `{"PublicIP":"10.0.0.5","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}`
//! (`PublicIPv6` is always written, null on an IPv4 network; `BackendData` only by backends
//! that have data; `BackendV6Data` on a dual-stack vxlan network).

use serde::Serialize;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use twill::kernel::netlink::MacAddr;

use super::config::{BackendKind, field};

/// A lease's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `PublicIP`: the node's IPv4 address.
    pub public_ip: Ipv4Addr,
    /// `PublicIPv6`: the node's IPv6 address (dual stack).
    pub public_ipv6: Option<Ipv6Addr>,
    /// `BackendType`.
    pub backend_type: String,
    /// `BackendData.VtepMAC` (vxlan).
    pub vtep_mac: Option<MacAddr>,
    /// `BackendV6Data.VtepMAC` (dual-stack vxlan).
    pub vtep_mac_v6: Option<MacAddr>,
    /// `BackendData.VNI` (vxlan).
    pub vni: Option<u32>,
}

#[derive(Serialize)]
struct VxlanData {
    #[serde(rename = "VNI")]
    vni: u32,
    #[serde(rename = "VtepMAC")]
    vtep_mac: String,
}

#[derive(Serialize)]
struct Wire {
    #[serde(rename = "PublicIP")]
    public_ip: String,
    #[serde(rename = "PublicIPv6")]
    public_ipv6: Option<String>,
    #[serde(rename = "BackendType", skip_serializing_if = "String::is_empty")]
    backend_type: String,
    #[serde(rename = "BackendData", skip_serializing_if = "Option::is_none")]
    backend_data: Option<VxlanData>,
    #[serde(rename = "BackendV6Data", skip_serializing_if = "Option::is_none")]
    backend_v6_data: Option<VxlanData>,
}

impl Record {
    /// The record this node publishes: its addresses, the backend, and for vxlan the VNI and
    /// the VTEP MAC twill's vxlan device gets on that VNI.
    pub fn ours(
        public_ip: Ipv4Addr,
        public_ipv6: Option<Ipv6Addr>,
        kind: BackendKind,
        vni: u32,
    ) -> Record {
        let vxlan = kind == BackendKind::Vxlan;
        Record {
            public_ip,
            public_ipv6,
            backend_type: kind.name().into(),
            vtep_mac: vxlan.then(|| twill::node::vxlan::vtep_mac(vni, IpAddr::V4(public_ip))),
            vtep_mac_v6: public_ipv6
                .filter(|_| vxlan)
                .map(|ip| twill::node::vxlan::vtep_mac(vni, IpAddr::V6(ip))),
            vni: vxlan.then_some(vni),
        }
    }

    /// The JSON value as flanneld writes it (field order and nulls included).
    pub fn to_bytes(&self) -> Vec<u8> {
        let data = |mac: Option<MacAddr>| {
            mac.map(|m| VxlanData {
                vni: self.vni.unwrap_or(twill::node::vxlan::BRIDGE_MODE_VNI),
                vtep_mac: m.to_string(),
            })
        };
        let wire = Wire {
            public_ip: self.public_ip.to_string(),
            public_ipv6: self.public_ipv6.map(|a| a.to_string()),
            backend_type: self.backend_type.clone(),
            backend_data: data(self.vtep_mac),
            backend_v6_data: data(self.vtep_mac_v6),
        };
        // A struct of strings and numbers always serializes.
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// Parses a lease value written by flanneld or twilld; the error says what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<Record, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let obj = v.as_object().ok_or("not a JSON object")?;
        let ip = match field(obj, "PublicIP") {
            Some(Value::String(s)) => s
                .parse::<Ipv4Addr>()
                .map_err(|_| format!("\"PublicIP\" {s:?} is not an IPv4 address"))?,
            Some(other) => return Err(format!("\"PublicIP\" is {other}, not a string")),
            None => return Err("\"PublicIP\" is missing".into()),
        };
        let ip6 = match field(obj, "PublicIPv6") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(
                s.parse::<Ipv6Addr>()
                    .map_err(|_| format!("\"PublicIPv6\" {s:?} is not an IPv6 address"))?,
            ),
            Some(other) => return Err(format!("\"PublicIPv6\" is {other}, not a string")),
        };
        let backend_type = match field(obj, "BackendType") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(format!("\"BackendType\" is {other}, not a string")),
        };
        let (vtep_mac, vni) = vxlan_data(obj, "BackendData")?;
        let (vtep_mac_v6, _) = vxlan_data(obj, "BackendV6Data")?;
        Ok(Record {
            public_ip: ip,
            public_ipv6: ip6,
            backend_type,
            vtep_mac,
            vtep_mac_v6,
            vni,
        })
    }
}

/// `VtepMAC` and `VNI` of a backend data object (absent or null: none).
fn vxlan_data(
    obj: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<(Option<MacAddr>, Option<u32>), String> {
    let data = match field(obj, key) {
        None | Some(Value::Null) => return Ok((None, None)),
        Some(Value::Object(d)) => d,
        // Other backends may write anything here; only vxlan's object is read.
        Some(_) => return Ok((None, None)),
    };
    let mac = match field(data, "VtepMAC") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            s.parse::<MacAddr>()
                .map_err(|e| format!("\"{key}\".\"VtepMAC\": {e}"))?,
        ),
        Some(other) => return Err(format!("\"{key}\".\"VtepMAC\" is {other}, not a string")),
    };
    let vni = field(data, "VNI")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok());
    Ok((mac, vni))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_flanneld_bytes_and_round_trip() {
        let mac = twill::node::vxlan::vtep_mac(1, "10.0.0.5".parse().unwrap());
        let r = Record::ours("10.0.0.5".parse().unwrap(), None, BackendKind::Vxlan, 1);
        assert_eq!(r.vtep_mac, Some(mac));
        assert_eq!(
            String::from_utf8(r.to_bytes()).unwrap(),
            format!(
                r#"{{"PublicIP":"10.0.0.5","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#
            )
        );
        assert_eq!(Record::parse(&r.to_bytes()).unwrap(), r);
        let h = Record::ours("10.0.0.6".parse().unwrap(), None, BackendKind::HostGw, 1);
        assert_eq!(
            h.to_bytes(),
            br#"{"PublicIP":"10.0.0.6","PublicIPv6":null,"BackendType":"host-gw"}"#
        );
        assert_eq!(Record::parse(&h.to_bytes()).unwrap(), h);
        let d = Record::ours(
            "10.0.0.7".parse().unwrap(),
            Some("fd00::7".parse().unwrap()),
            BackendKind::Vxlan,
            3,
        );
        let text = String::from_utf8(d.to_bytes()).unwrap();
        assert!(
            text.starts_with(r#"{"PublicIP":"10.0.0.7","PublicIPv6":"fd00::7","BackendType":"vxlan","BackendData":{"VNI":3,"VtepMAC":"#),
            "{text}"
        );
        assert!(
            text.contains(r#""BackendV6Data":{"VNI":3,"VtepMAC":""#),
            "{text}"
        );
        assert_eq!(Record::parse(&d.to_bytes()).unwrap(), d);
    }

    #[test]
    fn a_lease_written_by_flanneld_is_read_with_its_vtep_mac() {
        let r = Record::parse(
            br#"{"PublicIP":"192.168.1.10","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"d6:1f:5e:3c:aa:01"}}"#,
        )
        .unwrap();
        assert_eq!(r.public_ip.to_string(), "192.168.1.10");
        assert_eq!(r.vtep_mac.unwrap().to_string(), "d6:1f:5e:3c:aa:01");
        assert_eq!(r.vni, Some(1));
        for (bad, says) in [
            (&b"{"[..], "not JSON"),
            (b"{}", "\"PublicIP\" is missing"),
            (br#"{"PublicIP":"x"}"#, "not an IPv4 address"),
            (
                br#"{"PublicIP":"10.0.0.1","BackendData":{"VtepMAC":"zz"}}"#,
                "VtepMAC",
            ),
        ] {
            let e = Record::parse(bad).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}
