//! Validation results: errors and warnings that name the offending field by its JSON path.

use std::fmt;

/// One problem found in a document, located by its JSON path (`containerDefinitions[0].memory`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// JSON path of the field, empty for the whole document.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every error found in one document; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    /// The errors, in document order.
    pub issues: Vec<Issue>,
}

impl ValidationError {
    /// A single error at `path`.
    pub fn single(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            issues: vec![Issue {
                path: path.into(),
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// Why a document could not be accepted: it is not valid JSON for the shape, or breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// The JSON does not match the shape (syntax, type, or a field ECS does not define).
    #[error("{path}: {message}")]
    Parse {
        /// JSON path where parsing failed (`.` for the root).
        path: String,
        /// serde's description of the failure.
        message: String,
    },
    /// The JSON has the right shape but breaks one of ECS's rules.
    #[error("{0}")]
    Invalid(#[from] ValidationError),
}

/// Collects errors and warnings while walking a document.
#[derive(Debug, Default)]
pub struct Report {
    errors: Vec<Issue>,
    warnings: Vec<Issue>,
}

impl Report {
    /// Records an error at `path`.
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Issue {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Records a warning at `path`.
    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Issue {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Records the standard warning for a field ECS defines that Capstan keeps but does not act on.
    pub fn ignored(&mut self, path: impl Into<String>, present: bool) {
        if present {
            self.warn(path, "accepted and kept, but Capstan does not act on it");
        }
    }

    /// Checks `lo <= value <= hi`.
    pub fn range<T: PartialOrd + fmt::Display + Copy>(
        &mut self,
        path: &str,
        value: T,
        lo: T,
        hi: T,
    ) {
        if value < lo || value > hi {
            self.error(path, format!("must be between {lo} and {hi}, got {value}"));
        }
    }

    /// Finishes: the warnings if there was no error, else every error.
    pub fn finish(self) -> Result<Vec<Issue>, ValidationError> {
        if self.errors.is_empty() {
            Ok(self.warnings)
        } else {
            Err(ValidationError {
                issues: self.errors,
            })
        }
    }
}

/// Joins a parent path and a field name.
pub fn join(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_string()
    } else {
        format!("{parent}.{field}")
    }
}

/// Path of the `i`-th element of the list at `parent.field`.
pub fn index(parent: &str, field: &str, i: usize) -> String {
    format!("{}[{i}]", join(parent, field))
}

/// Checks ECS's name rule: 1–255 letters, digits, hyphens and underscores.
pub fn check_name(report: &mut Report, path: &str, name: &str) {
    if !is_valid_name(name) {
        report.error(
            path,
            format!(
                "{name:?} is not a valid name: use 1-255 letters (A-Z, a-z), digits, hyphens and underscores"
            ),
        );
    }
}

/// True when `name` has 1–255 characters from `[A-Za-z0-9_-]`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Parses a JSON document into `T`, naming the path of the first field that does not fit.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, DocumentError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        DocumentError::Parse {
            path,
            message: e.into_inner().to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_ecs_rules() {
        assert!(is_valid_name("web-1_a"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("web.1"));
        assert!(!is_valid_name(&"a".repeat(256)));
        assert!(is_valid_name(&"a".repeat(255)));
    }

    #[test]
    fn report_collects_errors_with_paths() {
        let mut r = Report::default();
        r.range("maximumPercent", 50, 100, 400);
        let err = r.finish().expect_err("out of range");
        assert_eq!(
            err.to_string(),
            "maximumPercent: must be between 100 and 400, got 50"
        );
    }
}
