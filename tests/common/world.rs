//! The worlds the end-to-end tests run in, built from the config crate's own types and written with
//! [`meridian_config::to_yaml`], so a test's config is typed (a renamed field breaks the build, not
//! the test) and no test repeats YAML. Each test owns a /16 of the loopback range (`127.N.0.0/16`)
//! and takes hosts from it in order, so tests running at once never share an address: gateways on
//! `127.N.0.x`, backends on `127.N.1.x`, DNS on `127.N.0.53`, control loops on the next gateway host. The values
//! themselves come from `meridian_config::build`, which the lab uses too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use meridian_config::build;
#[allow(unused_imports)]
pub use meridian_config::build::{gslb, header_rule, pin, record, split};
use meridian_config::schema::{
    Config, Dns, Listener, Model, Region, RegionControl, RegionGateway, Route, Secret, Version,
};
use meridian_config::units::Duration;

/// A duration in milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::millis(n)
}

/// A duration in seconds.
pub fn secs(n: u64) -> Duration {
    Duration::secs(n)
}

/// Hands out the hosts of one test's `127.N.0.0/16`, in order within each subnet.
pub struct Addrs {
    net: u8,
    next: [u8; 256],
}

impl Addrs {
    /// The test's own `/16`.
    pub fn new(net: u8) -> Addrs {
        Addrs { net, next: [0; 256] }
    }

    /// The next host of subnet `127.N.sub.0/24`.
    pub fn host(&mut self, sub: u8) -> String {
        self.next[sub as usize] += 1;
        format!("127.{}.{sub}.{}", self.net, self.next[sub as usize])
    }
}

/// Where a region's gateway listens.
#[derive(Clone, Debug)]
pub struct Gw {
    /// The public listener, `IP:8080`.
    pub public: String,
    /// The admin listener, `IP:9901`.
    pub admin: String,
    /// The IP both listen on.
    pub ip: String,
}

/// Where the DNS server listens.
#[derive(Clone, Debug)]
pub struct DnsAt {
    /// UDP and TCP, `IP:5353`.
    pub listen: String,
    /// Admin API, `IP:9953`.
    pub admin: String,
}

/// A test world's config and the addresses handed out for it.
pub struct World {
    /// The config as it will be written; tests change its policy sections directly.
    pub config: Config,
    /// The test's addresses.
    pub addrs: Addrs,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

impl World {
    /// An empty world in `127.net.0.0/16`.
    pub fn new(net: u8) -> World {
        World {
            config: Config::default(),
            addrs: Addrs::new(net),
        }
    }

    /// A region without a gateway of its own (a failover target, a backend's home).
    pub fn region(&mut self, name: &str, zones: &[&str]) -> &mut Region {
        self.config.regions.push(build::region(name, zones));
        self.config.regions.last_mut().expect("just pushed")
    }

    /// A region with a gateway on the next gateway host: public listener `:8080`, admin `:9901`.
    pub fn gateway(&mut self, name: &str, zones: &[&str]) -> Gw {
        let ip = self.addrs.host(0);
        self.gateway_at(name, zones, &ip)
    }

    /// [`Self::gateway`] on a given IP (a host in a network namespace).
    pub fn gateway_at(&mut self, name: &str, zones: &[&str], ip: &str) -> Gw {
        let ip = ip.to_string();
        let gw = Gw {
            public: format!("{ip}:8080"),
            admin: format!("{ip}:9901"),
            ip: ip.clone(),
        };
        self.region(name, zones).gateway = Some(build::gateway(addr(&gw.public), addr(&gw.admin)));
        gw
    }

    /// The gateway settings of region `name`.
    pub fn gateway_of(&mut self, name: &str) -> &mut RegionGateway {
        self.region_of(name).gateway.as_mut().expect("the region has a gateway")
    }

    /// Region `name`.
    pub fn region_of(&mut self, name: &str) -> &mut Region {
        self.config
            .regions
            .iter_mut()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no region {name}"))
    }

    /// Makes DNS answer region `name` with its gateway's own IP.
    pub fn announce(&mut self, name: &str) {
        let gw = self.gateway_of(name);
        let ip = gw.listeners[0].address.ip();
        gw.public_addresses = vec![ip];
    }

    /// Gives region `name` a control loop on the host after its gateway's (`:9902`), collecting
    /// every 200 ms (500 ms timeout) so tests see its rounds quickly; returns it.
    pub fn control(&mut self, name: &str) -> String {
        let t = &mut self.config.control.telemetry;
        (t.interval, t.timeout) = (ms(200), ms(500));
        let host = self.addrs.host(0);
        let address = format!("{host}:9902");
        self.region_of(name).control = Some(RegionControl {
            address: addr(&address),
        });
        address
    }

