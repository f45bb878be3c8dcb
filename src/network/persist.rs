//! Reading and writing `azure-vnet.json` for the plugin, keeping the byte index (see
//! `index`) beside it: `<runDir>/azure-vnet/azure-vnet.json.index`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use ipnetwork::IpNetwork;

use crate::cni::skel::Request;
use crate::encoding::rfc3339_nano;
use crate::error::Result;
use crate::network::index::{self, Index};
use crate::network::state::{Endpoint, NetworkFile, RawEndpoint};
use crate::store::{self, Loaded, StateFile, Store};

pub const STATE_FILE: &str = "azure-vnet.json";

pub struct VnetStore {
    store: Store,
    path: PathBuf,
    index_path: PathBuf,
}

/// What an ADD read at its start.
pub enum Snapshot {
    /// The file is exactly our own latest output (its identity matches the index) and does not
    /// mention the container: nothing to look up in it, so it was not parsed.
    Trusted { bytes: Vec<u8>, index: Index },
    /// Parsed, and so validated.
    Parsed(Loaded<NetworkFile>),
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

impl Snapshot {
    /// The parsed document (parsing a trusted text on demand, for rare paths).
    pub fn file(&self) -> Result<std::borrow::Cow<'_, NetworkFile>> {
        match self {
            Snapshot::Parsed(l) => Ok(std::borrow::Cow::Borrowed(&l.value)),
            Snapshot::Trusted { bytes, .. } => Ok(std::borrow::Cow::Owned(
                serde_json::from_slice(bytes).map_err(|e| {
                    crate::error::Error::new(
                        crate::error::Code::TryAgainLater,
                        format!("state file changed meaning: {e}"),
                    )
                })?,
            )),
        }
    }

    /// Every record of container `cid` in any network (none if the text does not mention it).
    pub fn records_of(&self, cid: &str) -> Result<Vec<(String, String, Endpoint)>> {
        match self {
            Snapshot::Trusted { .. } => Ok(Vec::new()),
            Snapshot::Parsed(l) => l.value.records_of(cid),
        }
    }

    /// The master this network recorded for `address`'s subnet.
    pub fn master_for(&self, net: &str, address: IpNetwork) -> Option<String> {
        match self {
            Snapshot::Parsed(l) => l.value.external_interface_for(net, address),
            Snapshot::Trusted { index, .. } => {
                let subnet = IpNetwork::new(address.network(), address.prefix())
                    .ok()?
                    .to_string();
                index
                    .networks
                    .get(net)
                    .filter(|n| n.subnets.contains(&subnet))
                    .map(|n| n.ext.clone())
            }
        }
    }
}

impl VnetStore {
    pub fn new(req: &Request) -> VnetStore {
        let path = req.settings.run_dir.join(STATE_FILE);
        VnetStore {
            store: Store::new(
                path.clone(),
                req.settings.lock_dir().join("azure-vnet.lock"),
                req.settings.lock_timeout,
            ),
            index_path: req.settings.lock_dir().join(format!("{STATE_FILE}.index")),
            path,
        }
    }

