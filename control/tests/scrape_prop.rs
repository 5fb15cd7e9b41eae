//! Property tests of what control reads from model servers and serves to consumers: any scrape
//! text is read or refused (never a panic), generated vLLM gauges are read back exactly, and the
//! state feed's JSON round-trips.

use meridian_config::feed::{FeedEndpoint, FeedState, ServerReport};
use meridian_control::scrape::signals;
use proptest::prelude::*;

proptest! {
    #[test]
    fn any_scrape_is_read_or_refused(text in "[ -~\n]{0,400}") {
        let _ = signals(&text, 0.0);
    }

    #[test]
    fn vllm_gauges_are_read_back(waiting in 0u32..10_000, running in 0u32..10_000, kv in 0.0f64..=1.0) {
        let text = format!(
            "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{{model_name=\"m\"}} {waiting}\n\
             # TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{{model_name=\"m\"}} {running}\n\
             # TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{{model_name=\"m\"}} {kv}\n"
        );
        let s = signals(&text, 1.0).unwrap();
        prop_assert_eq!(s.waiting, Some(f64::from(waiting)));
        prop_assert_eq!(s.running, Some(f64::from(running)));
        prop_assert!((s.kv_cache.unwrap() - kv).abs() < 1e-12);
    }

    #[test]
    fn the_state_feed_round_trips(
        version in any::<u64>(),
        eps in prop::collection::vec(("[a-z0-9/-]{1,20}", any::<[u8; 4]>(), any::<u16>(), any::<bool>(), prop::option::of(0.0f64..=1.0), prop::option::of(any::<u16>())), 0..8),
        waiting in any::<u32>(),
    ) {
        let endpoints: Vec<FeedEndpoint> = eps
            .into_iter()
            .map(|(id, ip, port, ready, headroom, grpc_port)| FeedEndpoint {
                id,
                address: std::net::SocketAddr::from((ip, port)),
                grpc_port,
                model: "m".into(),
                version: "v1".into(),
                region: "r".into(),
                zone: "r-a".into(),
                ready,
                headroom,
                server: ready.then(|| ServerReport { waiting, ..ServerReport::default() }),
                drained: !ready,
                reason: None,
            })
            .collect();
        let state = FeedState {
            version,
            region: "r".into(),
            capacity: FeedState::capacity_of(&endpoints),
            endpoints,
            ..FeedState::default()
        };
        let back: FeedState = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        prop_assert_eq!(back, state);
    }
}
