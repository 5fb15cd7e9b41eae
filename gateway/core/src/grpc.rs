//! gRPC calls as the gateway decides them (KServe V2 `inference.GRPCInferenceService` and any other
//! service): the model is named by the `x-model-name` header (any service) or, for the V2 service's
//! model calls, read from the first message's `model_name` and `model_version` fields with a bounded
//! peek. Answers the gateway gives itself become gRPC statuses; [`status_code`] maps them and
//! [`encode_message`] writes `grpc-message`. Sending them is the shell's.

use http::HeaderName;

use crate::head::RequestHead;
use crate::prefix::Peek;

/// The KServe V2 gRPC service.
pub const V2_SERVICE: &str = "inference.GRPCInferenceService";

/// Header naming the model of a gRPC call.
pub const MODEL_HEADER: HeaderName = HeaderName::from_static("x-model-name");

/// Whether a request is a gRPC call (`content-type: application/grpc[+proto|...]`).
pub fn is_grpc(head: &impl RequestHead) -> bool {
    head.get(&http::header::CONTENT_TYPE)
        .is_some_and(|v| v.starts_with(b"application/grpc"))
}

/// What a gRPC call asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Call<'a> {
    /// A call for this model (from `x-model-name`).
    Model(&'a str),
    /// A V2 model call without the header: the model is in the first message.
    InMessage,
    /// V2 `ServerLive`, answered by the gateway.
    ServerLive,
    /// V2 `ServerReady`, answered by the gateway.
    ServerReady,
    /// Not routable: the reason, for an INVALID_ARGUMENT status.
    Unroutable(&'static str),
}

/// Classifies a gRPC call by its `:path` (`/package.Service/Method`) and headers.
pub fn classify<'a>(path: &'a str, head: &'a impl RequestHead) -> Call<'a> {
    if let Some(m) = head.get_str(&MODEL_HEADER) {
        return Call::Model(m);
    }
    let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return Call::Unroutable("a gRPC path is /package.Service/Method");
    };
    if service != V2_SERVICE {
        return Call::Unroutable("name the model of this call in the x-model-name header");
    }
    match method {
        "ServerLive" => Call::ServerLive,
        "ServerReady" => Call::ServerReady,
        "ModelInfer" | "ModelStreamInfer" | "ModelMetadata" | "ModelReady" => Call::InMessage,
        _ => Call::Unroutable("name the model of this call in the x-model-name header"),
    }
}

