//! A thin typed layer over rtnetlink: the dozen link, address, route and neighbour operations
//! the plugins need, as blocking calls that return our [`Error`] with the kernel's errno.
//!
//! Each [`Netlink`] owns a current-thread tokio runtime and one NETLINK_ROUTE socket. A socket
//! belongs to the network namespace it was created in, for its whole life; so a handle for a
//! pod is made by creating the socket on a short-lived thread inside the pod's namespace
//! ([`Netlink::connect_in`]) and then used from anywhere. This module never parses JSON.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};

use futures_util::StreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_ECHO, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::TokioSocket;

use crate::error::{Code, Error, Result};

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    pub up: bool,
    /// `IFLA_INFO_KIND`, e.g. `"veth"`.
    pub kind: Option<String>,
    /// `IFLA_LINK`: for a veth, the peer's ifindex (in the peer's namespace).
    pub peer_index: Option<u32>,
    /// `IFLA_LINK_NETNSID`: present when the peer lives in another namespace.
    pub peer_netnsid: Option<i32>,
}

/// What to create: a veth pair whose peer may be born directly in another namespace.
#[derive(Debug, Clone)]
pub struct VethSpec<'a> {
    pub name: &'a str,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub up: bool,
    pub peer_name: &'a str,
    pub peer_mac: Option<[u8; 6]>,
    pub peer_mtu: Option<u32>,
    pub peer_netns: Option<RawFd>,
}

/// An IPv4/IPv6 route in the main table, as we install and read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
    pub oif: Option<u32>,
    pub scope: RouteScope,
    pub protocol: RouteProtocol,
    pub table: u32,
}

pub const RT_TABLE_MAIN: u32 = 254;

impl Route {
    /// `proto static`, main table: what upstream's netlink defaults give.
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>, oif: u32, scope: RouteScope) -> Route {
        Route {
            dst,
            gw,
            oif: Some(oif),
            scope,
            protocol: RouteProtocol::Static,
            table: RT_TABLE_MAIN,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: IpAddr,
    pub mac: Option<[u8; 6]>,
    pub state: NeighbourState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    pub net: IpNetwork,
}

pub struct Netlink {
    rt: std::rc::Rc<tokio::runtime::Runtime>,
    handle: rtnetlink::Handle,
}

fn nl_err(e: impl std::fmt::Display) -> Error {
    Error::new(Code::Internal, format!("netlink: {e}"))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| Error::os(Code::Internal, &e).context("start netlink runtime"))
}

impl Netlink {
    /// A handle on the calling thread's current network namespace.
    pub fn connect() -> Result<Netlink> {
        Netlink::from_socket(Netlink::open_socket()?)
    }

    /// A raw socket of the calling thread's namespace, to be handed to [`Netlink::attach`]
    /// (a pod's: opened on a thread inside the pod, used from the host's thread).
    pub fn open_socket() -> Result<netlink_sys::Socket> {
        netlink_sys::Socket::new(NETLINK_ROUTE)
            .map_err(|e| Error::os(Code::Internal, &e).context("open netlink socket"))
    }

    /// A handle on `socket` (whatever namespace it was opened in) that shares this handle's
    /// runtime: one runtime per process.
    pub fn attach(&self, socket: netlink_sys::Socket) -> Result<Netlink> {
        Netlink::with_runtime(socket, self.rt.clone())
    }

    fn from_socket(socket: netlink_sys::Socket) -> Result<Netlink> {
        Netlink::with_runtime(socket, std::rc::Rc::new(runtime()?))
    }

    fn with_runtime(
        socket: netlink_sys::Socket,
        rt: std::rc::Rc<tokio::runtime::Runtime>,
    ) -> Result<Netlink> {
        socket
            .set_non_blocking(true)
            .map_err(|e| Error::os(Code::Internal, &e).context("netlink socket"))?;
        let (conn, handle) = {
            let _enter = rt.enter();
            // SAFETY: the fd comes from `into_raw_fd` just above, so it is open, a netlink
            // socket, and owned by nobody else. TokioSocket::from_raw_fd registers it with the
            // runtime we entered, which is the only way it can fail (and that cannot happen
            // for a valid socket inside a runtime with I/O enabled).
            let ts = unsafe { TokioSocket::from_raw_fd(socket.into_raw_fd()) };
            let (conn, handle, _) = rtnetlink::from_socket(ts);
            (conn, handle)
        };
        rt.spawn(conn);
        Ok(Netlink { rt, handle })
    }

