//! Resolves an endpoint's host to every address it has, telling apart the
//! answers that matter for scaling: a name with no address (a headless
//! Service whose pods are all gone or unready), a name DNS does not know,
//! and a lookup that failed. `std`'s resolver folds all three into one
//! `io::Error`, so this calls glibc's `getaddrinfo` directly. Blocking, as
//! `getaddrinfo` is: callers run it on a scrape thread. Also this host's
//! own addresses (`getifaddrs`), which the endpoint policy refuses for the
//! scaler's own ports.

use std::ffi::{CStr, CString};
use std::net::{IpAddr, SocketAddr};

/// What DNS said about a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// One or more addresses (deduplicated, in the resolver's order).
    Addresses(Vec<SocketAddr>),
    /// The name exists but has no address (`EAI_NODATA`: NOERROR with no
    /// records), or resolved to nothing usable.
    NoAddress(String),
    /// DNS does not know the name (`EAI_NONAME`: NXDOMAIN on every search
    /// domain).
    NoSuchName(String),
    /// The lookup failed (`EAI_AGAIN`, `EAI_FAIL`, a system error): the
    /// answer is unknown, not empty.
    Failed(String),
}

/// The most addresses kept for one name.
pub const MAX_ADDRESSES: usize = 4096;

/// Every address of `host` on `port`. An IP literal is its own answer.
pub fn resolve(host: &str, port: u16) -> Resolved {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Resolved::Addresses(vec![SocketAddr::new(ip, port)]);
    }
    let Ok(name) = CString::new(host) else {
        return Resolved::Failed(format!("{host:?} contains a NUL byte"));
    };
    // SAFETY: an all-zero addrinfo is the documented "no hints" value;
    // the fields set below are plain integers.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = libc::AF_UNSPEC;
    hints.ai_socktype = libc::SOCK_STREAM;
    let mut list: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: `name` is a NUL-terminated string that outlives the call;
    // `hints` is initialised; `list` is a valid out-pointer. On success the
    // list is freed below with freeaddrinfo, exactly once.
    let code = unsafe { libc::getaddrinfo(name.as_ptr(), std::ptr::null(), &hints, &mut list) };
    if code != 0 {
        let message = describe(code);
        return match code {
            libc::EAI_NODATA => Resolved::NoAddress(message),
            libc::EAI_NONAME => Resolved::NoSuchName(message),
            _ => Resolved::Failed(message),
        };
    }
    let mut addresses: Vec<SocketAddr> = Vec::new();
    let mut entry = list;
    while !entry.is_null() && addresses.len() < MAX_ADDRESSES {
        // SAFETY: `entry` is a node of the list getaddrinfo returned, not
        // yet freed; its `ai_addr` points at `ai_addrlen` bytes of the
        // family's sockaddr.
        let node = unsafe { &*entry };
        if let Some(address) = unsafe { socket_address(node) } {
            let address = with_port(address, port);
            if !addresses.contains(&address) {
                addresses.push(address);
            }
        }
        entry = node.ai_next;
    }
    // SAFETY: `list` came from a successful getaddrinfo and is freed once.
    unsafe { libc::freeaddrinfo(list) };
    if addresses.is_empty() {
        Resolved::NoAddress(String::from("no IPv4 or IPv6 address"))
    } else {
        Resolved::Addresses(addresses)
    }
}

/// The address in one `addrinfo` node, for IPv4 and IPv6.
///
/// # Safety
/// `node.ai_addr` must point at `node.ai_addrlen` readable bytes.
unsafe fn socket_address(node: &libc::addrinfo) -> Option<SocketAddr> {
    if node.ai_addr.is_null() {
        return None;
    }
    let length = node.ai_addrlen as usize;
    match node.ai_family {
        libc::AF_INET if length >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family and length say it is a sockaddr_in.
            let v4 = unsafe { &*(node.ai_addr as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), 0))
        }
        libc::AF_INET6 if length >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family and length say it is a sockaddr_in6.
            let v6 = unsafe { &*(node.ai_addr as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                0,
                v6.sin6_flowinfo,
                v6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn with_port(mut address: SocketAddr, port: u16) -> SocketAddr {
    address.set_port(port);
    address
}

fn describe(code: i32) -> String {
    if code == libc::EAI_SYSTEM {
        return format!("system error: {}", std::io::Error::last_os_error());
    }
    // SAFETY: gai_strerror returns a pointer to a static NUL-terminated
    // string for any code.
    let text = unsafe { CStr::from_ptr(libc::gai_strerror(code)) };
    text.to_string_lossy().into_owned()
}

/// Every address of this host's network interfaces (`getifaddrs`), so
/// that the scaler can refuse to read its own listeners through them.
/// Empty when the call fails.
pub fn local_addresses() -> Vec<IpAddr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `list`, which we free
    // below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Vec::new();
    }
    let mut addresses = Vec::new();
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: `entry` is a node of the list getifaddrs returned,
        // valid until freeifaddrs.
        let ifaddr = unsafe { &*entry };
        if !ifaddr.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says
            // which sockaddr_* it is.
            let family = i32::from(unsafe { (*ifaddr.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let v4 = unsafe { &*(ifaddr.ifa_addr as *const libc::sockaddr_in) };
                addresses.push(IpAddr::from(u32::from_be(v4.sin_addr.s_addr).to_be_bytes()));
            } else if family == libc::AF_INET6 {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let v6 = unsafe { &*(ifaddr.ifa_addr as *const libc::sockaddr_in6) };
                addresses.push(IpAddr::from(v6.sin6_addr.s6_addr));
            }
        }
        entry = ifaddr.ifa_next;
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    addresses.sort();
    addresses.dedup();
    addresses
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_hosts_addresses_include_loopback() {
        let own = local_addresses();
        assert!(own.contains(&IpAddr::from([127, 0, 0, 1])), "{own:?}");
    }

    #[test]
    fn literals_and_localhost() {
        assert_eq!(
            resolve("127.0.0.1", 8000),
            Resolved::Addresses(vec!["127.0.0.1:8000".parse().unwrap()])
        );
        assert_eq!(
            resolve("::1", 9),
            Resolved::Addresses(vec!["[::1]:9".parse().unwrap()])
        );
        match resolve("localhost", 8000) {
            Resolved::Addresses(addresses) => {
                assert!(addresses
                    .iter()
                    .all(|a| a.port() == 8000 && a.ip().is_loopback()))
            }
            other => panic!("localhost: {other:?}"),
        }
    }

    #[test]
    fn an_unknown_name_is_not_an_empty_one() {
        // `.invalid` never resolves (RFC 6761); with no network the lookup
        // may fail instead, which must not read as "no address" either.
        match resolve("no-such-service.invalid", 8000) {
            Resolved::NoSuchName(_) | Resolved::Failed(_) => {}
            other => panic!("{other:?}"),
        }
    }
}
