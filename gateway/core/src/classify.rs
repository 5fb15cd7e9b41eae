//! Request classification: which API a request speaks and which model and version it names.
//!
//! Paths follow the KServe V1 protocol and the Open Inference Protocol (V2). Classification borrows
//! from the path and allocates nothing.

use http::Method;

/// The API family of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// KServe V1 (`/v1/models/...`).
    V1,
    /// Open Inference Protocol V2 (`/v2/models/...`).
    V2,
    /// OpenAI-compatible (`/v1/chat/completions`, ...): the model is in the JSON body.
    OpenAi,
    /// gRPC over HTTP/2 (KServe V2 `inference.GRPCInferenceService` or any service).
    Grpc,
}

impl Api {
    /// Label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::V1 => "v1",
            Api::V2 => "v2",
            Api::OpenAi => "openai",
            Api::Grpc => "grpc",
        }
    }
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// A request for one model, proxied to one of its endpoints.
    Model {
        /// API family.
        api: Api,
        /// Model name from the path.
        model: &'a str,
        /// Version from the path (`/versions/{v}`), if any.
        version: Option<&'a str>,
    },
    /// An OpenAI-style request whose model is in the body.
    OpenAi,
    /// V2 server liveness, answered by the gateway itself.
    ServerLive,
    /// V2 server readiness, answered by the gateway itself.
    ServerReady,
    /// V2 server metadata, answered by the gateway itself.
    ServerMetadata,
    /// V1 model list, answered by the gateway itself.
    ListModels,
}

/// Why a request cannot be classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassifyError {
    /// The path is not an inference API path (404).
    UnknownPath,
    /// The path exists but not for this method (405).
    MethodNotAllowed,
}

/// Classifies a request by method and path (the path without its query string).
pub fn classify<'a>(method: &Method, path: &'a str) -> Result<Target<'a>, ClassifyError> {
    let get = *method == Method::GET || *method == Method::HEAD;
    let post = *method == Method::POST;
    let only = |ok: bool, t: Target<'a>| {
        if ok {
            Ok(t)
        } else {
            Err(ClassifyError::MethodNotAllowed)
        }
    };
    match path {
        "/v2" | "/v2/" => return only(get, Target::ServerMetadata),
        "/v2/health/live" => return only(get, Target::ServerLive),
        "/v2/health/ready" => return only(get, Target::ServerReady),
        "/v1/models" | "/v1/models/" => return only(get, Target::ListModels),
        "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings" => return only(post, Target::OpenAi),
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/v2/models/") {
        return v2_model(rest, get, post);
    }
    if let Some(rest) = path.strip_prefix("/v1/models/") {
        // `/v1/models/{m}` (status) or `/v1/models/{m}:predict` / `:explain`.
        let (model, verb) = match rest.split_once(':') {
            Some((m, v)) => (m, Some(v)),
            None => (rest, None),
        };
        if !valid_name(model) {
            return Err(ClassifyError::UnknownPath);
        }
        let t = Target::Model {
            api: Api::V1,
            model,
            version: None,
        };
        return match verb {
            None => only(get, t),
            Some("predict" | "explain") => only(post, t),
            Some(_) => Err(ClassifyError::UnknownPath),
        };
    }
    Err(ClassifyError::UnknownPath)
}

