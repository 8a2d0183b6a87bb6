//! Where a webhook may be delivered. A server must not be steered at its own network: cloud
//! metadata and link-local addresses are refused in every mode, and other internal addresses
//! unless the operator allows them (`webhook_private_addresses`, for a developer's machine).
//!
//! Literal addresses are checked when a URL is registered and at every attempt; names are
//! checked where they are resolved, inside the resolver the HTTP client connects through, so
//! the address connected to is the address checked (one lookup: nothing to rebind).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use futures_util::future::BoxFuture;

/// Which addresses deliveries may reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Public addresses only: the server can be reached by others.
    PublicOnly,
    /// Loopback and private addresses too (never metadata nor link-local).
    AllowPrivate,
}

/// Why an endpoint's address is refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0} is a link-local or cloud metadata address: refused in every mode")]
    Metadata(String),
    #[error("{0} is an internal address (loopback, private...): refused on this server")]
    Internal(String),
    #[error("{0} resolves to no address a webhook may reach: refused")]
    NoAllowedAddress(String),
    #[error("{host}: the name could not be resolved: {source}")]
    Lookup { host: String, source: io::Error },
}

/// AWS's metadata service over IPv6 (a unique-local address, so otherwise "private").
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
/// Alibaba Cloud's metadata service (in the carrier-grade NAT range).
const ALIBABA_METADATA_V4: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);
/// Names of metadata services that answer before any DNS a test could control.
const METADATA_NAMES: [&str; 3] = ["metadata.google.internal", "metadata.goog", "metadata"];

/// The IPv4 address an IPv6 address carries, for the forms that route to it: mapped
/// (`::ffff:a.b.c.d`), translated (`::ffff:0:a.b.c.d`), compatible (`::a.b.c.d`), NAT64
/// (`64:ff9b::/96`), 6to4 (`2002:AABB:CCDD::/48`) and Teredo's client (`2001:0::/32`).
fn embedded_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match a.segments() {
        [0, 0, 0, 0, 0, 0xffff, hi, lo]
        | [0, 0, 0, 0, 0xffff, 0, hi, lo]
        | [0, 0, 0, 0, 0, 0, hi, lo]
        | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(v4(hi, lo)),
        [0x2002, hi, lo, ..] => Some(v4(hi, lo)),
        [0x2001, 0, _, _, _, _, hi, lo] => Some(v4(!hi, !lo)),
        _ => None,
    }
}

/// Link-local (where cloud metadata services answer) or a known metadata address, in any
/// IPv6 spelling of it.
pub fn is_metadata(ip: IpAddr) -> bool {
    let v4 = |a: Ipv4Addr| a.is_link_local() || a == ALIBABA_METADATA_V4;
    match ip {
        IpAddr::V4(a) => v4(a),
        IpAddr::V6(a) => {
            a.segments()[0] & 0xffc0 == 0xfe80
                || a == AWS_METADATA_V6
                || embedded_v4(a).is_some_and(v4)
        }
    }
}

fn is_internal_v4(a: Ipv4Addr) -> bool {
    let o = a.octets();
    a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || a.is_unspecified()
        || a.is_broadcast()
        || a.is_multicast()
        || a.is_documentation()
        || o[0] == 0
        || o[0] == 100 && o[1] & 0xc0 == 64
        || o[0] == 192 && o[1] == 0 && o[2] == 0
        || o[0] == 198 && o[1] & 0xfe == 18
        || o[0] >= 240
}

/// Addresses a webhook must not reach from a server others can reach: loopback, private,
/// link-local, carrier-grade NAT, multicast, unspecified, documentation, reserved, and the
/// IPv6 forms that carry one of those IPv4 addresses.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => is_internal_v4(a),
        IpAddr::V6(a) => {
            let first = a.segments()[0];
            a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || first & 0xfe00 == 0xfc00
                || first & 0xffc0 == 0xfe80
                || first & 0xffc0 == 0xfec0
                // Local-use NAT64 (64:ff9b:1::/48) may carry an IPv4 address anywhere.
                || a.segments()[..3] == [0x64, 0xff9b, 1]
                || embedded_v4(a).is_some_and(is_internal_v4)
        }
    }
}

