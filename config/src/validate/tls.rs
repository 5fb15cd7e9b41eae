//! TLS file checks: certificates and keys must exist and parse as PEM.

use super::Ctx;
use crate::names::is_domain_name;
use crate::pem::{certs, key};
use crate::schema::ListenerTls;

pub(super) fn check_listener(cx: &mut Ctx<'_>, at: &str, t: &ListenerTls) {
    if t.certificates.is_empty() {
        cx.err(format!("{at}.certificates"), "TLS needs at least one certificate");
    }
    for (k, c) in t.certificates.iter().enumerate() {
        let cat = format!("{at}.certificates[{k}]");
        if c.server_names.is_empty() {
            cx.err(format!("{cat}.server_names"), "name at least one SNI name");
        }
        for (n, name) in c.server_names.iter().enumerate() {
            let bare = name.strip_prefix("*.").unwrap_or(name);
            if !is_domain_name(bare) {
                cx.err(
                    format!("{cat}.server_names[{n}]"),
                    format!("`{name}` is not a DNS name"),
                );
            }
        }
        if let Err(e) = certs(&cx.base_dir.join(&c.cert)) {
            cx.err(format!("{cat}.cert"), e.to_string());
        }
        if let Err(e) = key(&cx.base_dir.join(&c.key)) {
            cx.err(format!("{cat}.key"), e.to_string());
        }
    }
    if let Some(ca) = &t.client_ca {
        if let Err(e) = certs(&cx.base_dir.join(ca)) {
            cx.err(format!("{at}.client_ca"), e.to_string());
        }
    }
}
