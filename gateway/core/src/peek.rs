//! Reading a model name out of a request body: for the APIs that name it there (OpenAI-style JSON,
//! the first message of a KServe V2 gRPC call). The shell reads chunks and asks [`BodyPeek::step`]
//! after each one; this module decides when enough was read, when to give up, and what to answer.

use crate::classify::Api;
use crate::prefix::{Peek, PEEK_LIMIT};
use crate::reply::Reply;

/// Which body format names the request's model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyPeek {
    /// The `model` field of an OpenAI-style JSON body.
    OpenAi,
    /// `model_name`/`model_version` of a KServe V2 gRPC call's first message.
    GrpcMessage,
}

/// The model (and version) a body named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    /// The API the request speaks.
    pub api: Api,
    /// Model name.
    pub model: String,
    /// Version, when the body names one.
    pub version: Option<String>,
}

/// What to do after reading another chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Read another chunk.
    ReadMore,
    /// The body named its model.
    Named(Named),
    /// Refuse the request (400); the shell reads the rest of the body so the client sees the answer.
    Refuse(Reply),
}

impl BodyPeek {
    /// The API of requests peeked this way.
    pub fn api(self) -> Api {
        match self {
            BodyPeek::OpenAi => Api::OpenAi,
            BodyPeek::GrpcMessage => Api::Grpc,
        }
    }

    /// Looks at what was read so far. `ended`: the body has no more bytes; `truncated`: the replay
    /// buffer overflowed, so what was read could not all reach the backend.
    pub fn step(self, read: &[u8], ended: bool, truncated: bool) -> Step {
        if read.len() > PEEK_LIMIT || truncated {
            return Step::Refuse(Reply::error(
                400,
                "the model must be named within the first 64KiB of the body",
            ));
        }
        let peek = match self {
            BodyPeek::OpenAi => crate::openai::peek(read),
            BodyPeek::GrpcMessage => crate::grpc::peek(read),
        };
        match peek {
            Peek::Model(model, version) => Step::Named(Named {
                api: self.api(),
                model,
                version,
            }),
            Peek::Invalid(e) => Step::Refuse(Reply::error(400, e)),
            Peek::NeedMore if ended => {
                Step::Refuse(Reply::error(400, "the request body ended before naming its model"))
            }
            Peek::NeedMore => Step::ReadMore,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_until_named_or_refused() {
        let body = br#"{"model":"llama","messages":[]}"#;
        assert_eq!(BodyPeek::OpenAi.step(&body[..5], false, false), Step::ReadMore);
        assert_eq!(
            BodyPeek::OpenAi.step(body, false, false),
            Step::Named(Named {
                api: Api::OpenAi,
                model: "llama".into(),
                version: None
            })
        );
        let refused = |s: Step| match s {
            Step::Refuse(r) => (r.status, r.message().unwrap_or_default().to_string()),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            refused(BodyPeek::OpenAi.step(&body[..5], true, false)),
            (400, "the request body ended before naming its model".into())
        );
        assert_eq!(refused(BodyPeek::OpenAi.step(&body[..5], false, true)).0, 400);
        let long = vec![b' '; PEEK_LIMIT + 1];
        assert!(refused(BodyPeek::OpenAi.step(&long, false, false)).1.contains("64KiB"));
        assert_eq!(
            refused(BodyPeek::GrpcMessage.step(&[1, 0, 0, 0, 1, 0], false, false)).0,
            400
        );
    }
}
