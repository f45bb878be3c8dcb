//! The NMAgent `getinterfaceinfov1` XML the wireserver serves (spec B.5.2), parsed with a
//! streaming reader: no recursion, so deeply nested input cannot exhaust the stack, and unknown
//! elements and attributes are ignored as upstream's `encoding/xml` ignores them.

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use crate::error::{Code, Error, Result};
use crate::ipam::source::{NicInfo, SubnetInfo};

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::new(
        Code::Runtime,
        format!("invalid NMAgent interface XML: {msg}"),
    )
}

fn attr(e: &BytesStart, name: &str) -> Result<Option<String>> {
    for a in e.attributes() {
        let a = a.map_err(bad)?;
        if a.key.as_ref() == name {
            return Ok(Some(
                a.normalized_value(XmlVersion::Implicit1_0)
                    .map_err(bad)?
                    .into_owned(),
            ));
        }
    }
    Ok(None)
}

/// An `IsPrimary` attribute as upstream's `encoding/xml` reads a bool (`strconv.ParseBool` of
/// the trimmed text); anything else makes the whole answer invalid, as it does upstream. This
/// matters: a primary address read as "not primary" would be handed to a pod.
fn go_bool(name: &str, v: &str) -> Result<bool> {
    match v.trim() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => Err(bad(format!("{name}={other:?} is not a boolean"))),
    }
}

/// The `IsPrimary` attribute of `e`, `default` when it is absent.
fn is_primary(e: &BytesStart, default: bool) -> Result<bool> {
    match attr(e, "IsPrimary")? {
        Some(v) => go_bool("IsPrimary", &v),
        None => Ok(default),
    }
}

pub fn parse(xml: &[u8]) -> Result<Vec<NicInfo>> {
    let text = std::str::from_utf8(xml).map_err(|e| bad(format!("not UTF-8: {e}")))?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut nics: Vec<NicInfo> = Vec::new();
    let mut saw_root = false;
    // Where we are: inside <Interfaces>, an <Interface>, an <IPSubnet> (by depth, so an element
    // of the same name nested elsewhere is not mistaken for ours).
    let mut depth = 0usize;
    let mut root_depth = None;
    let mut nic_depth = None;
    let mut subnet_depth = None;
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| bad(format!("at byte {}: {e}", reader.buffer_position())))?;
        let (e, empty) = match ev {
            Event::Eof => break,
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(_) => {
                if subnet_depth == Some(depth) {
                    subnet_depth = None;
                } else if nic_depth == Some(depth) {
                    nic_depth = None;
                } else if root_depth == Some(depth) {
                    root_depth = None;
                }
                depth = depth.saturating_sub(1);
                continue;
            }
            _ => continue,
        };
        depth += 1;
        let name = e.name();
        match name.as_ref() {
            "Interfaces" if depth == 1 => {
                saw_root = true;
                root_depth = Some(depth);
            }
            "Interface" if root_depth.is_some() && depth == 2 => {
                let mac = attr(&e, "MacAddress")?.unwrap_or_default();
                // No IsPrimary attribute: the primary NIC (upstream lowers the priority only
                // for an explicit false).
                let is_primary = is_primary(&e, true)?;
                nics.push(NicInfo {
                    mac,
                    is_primary,
                    subnets: Vec::new(),
                });
                nic_depth = Some(depth);
            }
            "IPSubnet" if nic_depth.is_some() && depth == 3 => {
                let prefix = attr(&e, "Prefix")?.unwrap_or_default();
                if let Some(nic) = nics.last_mut() {
                    nic.subnets.push(SubnetInfo {
                        prefix,
                        addresses: Vec::new(),
                    });
                }
                subnet_depth = Some(depth);
            }
            "IPAddress" if subnet_depth.is_some() && depth == 4 => {
                let addr = attr(&e, "Address")?.unwrap_or_default();
                let primary = is_primary(&e, false)?;
                if let Some(s) = nics.last_mut().and_then(|n| n.subnets.last_mut()) {
                    s.addresses.push((addr, primary));
                }
            }
            _ => {}
        }
        if empty {
            if subnet_depth == Some(depth) {
                subnet_depth = None;
            } else if nic_depth == Some(depth) {
                nic_depth = None;
            } else if root_depth == Some(depth) {
                root_depth = None;
            }
            depth -= 1;
        }
    }
    if !saw_root {
        return Err(bad("no <Interfaces> root element"));
    }
    if depth != 0 {
        return Err(bad("document ends inside an element"));
    }
    Ok(nics)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const SPEC_XML: &str = r#"<Interfaces>
  <Interface MacAddress="000D3A4B1C2D" IsPrimary="true">
    <IPSubnet Prefix="10.224.0.0/16">
      <IPAddress Address="10.224.0.4" IsPrimary="true"/>
      <IPAddress Address="10.224.0.5" IsPrimary="false"/>
      <IPAddress Address="10.224.0.6" IsPrimary="false"/>
    </IPSubnet>
  </Interface>
