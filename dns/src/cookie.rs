//! DNS Cookies, server side (RFC 7873), with RFC 9018's interoperable server cookie: version 1,
//! three reserved bytes, a 32-bit timestamp and SipHash-2-4 over the client cookie, those four
//! bytes, the timestamp and the client's address, keyed by a secret. A query that brings back a
//! server cookie this server (or one sharing its secret) made for the same client cookie and
//! address within the last hour proves the client's address, so RRL lets its answers through.
//! Pure: the secret and the time come in.

use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::OnceLock;

use siphasher::sip::SipHasher24;

/// The EDNS option code of COOKIE.
pub const CODE: u16 = 10;

/// How long a server cookie is accepted after it was made (RFC 9018 section 4.3).
const VALID_FOR: u32 = 3600;
/// How far in the future a timestamp may be (clock skew between servers sharing the secret).
const SKEW: u32 = 300;

/// What a query's COOKIE option comes to.
#[derive(Debug, PartialEq, Eq)]
pub enum Judged {
    /// A length no cookie has (not 8, nor 16 to 40 bytes): FORMERR (RFC 7873 section 5.2.2).
    Malformed,
    /// A client cookie, with or without a server cookie: answer with `option` (the client
    /// cookie and a fresh server cookie); `verified` when the server cookie it brought is ours.
    Answer {
        /// The response's COOKIE option data.
        option: [u8; 24],
        /// The client returned a valid server cookie.
        verified: bool,
    },
}

/// Judges the COOKIE option data `data` of a query from `client` at `now` (Unix seconds).
pub fn judge(secret: &[u8; 16], data: &[u8], client: IpAddr, now: u64) -> Judged {
    if !(data.len() == 8 || (16..=40).contains(&data.len())) {
        return Judged::Malformed;
    }
    let (theirs, server) = data.split_at(8);
    let theirs: [u8; 8] = theirs.try_into().expect("8 bytes");
    let now = now as u32;
    let verified = server.len() == 16 && verify(secret, &theirs, server, client, now);
    let mut option = [0u8; 24];
    option[..8].copy_from_slice(&theirs);
    option[8..].copy_from_slice(&make(secret, &theirs, client, now));
    Judged::Answer { option, verified }
}

/// The server cookie for `client_cookie` from `client` at `now`.
pub fn make(secret: &[u8; 16], client_cookie: &[u8; 8], client: IpAddr, now: u32) -> [u8; 16] {
    let mut cookie = [0u8; 16];
    cookie[0] = 1;
    cookie[4..8].copy_from_slice(&now.to_be_bytes());
    let hash = hash(secret, client_cookie, &cookie[..8], client);
    cookie[8..].copy_from_slice(&hash.to_be_bytes());
    cookie
}

fn verify(secret: &[u8; 16], client_cookie: &[u8; 8], server: &[u8], client: IpAddr, now: u32) -> bool {
    if server[0] != 1 {
        return false;
    }
    let made = u32::from_be_bytes([server[4], server[5], server[6], server[7]]);
    // Serial-number arithmetic (RFC 1982): the age may wrap.
    let age = now.wrapping_sub(made);
    let fresh = age <= VALID_FOR || made.wrapping_sub(now) <= SKEW;
    fresh && hash(secret, client_cookie, &server[..8], client).to_be_bytes() == server[8..16]
}

fn hash(secret: &[u8; 16], client_cookie: &[u8; 8], head: &[u8], client: IpAddr) -> u64 {
    let mut h = SipHasher24::new_with_key(secret);
    h.write(client_cookie);
    h.write(head);
    match client {
        IpAddr::V4(a) => h.write(&a.octets()),
        IpAddr::V6(a) => h.write(&a.octets()),
    }
    h.finish()
}

/// A random secret for this process, for servers not given one.
pub fn process_secret() -> [u8; 16] {
    static SECRET: OnceLock<[u8; 16]> = OnceLock::new();
    *SECRET.get_or_init(rand::random)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 16] = *b"0123456789abcdef";
    const CLIENT: [u8; 8] = *b"clientck";

    fn answer(data: &[u8], ip: &str, now: u64) -> ([u8; 24], bool) {
        match judge(&KEY, data, ip.parse().unwrap(), now) {
            Judged::Answer { option, verified } => (option, verified),
            Judged::Malformed => panic!("malformed"),
        }
    }

    #[test]
    fn a_client_cookie_gets_a_server_cookie_that_verifies_for_an_hour_from_that_address() {
        let (option, verified) = answer(&CLIENT, "192.0.2.1", 1_000_000);
        assert!(!verified, "a client cookie alone proves nothing");
        assert_eq!(option[..8], CLIENT);
        assert_eq!(option[8], 1, "version 1");
        assert_eq!(option[9..12], [0, 0, 0]);
        assert_eq!(option[12..16], 1_000_000u32.to_be_bytes());
        // Brought back: verified within the hour, from the same address, with the same client cookie.
        assert!(answer(&option, "192.0.2.1", 1_000_000 + 3600).1);
        assert!(!answer(&option, "192.0.2.1", 1_000_000 + 3601).1, "expired");
        assert!(!answer(&option, "192.0.2.2", 1_000_100).1, "another address");
        let mut other = option;
        other[0] ^= 1;
        assert!(!answer(&other, "192.0.2.1", 1_000_100).1, "another client cookie");
        let mut forged = option;
        forged[23] ^= 1;
        assert!(!answer(&forged, "192.0.2.1", 1_000_100).1, "a forged hash");
        // A server sharing the secret whose clock is a little behind still accepts it.
        assert!(answer(&option, "192.0.2.1", 1_000_000 - 300).1);
        assert!(!answer(&option, "192.0.2.1", 1_000_000 - 301).1);
        // Another secret does not.
        match judge(b"fedcba9876543210", &option, "192.0.2.1".parse().unwrap(), 1_000_001) {
            Judged::Answer { verified, .. } => assert!(!verified),
            Judged::Malformed => panic!(),
        }
    }

    #[test]
    fn timestamps_wrap_as_serial_numbers() {
        let made = make(&KEY, &CLIENT, "2001:db8::1".parse().unwrap(), u32::MAX - 10);
        let data = [&CLIENT[..], &made].concat();
        assert!(answer(&data, "2001:db8::1", u64::from(u32::MAX) + 100).1);
    }

    #[test]
    fn lengths_no_cookie_has_are_malformed() {
        for len in [0, 1, 7, 9, 15, 41] {
            assert_eq!(
                judge(&KEY, &vec![0; len], "192.0.2.1".parse().unwrap(), 0),
                Judged::Malformed,
                "{len}"
            );
        }
        for len in [8, 16, 24, 40] {
            assert!(matches!(
                judge(&KEY, &vec![0; len], "192.0.2.1".parse().unwrap(), 0),
                Judged::Answer { .. }
            ));
        }
    }
}
