//! What a decision looked at, for `meridian explain` and the admin `POST /explain`.
//!
//! The decision functions take a `&mut impl Trace` and report each step to it as they take it; the
//! request path passes `()`, whose methods are empty and compile away, so an explanation is the
//! real decision watched from inside, never a second implementation that could drift from it.

use meridian_config::snapshot::VersionId;

use crate::classify::Api;

/// Where a version pin came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinSource {
    /// The request path (`/v2/models/{m}/versions/{v}/...`), or the body that named it.
    Path,
    /// The `x-model-version` header.
    Header,
}

/// Where a split's sticky key came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// The rule's sticky header.
    Header,
    /// The rule's sticky cookie.
    Cookie,
    /// The client's address: the rule names no key, or the request lacks it.
    Client,
}

/// One version's standing in a split: weighted rendezvous hashing keeps the lowest score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SplitScore {
    /// The version.
    pub version: VersionId,
    /// Its weight in the split.
    pub weight: u32,
    /// The key's hash for this version mapped to (0, 1]: the key's bucket.
    pub hash: f64,
    /// `-ln(hash) / weight`.
    pub score: f64,
}

/// Receives the steps of a decision. Every method has an empty default.
pub trait Trace {
    /// The request was classified: its API, the model it names and the version its path names.
    fn classified(&mut self, _api: Api, _model: &str, _version: Option<&str>) {}
    /// A version was pinned.
    fn pin(&mut self, _version: &str, _source: PinSource, _found: bool) {}
    /// Condition `cond` of rule `rule` was tested.
    fn condition(&mut self, _rule: usize, _cond: usize, _matched: bool) {}
    /// Rule `rule` was tried.
    fn rule(&mut self, _rule: usize, _matched: bool) {}
    /// A split of rule `rule` hashed `key`.
    fn sticky(&mut self, _rule: usize, _source: KeySource, _key: &[u8]) {}
    /// One version's score in that split.
    fn score(&mut self, _score: SplitScore) {}
}

/// The request path's trace: nothing.
impl Trace for () {}

/// Every step of a decision, in order: what `meridian explain` reads.
#[derive(Clone, Debug, Default)]
pub struct Recording {
    /// The classification: API, model named, version in the path.
    pub classified: Option<(Api, String, Option<String>)>,
    /// The pin: version, where from, whether the model has it.
    pub pin: Option<(String, PinSource, bool)>,
    /// Conditions tested: (rule, condition, matched).
    pub conditions: Vec<(usize, usize, bool)>,
    /// Rules tried: (rule, matched).
    pub rules: Vec<(usize, bool)>,
    /// The split's key: (rule, source, key).
    pub sticky: Option<(usize, KeySource, Vec<u8>)>,
    /// The split's scores.
    pub scores: Vec<SplitScore>,
}

impl Trace for Recording {
    fn classified(&mut self, api: Api, model: &str, version: Option<&str>) {
        self.classified = Some((api, model.to_string(), version.map(str::to_string)));
    }
    fn pin(&mut self, version: &str, source: PinSource, found: bool) {
        self.pin = Some((version.to_string(), source, found));
    }
    fn condition(&mut self, rule: usize, cond: usize, matched: bool) {
        self.conditions.push((rule, cond, matched));
    }
    fn rule(&mut self, rule: usize, matched: bool) {
        self.rules.push((rule, matched));
    }
    fn sticky(&mut self, rule: usize, source: KeySource, key: &[u8]) {
        self.sticky = Some((rule, source, key.to_vec()));
    }
    fn score(&mut self, score: SplitScore) {
        self.scores.push(score);
    }
}