    /// Gives region `name` a control loop that alone judges endpoints (the gateway's own health
    /// checks off) and reads Kubernetes through `kubeconfig.yaml` beside the config (see
    /// `kube::kubeconfig`); returns its address.
    pub fn kube_control(&mut self, name: &str) -> String {
        self.config.gateway.health_check.enabled = false;
        self.config.control.kubernetes = Some(meridian_config::schema::KubeAccess {
            kubeconfig: Some("kubeconfig.yaml".into()),
            context: None,
        });
        self.control(name)
    }

    /// Requires `token` from non-loopback admin clients of region `name`'s gateway.
    pub fn admin_token(&mut self, name: &str, token: &str) {
        self.gateway_of(name).admin.token = Some(Secret(token.into()));
    }

    /// Model `name`, created empty on first use.
    pub fn model(&mut self, name: &str) -> &mut Model {
        if !self.config.models.iter().any(|m| m.name == name) {
            self.config.models.push(build::model(name));
        }
        self.config
            .models
            .iter_mut()
            .find(|m| m.name == name)
            .expect("just made")
    }

    /// Version `version` of `model`, created without endpoints on first use.
    pub fn version(&mut self, model: &str, version: &str) -> &mut Version {
        let m = self.model(model);
        if !m.versions.iter().any(|v| v.name == version) {
            m.versions.push(build::version(version));
        }
        m.versions.iter_mut().find(|v| v.name == version).expect("just made")
    }

    /// A backend of `model` `version` with id `id` in `region`/`zone`, on the next backend host's
    /// port 8000; returns its address.
    pub fn backend(&mut self, model: &str, version: &str, id: &str, region: &str, zone: &str) -> String {
        self.backend_on(model, version, id, region, zone, 8000)
    }

    /// [`Self::backend`] on another port.
    pub fn backend_on(&mut self, model: &str, version: &str, id: &str, region: &str, zone: &str, port: u16) -> String {
        let address = format!("{}:{port}", self.addrs.host(1));
        self.endpoint_at(model, version, id, &address, region, zone);
        address
    }

    /// An endpoint at a given address (a host outside the allocator: another namespace, a port
    /// that must not answer).
    pub fn endpoint_at(&mut self, model: &str, version: &str, id: &str, address: &str, region: &str, zone: &str) {
        let id = (!id.is_empty()).then_some(id);
        self.version(model, version)
            .endpoints
            .push(build::endpoint(id, addr(address), region, zone));
    }

    /// Adds a routing rule to `model`.
    pub fn route(&mut self, model: &str, route: Route) {
        self.model(model).routes.push(route);
    }

    /// A DNS server on the DNS host, authoritative for `meridian.test` (SOA, NS and an A record
    /// for `ns1`); GSLB names and other records are added to [`Self::dns_mut`].
    pub fn dns(&mut self) -> DnsAt {
        let ip = format!("127.{}.0.53", self.addrs.net);
        let at = DnsAt {
            listen: format!("{ip}:5353"),
            admin: format!("{ip}:9953"),
        };
        self.config.dns = Some(build::dns(
            addr(&at.listen),
            addr(&at.admin),
            "meridian.test",
            "127.0.0.1",
        ));
        at
    }

    /// [`Self::dns`] with the quick probes every DNS test uses: every `interval`, each bounded by
    /// `timeout`; one pass brings a region back, two failures in a row take it out.
    pub fn dns_probing(&mut self, interval: Duration, timeout: Duration) -> DnsAt {
        let at = self.dns();
        self.dns_mut().probe = meridian_config::schema::Probe {
            interval,
            timeout,
            healthy_threshold: 1,
            unhealthy_threshold: 2,
        };
        at
    }

    /// The DNS section.
    pub fn dns_mut(&mut self) -> &mut Dns {
        self.config.dns.as_mut().expect("dns() first")
    }

    /// Writes the config to `meridian.yaml` in `dir`; returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("meridian.yaml");
        self.rewrite(&path);
        path
    }

    /// Writes the config over `path` atomically (write, then rename), as config management would.
    pub fn rewrite(&self, path: &Path) {
        super::write_config(path, &meridian_config::to_yaml(&self.config));
    }
}

/// A TLS listener on `address` serving `certs`, each (SNI names, certificate file, key file).
pub fn tls_listener(name: &str, address: &str, certs: &[(&[&str], PathBuf, PathBuf)]) -> Listener {
    use meridian_config::schema::{Certificate, ListenerTls};
    Listener {
        name: name.into(),
        address: addr(address),
        protocols: Vec::new(),
        tls: Some(ListenerTls {
            certificates: certs
                .iter()
                .map(|(names, cert, key)| Certificate {
                    server_names: names.iter().map(|n| n.to_string()).collect(),
                    cert: cert.clone(),
                    key: key.clone(),
                })
                .collect(),
            client_ca: None,
            min_version: Default::default(),
        }),
    }
}
