//! One model version's endpoints as one gateway sees them: priority levels by locality, and the pick.
//!
//! Inside a level the pick is power-of-two-choices: two endpoints sampled by weight, the one with the
//! lower cost wins, cost = peak-EWMA latency x (in-flight + 1) / GPU headroom. Level loads are cached
//! and recomputed only when some endpoint's availability changes (the registry epoch moves), so a
//! pick is O(log n) in the level's size and lock-free.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicUsize, Ordering};

use meridian_config::schema::{Balancer, LlmRouting, Locality};
use meridian_config::snapshot::{EndpointSpec, RegionId, Snapshot, ZoneId};
use rand::Rng;
use smallvec::SmallVec;

use crate::clock::Nanos;
use crate::endpoint::{EndpointState, Registry};
use crate::llm_pick::{self, Prompt, MAX_CANDIDATES};
use crate::locality::{split, LevelLoad};

/// Where a priority level sits relative to the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LevelKind {
    /// The gateway's own zone.
    Zone,
    /// The rest of the gateway's region.
    Region,
    /// A failover region.
    Failover(Arc<str>),
}

impl LevelKind {
    /// Label for metrics, logs and the admin API.
    pub fn label(&self) -> &str {
        match self {
            LevelKind::Zone => "zone",
            LevelKind::Region => "region",
            LevelKind::Failover(r) => r,
        }
    }
}

/// A priority level's endpoints and their cumulative weights.
#[derive(Debug)]
pub struct Level {
    /// Where the level sits.
    pub kind: LevelKind,
    /// Endpoints with their weights.
    pub members: Vec<(Arc<EndpointState>, u32)>,
    cumulative: Vec<u64>,
    /// Round-robin position.
    turn: AtomicUsize,
}

impl Level {
    fn new(kind: LevelKind, members: Vec<(Arc<EndpointState>, u32)>) -> Self {
        let mut acc = 0;
        let cumulative = members
            .iter()
            .map(|(_, w)| {
                acc += u64::from(*w);
                acc
            })
            .collect();
        Level {
            kind,
            members,
            cumulative,
            turn: AtomicUsize::new(0),
        }
    }

    fn total_weight(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// The next usable member in turn (weights ignored).
    fn next_in_turn(&self, usable: impl Fn(&EndpointState) -> bool) -> Option<Arc<EndpointState>> {
        let n = self.members.len();
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| &self.members[(start + k) % n].0)
            .find(|e| usable(e))
            .cloned()
    }

    /// A member sampled by weight, O(log n).
    fn sample<R: Rng>(&self, rng: &mut R) -> &Arc<EndpointState> {
        let x = rng.random_range(0..self.total_weight());
        let i = self.cumulative.partition_point(|&c| c <= x);
        &self.members[i].0
    }
}

#[derive(Debug)]
struct Loads {
    epoch: u64,
    levels: Vec<LevelLoad>,
}

/// A model version's endpoints grouped by locality.
#[derive(Debug)]
pub struct Cluster {
    /// Priority levels in order; empty levels are left out.
    pub levels: Vec<Level>,
    locality: Locality,
    loads: ArcSwap<Loads>,
    /// Per-endpoint concurrency limit; endpoints at it are skipped.
    max_in_flight: u32,
    /// How a level's endpoints share requests.
    balancer: Balancer,
}

/// An endpoint chosen for a request.
#[derive(Clone, Debug)]
pub struct Pick {
    /// The endpoint.
    pub endpoint: Arc<EndpointState>,
    /// Index of its level.
    pub level: usize,
    /// Share of the request's prompt blocks the endpoint likely holds (LLM picks; else 0).
    pub prefix: f64,
}

/// Where the gateway runs.
#[derive(Clone, Copy, Debug)]
pub struct Origin {
    /// Its region.
    pub region: RegionId,
    /// Its zone, when known; without it level 0 is the whole region.
    pub zone: Option<ZoneId>,
}

impl Cluster {
    /// Groups `endpoints` into levels as seen from `origin`.
    pub fn build(
        snap: &Snapshot,
        origin: Origin,
        endpoints: &[EndpointSpec],
        registry: &Registry,
        locality: &Locality,
    ) -> Cluster {
        let state = |e: &EndpointSpec| {
            let s = registry.get_or_create(&e.id, e.address);
            s.set_grpc_port(e.grpc_port);
            (s, e.weight)
        };
        let mut levels = Vec::new();
        let same_region = |e: &&EndpointSpec| e.region == origin.region;
        if let Some(zone) = origin.zone {
            levels.push(Level::new(
                LevelKind::Zone,
                endpoints.iter().filter(|e| e.zone == zone).map(state).collect(),
            ));
            levels.push(Level::new(
                LevelKind::Region,
                endpoints
                    .iter()
                    .filter(same_region)
                    .filter(|e| e.zone != zone)
                    .map(state)
                    .collect(),
            ));
        } else {
            levels.push(Level::new(
                LevelKind::Region,
                endpoints.iter().filter(same_region).map(state).collect(),
            ));
        }
        for &r in &snap.regions[origin.region].failover {
            let name = snap.regions[r].name.clone();
            levels.push(Level::new(
                LevelKind::Failover(name),
                endpoints.iter().filter(|e| e.region == r).map(state).collect(),
            ));
        }
        levels.retain(|l| !l.members.is_empty());
        Cluster {
            levels,
            locality: locality.clone(),
            loads: ArcSwap::from_pointee(Loads {
                epoch: u64::MAX,
                levels: Vec::new(),
            }),
            max_in_flight: u32::MAX,
            balancer: Balancer::P2c,
        }
    }

