//! UPnP IGD port mapping: when a node sits behind a home or office router
//! that speaks UPnP, it asks the router to forward a UDP port of the
//! router's external address to the node's QUIC port, so that other nodes
//! can open tunnels to it (re6stnet does the same).
//!
//! [`PortMapper::spawn`] starts one task that
//! 1. finds the Internet Gateway Device by SSDP (igd-next),
//! 2. maps a **random external port** in [`UpnpConfig::ports`] (32768-49151,
//!    as re6stnet) to `our LAN address:our UDP port`, trying another port
//!    when the router says the one asked for is taken,
//! 3. **renews** the lease at half its duration (a router that rebooted
//!    forgets mappings; renewing also notices it), keeping the same external
//!    port when it can,
//! 4. **removes** the mapping on [`PortMapper::shutdown`].
//!
//! The current external address is published on a `watch` channel
//! ([`PortMapper::subscribe`]) so address discovery can announce it while it
//! lasts and withdraw it when it is gone. Failures are logged and retried
//! after [`UpnpConfig::retry`]: a node without UPnP simply has no mapped
//! address.
//!
//! UPnP IGD maps IPv4 only; IPv6 needs no NAT (a firewall pinhole would,
//! but few routers offer the IGDv2 firewall service: left out).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::time::Duration;

use igd_next::PortMappingProtocol::UDP;
use igd_next::aio::Gateway;
use igd_next::aio::tokio::{Tokio, search_gateway};
use igd_next::{AddPortError, SearchOptions};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// UPnP settings.
#[derive(Debug, Clone)]
pub struct UpnpConfig {
    /// Lease asked for each mapping; it is renewed at half of it. A router
    /// that only grants permanent leases gets one (and it is still renewed,
    /// to notice a reboot).
    pub lease: Duration,
    /// External ports to pick from at random.
    pub ports: RangeInclusive<u16>,
    /// Random ports tried before giving up when the router reports
    /// conflicts.
    pub tries: u32,
    /// Wait after a failure (no gateway, refused mapping) before trying
    /// again; it doubles after each failure in a row, up to `max_retry`
    /// (a node with no UPnP router around stops searching often).
    pub retry: Duration,
    /// Longest wait between two tries.
    pub max_retry: Duration,
    /// How long to wait for SSDP answers.
    pub search_timeout: Duration,
    /// How long one SOAP request may take.
    pub request_timeout: Duration,
    /// Description stored with the mapping on the router (shown in its UI).
    pub description: String,
    /// Seed of the port choice (`None`: from the OS). Tests use it.
    pub seed: Option<u64>,
}

impl Default for UpnpConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(600),
            ports: 32768..=49151,
            tries: 15,
            retry: Duration::from_secs(60),
            max_retry: Duration::from_secs(3600),
            search_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            description: "re6st".into(),
            seed: None,
        }
    }
}

/// A port mapping the router granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Mapping {
    /// The router's external address and the mapped port: what other nodes
    /// dial.
    pub external: SocketAddrV4,
    /// Where the router forwards to: our LAN address and UDP port.
    pub internal: SocketAddrV4,
    /// The gateway's control address.
    pub gateway: SocketAddr,
    /// Lease granted in seconds (0: permanent).
    pub lease_secs: u32,
}

