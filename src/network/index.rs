//! A byte index of `azure-vnet.json` as we last wrote it, so an ADD can add its endpoint
//! without reading, validating and re-serializing every other endpoint in the file.
//!
//! Why: with 250 pods the file is ~340 KB, and parsing it in a fresh process costs ~0.6 ms per
//! ADD, growing with every pod on the node. The index (a small side file) says where the
//! `TimeStamp` value and each network's `Endpoints` object are, and which file it describes by
//! identity (device, inode, size, mtime, ctime). Writers only ever replace the state file, so
//! when the file still has that identity it is exactly the text we wrote: a new record can be
//! spliced in at the recorded place. Anything else (a file written by upstream or edited, a new
//! network or subnet, a crash between writing the file and the index) falls back to the full
//! path: parse, change, re-serialize, and write a fresh index. The offsets come from the
//! serializer itself (a formatter that records positions), not from searching the text.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::error::{Code, Error, Result};
use crate::network::state::NetworkFile;
use crate::store::Stamp;

/// Where things are in the file, for one file identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub stamp: Stamp,
    /// The `Version` value in the file (a different plugin version rewrites it fully).
    pub version: String,
    /// Byte range of the `TimeStamp` string's content (inside the quotes).
    pub timestamp: (usize, usize),
    pub networks: BTreeMap<String, NetIndex>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetIndex {
    /// The external interface (master) the network lives under.
    pub ext: String,
    /// Subnets recorded both on the external interface and on the network: an endpoint in
    /// another subnet needs those records changed, so it takes the full path.
    pub subnets: Vec<String>,
    /// Offsets of the `{` and the matching `}` of the network's `Endpoints` object.
    pub open: usize,
    pub close: usize,
}

const ENDPOINTS_PATH: [&str; 6] = [
    "Network",
    "ExternalInterfaces",
    "*",
    "Networks",
    "*",
    "Endpoints",
];

/// io::Write into a Vec whose length the formatter can see.
struct Sink {
    out: Vec<u8>,
    len: Rc<Cell<usize>>,
}

impl io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(buf);
        self.len.set(self.out.len());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Go's `MarshalIndent(.., "", "\t")` layout (serde_json's pretty formatter), recording where
/// the `TimeStamp` value and the `Endpoints` objects land.
struct Recorder {
    inner: crate::encoding::GoFormatter,
    len: Rc<Cell<usize>>,
    /// One entry per open object/array: the key whose value is being written (objects).
    path: Vec<Option<String>>,
    key: Option<String>,
    timestamp_start: Option<usize>,
    endpoints_open: Vec<(usize, usize)>,
    /// What was found, shared with the caller (the serializer owns the formatter).
    found: Rc<RefCell<Found>>,
}

#[derive(Default)]
struct Found {
    timestamp: Option<(usize, usize)>,
    endpoints: Vec<(String, String, usize, usize)>,
}

impl Recorder {
    fn at(&self, want: &[&str]) -> Option<(String, String)> {
        if self.path.len() != want.len() {
            return None;
        }
        let mut ext = String::new();
        let mut net = String::new();
        for (i, (have, want)) in self.path.iter().zip(want).enumerate() {
            let have = have.as_deref()?;
            if *want == "*" {
                if i == 2 {
                    ext = have.to_string();
                } else {
                    net = have.to_string();
                }
            } else if have != *want {
                return None;
            }
        }
        Some((ext, net))
    }
}

