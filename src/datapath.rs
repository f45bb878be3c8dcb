//! The transparent-mode datapath (spec B.3.3-B.3.4), step by step, plus its verification
//! (CHECK) and teardown. The plugin composes these steps under its rollback guard.
//!
//! After ADD, host namespace: `azvX` veth (MAC aa:aa:aa:aa:aa:aa, MTU of the master, up,
//! proxy_arp=1, accept_ra=0) and `<podIP>/32 dev azvX proto static`. Pod namespace: CNI_IFNAME
//! up with `<podIP>/<pool prefix>`, the kernel subnet route removed,
//! `169.254.1.1 dev eth0 scope link`, `default via 169.254.1.1`, and neighbour 169.254.1.1 ->
//! aa:aa:aa:aa:aa:aa (NUD_PROBE, as upstream: the host veth's proxy ARP answers re-probes).
//!
//! Upstream creates the container end as `azvX2` in the host, moves it and renames it to
//! CNI_IFNAME; we create it in the pod under its final name. The result is the same (the
//! record still says `azvX2`, like upstream's), and a rename makes the kernel wait for an RCU
//! grace period (`synchronize_net`), longer while another CPU is busy exec'ing the IPAM plugin.

use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::IpNetwork;
use netlink_packet_route::neighbour::NeighbourState;
use netlink_packet_route::route::{RouteProtocol, RouteScope};

use crate::encoding::mac_to_string;
use crate::error::{internal, Code, Error, Result};
use crate::netlink::{req, Link, Netlink, Route, VethSpec, RT_TABLE_MAIN};
use crate::netns::Netns;
use crate::sysctl;

/// The pod's virtual gateway: never on the wire; the host veth answers ARP for it.
pub const VIRTUAL_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// Every host veth has this MAC (upstream), which the pod's static neighbour entry names.
pub const HOST_VETH_MAC: [u8; 6] = [0xaa; 6];

/// What ADD builds before the pod's address is known: everything but the address, the
/// routes and the MTU, so it can be done while the IPAM plugin runs.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    pub host_veth: &'a str,
    /// CNI_IFNAME: the container end's name, from birth.
    pub ifname: &'a str,
    /// The container end's MAC: random, as the kernel would pick it (`random_mac`), but chosen
    /// by us so nobody has to read it back.
    pub pod_mac: [u8; 6],
}

/// A created veth pair.
#[derive(Debug, Clone, Copy)]
pub struct Veth {
    /// The host end's ifindex.
    pub index: u32,
    /// The container end's ifindex, in the pod.
    pub peer_index: u32,
    /// The MTU both ends were born with (the kernel's default).
    pub mtu: u32,
}

/// A random, locally administered, unicast MAC (what the kernel's `eth_random_addr` gives a
/// veth end created without one).
pub fn random_mac() -> Result<[u8; 6]> {
    use std::io::Read;
    let mut mac = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut mac))
        .map_err(|e| Error::os(Code::Internal, &e).context("read /dev/urandom"))?;
    mac[0] = (mac[0] & 0xfe) | 0x02;
    Ok(mac)
}

/// The node must forward for transparent mode to work at all (spec A.3.11). Returns whether
/// it had to be turned on.
pub fn ensure_ip_forward() -> Result<bool> {
    if sysctl::read("net/ipv4/ip_forward")? == "1" {
        return Ok(false);
    }
    sysctl::write("net/ipv4/ip_forward", "1")?;
    Ok(true)
}

/// One RTM_NEWLINK: host end named, MAC'd and up; the peer born inside the pod, down, under
/// CNI_IFNAME, with its MAC. EEXIST means either name is taken. Both ends get the kernel's default MTU: the master, whose
/// MTU they must have, is known only once the address is (see `configure_host`).
pub fn create_veth(host: &Netlink, pod: &Netns, plan: &Plan) -> Result<Veth> {
    let link = host.create_veth(&VethSpec {
        name: plan.host_veth,
        mac: Some(HOST_VETH_MAC),
        mtu: None,
        up: true,
        peer_name: plan.ifname,
        peer_mac: Some(plan.pod_mac),
        peer_mtu: None,
        peer_netns: Some(pod.raw_fd()),
    })?;
    let peer_index = link
        .peer_index
        .ok_or_else(|| internal(format!("veth {} has no peer index", plan.host_veth)))?;
    Ok(Veth {
        index: link.index,
        peer_index,
        mtu: link.mtu,
    })
}

fn host_route(ip: IpAddr, index: u32) -> Result<Route> {
    let dst = IpNetwork::new(ip, if ip.is_ipv4() { 32 } else { 128 })
        .map_err(|e| internal(e.to_string()))?;
    Ok(Route::new(dst, None, index, RouteScope::Universe))
}

/// Host side, before the address is known: accept_ra=0 and proxy_arp=1 on the host veth.
pub fn prepare_host(plan: &Plan) -> Result<()> {
    sysctl::write_if_exists(&format!("net/ipv6/conf/{}/accept_ra", plan.host_veth), "0")?;
    sysctl::write(&format!("net/ipv4/conf/{}/proxy_arp", plan.host_veth), "1")
}

