//! Diagnostics: what the compiler reports about objects it ignored or read in part.

use std::fmt;

use crate::model::ObjectKey;

/// A problem with one object: its kind, its name and the reason, in words a user can act on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub kind: String,
    /// `namespace/name` for namespaced objects, `name` otherwise.
    pub object: String,
    pub reason: String,
}

impl Diagnostic {
    pub fn new(kind: &str, object: &str, reason: &str) -> Self {
        Diagnostic {
            kind: kind.to_string(),
            object: object.to_string(),
            reason: reason.to_string(),
        }
    }

    /// An invalid policy: ignored for its allowances, kept for the isolation it asks for.
    pub fn invalid_policy(key: &ObjectKey, reason: &str) -> Self {
        Diagnostic::new(
            "NetworkPolicy",
            &key.to_string(),
            &format!("invalid: {reason} (where it is ignored, it allows nothing and the pods it selects stay isolated)"),
        )
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.kind, self.object, self.reason)
    }
}