    /// Sets how a level's endpoints share requests.
    pub fn with_balancer(mut self, balancer: Balancer) -> Self {
        self.balancer = balancer;
        self
    }

    /// Gives every endpoint LLM routing state (a prompt-block index of `policy.index_blocks` at
    /// the most).
    pub fn with_llm(self, policy: &LlmRouting) -> Self {
        for e in self.endpoints() {
            e.enable_llm(policy.index_blocks as usize, policy.block_tokens);
        }
        self
    }

    /// Sets the per-endpoint concurrency limit.
    pub fn with_max_in_flight(mut self, n: u32) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Whether a pick may choose `e` in a level that is (or is not) in panic: available, or any
    /// endpoint in panic, and under the per-endpoint concurrency limit.
    pub fn admits(&self, e: &EndpointState, panic: bool) -> bool {
        (panic || e.available()) && e.in_flight() < self.max_in_flight
    }

    /// How a level's endpoints share requests.
    pub fn balancer(&self) -> Balancer {
        self.balancer
    }

    /// Every endpoint of the cluster.
    pub fn endpoints(&self) -> impl Iterator<Item = &Arc<EndpointState>> {
        self.levels.iter().flat_map(|l| l.members.iter().map(|(e, _)| e))
    }

    /// Current level loads, recomputed only when availability changed.
    pub fn level_loads(&self, epoch: u64) -> Vec<LevelLoad> {
        self.loads_at(epoch).levels.clone()
    }

    fn loads_at(&self, epoch: u64) -> arc_swap::Guard<Arc<Loads>> {
        let cached = self.loads.load();
        if cached.epoch == epoch {
            return cached;
        }
        let counts: Vec<(u64, u64)> = self
            .levels
            .iter()
            .map(|l| {
                let up = l
                    .members
                    .iter()
                    .filter(|(e, _)| e.available())
                    .map(|(_, w)| u64::from(*w))
                    .sum();
                (up, l.total_weight())
            })
            .collect();
        let fresh = Arc::new(Loads {
            epoch,
            levels: split(
                &counts,
                self.locality.overprovisioning_factor,
                self.locality.panic_threshold,
            ),
        });
        self.loads.store(fresh);
        self.loads.load()
    }

    /// Picks an endpoint, avoiding `exclude` (endpoints this request already tried) unless nothing
    /// else is left. `None` when the cluster has no endpoint it may use.
    pub fn pick<R: Rng>(&self, epoch: u64, now: Nanos, rng: &mut R, exclude: &[SocketAddr]) -> Option<Pick> {
        self.pick_in_levels(epoch, rng, exclude, |level, usable, rng| match self.balancer {
            Balancer::P2c => p2c(level, now, rng, usable).map(|e| (e, 0.0)),
            Balancer::RoundRobin => level.next_in_turn(usable).map(|e| (e, 0.0)),
        })
    }

    /// [`Self::pick`] for an LLM request: inside the drawn level, the LLM-aware pick over its usable
    /// endpoints (at most [`MAX_CANDIDATES`], sampled by weight in larger levels).
    pub fn pick_llm<R: Rng>(
        &self,
        epoch: u64,
        now: Nanos,
        rng: &mut R,
        exclude: &[SocketAddr],
        prompt: &Prompt<'_>,
        policy: &LlmRouting,
    ) -> Option<Pick> {
        self.pick_in_levels(epoch, rng, exclude, |level, usable, rng| {
            let mut cands: SmallVec<[&Arc<EndpointState>; MAX_CANDIDATES]> = SmallVec::new();
            if level.members.len() <= MAX_CANDIDATES {
                cands.extend(level.members.iter().map(|(e, _)| e).filter(|e| usable(e)));
            } else {
                for _ in 0..MAX_CANDIDATES * 2 {
                    let e = level.sample(rng);
                    if usable(e) && !cands.iter().any(|c| Arc::ptr_eq(c, e)) {
                        cands.push(e);
                        if cands.len() == MAX_CANDIDATES {
                            break;
                        }
                    }
                }
            }
            llm_pick::pick(&cands, prompt, policy, now, rng).map(|c| (c.endpoint, c.prefix))
        })
    }

