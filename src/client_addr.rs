//! Where a request comes from: the client address that the per-source limits count against.
//!
//! The address comes from the connection, never from the request alone. The server loop (or
//! an adapter in front of the services) puts the TCP peer's address in the request extensions
//! as a [`ClientAddr`]; with hyper that is one line per connection, with axum a copy of
//! `ConnectInfo<SocketAddr>`, with tonic a copy of `TcpConnectInfo::remote_addr` (the
//! examples show each).
//!
//! Behind a reverse proxy every request comes from the proxy, so the proxy's forwarding header
//! says who the client is. It is honoured only when the peer is a configured
//! [`TrustedProxies`] address, and only the right hop: the list is read from the right (the
//! hop the nearest proxy added) and the first address that is not itself a trusted proxy is
//! the client. Whatever a client writes into the header before it reaches the first proxy sits
//! to the left of that and is never read. By default no proxy is trusted and the headers are
//! ignored.
//!
//! Limits key a source by its address, with IPv6 addresses grouped by prefix (default /64,
//! what one subscriber usually holds): [`source_of`].
//!
//! ```
//! use http::HeaderMap;
//! use tower_device_flow::client_addr::{ForwardedHeader, TrustedProxies};
//!
//! let proxies = TrustedProxies::new(ForwardedHeader::XForwardedFor, ["10.0.0.0/8".parse().unwrap()]);
//! let mut headers = HeaderMap::new();
//! // The client sent a forged first hop; the proxy at 10.0.0.2 appended the real peer.
//! headers.insert("x-forwarded-for", "6.6.6.6, 203.0.113.7".parse().unwrap());
//! let peer = "10.0.0.2".parse().ok();
//! assert_eq!(proxies.client_ip(peer, &headers), "203.0.113.7".parse().ok());
//! // From a peer that is not a trusted proxy, the header is ignored.
//! let peer = "198.51.100.1".parse().ok();
//! assert_eq!(proxies.client_ip(peer, &headers), peer);
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::header::{HeaderMap, HeaderName};
use http::Extensions;
use ipnet::{IpNet, Ipv6Net};

/// The address of the TCP peer a request arrived from, put in the request extensions by the
/// server loop (or an adapter) so the services can count requests per source.
///
/// ```
/// # use std::net::SocketAddr;
/// use tower_device_flow::client_addr::ClientAddr;
///
/// let peer: SocketAddr = "192.0.2.10:50123".parse().unwrap();
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(ClientAddr(peer));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

/// Which forwarding header the trusted proxies write. Only one is read: a proxy that
/// sanitises one header leaves the other as the client wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, HAProxy, most load balancers).
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

impl ForwardedHeader {
    fn name(self) -> HeaderName {
        match self {
            ForwardedHeader::XForwardedFor => HeaderName::from_static("x-forwarded-for"),
            ForwardedHeader::Forwarded => http::header::FORWARDED,
        }
    }
}

/// The reverse proxies whose forwarding header is believed. Default: none, so the client
/// address is always the TCP peer's.
#[derive(Clone, PartialEq, Eq)]
pub struct TrustedProxies {
    header: ForwardedHeader,
    nets: Vec<IpNet>,
}

