//! What a body prefix says about the model it names: the answer both body peeks give
//! (`openai::peek`, `grpc::peek`), and how far a peek may read.

/// Most body bytes read while looking for the model: pingora replays at most this much of a body it
/// has already read (its retry buffer), so the peek never loses bytes.
pub const PEEK_LIMIT: usize = 64 * 1024;

/// What a body prefix says about the model.
#[derive(Debug, PartialEq, Eq)]
pub enum Peek {
    /// The model named, and its version when the body names one.
    Model(String, Option<String>),
    /// The prefix ends before the model appeared: read more.
    NeedMore,
    /// The body cannot name a model (400).
    Invalid(String),
}