</Interfaces>"#;

    #[test]
    fn spec_example() {
        let nics = parse(SPEC_XML.as_bytes()).unwrap();
        assert_eq!(nics.len(), 1);
        assert_eq!(nics[0].mac, "000D3A4B1C2D");
        assert!(nics[0].is_primary);
        assert_eq!(nics[0].subnets[0].prefix, "10.224.0.0/16");
        assert_eq!(
            nics[0].subnets[0].addresses,
            vec![
                ("10.224.0.4".to_string(), true),
                ("10.224.0.5".to_string(), false),
                ("10.224.0.6".to_string(), false)
            ]
        );
    }

    #[test]
    fn table() {
        // (xml, ok?, nics, total addresses)
        let deep = format!(
            "<Interfaces>{}{}</Interfaces>",
            "<a>".repeat(100_000),
            "</a>".repeat(100_000)
        );
        let table: Vec<(String, bool, usize, usize)> = vec![
            (SPEC_XML.into(), true, 1, 3),
            ("<?xml version=\"1.0\"?>\n<Interfaces/>".into(), true, 0, 0),
            ("<Interfaces><Interface MacAddress='AA' IsPrimary='false'><IPSubnet Prefix='10.0.0.0/24'><IPAddress Address='10.0.0.9' IsPrimary='false'/></IPSubnet></Interface><Interface MacAddress='BB'/></Interfaces>".into(), true, 2, 1),
            ("<Interfaces><Unknown><Interface MacAddress='AA'/></Unknown></Interfaces>".into(), true, 0, 0),
            ("<Interfaces><Interface MacAddress='AA' Extra='x'><Other/><IPSubnet Prefix='p'><IPAddress Address='a' Weird='1'/></IPSubnet></Interface></Interfaces>".into(), true, 1, 1),
            (deep, true, 0, 0),
            ("".into(), false, 0, 0),
            ("garbage".into(), false, 0, 0),
            ("<html><body>502 Bad Gateway</body></html>".into(), false, 0, 0),
            ("<Interfaces><Interface>".into(), false, 0, 0),
            ("<Interfaces></Interface>".into(), false, 0, 0),
            ("<Interfaces><Interface MacAddress=\"AA></Interfaces>".into(), false, 0, 0),
            ("{\"Interfaces\":[]}".into(), false, 0, 0),
        ];
        for (xml, ok, n, addrs) in table {
            match parse(xml.as_bytes()) {
                Ok(nics) => {
                    assert!(ok, "{:.80} parsed", xml);
                    assert_eq!(nics.len(), n, "{:.80}", xml);
                    let total: usize = nics
                        .iter()
                        .flat_map(|n| &n.subnets)
                        .map(|s| s.addresses.len())
                        .sum();
                    assert_eq!(total, addrs, "{:.80}", xml);
                }
                Err(e) => {
                    assert!(!ok, "{:.80}: {e}", xml);
                    assert!(e.msg().contains("NMAgent"), "{e}");
                }
            }
        }
        assert!(parse(&[0xff, 0xfe, b'<']).is_err());
    }

    #[test]
    fn is_primary_reads_like_go_parse_bool() {
        let doc = |v: &str| {
            format!("<Interfaces><Interface MacAddress='AA'><IPSubnet Prefix='10.0.0.0/24'><IPAddress Address='10.0.0.4' IsPrimary='{v}'/></IPSubnet></Interface></Interfaces>")
        };
        for (v, want) in [
            ("true", Some(true)),
            ("1", Some(true)),
            (" True ", Some(true)),
            ("T", Some(true)),
            ("false", Some(false)),
            ("0", Some(false)),
            ("F", Some(false)),
            ("yes", None),
            ("", None),
            ("tru", None),
        ] {
            match (parse(doc(v).as_bytes()), want) {
                (Ok(nics), Some(w)) => assert_eq!(nics[0].subnets[0].addresses[0].1, w, "{v:?}"),
                (Err(e), None) => assert!(e.msg().contains("not a boolean"), "{e}"),
                (got, want) => panic!("{v:?}: {got:?} vs {want:?}"),
            }
        }
    }
}