/// Why a mapping could not be made or kept.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpnpError {
    /// No gateway answered the SSDP search.
    #[error("no UPnP gateway found: {0}")]
    NoGateway(#[source] igd_next::SearchError),
    /// The gateway is reached over IPv6; IGD port mapping is IPv4 NAT.
    #[error("the UPnP gateway {0} is not IPv4")]
    NotIpv4(SocketAddr),
    /// We have no IPv4 address toward the gateway.
    #[error("no local IPv4 address toward the gateway {gateway}: {source}")]
    NoLocalAddress {
        /// The gateway.
        gateway: SocketAddr,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// The gateway does not tell its external address.
    #[error("the gateway does not give its external address: {0}")]
    ExternalIp(#[source] igd_next::GetExternalIpError),
    /// The gateway has no usable external address (it reports 0.0.0.0,
    /// often because it is itself behind another NAT).
    #[error("the gateway reports no usable external address ({0})")]
    NoExternalAddress(IpAddr),
    /// Every port tried was taken.
    #[error("no free external port after {0} tries")]
    PortsExhausted(u32),
    /// The gateway refused the mapping.
    #[error("the gateway refused the mapping: {0}")]
    Refused(#[source] AddPortError),
    /// The gateway did not answer in time.
    #[error("the gateway did not answer within {0:?}")]
    Timeout(Duration),
}

/// The moment to renew a lease of `lease_secs` granted at `granted`: half
/// way, so one lost renewal still leaves time for another; a permanent
/// lease (0) is re-asserted every `fallback` (a rebooted router forgot it).
pub fn renew_at(granted: Instant, lease_secs: u32, fallback: Duration) -> Instant {
    if lease_secs == 0 {
        granted + fallback
    } else {
        granted + Duration::from_secs(u64::from(lease_secs)) / 2
    }
}

/// The wait before the next try after `failures` failures in a row:
/// `retry`, doubling, at most `max`.
pub fn retry_after(retry: Duration, max: Duration, failures: u32) -> Duration {
    retry.saturating_mul(1 << failures.min(20)).min(max)
}

/// Lease in seconds for the UPnP request (at least 1: 0 would ask for a
/// permanent one; at most the 7 days miniupnpd and the IGD spec allow).
fn lease_secs(lease: Duration) -> u32 {
    u32::try_from(lease.as_secs())
        .unwrap_or(u32::MAX)
        .clamp(1, 604_800)
}

/// One IGD and the mapping we hold on it.
struct Igd {
    gateway: Gateway<Tokio>,
    internal: SocketAddrV4,
    config: UpnpConfig,
}

impl Igd {
    /// Finds the gateway and the LAN address it forwards to.
    async fn discover(config: &UpnpConfig, internal_port: u16) -> Result<Self, UpnpError> {
        let mut opts = SearchOptions::default();
        opts.timeout = Some(config.search_timeout);
        opts.single_search_timeout = Some(config.search_timeout);
        let gateway = search_gateway(opts).await.map_err(UpnpError::NoGateway)?;
        let SocketAddr::V4(gw) = gateway.addr else {
            return Err(UpnpError::NotIpv4(gateway.addr));
        };
        let ip = local_ipv4_toward(gw).map_err(|source| UpnpError::NoLocalAddress {
            gateway: gateway.addr,
            source,
        })?;
        Ok(Self {
            gateway,
            internal: SocketAddrV4::new(ip, internal_port),
            config: config.clone(),
        })
    }

    async fn timed<T>(&self, f: impl Future<Output = T>) -> Result<T, UpnpError> {
        tokio::time::timeout(self.config.request_timeout, f)
            .await
            .map_err(|_| UpnpError::Timeout(self.config.request_timeout))
    }

    async fn external_ip(&self) -> Result<Ipv4Addr, UpnpError> {
        let ip = self
            .timed(self.gateway.get_external_ip())
            .await?
            .map_err(UpnpError::ExternalIp)?;
        match ip {
            IpAddr::V4(v4) if !v4.is_unspecified() && !v4.is_broadcast() => Ok(v4),
            other => Err(UpnpError::NoExternalAddress(other)),
        }
    }

    /// Asks for `port` with our lease; if the router only grants permanent
    /// leases, asks again for one. Returns the lease granted.
    async fn add(&self, port: u16) -> Result<u32, AddPortError> {
        let lease = lease_secs(self.config.lease);
        let add = |lease| {
            self.gateway.add_port(
                UDP,
                port,
                SocketAddr::V4(self.internal),
                lease,
                &self.config.description,
            )
        };
        let timeout = self.config.request_timeout;
        let timed = |f| async move {
            tokio::time::timeout(timeout, f).await.unwrap_or_else(|_| {
                Err(AddPortError::RequestError(igd_next::RequestError::IoError(
                    std::io::ErrorKind::TimedOut.into(),
                )))
            })
        };
        match timed(add(lease)).await {
            Err(AddPortError::OnlyPermanentLeasesSupported) => timed(add(0)).await.map(|()| 0),
            r => r.map(|()| lease),
        }
    }

    /// Maps a random free external port, trying others on conflicts.
    async fn map_random(&self, rng: &mut StdRng) -> Result<Mapping, UpnpError> {
        let ip = self.external_ip().await?;
        for _ in 0..self.config.tries.max(1) {
            let port = rng.random_range(self.config.ports.clone());
            match self.add(port).await {
                Ok(lease_secs) => return Ok(self.mapping(ip, port, lease_secs)),
                Err(AddPortError::PortInUse) => {
                    tracing::debug!(port, "UPnP: external port taken, trying another");
                }
                Err(e) => return Err(UpnpError::Refused(e)),
            }
        }
        Err(UpnpError::PortsExhausted(self.config.tries))
    }

    /// Renews `m` (same external port). A router that gave the port to
    /// someone else in the meantime gets a new random one.
    async fn renew(&self, m: &Mapping, rng: &mut StdRng) -> Result<Mapping, UpnpError> {
        let ip = self.external_ip().await?;
        match self.add(m.external.port()).await {
            Ok(lease_secs) => Ok(self.mapping(ip, m.external.port(), lease_secs)),
            Err(AddPortError::PortInUse) => self.map_random(rng).await,
            Err(e) => Err(UpnpError::Refused(e)),
        }
    }

    async fn remove(&self, m: &Mapping) {
        match self
            .timed(self.gateway.remove_port(UDP, m.external.port()))
            .await
        {
            Ok(Ok(())) => tracing::info!(external = %m.external, "UPnP mapping removed"),
            Ok(Err(e)) => {
                tracing::warn!(external = %m.external, error = %e, "UPnP: cannot remove the mapping")
            }
            Err(e) => {
                tracing::warn!(external = %m.external, error = %e, "UPnP: cannot remove the mapping")
            }
        }
    }

    fn mapping(&self, ip: Ipv4Addr, port: u16, lease_secs: u32) -> Mapping {
        Mapping {
            external: SocketAddrV4::new(ip, port),
            internal: self.internal,
            gateway: self.gateway.addr,
            lease_secs,
        }
    }
}

/// Our IPv4 address on the route toward `gateway` (the kernel's source
/// address choice; no packet is sent).
fn local_ipv4_toward(gateway: SocketAddrV4) -> std::io::Result<Ipv4Addr> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    s.connect(gateway)?;
    match s.local_addr()? {
        SocketAddr::V4(a) => Ok(*a.ip()),
        SocketAddr::V6(_) => Err(std::io::ErrorKind::AddrNotAvailable.into()),
    }
}

/// A running port-mapping task.
#[derive(Debug)]
pub struct PortMapper {
    current: watch::Receiver<Option<Mapping>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl PortMapper {
    /// Starts mapping `internal_port` (our UDP port) on the current tokio
    /// runtime.
    pub fn spawn(config: UpnpConfig, internal_port: u16) -> Self {
        let (tx, current) = watch::channel(None);
        let (stop, stopped) = oneshot::channel();
        let rng = match config.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => rand::make_rng(),
        };
        let task = tokio::spawn(run(config, internal_port, rng, tx, stopped));
        Self {
            current,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The mapping in force, if any.
    pub fn current(&self) -> Option<Mapping> {
        *self.current.borrow()
    }

    /// A receiver that sees every change of the mapping.
    pub fn subscribe(&self) -> watch::Receiver<Option<Mapping>> {
        self.current.clone()
    }

    /// Removes the mapping from the router and stops.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for PortMapper {
    fn drop(&mut self) {
        // Dropped without shutdown: stop renewing; the lease runs out on the
        // router by itself.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn run(
    config: UpnpConfig,
    internal_port: u16,
    mut rng: StdRng,
    tx: watch::Sender<Option<Mapping>>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut igd: Option<Igd> = None;
    let mut held: Option<Mapping> = None;
    let mut failures = 0u32;
    loop {
        let result = match (&igd, &held) {
            (Some(g), Some(m)) => g.renew(m, &mut rng).await,
            (Some(g), None) => g.map_random(&mut rng).await,
            (None, _) => match Igd::discover(&config, internal_port).await {
                Ok(g) => {
                    tracing::debug!(gateway = %g.gateway.addr, internal = %g.internal, "UPnP gateway found");
                    let r = g.map_random(&mut rng).await;
                    igd = Some(g);
                    r
                }
                Err(e) => Err(e),
            },
        };
        let next = match result {
            Ok(m) => {
                if held != Some(m) {
                    if let Some(old) = held
                        && old.external != m.external
                    {
                        tracing::info!(old = %old.external, new = %m.external, "UPnP mapping moved");
                    } else if held.is_none() {
                        tracing::info!(external = %m.external, internal = %m.internal,
                            gateway = %m.gateway, lease_s = m.lease_secs, "UPnP mapping made");
                    }
                    tx.send_replace(Some(m));
                }
                held = Some(m);
                failures = 0;
                renew_at(Instant::now(), m.lease_secs, config.lease / 2)
            }
            Err(e) => {
                let wait = retry_after(config.retry, config.max_retry, failures);
                failures = failures.saturating_add(1);
                if failures == 1 || held.is_some() {
                    tracing::info!(error = %e, "UPnP: no mapping (retrying in {wait:?})");
                } else {
                    tracing::debug!(error = %e, "UPnP: no mapping (retrying in {wait:?})");
                }
                // Forget the gateway too: it may have been replaced.
                held = None;
                igd = None;
                tx.send_replace(None);
                Instant::now() + wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            _ = &mut stop => break,
        }
    }
    if let (Some(g), Some(m)) = (&igd, &held) {
        g.remove(m).await;
    }
    tx.send_replace(None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_half_the_lease() {
        let t = Instant::now();
        assert_eq!(
            renew_at(t, 600, Duration::from_secs(1)),
            t + Duration::from_secs(300)
        );
        assert_eq!(
            renew_at(t, 1, Duration::from_secs(9)),
            t + Duration::from_millis(500)
        );
    }

    #[test]
    fn permanent_leases_are_reasserted() {
        let t = Instant::now();
        assert_eq!(
            renew_at(t, 0, Duration::from_secs(300)),
            t + Duration::from_secs(300)
        );
    }

    #[test]
    fn retries_back_off() {
        let (r, m) = (Duration::from_secs(60), Duration::from_secs(3600));
        assert_eq!(retry_after(r, m, 0), r);
        assert_eq!(retry_after(r, m, 1), 2 * r);
        assert_eq!(retry_after(r, m, 5), 32 * r);
        assert_eq!(retry_after(r, m, 6), m);
        assert_eq!(retry_after(r, m, u32::MAX), m);
    }

    #[test]
    fn lease_request_is_bounded() {
        assert_eq!(lease_secs(Duration::ZERO), 1);
        assert_eq!(lease_secs(Duration::from_secs(600)), 600);
        assert_eq!(lease_secs(Duration::from_secs(u64::MAX)), 604_800);
    }
}
