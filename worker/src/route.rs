//! Which of this host's addresses reaches the coordinator: the collective listener binds it
//! (port 0), so the address a worker reports to its peers is one they can reach, on loopback
//! for a coordinator on this host and on the right interface for one elsewhere, without
//! listening on every interface.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};

/// The local address the kernel would send from to reach the coordinator at `url`;
/// loopback when that cannot be told (an unresolvable name: registration will say more).
pub fn local_ip_towards(url: &str) -> IpAddr {
    towards(url).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn towards(url: &str) -> Option<IpAddr> {
    let uri: tonic::codegen::http::Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let target: SocketAddr = (host, port).to_socket_addrs().ok()?.next()?;
    let unspecified: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    // Connecting a UDP socket sends nothing: it only asks the routing table for a source.
    let socket = UdpSocket::bind(unspecified).ok()?;
    socket.connect(target).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_coordinator_on_loopback_is_reached_from_loopback() {
        assert_eq!(
            local_ip_towards("http://127.0.0.1:7070"),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert!(local_ip_towards("http://[::1]:7070").is_loopback());
        assert!(local_ip_towards("http://localhost:7070").is_loopback());
    }

    #[test]
    fn an_unresolvable_coordinator_falls_back_to_loopback() {
        assert_eq!(
            local_ip_towards("not a url"),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
    }
}
