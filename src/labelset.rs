//! Label sets and label matchers with Prometheus semantics.
//!
//! Owns the comparison order the StoreAPI requires (label by label, name then
//! value, byte-wise; a prefix sorts first), compiled matchers (regexes fully
//! anchored, `.` matching newline), and the external-label compatibility test
//! the querier uses to prune stores.

use std::cmp::Ordering;
use std::fmt;

use regex::Regex;

use crate::proto::thanos::{Label, LabelMatcher, label_matcher};

/// Compares two label sets like Prometheus `labels.Compare`.
pub fn compare(a: &[Label], b: &[Label]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        match x.name.cmp(&y.name).then_with(|| x.value.cmp(&y.value)) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    a.len().cmp(&b.len())
}

/// Sorts a series' labels by name if a peer sent them out of order, and
/// rejects duplicate names, which no later step could repair.
pub fn normalize(labels: &mut [Label]) -> Result<(), String> {
    if !labels.is_sorted_by(|a, b| a.name <= b.name) {
        labels.sort_by(|a, b| a.name.cmp(&b.name));
    }
    match labels.windows(2).find(|w| w[0].name == w[1].name) {
        Some(w) => Err(format!(
            "duplicate label name {:?} in one series",
            w[0].name
        )),
        None => Ok(()),
    }
}

/// Names and values as bytes, as [`crate::wire::RawSeries::labels`] gives them.
pub fn as_bytes(labels: &[Label]) -> impl Iterator<Item = (&[u8], &[u8])> {
    labels
        .iter()
        .map(|l| (l.name.as_bytes(), l.value.as_bytes()))
}

/// Removes every label whose name is listed (replica labels).
pub fn strip(labels: &mut Vec<Label>, names: &[String]) {
    if !names.is_empty() {
        labels.retain(|l| !names.contains(&l.name));
    }
}

/// Renders a label set the way Prometheus prints it: `{a="1", b="2"}`.
pub struct Display<'a>(pub &'a [Label]);

impl fmt::Display for Display<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, l) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}={:?}", l.name, l.value)?;
        }
        f.write_str("}")
    }
}

/// A matcher that failed to compile.
#[derive(Debug, thiserror::Error)]
#[error("invalid matcher {matcher}: {reason}")]
pub struct MatcherError {
    matcher: String,
    reason: String,
}

/// One label matcher, ready to test values.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Eq(String),
    Neq(String),
    Re(Regex),
    Nre(Regex),
}

impl Matcher {
    /// Compiles a wire matcher; a bad regex or unknown type is an error naming it.
    pub fn compile(m: &LabelMatcher) -> Result<Self, MatcherError> {
        let regex = |value: &str| {
            Regex::new(&format!("^(?s:{value})$")).map_err(|e| MatcherError {
                matcher: render(m),
                reason: regex_reason(&e, value.len()),
            })
        };
        let kind = match label_matcher::Type::try_from(m.r#type) {
            Ok(label_matcher::Type::Eq) => Kind::Eq(m.value.clone()),
            Ok(label_matcher::Type::Neq) => Kind::Neq(m.value.clone()),
            Ok(label_matcher::Type::Re) => Kind::Re(regex(&m.value)?),
            Ok(label_matcher::Type::Nre) => Kind::Nre(regex(&m.value)?),
            Err(_) => {
                return Err(MatcherError {
                    matcher: render(m),
                    reason: format!("unknown matcher type {}", m.r#type),
                });
            }
        };
        Ok(Self {
            name: m.name.clone(),
            kind,
        })
    }

    /// Tests a label value; an absent label is the empty string.
    pub fn matches(&self, value: &str) -> bool {
        match &self.kind {
            Kind::Eq(v) => v == value,
            Kind::Neq(v) => v != value,
            Kind::Re(r) => r.is_match(value),
            Kind::Nre(r) => !r.is_match(value),
        }
    }
}

/// Compiles all matchers of a request.
pub fn compile_all(matchers: &[LabelMatcher]) -> Result<Vec<Matcher>, MatcherError> {
    matchers.iter().map(Matcher::compile).collect()
}

/// Whether a series' label set satisfies every matcher.
pub fn matches_series(matchers: &[Matcher], labels: &[Label]) -> bool {
    matchers.iter().all(|m| {
        let value = labels
            .iter()
            .find(|l| l.name == m.name)
            .map_or("", |l| l.value.as_str());
        m.matches(value)
    })
}

/// The querier's store-pruning test on external labels: a store with no label
/// sets matches; otherwise at least one set must be compatible, where only
/// matchers on names present in that set are checked.
pub fn label_sets_match(matchers: &[Matcher], label_sets: &[Vec<Label>]) -> bool {
    let non_empty = || label_sets.iter().filter(|s| !s.is_empty());
    if non_empty().next().is_none() {
        return true;
    }
    non_empty().any(|set| {
        matchers
            .iter()
            .all(|m| match set.iter().find(|l| l.name == m.name) {
                Some(l) => m.matches(&l.value),
                None => true,
            })
    })
}

fn render(m: &LabelMatcher) -> String {
    let op = match label_matcher::Type::try_from(m.r#type) {
        Ok(label_matcher::Type::Eq) => "=",
        Ok(label_matcher::Type::Neq) => "!=",
        Ok(label_matcher::Type::Re) => "=~",
        Ok(label_matcher::Type::Nre) => "!~",
        Err(_) => "?",
    };
    format!(
        "{}{}{}",
        bounded(&m.name, QUOTED_NAME),
        op,
        quoted(&m.value, QUOTED_VALUE)
    )
}

/// How much of a label name, and of a matcher's value, errors quote: enough
/// to recognise it, never enough to overflow a gRPC status (whose message
/// travels in an HTTP/2 trailer clients cap at a few KiB).
const QUOTED_NAME: usize = 100;
const QUOTED_VALUE: usize = 200;

/// `text`, or its first `max` bytes (at a character boundary) and how long
/// it was.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
}