/// Host side, once the address and the master are known: the master's MTU (when it is not
/// the kernel's default) and the pod's host route, as one batch.
pub fn configure_host(host: &Netlink, veth: &Veth, address: IpNetwork, mtu: u32) -> Result<()> {
    let mut reqs = Vec::with_capacity(2);
    if mtu != veth.mtu {
        reqs.push(req::set_link(veth.index, None, None, Some(mtu)));
    }
    reqs.push(req::replace_route(&host_route(address.ip(), veth.index)?));
    host.batch(reqs).map(|_| ())
}

/// What of the pod's namespace must be opened from inside it: a netlink socket and the pod
/// end's `accept_ra` sysctl (a /proc/sys/net file belongs to the namespace it was opened in).
pub struct PodHandles {
    socket: netlink_sys::Socket,
    accept_ra: Option<std::fs::File>,
}

/// On a short thread, set the host sysctls ([`prepare_host`]), then open the pod's handles
/// from inside the pod's namespace, while the caller, which stays where it is, runs
/// `meanwhile` (the IPAM plugin); the three results are returned.
pub fn prepare_while<R>(
    pod: &Netns,
    plan: &Plan,
    meanwhile: impl FnOnce() -> R,
) -> (Result<()>, Result<PodHandles>, R) {
    let key = format!("net/ipv6/conf/{}/accept_ra", plan.ifname);
    pod.run_while(
        || prepare_host(plan),
        || {
            Ok(PodHandles {
                socket: Netlink::open_socket()?,
                accept_ra: sysctl::open_if_exists(&key)?,
            })
        },
        meanwhile,
    )
}

/// Pod side, once the address is known, through the handles [`prepare_while`] opened: no
/// router advertisements on the pod end (before it comes up, as upstream), then one batch that
/// the kernel applies in order (up with the master's MTU, the address, which creates the
/// subnet route, then its removal, the two routes, the neighbour). A failure anywhere is undone
/// by deleting the veth.
pub fn configure_pod(
    host: &Netlink,
    pod: PodHandles,
    plan: &Plan,
    veth: &Veth,
    address: IpNetwork,
    mtu: u32,
) -> Result<()> {
    if let Some(mut f) = pod.accept_ra {
        sysctl::write_to(&mut f, "0")
            .map_err(|e| e.context(format!("set accept_ra=0 on {} in the pod", plan.ifname)))?;
    }
    let pod_nl = host.attach(pod.socket)?;
    let idx = veth.peer_index;
    let gw = IpAddr::V4(VIRTUAL_GATEWAY);
    let net = |ip, len| IpNetwork::new(ip, len).map_err(|e| internal(e.to_string()));
    let mut reqs = Vec::with_capacity(6);
    reqs.push(req::set_link(
        idx,
        None,
        Some(true),
        (mtu != veth.mtu).then_some(mtu),
    ));
    reqs.push(req::add_address(idx, address));
    // The kernel adds `<subnet> dev eth0 proto kernel` with the address; transparent mode
    // sends everything, same subnet included, to the host, so it goes (upstream: fatal).
    if let Some(subnet) = subnet_route(address, idx) {
        reqs.push(req::del_route(&subnet));
    }
    reqs.push(req::add_route(&Route::new(
        net(gw, 32)?,
        None,
        idx,
        RouteScope::Link,
    )));
    reqs.push(req::add_route(&Route::new(
        net(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)?,
        Some(gw),
        idx,
        RouteScope::Universe,
    )));
    reqs.push(req::set_neighbour(
        idx,
        gw,
        HOST_VETH_MAC,
        NeighbourState::Probe,
    ));
    pod_nl
        .batch(reqs)
        .map(|_| ())
        .map_err(|e| e.context(format!("configure {} in the pod", plan.ifname)))
}

/// The route the kernel creates for an address (none for a /32).
fn subnet_route(address: IpNetwork, index: u32) -> Option<Route> {
    if address.prefix() == 32 {
        return None;
    }
    let subnet = IpNetwork::new(address.network(), address.prefix()).ok()?;
    Some(Route {
        dst: subnet,
        gw: None,
        oif: Some(index),
        scope: RouteScope::Link,
        protocol: RouteProtocol::Kernel,
        table: RT_TABLE_MAIN,
    })
}