    /// The level draw and fallbacks shared by every pick: the level drawn by the locality shares
    /// first, then the others in priority order; first avoiding `exclude`, then not. `within` picks
    /// inside one level among the endpoints `usable` accepts.
    fn pick_in_levels<R: Rng>(
        &self,
        epoch: u64,
        rng: &mut R,
        exclude: &[SocketAddr],
        mut within: impl FnMut(&Level, &dyn Fn(&EndpointState) -> bool, &mut R) -> Option<(Arc<EndpointState>, f64)>,
    ) -> Option<Pick> {
        let loads = self.loads_at(epoch);
        let draw: f64 = rng.random();
        let mut acc = 0.0;
        let mut first = loads.levels.len().saturating_sub(1);
        for (i, l) in loads.levels.iter().enumerate() {
            acc += l.share;
            if draw < acc {
                first = i;
                break;
            }
        }
        // The drawn level first, then the others in priority order, in case it has nothing usable.
        let order = std::iter::once(first).chain((0..self.levels.len()).filter(move |&i| i != first));
        for strict in [true, false] {
            for i in order.clone() {
                let panic = loads.levels.get(i).is_some_and(|l| l.panic);
                let usable = |e: &EndpointState| self.admits(e, panic) && (!strict || !exclude.contains(&e.address));
                if let Some((endpoint, prefix)) = within(&self.levels[i], &usable, rng) {
                    return Some(Pick {
                        endpoint,
                        level: i,
                        prefix,
                    });
                }
            }
            if exclude.is_empty() {
                break;
            }
        }
        None
    }
}

/// An endpoint's cost in the power-of-two-choices pick, with its terms:
/// `(EWMA latency in ms + 1) x (in-flight + 1) / GPU headroom`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Cost {
    /// Peak-EWMA latency in milliseconds.
    pub latency_ms: f64,
    /// Requests in flight.
    pub in_flight: u32,
    /// GPU headroom in (0, 1].
    pub headroom: f64,
    /// The product: lower wins.
    pub value: f64,
}

impl Cost {
    /// `e`'s cost at `now`.
    pub fn of(e: &EndpointState, now: Nanos) -> Cost {
        let (latency_ms, in_flight, headroom) = (e.latency(now) / 1e6, e.in_flight(), e.headroom());
        Cost {
            latency_ms,
            in_flight,
            headroom,
            value: (latency_ms + 1.0) * f64::from(in_flight + 1) / headroom,
        }
    }
}

