//! Errors the gateway itself answers, in KServe's shape: `{"error": "<message>"}` with the status
//! that tells the client what to do (404 unknown model, 503 + Retry-After when nothing is healthy...).

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

/// An answer the gateway gives without a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: String,
    /// Seconds for `Retry-After`, on 429 and 503.
    pub retry_after: Option<u32>,
    /// The error message, which a gRPC client gets as `grpc-message`.
    pub message: Option<String>,
}

impl Reply {
    /// A KServe-style error.
    pub fn error(status: u16, message: impl AsRef<str>) -> Reply {
        let retry_after = matches!(status, 429 | 503).then_some(1);
        Reply {
            status,
            body: serde_json::json!({ "error": message.as_ref() }).to_string(),
            retry_after,
            message: Some(message.as_ref().to_owned()),
        }
    }

    /// A JSON answer.
    pub fn json(status: u16, value: serde_json::Value) -> Reply {
        Reply {
            status,
            body: value.to_string(),
            retry_after: None,
            message: None,
        }
    }

    /// Writes the answer to the client.
    pub async fn send(&self, session: &mut Session) -> pingora::Result<()> {
        if let Some(msg) = self
            .message
            .as_deref()
            .filter(|_| crate::grpc::is_grpc(&session.req_header().headers))
        {
            let code = crate::grpc::status_code(self.status);
            return crate::grpc::send_status(session, code, msg, self.retry_after).await;
        }
        let mut h = ResponseHeader::build(self.status, Some(4))?;
        h.insert_header("content-type", "application/json")?;
        h.insert_header("content-length", self.body.len().to_string())?;
        if let Some(s) = self.retry_after {
            h.insert_header("retry-after", s.to_string())?;
        }
        let head_only = session.req_header().method == http::Method::HEAD;
        session.write_response_header(Box::new(h), head_only).await?;
        if !head_only {
            session
                .write_response_body(Some(Bytes::from(self.body.clone())), true)
                .await?;
        }
        Ok(())
    }
}