    /// Send one request and collect its replies; an error ACK is an [`Error`] with errno.
    fn request(&self, msg: RouteNetlinkMessage, flags: u16) -> Result<Vec<RouteNetlinkMessage>> {
        let what = String::new();
        let mut replies = self.batch(vec![Req { msg, flags, what }])?;
        Ok(replies.pop().unwrap_or_default())
    }

    /// Send `reqs` back to back and then collect every answer: the kernel handles a socket's
    /// requests in order, so this is the same as sending them one by one, without waiting a
    /// round trip for each. The first failure (in order) is returned, with its description;
    /// the requests after it have been applied too, so callers use this where one undo
    /// (deleting the veth) covers them all.
    pub fn batch(&self, reqs: Vec<Req>) -> Result<Vec<Vec<RouteNetlinkMessage>>> {
        let mut handle = self.handle.clone();
        self.rt.block_on(async move {
            let mut pending = Vec::with_capacity(reqs.len());
            for r in reqs {
                let mut m = NetlinkMessage::from(r.msg);
                m.header.flags = r.flags;
                pending.push((handle.request(m).map_err(nl_err)?, r.what));
            }
            let mut out = Vec::with_capacity(pending.len());
            let mut first_error = None;
            for (mut replies, what) in pending {
                let mut msgs = Vec::new();
                while let Some(reply) = replies.next().await {
                    match reply.payload {
                        NetlinkPayload::InnerMessage(m) => msgs.push(m),
                        NetlinkPayload::Error(e) if e.code.is_some() && first_error.is_none() => {
                            let io = e.to_io();
                            let e = Error::os(Code::Internal, &io).context("netlink");
                            first_error = Some(if what.is_empty() { e } else { e.context(&what) });
                        }
                        _ => {}
                    }
                }
                out.push(msgs);
            }
            match first_error {
                Some(e) => Err(e),
                None => Ok(out),
            }
        })
    }

