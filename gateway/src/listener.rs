//! What serves an accepted connection: HTTP/2 (ALPN `h2`) goes to our own HTTP/2 front
//! ([`crate::proxy::Http2`]); everything else starts on our own HTTP/1 front
//! ([`crate::proxy::Http1`]), which hands a connection on, bytes already read in front, the moment
//! it meets a request it does not take: to the HTTP/2 front for the h2c preface (where cleartext
//! HTTP/2 is on), else to pingora's proxy. Both fronts hand pingora the requests they leave to it.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;

use crate::proxy::{Http1, Http2, Served};

/// A pingora app that serves each connection on our HTTP/1 or HTTP/2 front, or pingora's proxy `A`.
pub struct Listener<A> {
    /// Our HTTP/1 front.
    pub http1: Http1,
    /// Our HTTP/2 front.
    pub http2: Arc<Http2<A>>,
    /// pingora's proxy.
    pub pingora: Arc<A>,
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Listener<A> {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            self.http2.serve(stream, shutdown).await;
            return None;
        }
        match self.http1.serve(stream, shutdown).await {
            Served::Done => None,
            Served::Http2(stream) if self.h2c() => {
                self.http2.serve(stream, shutdown).await;
                None
            }
            Served::Handoff(stream) | Served::Http2(stream) => self.pingora.process_new(stream, shutdown).await,
        }
    }

    async fn cleanup(&self) {
        self.pingora.cleanup().await
    }
}

impl<A: HttpServerApp> Listener<A> {
    /// Whether cleartext HTTP/2 (prior knowledge) is on, as pingora's server options say.
    fn h2c(&self) -> bool {
        self.pingora.server_options().is_some_and(|o| o.h2c)
    }
}
