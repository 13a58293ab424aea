//! The vector selectors of a PromQL query, for routing exemplar requests by
//! external labels: an endpoint gets a query made of the selectors its label
//! sets can match, as a querier builds it for its own endpoints.

use promql_parser::label::{MatchOp, Matcher as PromMatcher};
use promql_parser::parser::{self, Expr, VectorSelector};
use promql_parser::util::{ExprVisitor, walk_expr};

use crate::labelset::{self, Matcher};
use crate::proto::thanos::{Label, LabelMatcher, label_matcher};

/// One vector selector: matchers that all apply, the metric name included
/// as `__name__`.
#[derive(Debug, Clone)]
pub struct Selector {
    matchers: Vec<LabelMatcher>,
    compiled: Vec<Matcher>,
}

impl Selector {
    fn new(matchers: Vec<LabelMatcher>) -> Result<Self, String> {
        let compiled = labelset::compile_all(&matchers).map_err(|e| e.to_string())?;
        Ok(Self { matchers, compiled })
    }

    /// Whether an endpoint with these external label sets can hold series
    /// this selector selects.
    pub fn matches(&self, label_sets: &[Vec<Label>]) -> bool {
        labelset::label_sets_match(&self.compiled, label_sets)
    }

    /// Whether a series with `labels` is selected.
    pub fn selects(&self, labels: &[Label]) -> bool {
        labelset::matches_series(&self.compiled, labels)
    }

    /// `{name="value", ...}`, leaving out matchers on `drop`ped names. An
    /// endpoint that keeps its external labels out of its own storage (a
    /// sidecar's Prometheus) must not see matchers on them.
    fn render(&self, drop: &[&str]) -> Option<String> {
        let kept: Vec<String> = self
            .matchers
            .iter()
            .filter(|m| !drop.contains(&m.name.as_str()))
            .map(render_matcher)
            .collect();
        (!kept.is_empty()).then(|| format!("{{{}}}", kept.join(", ")))
    }
}

impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        self.matchers == other.matchers
    }
}

/// Every vector selector in `query`, in order; a selector with `or` groups
/// counts as one selector per group.
pub fn parse(query: &str) -> Result<Vec<Selector>, String> {
    let expr =
        parser::parse(query).map_err(|e| format!("invalid exemplar query {query:?}: {e}"))?;
    let mut found = Collect::default();
    walk_expr(&mut found, &expr)?;
    found.selectors.into_iter().map(Selector::new).collect()
}

/// The query for an endpoint with `label_sets`: the selectors that can match
/// them, joined with `+` (only the selected series matter, not the value).
/// `keeps_external_labels` is false for endpoints that want matchers on
/// their external label names left out. None if no selector matches.
pub fn query_for(
    selectors: &[Selector],
    label_sets: &[Vec<Label>],
    keeps_external_labels: bool,
) -> Option<String> {
    let external: Vec<&str> = if keeps_external_labels {
        Vec::new()
    } else {
        label_sets
            .iter()
            .flatten()
            .map(|l| l.name.as_str())
            .collect()
    };
    let parts: Vec<String> = selectors
        .iter()
        .filter(|s| s.matches(label_sets))
        .filter_map(|s| s.render(&external))
        .collect();
    (!parts.is_empty()).then(|| parts.join(" + "))
}

#[derive(Default)]
struct Collect {
    selectors: Vec<Vec<LabelMatcher>>,
}

impl Collect {
    fn add(&mut self, vs: &VectorSelector) {
        let name = vs.name.as_ref().map(|name| LabelMatcher {
            r#type: label_matcher::Type::Eq as i32,
            name: promql_parser::label::METRIC_NAME.into(),
            value: name.clone(),
        });
        let base: Vec<LabelMatcher> = name
            .into_iter()
            .chain(vs.matchers.matchers.iter().map(convert))
            // The parser may repeat the name as a matcher.
            .fold(Vec::new(), |mut all, m| {
                if !all.contains(&m) {
                    all.push(m);
                }
                all
            });
        if vs.matchers.or_matchers.is_empty() {
            self.selectors.push(base);
            return;
        }
        for group in &vs.matchers.or_matchers {
            let mut matchers = base.clone();
            matchers.extend(group.iter().map(convert).filter(|m| !base.contains(m)));
            self.selectors.push(matchers);
        }
    }
}

impl ExprVisitor for Collect {
    type Error = String;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        match expr {
            Expr::VectorSelector(vs) => self.add(vs),
            Expr::MatrixSelector(ms) => self.add(&ms.vs),
            _ => {}
        }
        Ok(true)
    }
}

