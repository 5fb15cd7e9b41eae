//! One background task per wanted key, following config reloads: the per-region probers and
//! state feed subscriptions both keep their task sets this way.

use std::collections::HashMap;
use std::hash::Hash;

use tokio::task::JoinHandle;

/// Aborts the tasks whose key is no longer wanted and starts one for each new key.
pub fn reconcile<K: Eq + Hash + Clone>(
    tasks: &mut HashMap<K, JoinHandle<()>>,
    wanted: &[K],
    mut spawn: impl FnMut(&K) -> JoinHandle<()>,
) {
    tasks.retain(|k, h| {
        let keep = wanted.contains(k);
        if !keep {
            h.abort();
        }
        keep
    });
    for k in wanted {
        if !tasks.contains_key(k) {
            let h = spawn(k);
            tasks.insert(k.clone(), h);
        }
    }
}