impl serde_json::ser::Formatter for Recorder {
    fn begin_string<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.inner.begin_string(w)?;
        if self.key.is_none()
            && self.path.len() == 2
            && self.at(&["Network", "TimeStamp"]).is_some()
        {
            self.timestamp_start = Some(self.len.get());
        }
        Ok(())
    }
    fn end_string<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        if let Some(start) = self.timestamp_start.take() {
            self.found.borrow_mut().timestamp = Some((start, self.len.get()));
        }
        self.inner.end_string(w)
    }
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        s: &str,
    ) -> io::Result<()> {
        if let Some(k) = self.key.as_mut() {
            k.push_str(s);
        }
        self.inner.write_string_fragment(w, s)
    }
    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        e: serde_json::ser::CharEscape,
    ) -> io::Result<()> {
        if let Some(k) = self.key.as_mut() {
            // A key with escapes never matches the names we look for.
            k.push('\u{0}');
        }
        self.inner.write_char_escape(w, e)
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.inner.begin_object(w)?;
        let pos = self.len.get() - 1;
        if self.at(&ENDPOINTS_PATH).is_some() {
            self.endpoints_open.push((self.path.len(), pos));
        }
        self.path.push(None);
        Ok(())
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.path.pop();
        self.inner.end_object(w)?;
        if let Some(&(depth, open)) = self.endpoints_open.last() {
            if depth == self.path.len() {
                self.endpoints_open.pop();
                if let Some((ext, net)) = self.at(&ENDPOINTS_PATH) {
                    let close = self.len.get() - 1;
                    self.found
                        .borrow_mut()
                        .endpoints
                        .push((ext, net, open, close));
                }
            }
        }
        Ok(())
    }
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.path.push(None);
        self.inner.begin_array(w)
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.path.pop();
        self.inner.end_array(w)
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.inner.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.inner.end_array_value(w)
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.key = Some(String::new());
        self.inner.begin_object_key(w, first)
    }
    fn end_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        let key = self.key.take();
        if let Some(top) = self.path.last_mut() {
            *top = key;
        }
        self.inner.end_object_key(w)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.inner.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.inner.end_object_value(w)
    }
}

