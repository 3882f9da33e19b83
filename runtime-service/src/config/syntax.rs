//! What configured names, addresses and lists must look like.

use std::net::Ipv6Addr;

/// `^[a-z0-9][a-z0-9._-]{0,63}$`
/// A dataset's name: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}` (one plain path component).
pub(super) fn is_dataset_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

pub(super) fn is_runtime_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

/// A DNS name or IPv4 address (underscores allowed: Docker service names have them).
pub(super) fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// `host:port` or `[ipv6]:port`, port 1-65535.
pub(super) fn is_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
        None => is_host_name(host),
    };
    port_ok && host_ok
}

/// `http://` or `https://`, then a host with an optional port.
pub(super) fn is_http_url(uri: &str) -> bool {
    let Some(rest) = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    !uri.chars().any(char::is_whitespace)
        && (is_host_port(authority)
            || is_host_name(authority)
            || authority
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .is_some_and(|v6| v6.parse::<Ipv6Addr>().is_ok()))
}

/// cpuset syntax: `0-3,6`.
pub(super) fn is_cpu_list(list: &str) -> bool {
    list.split(',').all(|item| {
        let (first, last) = item.split_once('-').unwrap_or((item, item));
        match (first.parse::<u32>(), last.parse::<u32>()) {
            (Ok(first), Ok(last)) => first <= last,
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validators() {
        assert!(is_dataset_name("prices"));
        assert!(is_dataset_name("Prices_2024.v1"));
        assert!(!is_dataset_name(".hidden"));
        assert!(!is_dataset_name("a/b"));
        assert!(!is_dataset_name(""));
        assert!(!is_dataset_name(&"a".repeat(65)));
        assert!(is_runtime_name("openjdk-17"));
        assert!(is_runtime_name("python-3.12"));
        assert!(!is_runtime_name("-x"));
        assert!(!is_runtime_name("Openjdk"));
        assert!(!is_runtime_name(&"a".repeat(65)));
        assert!(is_host_port("runtime_1:8080"));
        assert!(!is_host_port("runtime:0"));
        assert!(!is_host_port(":8080"));
        assert!(is_http_url("http://localhost:8086"));
        assert!(is_http_url("http://[::1]:8086"));
        assert!(!is_http_url("http://"));
        assert!(!is_http_url("ftp://x"));
        assert!(is_cpu_list("0"));
        assert!(!is_cpu_list(""));
        assert!(!is_cpu_list("0,,1"));
    }
}