/// Reads `model_name` (field 1) and `model_version` (field 2) from the first message of a V2
/// model call (`ModelInferRequest`, `ModelMetadataRequest`, `ModelReadyRequest` all start so).
pub fn peek(prefix: &[u8]) -> Peek {
    // gRPC message framing: 1 byte compressed flag, 4 bytes big-endian length, the message.
    if prefix.len() < 5 {
        return Peek::NeedMore;
    }
    if prefix[0] != 0 {
        return Peek::Invalid("the first message is compressed: name the model in the x-model-name header".into());
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    let complete = prefix.len() - 5 >= len;
    let msg = &prefix[5..prefix.len().min(5usize.saturating_add(len))];
    let (mut name, mut version) = (None, None);
    let (mut at, mut cut_short, mut past) = (0, false, false);
    while at < msg.len() && !past {
        let Some((key, n)) = varint(&msg[at..]) else {
            cut_short = true;
            break;
        };
        let (field, wire) = (key >> 3, key & 7);
        let value = match wire {
            0 => varint(&msg[at + n..]).map(|(_, m)| (0, m)),
            1 => Some((0, 8)),
            5 => Some((0, 4)),
            2 => varint(&msg[at + n..]).and_then(|(l, m)| Some((m, m.checked_add(usize::try_from(l).ok()?)?))),
            _ => return Peek::Invalid("the first message is not a V2 model request".into()),
        };
        // (offset of the payload, total length of the value) after the key.
        let Some((skip, total)) = value.filter(|(_, t)| at + n + t <= msg.len()) else {
            cut_short = true;
            break;
        };
        if wire == 2 && (field == 1 || field == 2) {
            let Ok(s) = std::str::from_utf8(&msg[at + n + skip..at + n + total]) else {
                return Peek::Invalid("model_name is not UTF-8".into());
            };
            *if field == 1 { &mut name } else { &mut version } = Some(s.to_owned());
        }
        at += n + total;
        // Fields are written in order: past field 2 there is nothing more to learn.
        past = field > 2 || (name.is_some() && version.is_some());
    }
    let finished = past || (complete && !cut_short);
    match name {
        Some(n) if finished => Peek::Model(n, version.filter(|v| !v.is_empty())),
        _ if !complete => Peek::NeedMore,
        _ if cut_short => Peek::Invalid("the first message is malformed".into()),
        _ => Peek::Invalid("the first message names no model_name".into()),
    }
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, byte) in b.iter().take(10).enumerate() {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// The gRPC status for an HTTP status the gateway answers with, so gRPC clients see what they
/// would from a gRPC server (NOT_FOUND for an unknown model, UNAVAILABLE when shedding...).
pub fn status_code(http: u16) -> u8 {
    match http {
        400 => 3,        // INVALID_ARGUMENT
        401 => 16,       // UNAUTHENTICATED
        403 => 7,        // PERMISSION_DENIED
        404 => 5,        // NOT_FOUND
        405 | 501 => 12, // UNIMPLEMENTED
        413 | 431 => 8,  // RESOURCE_EXHAUSTED
        429 => 8,        // RESOURCE_EXHAUSTED: shed by admission
        502 | 503 => 14, // UNAVAILABLE
        504 => 4,        // DEADLINE_EXCEEDED
        _ => 13,         // INTERNAL
    }
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2 spec).
pub fn encode_message(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for b in msg.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `ServerLiveResponse { live }` / `ServerReadyResponse { ready }`: one bool in field 1.
pub fn bool_message(value: bool) -> &'static [u8] {
    if value {
        &[0x08, 0x01]
    } else {
        &[]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(msg: &[u8]) -> Vec<u8> {
        let mut f = vec![0];
        f.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        f.extend_from_slice(msg);
        f
    }

    fn field(n: u8, s: &str) -> Vec<u8> {
        let mut f = vec![(n << 3) | 2, s.len() as u8];
        f.extend_from_slice(s.as_bytes());
        f
    }

    #[test]
    fn reads_model_and_version_from_the_first_message() {
        let mut msg = field(1, "sklearn-iris");
        msg.extend(field(2, "v2"));
        msg.extend(field(3, "req-1"));
        let f = frame(&msg);
        assert_eq!(peek(&f), Peek::Model("sklearn-iris".into(), Some("v2".into())));
        // Every cut before the version ends asks for more.
        for cut in 0..(5 + msg.len() - field(3, "req-1").len()) {
            assert_eq!(peek(&f[..cut]), Peek::NeedMore, "cut at {cut}");
        }
        // Without a version; the version written first.
        assert_eq!(peek(&frame(&field(1, "m"))), Peek::Model("m".into(), None));
        let mut odd = field(2, "v1");
        odd.extend(field(1, "m"));
        assert_eq!(peek(&frame(&odd)), Peek::Model("m".into(), Some("v1".into())));
    }

    #[test]
    fn rejects_what_it_cannot_route() {
        assert!(matches!(peek(&frame(&field(3, "x"))), Peek::Invalid(_)));
        let mut compressed = frame(&field(1, "m"));
        compressed[0] = 1;
        assert!(matches!(peek(&compressed), Peek::Invalid(m) if m.contains("compressed")));
        assert!(matches!(peek(&frame(&[0x0f])), Peek::Invalid(_)));
        let garbage = frame(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(peek(&garbage), Peek::Invalid(_)));
    }

    #[test]
    fn classifies_calls() {
        let (mut h, ()) = http::Request::new(()).into_parts();
        assert_eq!(
            classify("/inference.GRPCInferenceService/ModelInfer", &h),
            Call::InMessage
        );
        assert_eq!(
            classify("/inference.GRPCInferenceService/ServerLive", &h),
            Call::ServerLive
        );
        assert!(matches!(
            classify("/grpc.health.v1.Health/Check", &h),
            Call::Unroutable(_)
        ));
        h.headers.insert(MODEL_HEADER, "m".parse().unwrap());
        assert_eq!(classify("/grpc.health.v1.Health/Check", &h), Call::Model("m"));
        assert_eq!(encode_message("no 100% ok\n"), "no 100%25 ok%0A");
    }
}