/// Checks one address.
pub fn check_ip(ip: IpAddr, reach: Reach) -> Result<(), Refusal> {
    if is_metadata(ip) {
        return Err(Refusal::Metadata(ip.to_string()));
    }
    if reach == Reach::PublicOnly && is_internal(ip) {
        return Err(Refusal::Internal(ip.to_string()));
    }
    Ok(())
}

/// Checks a URL's host as written: its address if it is one (the URL parser has already
/// read decimal, octal and hex IPv4 forms), or the names known to be internal. Other names
/// are checked when they are resolved.
pub fn check_host(url: &url::Url, reach: Reach) -> Result<(), Refusal> {
    match url.host() {
        Some(url::Host::Ipv4(a)) => check_ip(a.into(), reach),
        Some(url::Host::Ipv6(a)) => check_ip(a.into(), reach),
        Some(url::Host::Domain(d)) => {
            // "name." is the same name as "name", fully qualified.
            let name = d.strip_suffix('.').unwrap_or(d).to_ascii_lowercase();
            if METADATA_NAMES.contains(&name.as_str()) {
                return Err(Refusal::Metadata(name));
            }
            let local = name == "localhost" || name.ends_with(".localhost");
            if reach == Reach::PublicOnly && local {
                return Err(Refusal::Internal(name));
            }
            Ok(())
        }
        None => Err(Refusal::NoAllowedAddress(String::new())),
    }
}

/// Looks a host name up: the system's resolver in service, one a test controls otherwise.
pub trait Resolve: Send + Sync + 'static {
    fn lookup(&self, host: &str) -> BoxFuture<'static, io::Result<Vec<IpAddr>>>;
}

/// The system's resolver (getaddrinfo).
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn lookup(&self, host: &str) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> {
        let host = host.to_string();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.map(|a| a.ip()).collect())
        })
    }
}

/// The resolver the delivery client connects through: it keeps only the addresses a
/// webhook may reach, so the connection goes to a checked address and nowhere else.
pub struct Checked {
    pub inner: Arc<dyn Resolve>,
    pub reach: Reach,
}

impl Checked {
    async fn allowed(&self, host: &str) -> Result<Vec<IpAddr>, Refusal> {
        let found = self
            .inner
            .lookup(host)
            .await
            .map_err(|source| Refusal::Lookup { host: host.to_string(), source })?;
        let allowed: Vec<IpAddr> =
            found.into_iter().filter(|ip| check_ip(*ip, self.reach).is_ok()).collect();
        if allowed.is_empty() {
            return Err(Refusal::NoAllowedAddress(host.to_string()));
        }
        Ok(allowed)
    }
}

impl reqwest::dns::Resolve for Checked {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = Checked { inner: self.inner.clone(), reach: self.reach };
        Box::pin(async move {
            let ips = this.allowed(name.as_str()).await?;
            let addrs: reqwest::dns::Addrs =
                Box::new(ips.into_iter().map(|ip| std::net::SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(url: &str, reach: Reach) -> Result<(), Refusal> {
        check_host(&url::Url::parse(url).unwrap(), reach)
    }

    #[test]
    fn the_url_parser_reads_every_ipv4_spelling_as_an_address() {
        for url in ["http://2852039166/", "http://0251.0376.0251.0376/", "http://0xa9fea9fe/"] {
            let parsed = url::Url::parse(url).unwrap();
            assert_eq!(parsed.host(), Some(url::Host::Ipv4(Ipv4Addr::new(169, 254, 169, 254))));
            assert!(matches!(host(url, Reach::AllowPrivate), Err(Refusal::Metadata(_))), "{url}");
        }
    }

    #[test]
    fn ipv6_forms_of_metadata_addresses_are_metadata() {
        for ip in [
            "::169.254.169.254",
            "::ffff:169.254.169.254",
            "::ffff:0:169.254.169.254",
            "64:ff9b::169.254.169.254",
            "2002:a9fe:a9fe::1",
            "2001:0:4136:e378:8000:63bf:5601:5601",
            "fe80::1",
            "fd00:ec2::254",
        ] {
            assert!(is_metadata(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["::1", "::ffff:127.0.0.1", "2002:7f00:1::", "64:ff9b::a00:5", "10.0.0.5"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!is_metadata(ip) && is_internal(ip), "{ip}");
        }
        assert!(!is_internal("2606:4700::1111".parse().unwrap()));
        assert!(!is_internal("64:ff9b::808:808".parse().unwrap()));
    }
}