impl Default for TrustedProxies {
    fn default() -> Self {
        Self::none()
    }
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedProxies")
            .field("header", &self.header)
            .field(
                "nets",
                &self.nets.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl TrustedProxies {
    /// Trust no proxy: forwarding headers are ignored.
    pub fn none() -> Self {
        TrustedProxies {
            header: ForwardedHeader::XForwardedFor,
            nets: Vec::new(),
        }
    }

    /// Trust `header` from peers in `nets` (single addresses are `/32` or `/128` networks).
    pub fn new(header: ForwardedHeader, nets: impl IntoIterator<Item = IpNet>) -> Self {
        TrustedProxies {
            header,
            nets: nets.into_iter().collect(),
        }
    }

    /// True if `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client's address: the peer's, unless the peer is a trusted proxy; then the
    /// rightmost address of the forwarding chain that is not a trusted proxy (or the leftmost
    /// address if every hop is trusted). A hop that cannot be read (`unknown`, an obfuscated
    /// identifier, garbage) stops the walk at the proxy that wrote it: nothing to its left can
    /// be believed.
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let mut client = canonical(peer?);
        if self.nets.is_empty() || !self.trusts(client) {
            return Some(client);
        }
        let hops = forwarding_chain(self.header, headers);
        for hop in hops.iter().rev() {
            let Some(ip) = hop.map(canonical) else {
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        Some(client)
    }
}

/// The hops of the forwarding chain, left (the original client) to right, each `None` if it
/// cannot be read. Several header lines are one list, in order (RFC 9110 5.3).
fn forwarding_chain(header: ForwardedHeader, headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all(header.name()) {
        let Ok(value) = value.to_str() else {
            // An unreadable line: nothing to its left can be trusted, so forget it.
            hops.clear();
            hops.push(None);
            continue;
        };
        for element in value.split(',') {
            hops.push(match header {
                ForwardedHeader::XForwardedFor => parse_node(element.trim()),
                ForwardedHeader::Forwarded => forwarded_for(element),
            });
        }
    }
    hops
}

/// The `for=` node of one RFC 7239 forwarded-element (`for=192.0.2.60;proto=http;by=...`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        parse_node(value)
    })
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:4711`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    node.strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .and_then(|n| n.parse::<Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// An IPv4 address written as IPv6 (`::ffff:192.0.2.1`, as a dual-stack socket reports it)
/// is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The source a client address counts as: IPv4 addresses each on their own, IPv6 addresses
/// grouped by their first `ipv6_prefix` bits (a subscriber usually holds a whole /64, and
/// could otherwise rotate through 2^64 addresses).
///
/// ```
/// use tower_device_flow::client_addr::source_of;
///
/// let a = source_of("2001:db8:1:2:aaaa::1".parse().unwrap(), 64);
/// let b = source_of("2001:db8:1:2:bbbb::9".parse().unwrap(), 64);
/// assert_eq!(a, b);
/// assert_eq!(a.to_string(), "2001:db8:1:2::");
/// ```
pub fn source_of(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => Ipv6Net::new(v6, ipv6_prefix.min(128))
            .map_or(IpAddr::V6(v6), |n| IpAddr::V6(n.network())),
        v4 => v4,
    }
}

/// How the services find a request's client: the configured proxies and IPv6 grouping.
#[derive(Clone, Debug)]
pub(crate) struct ClientAddrs {
    pub(crate) proxies: TrustedProxies,
    pub(crate) ipv6_prefix: u8,
}

/// A request's client as the services see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The client's address (for the record of where a grant came from).
    pub(crate) ip: Option<IpAddr>,
    /// The source the limits count against.
    pub(crate) source: Option<IpAddr>,
}

