//! `engineEndpoints` entries: `HOST[:PORT]` or `http://HOST[:PORT][/PATH]`,
//! with the engine's default port and `/metrics` as the default path.
//! Pure parsing; resolving the host to its addresses is `resolve`'s job.

use std::fmt;

/// The most entries one `engineEndpoints` may list.
pub const MAX_ENDPOINTS_PER_TRIGGER: usize = 32;
/// The longest path accepted.
const MAX_PATH: usize = 256;

/// One place to scrape: every address `host` resolves to, on `port`, at `path`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// A DNS name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Starts with `/`.
    pub path: String,
}

impl Endpoint {
    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.host_header(), self.path)
    }
}

/// Parses a comma-separated list. `default_port` is the engine's (None
/// when no engine is named: every entry then needs its port). Errors say
/// what is wrong, without the key (the caller adds it).
pub fn parse_list(text: &str, default_port: Option<u16>) -> Result<Vec<Endpoint>, String> {
    parse_list_with(text, default_port, "/metrics")
}

/// As [`parse_list`], with the path an entry without one reads (an
/// engine's default page). Each entry is normalised in full (port and
/// path) before duplicates are dropped, so `a:80,a:80/x` is two
/// endpoints and `a:80,a:80/metrics` one.
pub fn parse_list_with(
    text: &str,
    default_port: Option<u16>,
    default_path: &str,
) -> Result<Vec<Endpoint>, String> {
    let mut endpoints: Vec<Endpoint> = Vec::new();
    for entry in text.split(',').map(str::trim) {
        if entry.is_empty() {
            return Err(String::from("has an empty entry"));
        }
        let endpoint = parse_one(entry, default_port, default_path)
            .map_err(|e| format!("entry {entry:?} {e}"))?;
        if !endpoints.contains(&endpoint) {
            endpoints.push(endpoint);
        }
    }
    if endpoints.len() > MAX_ENDPOINTS_PER_TRIGGER {
        return Err(format!(
            "lists {} endpoints; at most {MAX_ENDPOINTS_PER_TRIGGER} (a headless Service name reaches every replica in one entry)",
            endpoints.len()
        ));
    }
    Ok(endpoints)
}

fn parse_one(
    entry: &str,
    default_port: Option<u16>,
    default_path: &str,
) -> Result<Endpoint, String> {
    let rest = if let Some(rest) = entry.strip_prefix("http://") {
        rest
    } else if entry.starts_with("https://") {
        return Err(String::from(
            "is HTTPS; engines are read over plain HTTP only (in a mesh with strict mTLS, exclude the metrics port)",
        ));
    } else if let Some((scheme, _)) = entry.split_once("://") {
        return Err(format!(
            "has scheme {scheme:?}; use http:// or leave it out"
        ));
    } else {
        entry
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, default_path),
    };
    if path.len() > MAX_PATH || !path.bytes().all(|b| b.is_ascii_graphic()) || path.contains('#') {
        return Err(format!(
            "has path {path:?}: expected visible ASCII without '#', at most {MAX_PATH} bytes"
        ));
    }
    let (host, port) = split_host_port(authority)?;
    let port = match (port, default_port) {
        (Some(port), _) => port,
        (None, Some(port)) => port,
        (None, None) => return Err(String::from("has no port; add :PORT or set engine")),
    };
    Ok(Endpoint {
        host: host.to_string(),
        port,
        path: path.to_string(),
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| String::from("has '[' without ']'"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "has {host:?} in brackets, which is not an IPv6 address"
            ));
        }
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("has {after:?} after the IPv6 address")),
            },
        }
    } else if authority.matches(':').count() > 1 {
        return Err(String::from(
            "has an IPv6 address without brackets; write [ADDRESS]:PORT",
        ));
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    let is_dns = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !is_ip && !is_dns {
        return Err(format!(
            "has host {host:?}: expected a DNS name or an IP address"
        ));
    }
    let port = match port {
        None => None,
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port > 0 => Some(port),
            _ => return Err(format!("has port {text:?}: expected 1 to 65535")),
        },
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str, default_port: Option<u16>) -> Result<Endpoint, String> {
        parse_list(text, default_port).map(|mut list| list.remove(0))
    }

    fn endpoint(host: &str, port: u16, path: &str) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
            path: path.into(),
        }
    }

    #[test]
    fn forms_and_defaults() {
        assert_eq!(
            one("vllm.ml.svc.cluster.local", Some(8000)),
            Ok(endpoint("vllm.ml.svc.cluster.local", 8000, "/metrics"))
        );
        assert_eq!(
            one("vllm:9000", Some(8000)),
            Ok(endpoint("vllm", 9000, "/metrics"))
        );
        assert_eq!(
            one("http://triton:8002/metrics", None),
            Ok(endpoint("triton", 8002, "/metrics"))
        );
        assert_eq!(
            one("http://10.0.0.7/prometheus/metrics", Some(8000)),
            Ok(endpoint("10.0.0.7", 8000, "/prometheus/metrics"))
        );
        assert_eq!(
            one("[::1]:30000", None),
            Ok(endpoint("::1", 30000, "/metrics"))
        );
        assert_eq!(
            one("http://[fd00::5]", Some(8000)).unwrap().host_header(),
            "[fd00::5]:8000"
        );
        let list = parse_list(" a:1 , b:2,a:1", None).unwrap();
        assert_eq!(
            list,
            vec![endpoint("a", 1, "/metrics"), endpoint("b", 2, "/metrics")]
        );
        assert_eq!(list[1].to_string(), "http://b:2/metrics");
    }

    #[test]
    fn mistakes_say_what_is_wrong() {
        let cases = [
            (
                "https://vllm:8000",
                "is HTTPS; engines are read over plain HTTP only",
            ),
            ("grpc://vllm:8000", "has scheme \"grpc\""),
            ("vllm", "has no port; add :PORT or set engine"),
            ("vllm:0", "has port \"0\": expected 1 to 65535"),
            ("vllm:http", "has port \"http\""),
            ("vllm:70000", "has port \"70000\""),
            ("fd00::5", "without brackets"),
            ("[vllm]:80", "which is not an IPv6 address"),
            ("vllm_svc:80", "has host \"vllm_svc\""),
            (":80", "has host \"\""),
            ("a:1,,b:2", "has an empty entry"),
            ("http://v:1/a b", "has path \"/a b\""),
        ];
        for (text, expected) in cases {
            let error = parse_list(text, None).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
        let many: Vec<String> = (0..=MAX_ENDPOINTS_PER_TRIGGER)
            .map(|i| format!("h{i}:1"))
            .collect();
        let error = parse_list(&many.join(","), None).unwrap_err();
        assert!(error.contains("at most 32"), "{error}");
        assert!(parse_list(&many[..MAX_ENDPOINTS_PER_TRIGGER].join(","), None).is_ok());
    }
}
