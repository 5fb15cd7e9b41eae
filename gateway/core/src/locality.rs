//! Locality-aware load split across priority levels (Envoy priority levels, Istio localityLbSetting).
//!
//! Level 0 is the gateway's own zone, level 1 the rest of its region, then each failover region in
//! configured order. A level's health is its available weight share times the overprovisioning
//! factor (1.4), capped at 100%; level 0 takes as much traffic as its health, the next level takes
//! what remains up to its own health, and so on. When total health is under 100% the loads are
//! normalized so that all traffic still lands somewhere. When total health falls below the panic
//! threshold, each level balances across all its endpoints, healthy or not (better than overloading
//! the few that are left).

/// Traffic share of one priority level.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LevelLoad {
    /// Fraction of requests, 0..=1.
    pub share: f64,
    /// Whether the level ignores health (panic mode).
    pub panic: bool,
}

/// Splits traffic across levels given each level's (available weight, total weight).
pub fn split(levels: &[(u64, u64)], overprovisioning: f64, panic_threshold_pct: f64) -> Vec<LevelLoad> {
    let health: Vec<f64> = levels
        .iter()
        .map(|&(up, total)| {
            if total == 0 {
                0.0
            } else {
                (overprovisioning * 100.0 * up as f64 / total as f64).min(100.0)
            }
        })
        .collect();
    let total_health = health.iter().sum::<f64>().min(100.0);
    let panic = total_health < panic_threshold_pct;
    let mut out = vec![LevelLoad { share: 0.0, panic }; levels.len()];
    if total_health <= 0.0 {
        // Nothing healthy anywhere: the first level with endpoints takes everything, in panic.
        if let Some(i) = levels.iter().position(|&(_, total)| total > 0) {
            out[i].share = 1.0;
        }
        return out;
    }
    let mut remaining = 100.0;
    for (i, h) in health.iter().enumerate() {
        let take = h.min(remaining);
        out[i].share = take;
        remaining -= take;
    }
    let assigned = 100.0 - remaining;
    for o in &mut out {
        o.share /= assigned;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(levels: &[(u64, u64)]) -> Vec<f64> {
        split(levels, 1.4, 50.0)
            .iter()
            .map(|l| (l.share * 1000.0).round() / 1000.0)
            .collect()
    }

    #[test]
    fn healthy_zone_takes_everything() {
        assert_eq!(shares(&[(2, 2), (2, 2), (4, 4)]), vec![1.0, 0.0, 0.0]);
    }

    #[test]
    fn spill_is_proportional_below_the_overprovisioned_health() {
        // Zone at 50% healthy -> health 70% -> 70% stays, 30% spills to the region.
        assert_eq!(shares(&[(1, 2), (2, 2)]), vec![0.7, 0.3]);
        // 75% healthy -> 105% capped: nothing spills yet (the overprovisioning factor at work).
        assert_eq!(shares(&[(3, 4), (2, 2)]), vec![1.0, 0.0]);
        // Zone gone, region half up: region 70%, failover region 30%.
        assert_eq!(shares(&[(0, 2), (1, 2), (4, 4)]), vec![0.0, 0.7, 0.3]);
    }

    #[test]
    fn degraded_total_is_normalized() {
        // Only 20% healthy everywhere: health 28% + 28% = 56% -> normalized 50/50, not in panic.
        let l = split(&[(1, 5), (1, 5)], 1.4, 50.0);
        assert!((l[0].share - 0.5).abs() < 1e-9 && !l[0].panic, "{l:?}");
    }

    #[test]
    fn panic_below_threshold() {
        // 10% healthy in one level, nothing else: health 14% < 50% -> panic.
        let l = split(&[(1, 10)], 1.4, 50.0);
        assert_eq!(
            l,
            vec![LevelLoad {
                share: 1.0,
                panic: true
            }]
        );
        // Nothing healthy at all: the first non-empty level, in panic.
        let l = split(&[(0, 0), (0, 3), (0, 2)], 1.4, 50.0);
        assert_eq!(l.iter().map(|x| x.share).collect::<Vec<_>>(), vec![0.0, 1.0, 0.0]);
        assert!(l[1].panic);
        // Threshold 0 disables panic.
        assert!(!split(&[(1, 10)], 1.4, 0.0)[0].panic);
    }
}