impl ClientAddrs {
    pub(crate) fn resolve(&self, extensions: &Extensions, headers: &HeaderMap) -> Resolved {
        let peer = extensions.get::<ClientAddr>().map(|a| a.0.ip());
        let ip = self.proxies.client_ip(peer, headers);
        Resolved {
            ip,
            source: ip.map(|ip| source_of(ip, self.ipv6_prefix)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(name: &str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn xff(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            ForwardedHeader::XForwardedFor,
            nets.iter().map(|n| n.parse().unwrap()),
        )
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let h = headers("x-forwarded-for", &["1.2.3.4"]);
        assert_eq!(
            TrustedProxies::none().client_ip(Some(ip("9.9.9.9")), &h),
            Some(ip("9.9.9.9"))
        );
        assert_eq!(
            xff(&["10.0.0.0/8"]).client_ip(Some(ip("9.9.9.9")), &h),
            Some(ip("9.9.9.9"))
        );
        assert_eq!(xff(&["10.0.0.0/8"]).client_ip(None, &h), None);
    }

    #[test]
    fn the_right_hop_is_used() {
        let p = xff(&["10.0.0.0/8", "192.168.1.1/32"]);
        // client-forged, real client, inner proxy
        let h = headers("x-forwarded-for", &["6.6.6.6, 203.0.113.7, 10.1.1.1"]);
        assert_eq!(
            p.client_ip(Some(ip("192.168.1.1")), &h),
            Some(ip("203.0.113.7"))
        );
        // Split over several lines: one list.
        let h = headers("x-forwarded-for", &["6.6.6.6", "203.0.113.7", "10.1.1.1"]);
        assert_eq!(
            p.client_ip(Some(ip("10.0.0.9")), &h),
            Some(ip("203.0.113.7"))
        );
        // Every hop trusted: the leftmost.
        let h = headers("x-forwarded-for", &["10.3.3.3, 10.1.1.1"]);
        assert_eq!(p.client_ip(Some(ip("10.0.0.9")), &h), Some(ip("10.3.3.3")));
        // No header from a trusted proxy: the proxy itself.
        assert_eq!(
            p.client_ip(Some(ip("10.0.0.9")), &HeaderMap::new()),
            Some(ip("10.0.0.9"))
        );
    }

    #[test]
    fn garbage_stops_at_the_proxy_that_wrote_it() {
        let p = xff(&["10.0.0.0/8"]);
        let h = headers("x-forwarded-for", &["203.0.113.7, unknown, 10.1.1.1"]);
        assert_eq!(p.client_ip(Some(ip("10.0.0.9")), &h), Some(ip("10.1.1.1")));
        let h = headers("x-forwarded-for", &["203.0.113.7, nonsense"]);
        assert_eq!(p.client_ip(Some(ip("10.0.0.9")), &h), Some(ip("10.0.0.9")));
    }

    #[test]
    fn forwarded_header_forms() {
        let p = TrustedProxies::new(ForwardedHeader::Forwarded, ["10.0.0.0/8".parse().unwrap()]);
        let h = headers(
            "forwarded",
            &["for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=https, For=10.2.2.2:80;by=x"],
        );
        assert_eq!(
            p.client_ip(Some(ip("10.0.0.1")), &h),
            Some(ip("2001:db8:cafe::17"))
        );
        // The other header is not read.
        let h = headers("x-forwarded-for", &["203.0.113.7"]);
        assert_eq!(p.client_ip(Some(ip("10.0.0.1")), &h), Some(ip("10.0.0.1")));
        // An obfuscated node stops the walk.
        let h = headers("forwarded", &["for=203.0.113.7, for=_hidden"]);
        assert_eq!(p.client_ip(Some(ip("10.0.0.1")), &h), Some(ip("10.0.0.1")));
    }

    #[test]
    fn nodes_parse_in_every_form() {
        for (node, want) in [
            ("192.0.2.1", "192.0.2.1"),
            ("192.0.2.1:4711", "192.0.2.1"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
        ] {
            assert_eq!(parse_node(node), Some(ip(want)), "{node}");
        }
        for bad in ["", "unknown", "_x", "1.2.3", "[1.2.3.4]", "::1]"] {
            assert_eq!(parse_node(bad), None, "{bad}");
        }
    }

    #[test]
    fn sources_group_ipv6_and_unmap_ipv4() {
        assert_eq!(source_of(ip("::ffff:192.0.2.1"), 64), ip("192.0.2.1"));
        assert_eq!(source_of(ip("192.0.2.1"), 64), ip("192.0.2.1"));
        assert_eq!(source_of(ip("2001:db8:0:1:ffff::1"), 48), ip("2001:db8::"));
        assert_eq!(source_of(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_eq!(source_of(ip("2001:db8::1"), 200), ip("2001:db8::1"));
        assert_ne!(
            source_of(ip("2001:db8:0:1::1"), 64),
            source_of(ip("2001:db8:0:2::1"), 64)
        );
        // A mapped peer matches an IPv4 proxy network.
        assert!(xff(&["10.0.0.0/8"]).trusts(ip("::ffff:10.0.0.1")));
    }
}