    fn dump(&self, msg: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>> {
        self.request(msg, NLM_F_REQUEST | NLM_F_DUMP)
    }

    // ---- links ------------------------------------------------------------------------

    pub fn links(&self) -> Result<Vec<Link>> {
        Ok(self
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(&l)),
                _ => None,
            })
            .collect())
    }

    fn get_link(&self, msg: LinkMessage) -> Result<Option<Link>> {
        match self.request(RouteNetlinkMessage::GetLink(msg), NLM_F_REQUEST) {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(&l)),
                _ => None,
            })),
            Err(e) if e.is_errno(nix::libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn link_by_name(&self, name: &str) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(msg)
            .map_err(|e| e.context(format!("look up link {name}")))
    }

    pub fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.get_link(msg)
            .map_err(|e| e.context(format!("look up link #{index}")))
    }

    /// One RTM_NEWLINK creates both ends, sets their MACs, MTU, queues and the host end's
    /// state, and puts the peer straight into its namespace (no separate move, which costs an
    /// extra round trip); the kernel echoes the host end back (its index, and `IFLA_LINK`: the
    /// peer's index in its namespace).
    pub fn create_veth(&self, spec: &VethSpec) -> Result<Link> {
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(spec.peer_name.to_string()));
        if let Some(mac) = spec.peer_mac {
            peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(mtu) = spec.peer_mtu {
            peer.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(fd) = spec.peer_netns {
            peer.attributes.push(LinkAttribute::NetNsFd(fd));
        }
        // One queue each way, as the kernel would set anyway: saying so spares it cutting the
        // default (one per CPU) down to one after registration, an RCU grace period per end.
        peer.attributes.push(LinkAttribute::NumTxQueues(1));
        peer.attributes.push(LinkAttribute::NumRxQueues(1));
        let mut msg = LinkMessage::default();
        if spec.up {
            msg.header.flags |= LinkFlags::Up;
            msg.header.change_mask |= LinkFlags::Up;
        }
        msg.attributes
            .push(LinkAttribute::IfName(spec.name.to_string()));
        if let Some(mac) = spec.mac {
            msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(mtu) = spec.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::NumTxQueues(1));
        msg.attributes.push(LinkAttribute::NumRxQueues(1));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        let what = format!("create veth pair {}/{}", spec.name, spec.peer_name);
        // NLM_F_ECHO: the kernel (6.3 and later) sends the new link back, so no RTM_GETLINK is
        // needed, which would also make the kernel settle the new link's state first (an RCU
        // grace period). Older kernels ignore the flag: then the link is asked for.
        let replies = self.batch(vec![Req {
            msg: RouteNetlinkMessage::NewLink(msg),
            flags: NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO,
            what: what.clone(),
        }])?;
        let echoed = replies.into_iter().flatten().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => {
                Some(parse_link(&l)).filter(|l| l.name == spec.name && l.peer_index.is_some())
            }
            _ => None,
        });
        match echoed {
            Some(link) => Ok(link),
            None => self.link_by_name(spec.name)?.ok_or_else(|| {
                Error::new(Code::Internal, format!("{what}: the new link is not there"))
            }),
        }
    }

    pub fn delete_link(&self, index: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(msg), NLM_F_REQUEST | NLM_F_ACK)
            .map(|_| ())
            .map_err(|e| e.context(format!("delete link #{index}")))
    }

    // ---- addresses --------------------------------------------------------------------

    /// Addresses of one family (the kernel filters the dump: every veth has an IPv6 link-local
    /// address, which a search for an IPv4 subnet need not read).
    pub fn addresses(&self, v4: bool) -> Result<Vec<Address>> {
        let mut q = AddressMessage::default();
        q.header.family = if v4 {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        Ok(self
            .dump(RouteNetlinkMessage::GetAddress(q))?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => {
                    let ip = a.attributes.iter().find_map(|at| match at {
                        AddressAttribute::Local(ip) => Some(*ip),
                        _ => None,
                    });
                    let ip = ip.or_else(|| {
                        a.attributes.iter().find_map(|at| match at {
                            AddressAttribute::Address(ip) => Some(*ip),
                            _ => None,
                        })
                    })?;
                    let net = IpNetwork::new(ip, a.header.prefix_len).ok()?;
                    Some(Address {
                        index: a.header.index,
                        net,
                    })
                }
                _ => None,
            })
            .collect())
    }

    // ---- routes -----------------------------------------------------------------------

    pub(crate) fn route_message(r: &Route) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header = RouteHeader {
            address_family: family(r.dst.ip()),
            destination_prefix_length: r.dst.prefix(),
            table: if r.table < 256 { r.table as u8 } else { 0 },
            protocol: r.protocol,
            scope: r.scope,
            kind: RouteType::Unicast,
            ..Default::default()
        };
        if r.table >= 256 {
            msg.attributes.push(RouteAttribute::Table(r.table));
        }
        if r.dst.prefix() > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(route_addr(r.dst.network())));
        }
        if let Some(gw) = r.gw {
            msg.attributes.push(RouteAttribute::Gateway(route_addr(gw)));
        }
        if let Some(oif) = r.oif {
            msg.attributes.push(RouteAttribute::Oif(oif));
        }
        msg
    }

    pub fn del_route(&self, r: &Route) -> Result<()> {
        self.batch(vec![req::del_route(r)]).map(|_| ())
    }

    /// Routes of one family in the main table.
    pub fn routes(&self, v4: bool) -> Result<Vec<Route>> {
        let mut q = RouteMessage::default();
        q.header.address_family = if v4 {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        Ok(self
            .dump(RouteNetlinkMessage::GetRoute(q))?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => parse_route(&r),
                _ => None,
            })
            .filter(|r| r.table == RT_TABLE_MAIN)
            .collect())
    }

    // ---- namespaces -------------------------------------------------------------------

    /// The ID this namespace has given the namespace behind `fd` (what a veth's
    /// `IFLA_LINK_NETNSID` names), if it has given it one.
    pub fn nsid_of(&self, fd: RawFd) -> Result<Option<i32>> {
        let mut msg = NsidMessage::default();
        msg.attributes.push(NsidAttribute::Fd(fd as u32));
        let replies = self
            .request(RouteNetlinkMessage::GetNsId(msg), NLM_F_REQUEST)
            .map_err(|e| e.context("look up netns id"))?;
        Ok(replies.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewNsId(n) => n.attributes.iter().find_map(|a| match a {
                NsidAttribute::Id(id) if *id >= 0 => Some(*id),
                _ => None,
            }),
            _ => None,
        }))
    }

    // ---- neighbours -------------------------------------------------------------------

    pub fn neighbours(&self, index: u32) -> Result<Vec<Neighbour>> {
        let mut q = NeighbourMessage::default();
        q.header.family = AddressFamily::Inet;
        Ok(self
            .dump(RouteNetlinkMessage::GetNeighbour(q))?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) if n.header.ifindex == index => {
                    let ip = n.attributes.iter().find_map(|a| match a {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                            Some(IpAddr::V4(*ip))
                        }
                        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => {
                            Some(IpAddr::V6(*ip))
                        }
                        _ => None,
                    })?;
                    let mac = n.attributes.iter().find_map(|a| match a {
                        NeighbourAttribute::LinkLayerAddress(m) => mac6(m),
                        _ => None,
                    });
                    Some(Neighbour {
                        ip,
                        mac,
                        state: n.header.state,
                    })
                }
                _ => None,
            })
            .collect())
    }
}

