//! The TLS listeners' certificates kept current: swapped when a config reload names new files, and
//! reloaded when the files named change on disk (cert-manager, a mounted Secret), without a reload.
//! A file that does not load leaves the previous certificates serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::routes::Routes;
use crate::tls::{CertSet, SniResolver};

/// The listeners' certificate resolvers and their files as last seen.
#[derive(Default)]
pub struct Certificates {
    /// Resolvers of the TLS listeners, by listener name (listeners themselves need a restart).
    resolvers: Mutex<Vec<(String, Arc<SniResolver>)>>,
    /// (path, modified, size) of every certificate and key file as last seen.
    files: Mutex<Vec<(PathBuf, Option<SystemTime>, u64)>>,
}

impl Certificates {
    /// Follows a TLS listener's resolver from now on.
    pub fn register(&self, listener: &str, resolver: Arc<SniResolver>) {
        self.resolvers.lock().push((listener.to_string(), resolver));
    }

    /// Loads the certificates `routes` names into each listener's resolver.
    pub fn swap_in(&self, routes: &Routes) {
        let Some(gw) = routes.gateway_spec() else {
            return;
        };
        for (name, resolver) in self.resolvers.lock().iter() {
            let Some(tls) = gw
                .listeners
                .iter()
                .find(|l| &l.name == name)
                .and_then(|l| l.tls.as_ref())
            else {
                continue;
            };
            match CertSet::load(tls, &routes.snap.base_dir) {
                Ok(set) => resolver.certs.store(Arc::new(set)),
                Err(e) => {
                    tracing::error!(listener = %name, "certificates not reloaded, the previous ones keep serving: {e}")
                }
            }
        }
    }

    /// Reloads the certificates when one of their files changed on disk since the last look (the
    /// first look only records them).
    pub fn reload_changed(&self, routes: &Routes) {
        let Some(gw) = routes.gateway_spec() else {
            return;
        };
        let now: Vec<_> = gw
            .listeners
            .iter()
            .filter_map(|l| l.tls.as_ref())
            .flat_map(|t| t.certificates.iter().flat_map(|c| [&c.cert, &c.key]))
            .map(|p| {
                let path = routes.snap.base_dir.join(p);
                let meta = std::fs::metadata(&path).ok();
                let modified = meta.as_ref().and_then(|m| m.modified().ok());
                (path, modified, meta.map_or(0, |m| m.len()))
            })
            .collect();
        let changed = {
            let mut seen = self.files.lock();
            let changed = !seen.is_empty() && *seen != now;
            *seen = now;
            changed
        };
        if changed {
            tracing::info!("certificate files changed on disk: reloading them");
            self.swap_in(routes);
        }
    }
}
