//! The one teardown of DEL, GC and the command-line tool's reconcile: the host routes, records, addresses and host veths of
//! endpoints that go. Each step carries on past the failures of the others and every failure
//! is reported at the end (netavark's teardown), except one ordering rule: an address is
//! released only once its record is gone, so at every moment the records are a subset of what
//! IPAM has handed out (a record naming a free address would let two pods share it).

use ipnetwork::IpNetwork;

use crate::cni::config::Attachment;
use crate::cni::skel::Request;
use crate::datapath;
use crate::encoding::{subnet_of, GoIpNet};
use crate::error::{self, Error, Result};
use crate::logging::Logger;
use crate::netlink::{Link, Netlink};
use crate::network::ipam::{self, Pin};
use crate::network::record;
use crate::network::state::{Endpoint, NetworkFile, RawEndpoint};
use crate::store::{Loaded, Store};

/// How addresses are released: through the IPAM plugin for DEL and GC (`ipam::release`),
/// directly for the command-line tool's reconcile. The record whose address it is, when one
/// says.
pub(crate) type Release<'a> = &'a dyn Fn(Option<&Endpoint>, Pin) -> Result<()>;

pub(crate) struct Teardown<'a> {
    log: &'a Logger,
    host: &'a Netlink,
    /// The network (conflist `name`) whose records go.
    net: &'a str,
    release: Release<'a>,
    errors: Vec<Error>,
}

impl<'a> Teardown<'a> {
    pub fn new(log: &'a Logger, host: &'a Netlink, net: &'a str, release: Release<'a>) -> Self {
        Teardown {
            log,
            host,
            net,
            release,
            errors: Vec::new(),
        }
    }

    fn fail(&mut self, e: Error) {
        self.log.warn(
            "teardown step failed",
            &[("error", serde_json::Value::from(e.msg()))],
        );
        self.errors.push(e);
    }

    /// Remove the records of the request's network that `pick` selects (returning them
    /// parsed), in one locked update. `None` if they could not be removed: then nothing of
    /// theirs may be released.
    pub fn records(
        &mut self,
        store: &Store,
        loaded: Option<Loaded<NetworkFile>>,
        mut pick: impl FnMut(&str, &RawEndpoint) -> Result<Option<Endpoint>>,
    ) -> Option<Vec<Endpoint>> {
        let net = self.net;
        let removed = store.update(loaded, |file: &mut NetworkFile| {
            let removed = match file.network_mut(net) {
                Some(n) => n.remove_endpoints(&mut pick)?,
                None => Vec::new(),
            };
            let changed = !removed.is_empty();
            Ok((removed, changed))
        });
        match removed {
            Ok(r) => Some(r),
            Err(e) => {
                self.fail(e.context("remove endpoint records"));
                None
            }
        }
    }

    /// The host routes of `eps` (routes already gone are not an error).
    pub fn routes(&mut self, eps: &[Endpoint]) {
        for ep in eps {
            if let Err(e) =
                datapath::remove_host_routes(self.host, &ep.host_if_name, &record::ips(ep))
            {
                self.fail(e.context(format!("remove host routes of endpoint {}", ep.id)));
            }
        }
    }

    /// Release the addresses of `eps`, whose records are gone.
    pub fn release(&mut self, eps: &[Endpoint]) {
        for ep in eps {
            for net in ep
                .ip_addresses
                .iter()
                .flatten()
                .filter_map(GoIpNet::to_network)
            {
                let pin = Pin {
                    address: Some(net.ip()),
                    subnet: Some(subnet_of(net)),
                };
                if let Err(e) = (self.release)(Some(ep), pin) {
                    self.fail(e);
                }
            }
        }
    }

    /// Release everything the container holds (no record says what), in the network's
    /// `subnet` if it has one.
    pub fn release_all(&mut self, subnet: Option<IpNetwork>) {
        let pin = Pin {
            subnet,
            ..Pin::default()
        };
        if let Err(e) = (self.release)(None, pin) {
            self.fail(e);
        }
    }

    /// The IPAM plugin's own GC, if it speaks CNI 1.1 (for an older one, libcni's DEL of
    /// stale cached attachments covers it), told to keep `also` besides the request's valid
    /// attachments: the attachments the records still name. Without them (`Err`: the records
    /// could not be read) it is not run.
    pub fn ipam_gc(&mut self, req: &Request, also: Result<Vec<Attachment>>) {
        let also = match also {
            Ok(a) => a,
            Err(e) => {
                return self
                    .fail(e.context("the IPAM plugin's GC skipped: the records are unreadable"))
            }
        };
        let done = ipam::speaks_1_1(req).and_then(|yes| match yes {
            true => ipam::gc_keeping(req, also),
            false => Ok(()),
        });
        if let Err(e) = done {
            self.fail(e.context("the IPAM plugin's GC"));
        }
    }

    /// Delete a host veth (with its peer and routes); already gone is fine.
    pub fn veth(&mut self, link: &Link) {
        match self.host.delete_link(link.index) {
            Ok(()) => self.log.info(
                "deleted host veth",
                &[("veth", serde_json::Value::from(link.name.as_str()))],
            ),
            Err(e) if e.is_errno(nix::libc::ENODEV) => {}
            Err(e) => self.fail(e.context(format!("delete host veth {}", link.name))),
        }
    }

    /// Every failure of the steps above, or Ok.
    pub fn finish(self) -> Result<()> {
        error::all(self.errors)
    }
}