/// `text` in double quotes, escaped, cut like [`bounded`].
fn quoted(text: &str, max: usize) -> String {
    if text.len() <= max {
        return format!("{text:?}");
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let head = format!("{:?}", &text[..end]);
    format!("{}...\" ({} bytes)", &head[..head.len() - 1], text.len())
}

/// Why a regex did not compile. For a long pattern, only the error's last
/// line (`error: unclosed group`): the rest repeats the pattern.
fn regex_reason(err: &regex::Error, pattern_len: usize) -> String {
    let text = err.to_string();
    if pattern_len <= QUOTED_VALUE {
        return text;
    }
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    bounded(last.trim(), QUOTED_VALUE)
}

/// Builds a label set from pairs; test and demo convenience.
pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<Label> {
    let mut labels: Vec<Label> = pairs
        .into_iter()
        .map(|(name, value)| Label {
            name: name.to_owned(),
            value: value.to_owned(),
        })
        .collect();
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(t: label_matcher::Type, name: &str, value: &str) -> Matcher {
        Matcher::compile(&LabelMatcher {
            r#type: t as i32,
            name: name.into(),
            value: value.into(),
        })
        .expect("valid matcher")
    }

    #[test]
    fn compare_is_prometheus_order() {
        let a = from_pairs([("a", "1")]);
        let ab = from_pairs([("a", "1"), ("b", "1")]);
        let a2 = from_pairs([("a", "2")]);
        assert_eq!(compare(&a, &ab), Ordering::Less);
        assert_eq!(compare(&ab, &a2), Ordering::Less);
        assert_eq!(compare(&a2, &a2), Ordering::Equal);
        // Name before value: {a="9"} < {b="0"}.
        assert_eq!(
            compare(&from_pairs([("a", "9")]), &from_pairs([("b", "0")])),
            Ordering::Less
        );
    }

    #[test]
    fn regex_is_anchored_and_dot_matches_newline() {
        let re = m(label_matcher::Type::Re, "x", "a.c");
        assert!(re.matches("a\nc"));
        assert!(!re.matches("xabc"));
        assert!(m(label_matcher::Type::Nre, "x", "a|b").matches("c"));
    }

    #[test]
    fn bad_regex_names_the_matcher() {
        let err = Matcher::compile(&LabelMatcher {
            r#type: label_matcher::Type::Re as i32,
            name: "job".into(),
            value: "(".into(),
        })
        .expect_err("must fail");
        assert!(err.to_string().contains(r#"job=~"(""#), "{err}");
    }

    #[test]
    fn label_sets_match_follows_querier_rules() {
        let eq = |v| vec![m(label_matcher::Type::Eq, "cluster", v)];
        let a = vec![from_pairs([("cluster", "a")])];
        assert!(label_sets_match(&eq("a"), &a));
        assert!(!label_sets_match(&eq("b"), &a));
        // `cluster=""` excludes every set that has a cluster label.
        assert!(!label_sets_match(&eq(""), &a));
        // No label sets at all: a wildcard.
        assert!(label_sets_match(&eq("b"), &[]));
        // An empty set next to a non-empty one is no wildcard.
        assert!(!label_sets_match(&eq("b"), &[vec![], a[0].clone()]));
        // Matchers on names the set lacks are ignored.
        assert!(label_sets_match(
            &[m(label_matcher::Type::Eq, "region", "x")],
            &a
        ));
    }

    #[test]
    fn normalize_sorts_and_rejects_duplicates() {
        let mut l = vec![
            Label {
                name: "b".into(),
                value: "1".into(),
            },
            Label {
                name: "a".into(),
                value: "1".into(),
            },
        ];
        normalize(&mut l).expect("no duplicates");
        assert_eq!(l[0].name, "a");
        l.push(l[1].clone());
        assert!(normalize(&mut l).is_err());
    }
}
