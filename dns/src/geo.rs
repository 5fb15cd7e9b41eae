//! Client placement for the `nearest` policy: CIDR maps (longest prefix wins) and great-circle
//! distances between region coordinates.

use std::net::IpAddr;

use ipnet::IpNet;
use meridian_config::schema::GeoPoint;

/// Client subnets mapped to region indexes, searched longest prefix first.
#[derive(Clone, Debug, Default)]
pub struct CidrMap {
    entries: Vec<(IpNet, usize)>,
}

impl CidrMap {
    /// A map from (prefix, region index) pairs.
    pub fn new(mut entries: Vec<(IpNet, usize)>) -> Self {
        entries.sort_by_key(|e| std::cmp::Reverse(e.0.prefix_len()));
        CidrMap { entries }
    }

    /// The (prefix, region index) pairs, longest prefix first.
    pub fn entries(&self) -> &[(IpNet, usize)] {
        &self.entries
    }

    /// The region of the longest prefix containing `ip`, and that prefix's length.
    pub fn lookup(&self, ip: IpAddr) -> Option<(usize, u8)> {
        self.entries
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(net, r)| (*r, net.prefix_len()))
    }
}

/// Great-circle distance in kilometres (haversine).
pub fn distance_km(a: GeoPoint, b: GeoPoint) -> f64 {
    const R: f64 = 6371.0;
    let (la1, la2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = la2 - la1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * R * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let m = CidrMap::new(vec![
            ("10.0.0.0/8".parse().unwrap(), 0),
            ("10.1.0.0/16".parse().unwrap(), 1),
        ]);
        assert_eq!(m.lookup("10.1.2.3".parse().unwrap()), Some((1, 16)));
        assert_eq!(m.lookup("10.2.2.3".parse().unwrap()), Some((0, 8)));
        assert_eq!(m.lookup("192.0.2.1".parse().unwrap()), None);
    }

    #[test]
    fn distances() {
        let dc = GeoPoint { lat: 38.9, lon: -77.0 };
        let dublin = GeoPoint { lat: 53.3, lon: -6.3 };
        let d = distance_km(dc, dublin);
        assert!((5400.0..5600.0).contains(&d), "{d}");
        assert_eq!(distance_km(dc, dc), 0.0);
    }
}