/// Remove a pod's host routes, if the veth still exists. Missing routes are not an error.
pub fn remove_host_routes(host: &Netlink, host_veth: &str, ips: &[IpAddr]) -> Result<()> {
    let Some(link) = host.link_by_name(host_veth)? else {
        return Ok(());
    };
    for ip in ips {
        match host.del_route(&host_route(*ip, link.index)?) {
            Ok(()) => {}
            Err(e) if e.is_errno(nix::libc::ESRCH) || e.is_errno(nix::libc::ENODEV) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What CHECK compares the kernel against.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub host_veth: &'a str,
    pub ifname: &'a str,
    pub address: IpNetwork,
    pub pod_mac: Option<[u8; 6]>,
}

/// Every way the datapath differs from what ADD built, in words. Empty means intact.
pub fn verify(host: &Netlink, pod: &Netns, exp: &Expected) -> Result<Vec<String>> {
    let mut diffs = Vec::new();
    let host_link = host.link_by_name(exp.host_veth)?;
    match &host_link {
        None => diffs.push(format!("host veth {} is missing", exp.host_veth)),
        Some(l) => {
            check_link(&mut diffs, "host veth", l, Some(HOST_VETH_MAC));
            match sysctl::read(&format!("net/ipv4/conf/{}/proxy_arp", exp.host_veth)) {
                Ok(v) if v == "1" => {}
                Ok(v) => diffs.push(format!("proxy_arp on {} is {v}, want 1", exp.host_veth)),
                Err(e) => diffs.push(e.msg().to_string()),
            }
            let want = host_route(exp.address.ip(), l.index)?;
            let routes = host.routes(exp.address.is_ipv4())?;
            if !routes
                .iter()
                .any(|r| r.dst == want.dst && r.oif == want.oif && r.gw.is_none())
            {
                diffs.push(format!(
                    "host route {} dev {} is missing",
                    want.dst, exp.host_veth
                ));
            }
        }
    }
    let host_index = host_link.as_ref().map(|l| l.index);
    let pod_diffs = pod.run(|| {
        let mut d = Vec::new();
        let nl = Netlink::connect()?;
        let Some(l) = nl.link_by_name(exp.ifname)? else {
            d.push(format!("{} is missing in the pod", exp.ifname));
            return Ok(d);
        };
        check_link(&mut d, "pod interface", &l, exp.pod_mac);
        if host_index.is_some() && l.peer_index != host_index {
            d.push(format!(
                "{} in the pod is not the peer of {}",
                exp.ifname, exp.host_veth
            ));
        }
        if !nl
            .addresses(exp.address.is_ipv4())?
            .iter()
            .any(|a| a.index == l.index && a.net == exp.address)
        {
            d.push(format!(
                "address {} is missing on {} in the pod",
                exp.address, exp.ifname
            ));
        }
        let routes = nl.routes(true)?;
        let gw = IpAddr::V4(VIRTUAL_GATEWAY);
        let has = |dst: &str, via: Option<IpAddr>, scope: RouteScope| {
            routes.iter().any(|r| {
                r.dst.to_string() == dst
                    && r.gw == via
                    && r.oif == Some(l.index)
                    && r.scope == scope
            })
        };
        if !has("169.254.1.1/32", None, RouteScope::Link) {
            d.push(format!(
                "route 169.254.1.1 dev {} scope link is missing in the pod",
                exp.ifname
            ));
        }
        if !has("0.0.0.0/0", Some(gw), RouteScope::Universe) {
            d.push(format!(
                "route default via 169.254.1.1 dev {} is missing in the pod",
                exp.ifname
            ));
        }
        if let Some(subnet) = subnet_route(exp.address, l.index) {
            if routes
                .iter()
                .any(|r| r.dst == subnet.dst && r.oif == Some(l.index))
            {
                d.push(format!(
                    "subnet route {} dev {} is back in the pod",
                    subnet.dst, exp.ifname
                ));
            }
        }
        // The neighbour entry is installed as upstream does (not permanent): the kernel may
        // drop it when idle, and the host veth's proxy ARP answers the next lookup. Only a
        // wrong or failed entry breaks traffic.
        let neigh = nl.neighbours(l.index)?;
        match neigh.iter().find(|n| n.ip == gw) {
            Some(n) if n.mac.is_some_and(|m| m != HOST_VETH_MAC) => d.push(format!(
                "neighbour 169.254.1.1 is {}, want aa:aa:aa:aa:aa:aa",
                n.mac.map(|m| mac_to_string(&m)).unwrap_or_default()
            )),
            Some(n) if n.state == NeighbourState::Failed => {
                d.push("neighbour 169.254.1.1 failed to resolve".to_string())
            }
            _ => {}
        }
        Ok(d)
    })?;
    diffs.extend(pod_diffs);
    Ok(diffs)
}

fn check_link(diffs: &mut Vec<String>, what: &str, l: &Link, mac: Option<[u8; 6]>) {
    if l.kind.as_deref() != Some("veth") {
        diffs.push(format!("{what} {} is not a veth", l.name));
    }
    if !l.up {
        diffs.push(format!("{what} {} is down", l.name));
    }
    if let Some(want) = mac {
        if l.mac != Some(want) {
            diffs.push(format!(
                "{what} {} has MAC {}, want {}",
                l.name,
                l.mac.map(|m| mac_to_string(&m)).unwrap_or_default(),
                mac_to_string(&want)
            ));
        }
    }
}
