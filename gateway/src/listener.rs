//! What serves an accepted connection: HTTP/2 (ALPN `h2`) goes to pingora's proxy; everything else
//! starts on our own HTTP/1 front ([`crate::proxy::Http1`]), which hands a connection to pingora, bytes
//! already read in front, the moment it meets a request it does not take (an h2c preface among
//! them).

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;

use crate::proxy::{Http1, Served};

/// A pingora app that serves each connection on our HTTP/1 path or pingora's proxy `A`.
pub struct Listener<A> {
    /// Our HTTP/1 path.
    pub http1: Http1,
    /// pingora's proxy.
    pub pingora: Arc<A>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Listener<A> {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return self.pingora.process_new(stream, shutdown).await;
        }
        match self.http1.serve(stream, shutdown).await {
            Served::Done => None,
            Served::Handoff(stream) => self.pingora.process_new(stream, shutdown).await,
        }
    }

    async fn cleanup(&self) {
        self.pingora.cleanup().await
    }
}