/// Serialize `file` as Go's `MarshalIndent` would (as `store::to_go_json` does), and return
/// where its pieces landed. `stamp` is filled in by the caller once the file is written.
pub fn serialize(file: &NetworkFile, capacity: usize) -> Result<(Vec<u8>, Index)> {
    let len = Rc::new(Cell::new(0));
    let mut sink = Sink {
        out: Vec::with_capacity(capacity),
        len: Rc::clone(&len),
    };
    let found = Rc::new(RefCell::new(Found::default()));
    let rec = Recorder {
        inner: crate::encoding::GoFormatter::new(),
        len,
        path: Vec::new(),
        key: None,
        timestamp_start: None,
        endpoints_open: Vec::new(),
        found: Rc::clone(&found),
    };
    {
        let mut ser = serde_json::Serializer::with_formatter(&mut sink, rec);
        serde::Serialize::serialize(file, &mut ser)
            .map_err(|e| Error::new(Code::Internal, format!("serialize state: {e}")))?;
    }
    let found = found.take();
    let mut networks = BTreeMap::new();
    for (ext_name, net, open, close) in found.endpoints {
        let subnets = file
            .network
            .as_ref()
            .and_then(|nm| nm.external_interfaces.get(&ext_name))
            .map(|ext| {
                let on_ext = ext.subnets.clone().unwrap_or_default();
                let on_net: Vec<String> = ext
                    .networks
                    .get(&net)
                    .and_then(|n| n.subnets.as_ref())
                    .map(|s| {
                        s.iter()
                            .filter_map(|s| s.prefix.to_network())
                            .map(|p| p.to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                on_ext.into_iter().filter(|s| on_net.contains(s)).collect()
            })
            .unwrap_or_default();
        networks.insert(
            net,
            NetIndex {
                ext: ext_name,
                subnets,
                open,
                close,
            },
        );
    }
    let index = Index {
        stamp: Stamp::default(),
        version: file
            .network
            .as_ref()
            .map(|n| n.version.clone())
            .unwrap_or_default(),
        timestamp: found.timestamp.unwrap_or((0, 0)),
        networks,
    };
    Ok((sink.out, index))
}

const T6: &str = "\t\t\t\t\t\t";
const T7: &str = "\t\t\t\t\t\t\t";

/// Whether network `net`'s endpoints hold key `key` (the text is ours: every key line is
/// `\n` + seven tabs + `"key": `).
pub fn has_key(bytes: &[u8], ix: &NetIndex, key: &str) -> bool {
    let needle = format!("\n{T7}\"{key}\": ");
    bytes
        .get(ix.open..=ix.close)
        .and_then(|b| std::str::from_utf8(b).ok())
        .is_some_and(|s| s.contains(&needle))
}

/// The file with endpoint `key` (its record text `record`, laid out for its depth) added to
/// network `net` and the timestamp replaced, and the index of the result (stamp still to be
/// filled in). `None` when the text is not what the index says (then the caller takes the full
/// path).
pub fn splice(
    bytes: &[u8],
    index: &Index,
    net: &str,
    key: &str,
    record: &str,
    timestamp: &str,
) -> Option<(Vec<u8>, Index)> {
    let (parts, next) = splice_parts(bytes, index, net, key, record, timestamp)?;
    Some((parts.concat(), next))
}

/// `splice` as the pieces of the new text, in order, so they can be written without first
/// copying the whole file into one buffer.
pub fn splice_parts<'a>(
    bytes: &'a [u8],
    index: &Index,
    net: &str,
    key: &str,
    record: &str,
    timestamp: &'a str,
) -> Option<([Cow<'a, [u8]>; 5], Index)> {
    let ix = index.networks.get(net)?;
    let (ts0, ts1) = index.timestamp;
    let empty = bytes.get(ix.open..=ix.close)? == b"{}";
    // Where the new text goes, what it replaces, and the new text.
    let (at, removed, insert) = if empty {
        (ix.open, 2, format!("{{\n{T7}\"{key}\": {record}\n{T6}}}"))
    } else {
        let tail = format!("\n{T6}}}");
        let at = ix.close.checked_sub(tail.len() - 1)?;
        if bytes.get(at..=ix.close)? != tail.as_bytes() {
            return None;
        }
        (at, 0, format!(",\n{T7}\"{key}\": {record}"))
    };
    // The timestamp comes before the endpoints (Network's fields precede its interfaces).
    if !(ts0 < ts1 && ts1 <= at)
        || bytes.get(ts0.checked_sub(1)?)? != &b'"'
        || bytes.get(ts1)? != &b'"'
    {
        return None;
    }
    let ts_delta = timestamp.len() as isize - (ts1 - ts0) as isize;
    let ins_delta = insert.len() as isize - removed as isize;
    let shift = |pos: usize| -> usize {
        let mut p = pos as isize;
        if pos >= ts1 {
            p += ts_delta;
        }
        if pos >= at + removed {
            p += ins_delta;
        }
        p as usize
    };
    let mut next = index.clone();
    next.timestamp = (ts0, (ts1 as isize + ts_delta) as usize);
    for (name, n) in next.networks.iter_mut() {
        if name == net {
            n.close = (ix.close as isize + ts_delta + ins_delta) as usize;
            n.open = shift(n.open);
        } else {
            n.open = shift(n.open);
            n.close = shift(n.close);
        }
    }
    let parts = [
        Cow::Borrowed(&bytes[..ts0]),
        Cow::Borrowed(timestamp.as_bytes()),
        Cow::Borrowed(&bytes[ts1..at]),
        Cow::Owned(insert.into_bytes()),
        Cow::Borrowed(&bytes[at + removed..]),
    ];
    Some((parts, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::state::{Endpoint, RawEndpoint};

    fn file_with(nets: &[(&str, &str, usize)]) -> NetworkFile {
        let mut f = NetworkFile::default();
        let nm = f.network.get_or_insert_with(Default::default);
        nm.version = "v0.1.0".into();
        nm.timestamp = "2026-11-21T10:00:00.5Z".into();
        for (ext, net, n) in nets {
            let e = nm.external_interfaces.entry(ext.to_string()).or_default();
            e.name = ext.to_string();
            e.subnets = Some(vec!["10.224.0.0/16".into()]);
            let network = e.networks.entry(net.to_string()).or_default();
            network.id = net.to_string();
            network.subnets = Some(vec![crate::network::state::SubnetInfo {
                family: 2,
                prefix: crate::encoding::GoIpNet::new("10.224.0.0".parse().unwrap(), 16),
                ..Default::default()
            }]);
            for i in 0..*n {
                let k = format!("{net}{i:03}-eth0");
                network.endpoints.insert(k.clone(), record(&k));
            }
        }
        f
    }

    fn record(key: &str) -> RawEndpoint {
        RawEndpoint::from_endpoint(&Endpoint {
            id: key.into(),
            container_id: format!("cid-{key}"),
            host_if_name: "azv0123456789a".into(),
            ..Default::default()
        })
        .unwrap()
    }

    fn text(r: &RawEndpoint) -> String {
        serde_json::to_string(r).unwrap()
    }

    #[test]
    fn recorded_layout_is_go_layout_and_offsets_point_at_the_right_bytes() {
        for nets in [
            vec![("eth0", "azure", 0)],
            vec![("eth0", "azure", 3)],
            vec![("eth0", "azure", 2), ("eth1", "other", 0)],
        ] {
            let f = file_with(&nets);
            let (bytes, ix) = serialize(&f, 0).unwrap();
            assert_eq!(
                bytes,
                crate::store::to_go_json(&f).unwrap(),
                "same text as the plain writer"
            );
            assert_eq!(
                &bytes[ix.timestamp.0..ix.timestamp.1],
                b"2026-11-21T10:00:00.5Z"
            );
            for (ext, net, n) in &nets {
                let e = &ix.networks[*net];
                assert_eq!(e.ext, *ext);
                assert_eq!(e.subnets, vec!["10.224.0.0/16".to_string()]);
                assert_eq!(bytes[e.open], b'{');
                assert_eq!(bytes[e.close], b'}');
                let obj: serde_json::Value =
                    serde_json::from_slice(&bytes[e.open..=e.close]).unwrap();
                assert_eq!(obj.as_object().unwrap().len(), *n);
            }
        }
    }

    #[test]
    fn splices_parse_to_what_a_full_rewrite_writes() {
        let mut expected = file_with(&[("eth0", "azure", 0), ("eth1", "other", 1)]);
        let (mut bytes, mut ix) = serialize(&expected, 0).unwrap();
        for i in 0..40 {
            // Alternate networks; timestamps of varying length (Go trims trailing zeros).
            let net = if i % 3 == 0 { "other" } else { "azure" };
            let key = format!("new{i}/eth0");
            let rec = record(&key);
            let ts = format!("2026-11-21T10:00:{:02}.{}Z", i % 60, "9".repeat(1 + i % 9));
            let (b, next) = splice(&bytes, &ix, net, &key, &text(&rec), &ts).expect("splice");
            bytes = b;
            ix = next;
            let nm = expected.network.as_mut().unwrap();
            nm.timestamp = ts.clone();
            for ext in nm.external_interfaces.values_mut() {
                if let Some(n) = ext.networks.get_mut(net) {
                    n.endpoints.insert(key.clone(), rec.clone());
                }
            }
            let parsed: NetworkFile =
                serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("step {i}: {e}"));
            assert_eq!(parsed, expected, "step {i}");
            assert_eq!(&bytes[ix.timestamp.0..ix.timestamp.1], ts.as_bytes());
            for n in ix.networks.values() {
                assert_eq!((bytes[n.open], bytes[n.close]), (b'{', b'}'), "step {i}");
            }
            assert!(has_key(&bytes, &ix.networks[net], &key));
            assert!(!has_key(&bytes, &ix.networks[net], "absent-eth0"));
        }
    }

    #[test]
    fn text_that_is_not_what_the_index_says_is_refused() {
        let f = file_with(&[("eth0", "azure", 2)]);
        let (bytes, ix) = serialize(&f, 0).unwrap();
        let rec = text(&record("x/eth0"));
        assert!(splice(&bytes, &ix, "nosuchnet", "k", &rec, "t").is_none());
        let mut shifted = ix.clone();
        shifted.networks.get_mut("azure").unwrap().close -= 3;
        assert!(splice(&bytes, &shifted, "azure", "k", &rec, "t").is_none());
        let mut ts = ix.clone();
        ts.timestamp.0 += 1;
        assert!(splice(&bytes, &ts, "azure", "k", &rec, "t").is_none());
        assert!(splice(&bytes[..bytes.len() / 2], &ix, "azure", "k", &rec, "t").is_none());
    }
}