    fn read_index(&self) -> Option<Index> {
        // A missing, unreadable or outdated index only means the full path.
        let bytes = std::fs::read(&self.index_path).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// For ADD: the file, parsed unless it is our own latest output and does not mention
    /// `cid` (then nothing in it concerns this ADD, and its validity is known).
    pub fn snapshot(&self, cid: &str) -> Result<Snapshot> {
        let (bytes, stamp) = store::read_bytes(&self.path)?;
        if let (Some(stamp), Some(index)) = (stamp, self.read_index()) {
            if index.stamp == stamp
                && index.version == store::plugin_version()
                && !store::contains(&bytes, quoted(cid).as_bytes())
            {
                return Ok(Snapshot::Trusted { bytes, index });
            }
        }
        Ok(Snapshot::Parsed(Loaded {
            value: store::parse_state(&self.path, &bytes)?,
            stamp,
        }))
    }

    pub fn load(&self) -> Result<NetworkFile> {
        self.store.load()
    }

    pub fn load_if_mentions(&self, needle: &str) -> Result<Option<Loaded<NetworkFile>>> {
        self.store.load_if_mentions(needle)
    }

    /// Write the new text and, once it is in place, its index (with the file's new identity).
    fn write(&self, parts: &[&[u8]], mut index: Index) -> Result<()> {
        store::write_atomic_parts(&self.path, parts, true)
            .map_err(|e| e.context(format!("write state file {}", self.path.display())))?;
        if let Some(stamp) = store::current_stamp(&self.path) {
            index.stamp = stamp;
            // The index is a cache: losing it (a crash, a failed write) costs the next ADD the
            // full path, nothing more, since an index whose identity does not match the file
            // is never used. So no fsync for it.
            if let Ok(text) = serde_json::to_vec(&index) {
                let _ = store::write_atomic_parts(&self.index_path, &[&text], false);
            }
        }
        Ok(())
    }

    /// The full path, the lock held: parse unless `loaded` is still current, change, write.
    fn update_locked<R>(
        &self,
        loaded: Option<Loaded<NetworkFile>>,
        f: impl FnOnce(&mut NetworkFile) -> Result<(R, bool)>,
    ) -> Result<R> {
        let now = store::current_stamp(&self.path);
        let mut state = match loaded {
            Some(l) if l.stamp == now => l.value,
            _ => store::read_state(&self.path)?,
        };
        let (out, changed) = f(&mut state)?;
        if changed {
            state.stamp(&store::plugin_version(), &rfc3339_nano(SystemTime::now()));
            let hint = now.map(|s| s.size() as usize).unwrap_or(0) + 4096;
            let (bytes, index) = index::serialize(&state, hint)?;
            self.write(&[&bytes], index)?;
        }
        Ok(out)
    }

    /// Lock, (re)read if needed, let `f` change the records, write them and the index.
    pub fn update<R>(
        &self,
        loaded: Option<Loaded<NetworkFile>>,
        f: impl FnOnce(&mut NetworkFile) -> Result<(R, bool)>,
    ) -> Result<R> {
        let _guard = self.store.lock()?;
        self.update_locked(loaded, f)
    }

    /// ADD's write: splice the record in when the file is still the trusted text (the common
    /// case, independent of the number of endpoints), else `full` on the parsed document.
    /// Returns the endpoint's key.
    #[allow(clippy::too_many_arguments)] // one call site; the pieces are distinct on purpose
    pub fn add_endpoint(
        &self,
        snap: Snapshot,
        net: &str,
        address: IpAddr,
        prefix: u8,
        cid: &str,
        keys: (&str, &str),
        ep: &Endpoint,
        full: impl FnOnce(&mut NetworkFile) -> Result<String>,
    ) -> Result<String> {
        let _guard = self.store.lock()?;
        let now = store::current_stamp(&self.path);
        if let Snapshot::Trusted { bytes, index } = &snap {
            let subnet = IpNetwork::new(address, prefix)
                .ok()
                .and_then(|n| IpNetwork::new(n.network(), n.prefix()).ok())
                .map(|n| n.to_string())
                .unwrap_or_default();
            // Unchanged since the snapshot, whose text did not mention this container: so
            // no record of it is in the file, nor its long key (which contains its ID).
            let usable = Some(index.stamp) == now
                && index
                    .networks
                    .get(net)
                    .is_some_and(|n| n.subnets.contains(&subnet));
            if let (true, Some(nix)) = (usable, index.networks.get(net)) {
                let (short, long) = keys;
                debug_assert!(!store::contains(bytes, quoted(cid).as_bytes()));
                // Spec A.3.2: the short ID may belong to another container.
                let key = if index::has_key(bytes, nix, short) {
                    long
                } else {
                    short
                };
                let raw = RawEndpoint::from_endpoint(&Endpoint {
                    id: key.to_string(),
                    ..ep.clone()
                })?;
                let ts = rfc3339_nano(SystemTime::now());
                if let Some((parts, next)) =
                    index::splice_parts(bytes, index, net, key, raw.text(), &ts)
                {
                    let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_ref()).collect();
                    self.write(&parts, next)?;
                    return Ok(key.to_string());
                }
            }
        }
        let loaded = match snap {
            Snapshot::Parsed(l) => Some(l),
            Snapshot::Trusted { .. } => None,
        };
        self.update_locked(loaded, |file| full(file).map(|k| (k, true)))
    }
}