/// `{m}`, `{m}/ready`, `{m}/infer`, `{m}/versions/{v}[/...]`, and extension operations such as
/// `{m}/generate` (Triton's generate extension), which pass through to the backend.
fn v2_model(rest: &str, get: bool, post: bool) -> Result<Target<'_>, ClassifyError> {
    let mut parts = rest.splitn(2, '/');
    let model = parts.next().unwrap_or_default();
    let tail = parts.next().unwrap_or_default();
    if !valid_name(model) {
        return Err(ClassifyError::UnknownPath);
    }
    let (version, op) = match tail.strip_prefix("versions/") {
        Some(v) => {
            let mut vp = v.splitn(2, '/');
            let version = vp.next().unwrap_or_default();
            if !valid_name(version) {
                return Err(ClassifyError::UnknownPath);
            }
            (Some(version), vp.next().unwrap_or_default())
        }
        None => (None, tail),
    };
    let t = Target::Model {
        api: Api::V2,
        model,
        version,
    };
    match op {
        "" | "ready" | "config" | "stats" => {
            if get {
                Ok(t)
            } else {
                Err(ClassifyError::MethodNotAllowed)
            }
        }
        "infer" | "generate" | "generate_stream" => {
            if post {
                Ok(t)
            } else {
                Err(ClassifyError::MethodNotAllowed)
            }
        }
        _ => Err(ClassifyError::UnknownPath),
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model<'a>(api: Api, model: &'a str, version: Option<&'a str>) -> Result<Target<'a>, ClassifyError> {
        Ok(Target::Model { api, model, version })
    }

    /// Each (method, path) and what it classifies as.
    fn check(cases: &[(Method, &str, Result<Target<'_>, ClassifyError>)]) {
        for (method, path, want) in cases {
            assert_eq!(&classify(method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn kserve_v1_paths() {
        let (get, post) = (Method::GET, Method::POST);
        check(&[
            (post.clone(), "/v1/models/iris:predict", model(Api::V1, "iris", None)),
            (post.clone(), "/v1/models/iris:explain", model(Api::V1, "iris", None)),
            (get.clone(), "/v1/models/iris", model(Api::V1, "iris", None)),
            (get.clone(), "/v1/models", Ok(Target::ListModels)),
            (post, "/v1/models/iris:train", Err(ClassifyError::UnknownPath)),
            (get, "/v1/models/iris:predict", Err(ClassifyError::MethodNotAllowed)),
        ]);
    }

    #[test]
    fn open_inference_v2_paths() {
        let (get, post) = (Method::GET, Method::POST);
        check(&[
            (post.clone(), "/v2/models/iris/infer", model(Api::V2, "iris", None)),
            (
                post.clone(),
                "/v2/models/iris/versions/v2/infer",
                model(Api::V2, "iris", Some("v2")),
            ),
            (
                get.clone(),
                "/v2/models/iris/versions/v2/ready",
                model(Api::V2, "iris", Some("v2")),
            ),
            (
                get.clone(),
                "/v2/models/iris/versions/v2",
                model(Api::V2, "iris", Some("v2")),
            ),
            (get.clone(), "/v2/models/iris", model(Api::V2, "iris", None)),
            (get.clone(), "/v2/models/iris/ready", model(Api::V2, "iris", None)),
            (
                post.clone(),
                "/v2/models/llm/generate_stream",
                model(Api::V2, "llm", None),
            ),
            (get.clone(), "/v2/health/live", Ok(Target::ServerLive)),
            (get.clone(), "/v2/health/ready", Ok(Target::ServerReady)),
            (get.clone(), "/v2", Ok(Target::ServerMetadata)),
            (get, "/v2/models/iris/infer", Err(ClassifyError::MethodNotAllowed)),
            (
                post.clone(),
                "/v2/models/iris/versions//infer",
                Err(ClassifyError::UnknownPath),
            ),
            (post.clone(), "/v2/models/../infer", model(Api::V2, "..", None)),
            (post, "/v2/models/a%2Fb/infer", Err(ClassifyError::UnknownPath)),
        ]);
    }

    #[test]
    fn other_paths_are_not_ours() {
        for p in [
            "/",
            "/admin",
            "/v3/models/x/infer",
            "/v1/models/:predict",
            "/v2/models/",
        ] {
            assert_eq!(
                classify(&Method::POST, p).unwrap_err(),
                ClassifyError::UnknownPath,
                "{p}"
            );
        }
        assert_eq!(classify(&Method::POST, "/v1/chat/completions"), Ok(Target::OpenAi));
    }
}
