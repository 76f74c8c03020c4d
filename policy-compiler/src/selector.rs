//! Label selectors: `matchLabels` and `matchExpressions`, lowered to one canonical list of
//! requirements so that equal selectors compare equal and can key shared address sets.

use std::collections::BTreeSet;
use std::fmt;

use crate::model::Labels;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Requirement {
    pub key: String,
    pub op: Operator,
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match (&self.op, value) {
            (Operator::In(values), Some(v)) => values.contains(v),
            (Operator::In(_), None) => false,
            (Operator::NotIn(values), Some(v)) => !values.contains(v),
            (Operator::NotIn(_), None) => true,
            (Operator::Exists, v) => v.is_some(),
            (Operator::DoesNotExist, v) => v.is_none(),
        }
    }
}

/// A conjunction of requirements; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector {
    /// Sorted and free of duplicates.
    requirements: Vec<Requirement>,
}

/// Why a selector could not be lowered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("matchExpressions key {key:?}: unknown operator {operator:?}")]
    UnknownOperator { key: String, operator: String },
    #[error("matchExpressions key {key:?}: operator {operator} needs a non-empty values list")]
    MissingValues { key: String, operator: String },
    #[error("matchExpressions key {key:?}: operator {operator} takes no values")]
    UnexpectedValues { key: String, operator: String },
    #[error("label selector has an empty key")]
    EmptyKey,
}

impl Selector {
    /// The selector that matches everything (`{}`).
    pub fn everything() -> Selector {
        Selector::default()
    }

    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Selector {
        requirements.sort();
        requirements.dedup();
        Selector { requirements }
    }

    /// Lowers `matchLabels` and `matchExpressions` (`(key, operator, values)` triples).
    pub fn parse<'a>(
        match_labels: impl IntoIterator<Item = (&'a str, &'a str)>,
        match_expressions: impl IntoIterator<Item = (&'a str, &'a str, Option<&'a [String]>)>,
    ) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in match_labels {
            if key.is_empty() {
                return Err(SelectorError::EmptyKey);
            }
            requirements.push(Requirement {
                key: key.to_string(),
                op: Operator::In(BTreeSet::from([value.to_string()])),
            });
        }
        for (key, operator, values) in match_expressions {
            if key.is_empty() {
                return Err(SelectorError::EmptyKey);
            }
            let values = values.unwrap_or(&[]);
            let set: BTreeSet<String> = values.iter().cloned().collect();
            let needs_values = matches!(operator, "In" | "NotIn");
            let err_key = || key.to_string();
            if needs_values && set.is_empty() {
                return Err(SelectorError::MissingValues {
                    key: err_key(),
                    operator: operator.to_string(),
                });
            }
            let op = match operator {
                "In" => Operator::In(set),
                "NotIn" => Operator::NotIn(set),
                "Exists" | "DoesNotExist" if !set.is_empty() => {
                    return Err(SelectorError::UnexpectedValues {
                        key: err_key(),
                        operator: operator.to_string(),
                    })
                }
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError::UnknownOperator {
                        key: err_key(),
                        operator: other.to_string(),
                    })
                }
            };
            requirements.push(Requirement {
                key: key.to_string(),
                op,
            });
        }
        Ok(Selector::from_requirements(requirements))
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// The `(key, value)` pairs of which a matching object must carry one, taken from the
    /// narrowest `In` requirement: an index can start from those objects instead of all of them.
    pub fn narrowest_in(&self) -> Option<(&str, &BTreeSet<String>)> {
        self.requirements
            .iter()
            .filter_map(|r| match &r.op {
                Operator::In(values) => Some((r.key.as_str(), values)),
                _ => None,
            })
            .min_by_key(|(_, values)| values.len())
    }
}

impl fmt::Display for Selector {
    /// The kubectl spelling: `app=web,tier in (a,b),!legacy`; `{}` for the empty selector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.requirements.is_empty() {
            return f.write_str("{}");
        }
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let join = |values: &BTreeSet<String>| values.iter().cloned().collect::<Vec<_>>().join(",");
            match &r.op {
                Operator::In(values) if values.len() == 1 => write!(f, "{}={}", r.key, join(values))?,
                Operator::In(values) => write!(f, "{} in ({})", r.key, join(values))?,
                Operator::NotIn(values) => write!(f, "{} notin ({})", r.key, join(values))?,
                Operator::Exists => write!(f, "{}", r.key)?,
                Operator::DoesNotExist => write!(f, "!{}", r.key)?,
            }
        }
        Ok(())
    }
}
