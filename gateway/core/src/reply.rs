//! Answers the gateway gives itself, without a backend: KServe-style errors (`{"error": "..."}` with
//! the status that tells the client what to do: 404 unknown model, 503 + Retry-After when nothing is
//! healthy...), JSON answers (V2 health and metadata, the model list) and, for gRPC clients, the one
//! unary message the gateway answers itself (`ServerLive`/`ServerReady`). An error reaches a gRPC
//! client as a gRPC status instead (`grpc::status_code`). The shell writes them.

/// What a reply carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// An error message, sent as `{"error": message}` (or as `grpc-message`).
    Error(String),
    /// A JSON document.
    Json(String),
    /// One gRPC message, then `grpc-status: 0`.
    GrpcMessage(&'static [u8]),
}

/// An answer the gateway gives without a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// What it says.
    pub content: Content,
    /// Seconds for `Retry-After`, on 429 and 503.
    pub retry_after: Option<u32>,
}

impl Reply {
    /// A KServe-style error; 429 and 503 tell the client to retry after a second.
    pub fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply {
            status,
            content: Content::Error(message.into()),
            retry_after: matches!(status, 429 | 503).then_some(1),
        }
    }

    /// A JSON answer.
    pub fn json(status: u16, value: serde_json::Value) -> Reply {
        Reply {
            status,
            content: Content::Json(value.to_string()),
            retry_after: None,
        }
    }

    /// A unary gRPC answer.
    pub fn grpc_message(message: &'static [u8]) -> Reply {
        Reply {
            status: 200,
            content: Content::GrpcMessage(message),
            retry_after: None,
        }
    }

    /// The error message, when this is an error.
    pub fn message(&self) -> Option<&str> {
        match &self.content {
            Content::Error(m) => Some(m),
            _ => None,
        }
    }

    /// The HTTP body: the KServe error object, the JSON document, or nothing for gRPC messages.
    pub fn body(&self) -> String {
        match &self.content {
            Content::Error(m) => serde_json::json!({ "error": m }).to_string(),
            Content::Json(j) => j.clone(),
            Content::GrpcMessage(_) => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_kserve_shaped_and_retryable_ones_say_when() {
        let r = Reply::error(503, "no healthy endpoint");
        assert_eq!(r.body(), r#"{"error":"no healthy endpoint"}"#);
        assert_eq!((r.retry_after, r.message()), (Some(1), Some("no healthy endpoint")));
        assert_eq!(Reply::error(404, "x").retry_after, None);
        assert_eq!(Reply::json(200, serde_json::json!({"live": true})).message(), None);
    }
}