fn convert(m: &PromMatcher) -> LabelMatcher {
    let r#type = match m.op {
        MatchOp::Equal => label_matcher::Type::Eq,
        MatchOp::NotEqual => label_matcher::Type::Neq,
        MatchOp::Re(_) => label_matcher::Type::Re,
        MatchOp::NotRe(_) => label_matcher::Type::Nre,
    };
    LabelMatcher {
        r#type: r#type as i32,
        name: m.name.clone(),
        value: m.value.clone(),
    }
}

fn render_matcher(m: &LabelMatcher) -> String {
    let op = match label_matcher::Type::try_from(m.r#type) {
        Ok(label_matcher::Type::Neq) => "!=",
        Ok(label_matcher::Type::Re) => "=~",
        Ok(label_matcher::Type::Nre) => "!~",
        _ => "=",
    };
    let legacy_name = m
        .name
        .starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && m.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    let name = if legacy_name {
        m.name.clone()
    } else {
        // Prometheus 3 syntax for names outside the classic character set.
        quote(&m.name)
    };
    format!("{name}{op}{}", quote(&m.value))
}

/// A PromQL double-quoted string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets(sets: &[&[(&str, &str)]]) -> Vec<Vec<Label>> {
        sets.iter()
            .map(|s| labelset::from_pairs(s.iter().copied()))
            .collect()
    }

    #[test]
    fn finds_every_selector_with_its_name() {
        let selectors = parse(
            r#"sum by (job) (rate(http_requests_total{code=~"5.."}[5m])) / on(job) group_left up{cluster="a"} offset 1m"#,
        )
        .unwrap();
        let rendered: Vec<String> = selectors.iter().filter_map(|s| s.render(&[])).collect();
        assert_eq!(
            rendered,
            [
                r#"{__name__="http_requests_total", code=~"5.."}"#,
                r#"{__name__="up", cluster="a"}"#,
            ]
        );
    }

    #[test]
    fn routes_by_external_labels() {
        let selectors = parse(r#"foo{cluster="a", job="x"} + bar{cluster=~"b|c"} + baz"#).unwrap();
        let a = sets(&[&[("cluster", "a"), ("replica", "0")]]);
        let b = sets(&[&[("cluster", "b")]]);
        let d = sets(&[&[("cluster", "d")]]);
        // A querier-like endpoint keeps matchers on external labels.
        assert_eq!(
            query_for(&selectors, &a, true).as_deref(),
            Some(r#"{__name__="foo", cluster="a", job="x"} + {__name__="baz"}"#)
        );
        // A sidecar gets them removed: its Prometheus does not store them.
        assert_eq!(
            query_for(&selectors, &b, false).as_deref(),
            Some(r#"{__name__="bar"} + {__name__="baz"}"#)
        );
        assert_eq!(
            query_for(&selectors, &d, false).as_deref(),
            Some(r#"{__name__="baz"}"#)
        );
        let only_a = parse(r#"foo{cluster="a"}"#).unwrap();
        assert_eq!(query_for(&only_a, &b, false), None);
        // No external labels: every selector, unchanged.
        assert_eq!(
            query_for(&only_a, &[], false).as_deref(),
            Some(r#"{__name__="foo", cluster="a"}"#)
        );
    }

    #[test]
    fn a_selector_only_on_external_labels_is_left_out_for_sidecars() {
        let selectors = parse(r#"{cluster="a"}"#).unwrap();
        let a = sets(&[&[("cluster", "a")]]);
        assert_eq!(query_for(&selectors, &a, false), None);
        assert_eq!(
            query_for(&selectors, &a, true).as_deref(),
            Some(r#"{cluster="a"}"#)
        );
    }

    #[test]
    fn rendered_values_parse_back_to_the_same_selector() {
        let tricky = "a\"b\\c\nd\te\u{1}é";
        let selector = Selector::new(vec![LabelMatcher {
            r#type: label_matcher::Type::Eq as i32,
            name: "job".into(),
            value: tricky.into(),
        }])
        .unwrap();
        let text = selector.render(&[]).unwrap();
        let back = parse(&text).unwrap();
        assert_eq!(back, vec![selector]);
    }

    #[test]
    fn bad_queries_are_rejected_with_the_reason() {
        let err = parse("sum(").unwrap_err();
        assert!(err.contains("invalid exemplar query"), "{err}");
    }
}