/// Power of two choices inside one level: sample two usable endpoints by weight, keep the cheaper.
fn p2c<R: Rng>(
    level: &Level,
    now: Nanos,
    rng: &mut R,
    usable: impl Fn(&EndpointState) -> bool,
) -> Option<Arc<EndpointState>> {
    const TRIES: usize = 8;
    let mut found: [Option<&Arc<EndpointState>>; 2] = [None, None];
    let mut n = 0;
    for _ in 0..TRIES {
        let e = level.sample(rng);
        if usable(e) && found[0].is_none_or(|f| !Arc::ptr_eq(f, e) || level.members.len() == 1) {
            found[n] = Some(e);
            n += 1;
            if n == 2 {
                break;
            }
        }
    }
    if n == 0 {
        // Sampling kept hitting unusable endpoints: scan once (rare, only when most are out).
        let all: Vec<_> = level.members.iter().map(|(e, _)| e).filter(|e| usable(e)).collect();
        match all.len() {
            0 => return None,
            1 => return Some(all[0].clone()),
            len => {
                let a = rng.random_range(0..len);
                let b = (a + 1 + rng.random_range(0..len - 1)) % len;
                found = [Some(all[a]), Some(all[b])];
            }
        }
    }
    let cost = |e: &EndpointState| Cost::of(e, now).value;
    match found {
        [Some(a), Some(b)] => Some(if cost(b) < cost(a) { b.clone() } else { a.clone() }),
        [Some(a), None] => Some(a.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::flags;
    use meridian_config::{load_str, Snapshot};
    use rand::rngs::SmallRng;
    use rand::SeedableRng;
    use std::collections::HashMap;
    use std::path::Path;

    const CFG: &str = "
regions:
  - { name: us, zones: [us-a, us-b], failover: [eu] }
  - { name: eu, zones: [eu-a] }
  - { name: ap, zones: [ap-a] }
models:
  - name: m
    versions:
      - name: v1
        endpoints:
          - { address: 127.0.1.1:1, region: us, zone: us-a }
          - { address: 127.0.1.2:1, region: us, zone: us-a }
          - { address: 127.0.1.3:1, region: us, zone: us-b }
          - { address: 127.0.2.1:1, region: eu, zone: eu-a }
          - { address: 127.0.3.1:1, region: ap, zone: ap-a }
";

    fn setup() -> (Snapshot, Registry, Cluster) {
        let snap = Snapshot::compile(load_str(CFG, "t", Path::new(".")).unwrap());
        let reg = Registry::default();
        let origin = Origin {
            region: 0,
            zone: snap.zone("us-a"),
        };
        let c = Cluster::build(
            &snap,
            origin,
            &snap.models[0].versions[0].endpoints,
            &reg,
            &snap.config.gateway.locality,
        );
        (snap, reg, c)
    }

    fn tally(c: &Cluster, reg: &Registry, n: usize) -> HashMap<String, usize> {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut out = HashMap::new();
        for _ in 0..n {
            let p = c.pick(reg.epoch(), 0, &mut rng, &[]).unwrap();
            *out.entry(p.endpoint.address.ip().to_string()).or_default() += 1;
        }
        out
    }

    #[test]
    fn levels_follow_locality_and_failover_order() {
        let (_, _, c) = setup();
        let kinds: Vec<_> = c.levels.iter().map(|l| l.kind.label().to_string()).collect();
        assert_eq!(kinds, ["zone", "region", "eu"], "ap is not in us's failover list");
        assert_eq!(c.levels[0].members.len(), 2);
    }

    #[test]
    fn zone_first_then_spill_in_proportion() {
        let (_, reg, c) = setup();
        let t = tally(&c, &reg, 1000);
        assert_eq!(
            t.get("127.0.1.1").copied().unwrap_or(0) + t.get("127.0.1.2").copied().unwrap_or(0),
            1000
        );
        // Half the zone down: health 70% -> 30% spills to the rest of the region.
        reg.set_flag(&c.levels[0].members[0].0, flags::UNHEALTHY, true);
        let t = tally(&c, &reg, 10_000);
        let spilled = t.get("127.0.1.3").copied().unwrap_or(0);
        assert!((2700..=3300).contains(&spilled), "{t:?}");
        assert_eq!(t.get("127.0.1.1"), None, "the unhealthy endpoint gets nothing");
        // The whole region down: everything to the failover region.
        reg.set_flag(&c.levels[0].members[1].0, flags::EJECTED, true);
        reg.set_flag(&c.levels[1].members[0].0, flags::DRAINED, true);
        assert_eq!(tally(&c, &reg, 500).get("127.0.2.1"), Some(&500));
    }

    #[test]
    fn panic_spreads_over_unhealthy_endpoints() {
        let (_, reg, c) = setup();
        for e in c.endpoints() {
            reg.set_flag(e, flags::UNHEALTHY, true);
        }
        let t = tally(&c, &reg, 1000);
        assert_eq!(t.len(), 2, "all in the zone level, healthy or not: {t:?}");
    }

    #[test]
    fn retries_avoid_tried_endpoints_when_another_exists() {
        let (_, reg, c) = setup();
        let mut rng = SmallRng::seed_from_u64(1);
        let tried: SocketAddr = "127.0.1.1:1".parse().unwrap();
        for _ in 0..200 {
            let p = c.pick(reg.epoch(), 0, &mut rng, &[tried]).unwrap();
            assert_ne!(p.endpoint.address, tried);
        }
        let both = ["127.0.1.1:1".parse().unwrap(), "127.0.1.2:1".parse().unwrap()];
        let p = c.pick(reg.epoch(), 0, &mut rng, &both).unwrap();
        assert_eq!(p.level, 1, "the zone is exhausted, so the retry spills to the region");
    }

    #[test]
    fn p2c_prefers_the_less_loaded_and_faster_endpoint() {
        let (_, reg, c) = setup();
        let slow = &c.levels[0].members[0].0;
        slow.observe_latency(1, 500_000_000);
        let t = tally(&c, &reg, 1000);
        let fast = t.get("127.0.1.2").copied().unwrap_or(0);
        assert!(fast >= 700, "P2C picks the slow one only when it is drawn twice: {t:?}");
        let _busy: Vec<_> = (0..50).map(|_| c.levels[0].members[1].0.start()).collect();
        let t = tally(&c, &reg, 1000);
        assert!(
            t.get("127.0.1.1").copied().unwrap_or(0) > 0,
            "in-flight load pushes traffic back: {t:?}"
        );
    }

    #[test]
    fn headroom_steers_traffic() {
        let (_, reg, c) = setup();
        c.levels[0].members[0].0.set_headroom(0.05);
        let t = tally(&c, &reg, 1000);
        assert!(t.get("127.0.1.2").copied().unwrap_or(0) >= 700, "{t:?}");
    }
}
