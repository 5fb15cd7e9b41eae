//! Reading a model name out of a request body: for the APIs that name it there (OpenAI-style JSON,
//! the first message of a KServe V2 gRPC call). The shell reads chunks and asks [`BodyPeek::step`]
//! after each one; this module decides when enough was read, when to give up, and what to answer.

use crate::classify::Api;
use crate::prefix::Peek;
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

    /// Looks at what was read so far. `ended`: the body has no more bytes; `reach`: the most bytes
    /// the shell can hold for the backend ([`crate::prefix::PEEK_LIMIT`] where pingora's replay buffer holds them);
    /// `truncated`: that buffer overflowed, so what was read could not all reach the backend.
    pub fn step(self, read: &[u8], ended: bool, reach: usize, truncated: bool) -> Step {
        if read.len() > reach || truncated {
            return Step::Refuse(Reply::error(
                400,
                format!(
                    "the model must be named within the first {}KiB of the body",
                    reach / 1024
                ),
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
    use crate::prefix::PEEK_LIMIT;

    #[test]
    fn steps_until_named_or_refused() {
        let body = br#"{"model":"llama","messages":[]}"#;
        assert_eq!(
            BodyPeek::OpenAi.step(&body[..5], false, PEEK_LIMIT, false),
            Step::ReadMore
        );
        assert_eq!(
            BodyPeek::OpenAi.step(body, false, PEEK_LIMIT, false),
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
            refused(BodyPeek::OpenAi.step(&body[..5], true, PEEK_LIMIT, false)),
            (400, "the request body ended before naming its model".into())
        );
        assert_eq!(
            refused(BodyPeek::OpenAi.step(&body[..5], false, PEEK_LIMIT, true)).0,
            400
        );
        let long = vec![b' '; PEEK_LIMIT + 1];
        assert!(refused(BodyPeek::OpenAi.step(&long, false, PEEK_LIMIT, false))
            .1
            .contains("64KiB"));
        assert_eq!(
            refused(BodyPeek::GrpcMessage.step(&[1, 0, 0, 0, 1, 0], false, PEEK_LIMIT, false)).0,
            400
        );
    }

    #[test]
    fn a_body_held_whole_names_its_model_anywhere() {
        // OpenAI's clients send `messages` first: a long prompt puts `model` past 64 KiB.
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":"{}"}}],"model":"m"}}"#,
            "x".repeat(100_000)
        );
        let named = |s| matches!(s, Step::Named(Named { ref model, .. }) if model == "m");
        assert!(named(BodyPeek::OpenAi.step(body.as_bytes(), true, usize::MAX, false)));
        let r = BodyPeek::OpenAi.step(body.as_bytes(), false, 128 * 1024, false);
        assert!(named(r));
        let Step::Refuse(r) = BodyPeek::OpenAi.step(body.as_bytes(), false, PEEK_LIMIT, false) else {
            panic!("past the reach")
        };
        assert_eq!(
            r.message(),
            Some("the model must be named within the first 64KiB of the body")
        );
    }
}