/// One request ready to send: the message, its netlink flags, and what it does (for errors).
pub struct Req {
    msg: RouteNetlinkMessage,
    flags: u16,
    what: String,
}

/// Request builders, to send one at a time (`Netlink::set_link`, ...) or as a batch.
pub mod req {
    use super::*;

    fn ack(msg: RouteNetlinkMessage, extra: u16, what: String) -> Req {
        Req {
            msg,
            flags: NLM_F_REQUEST | NLM_F_ACK | extra,
            what,
        }
    }

    /// Rename and/or change state and MTU in one RTM_NEWLINK. The kernel applies the name
    /// before the flags, so a down link can be renamed and brought up in one message.
    pub fn set_link(index: u32, name: Option<&str>, up: Option<bool>, mtu: Option<u32>) -> Req {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        if let Some(up) = up {
            if up {
                msg.header.flags |= LinkFlags::Up;
            }
            msg.header.change_mask |= LinkFlags::Up;
        }
        let what = match name {
            Some(n) => format!("rename link #{index} to {n}"),
            None => format!("configure link #{index}"),
        };
        if let Some(name) = name {
            msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        }
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        ack(RouteNetlinkMessage::NewLink(msg), 0, what)
    }

    pub fn add_address(index: u32, net: IpNetwork) -> Req {
        let mut msg = AddressMessage::default();
        msg.header.family = family(net.ip());
        msg.header.prefix_len = net.prefix();
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(net.ip()));
        msg.attributes.push(AddressAttribute::Address(net.ip()));
        ack(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            format!("add address {net} to link #{index}"),
        )
    }

    pub fn add_route(r: &Route) -> Req {
        ack(
            RouteNetlinkMessage::NewRoute(Netlink::route_message(r)),
            NLM_F_CREATE | NLM_F_EXCL,
            format!("add route {}", describe_route(r)),
        )
    }

    pub fn replace_route(r: &Route) -> Req {
        ack(
            RouteNetlinkMessage::NewRoute(Netlink::route_message(r)),
            NLM_F_CREATE | NLM_F_REPLACE,
            format!("replace route {}", describe_route(r)),
        )
    }

    pub fn del_route(r: &Route) -> Req {
        ack(
            RouteNetlinkMessage::DelRoute(Netlink::route_message(r)),
            0,
            format!("delete route {}", describe_route(r)),
        )
    }

    pub fn set_neighbour(index: u32, ip: IpAddr, mac: [u8; 6], state: NeighbourState) -> Req {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family(ip);
        msg.header.ifindex = index;
        msg.header.state = state;
        msg.header.kind = RouteType::Unicast;
        msg.attributes
            .push(NeighbourAttribute::Destination(match ip {
                IpAddr::V4(a) => NeighbourAddress::Inet(a),
                IpAddr::V6(a) => NeighbourAddress::Inet6(a),
            }));
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        ack(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            format!("set neighbour {ip} on link #{index}"),
        )
    }
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn route_addr(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

fn mac6(b: &[u8]) -> Option<[u8; 6]> {
    b.try_into().ok()
}

fn parse_link(l: &LinkMessage) -> Link {
    let mut link = Link {
        index: l.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        up: l.header.flags.contains(LinkFlags::Up),
        kind: None,
        peer_index: None,
        peer_netnsid: None,
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(m) => link.mac = mac6(m),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::Link(i) => link.peer_index = Some(*i),
            LinkAttribute::LinkNetNsId(id) => link.peer_netnsid = Some(*id),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        link.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn parse_route(r: &RouteMessage) -> Option<Route> {
    let mut table = u32::from(r.header.table);
    let mut dst_ip = None;
    let mut gw = None;
    let mut oif = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst_ip = Some(IpAddr::V4(*ip)),
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dst_ip = Some(IpAddr::V6(*ip)),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(IpAddr::V4(*ip)),
            RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => gw = Some(IpAddr::V6(*ip)),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    if r.header.kind != RouteType::Unicast {
        return None;
    }
    let dst_ip = dst_ip.unwrap_or(match r.header.address_family {
        AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    });
    Some(Route {
        dst: IpNetwork::new(dst_ip, r.header.destination_prefix_length).ok()?,
        gw,
        oif,
        scope: r.header.scope,
        protocol: r.header.protocol,
        table,
    })
}

fn describe_route(r: &Route) -> String {
    let mut s = r.dst.to_string();
    if let Some(gw) = r.gw {
        s.push_str(&format!(" via {gw}"));
    }
    if let Some(oif) = r.oif {
        s.push_str(&format!(" dev #{oif}"));
    }
    s
}
