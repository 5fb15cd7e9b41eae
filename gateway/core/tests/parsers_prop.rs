//! Property tests of the parsers that see client bytes: request classification, the OpenAI body
//! peek and the KServe V2 gRPC peek. Each asserts what the parser must say, not only that it does
//! not panic: a body that names its model is read as naming it, wherever it is cut short the peek
//! asks for more rather than refusing, and arbitrary bytes are refused or asked about, never
//! misread.

use http::Method;
use meridian_gateway_core::classify::{classify, ClassifyError, Target};
use meridian_gateway_core::grpc;
use meridian_gateway_core::openai;
use meridian_gateway_core::prefix::Peek;
use proptest::prelude::*;

/// Model and version names as operators write them.
fn name() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._-]{0,30}"
}

/// JSON values that may come before `model` in a body.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A gRPC-framed V2 request: model_name (1), model_version (2), then other fields.
fn v2_message(model: &str, version: &str, tail: &[u8]) -> Vec<u8> {
    let mut msg = Vec::new();
    for (field, s) in [(1u8, model), (2u8, version)] {
        msg.push(field << 3 | 2);
        msg.push(s.len() as u8);
        msg.extend_from_slice(s.as_bytes());
    }
    msg.extend_from_slice(tail);
    let mut framed = vec![0];
    framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    framed.extend_from_slice(&msg);
    framed
}

proptest! {
    #[test]
    fn an_openai_body_names_its_model_wherever_it_stands(
        model in name(),
        before in prop::collection::vec(("[a-z_]{1,8}", json_value()), 0..4),
        after in prop::collection::vec(("[a-z_]{1,8}", json_value()), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut fields: Vec<String> = before
            .iter()
            .filter(|(k, _)| k != "model")
            .map(|(k, v)| format!("{}:{v}", serde_json::Value::from(k.as_str())))
            .collect();
        fields.push(format!("\"model\":{}", serde_json::Value::from(model.as_str())));
        fields.extend(after.iter().filter(|(k, _)| k != "model").map(|(k, v)| format!("{}:{v}", serde_json::Value::from(k.as_str()))));
        let body = format!("{{{}}}", fields.join(","));
        prop_assert_eq!(openai::peek(body.as_bytes()), Peek::Model(model.clone(), None));
        // Any prefix either already names the model or asks for more: never a refusal.
        let at = cut.index(body.len());
        match openai::peek(&body.as_bytes()[..at]) {
            Peek::Model(m, None) => prop_assert_eq!(m, model),
            Peek::NeedMore => {}
            other => prop_assert!(false, "prefix of {} bytes: {:?}", at, other),
        }
    }

    #[test]
    fn arbitrary_bytes_never_make_up_a_model(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        // Whatever it says, a model it names must be a JSON string in the bytes.
        if let Peek::Model(m, _) = openai::peek(&bytes) {
            let quoted = serde_json::Value::from(m.as_str()).to_string();
            let text = String::from_utf8_lossy(&bytes);
            prop_assert!(text.contains(quoted.trim_matches('"')), "{:?} not in {:?}", m, text);
        }
        let _ = grpc::peek(&bytes);
    }

    #[test]
    fn a_v2_grpc_message_names_its_model_and_version(
        model in name(),
        version in "[a-z0-9]{0,8}",
        tail in prop::collection::vec(any::<u8>(), 0..64),
        cut in any::<prop::sample::Index>(),
    ) {
        let framed = v2_message(&model, &version, &tail);
        let want_version = (!version.is_empty()).then(|| version.clone());
        prop_assert_eq!(grpc::peek(&framed), Peek::Model(model.clone(), want_version.clone()));
        let at = cut.index(framed.len());
        match grpc::peek(&framed[..at]) {
            Peek::NeedMore => {}
            Peek::Model(m, v) => {
                prop_assert_eq!(m, model);
                prop_assert!(v.is_none() || v == want_version);
            }
            Peek::Invalid(e) => prop_assert!(false, "prefix of {} bytes refused: {}", at, e),
        }
    }

    #[test]
    fn v1_and_v2_paths_classify_to_their_model(model in name(), version in name()) {
        let v2 = format!("/v2/models/{model}/versions/{version}/infer");
        match classify(&Method::POST, &v2) {
            Ok(Target::Model { model: m, version: v, .. }) => {
                prop_assert_eq!(m, model.as_str());
                prop_assert_eq!(v, Some(version.as_str()));
            }
            other => prop_assert!(false, "{v2}: {other:?}"),
        }
        let v1 = format!("/v1/models/{model}:predict");
        let v1_model = match classify(&Method::POST, &v1) {
            Ok(Target::Model { model: m, .. }) => Some(m),
            _ => None,
        };
        prop_assert_eq!(v1_model, Some(model.as_str()));
        prop_assert_eq!(
            classify(&Method::GET, &format!("/v2/models/{model}/infer")).err(),
            Some(ClassifyError::MethodNotAllowed)
        );
    }

    #[test]
    fn any_path_classifies_without_panicking(path in "/[ -~]{0,80}", post in any::<bool>()) {
        let method = if post { Method::POST } else { Method::GET };
        if let Ok(Target::Model { model, .. }) = classify(&method, &path) {
            prop_assert!(path.contains(model), "{model} is part of {path}");
            prop_assert!(!model.is_empty());
        }
    }
}
