//! Loading a config file: read, parse YAML, type-check, validate, all errors at once.

use std::path::{Path, PathBuf};

use crate::error::{ConfigErrors, Diagnostic};
use crate::schema::Config;
use crate::source::Document;
use crate::typecheck::{type_errors, with_key};
use crate::validate;

/// A config that passed every check, with the file it came from.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The validated config.
    pub config: Config,
    /// The file it was read from, as named.
    pub file: String,
    /// Folder that relative paths in the config (TLS files, state file) are resolved against.
    pub base_dir: PathBuf,
}

/// Reads and validates a config file.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::file(&file, format!("cannot read config file: {e}")))?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    load_str(&text, &file, &base_dir)
}

/// Validates config text; `file` names it in errors and `base_dir` anchors relative paths.
pub fn load_str(text: &str, file: &str, base_dir: &Path) -> Result<Loaded, ConfigErrors> {
    let doc = Document::parse(text).map_err(|(pos, message)| {
        ConfigErrors(vec![Diagnostic {
            file: file.into(),
            pos,
            path: ".".into(),
            message: format!("YAML syntax error: {message}"),
        }])
    })?;
    let problems = match serde_path_to_error::deserialize::<_, Config>(&doc.value) {
        Ok(config) => {
            let problems = validate::validate(&config, base_dir);
            if problems.is_empty() {
                return Ok(Loaded {
                    config,
                    file: file.into(),
                    base_dir: base_dir.into(),
                });
            }
            problems
        }
        Err(_) => type_errors(&doc.value),
    };
    Err(diagnose(&doc, file, problems))
}

/// Turns (path, message) pairs into positioned diagnostics in file order.
fn diagnose(doc: &Document, file: &str, problems: Vec<(String, String)>) -> ConfigErrors {
    let mut out: Vec<Diagnostic> = problems
        .into_iter()
        .map(|(path, message)| {
            // serde names an unknown key in the message; point at the key itself.
            let unknown = message
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split('`').next())
                .map(|key| with_key(&path, key));
            let (path, pos) = match unknown {
                Some(p) if doc.key_pos(&p).is_some() => {
                    let pos = doc.key_pos(&p).unwrap_or_default();
                    (p, pos)
                }
                _ => {
                    let pos = doc.locate(&path);
                    (path, pos)
                }
            };
            Diagnostic {
                file: file.into(),
                pos,
                path,
                message,
            }
        })
        .collect();
    out.sort_by(|a, b| (a.pos, &a.path, &a.message).cmp(&(b.pos, &b.path, &b.message)));
    out.dedup();
    ConfigErrors(out)
}
