//! Config errors as operators read them: `FILE:LINE:COL: field.path: message`, all of them at once.

use std::fmt;

use crate::source::Pos;

/// One problem in a config file, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as it was named to the loader.
    pub file: String,
    /// Line and column of the offending key or value.
    pub pos: Pos,
    /// Field path, e.g. `models[0].routes[2].split`; `.` for the document itself.
    pub path: String,
    /// What is wrong and, where it helps, how to fix it.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.pos.line, self.pos.col, self.path, self.message
        )
    }
}

/// Every problem found in a config file, in file order; never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<Diagnostic>);

impl ConfigErrors {
    /// One error that is about the file as a whole (unreadable, say).
    pub fn file(file: &str, message: impl Into<String>) -> Self {
        ConfigErrors(vec![Diagnostic {
            file: file.to_string(),
            pos: Pos { line: 1, col: 1 },
            path: ".".into(),
            message: message.into(),
        }])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
