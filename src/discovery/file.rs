//! Prometheus file_sd files: a JSON or YAML list of `{targets: [...],
//! labels: {...}}`. Targets use the same syntax as `remotes[].targets`;
//! labels are accepted and ignored (endpoints are labelled by their Info).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::target::Target;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    targets: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)]
    labels: BTreeMap<String, String>,
}

/// Parses a file_sd document (JSON is read as YAML, which it is a subset of).
pub fn parse_file_sd(text: &str) -> Result<Vec<Target>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let groups: Vec<Group> = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    groups
        .into_iter()
        .flat_map(|g| g.targets)
        .map(|t| Target::parse(&t).map_err(|e| e.to_string()))
        .collect()
}

/// Reads and parses one file; the text is returned so callers can tell
/// whether anything changed.
pub fn read_file_sd(path: &Path) -> Result<(String, Vec<Target>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let targets = parse_file_sd(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((text, targets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml() {
        let json =
            r#"[{"targets": ["10.0.0.1:10901", "dns+a.example:443"], "labels": {"env": "prod"}}]"#;
        assert_eq!(parse_file_sd(json).expect("json").len(), 2);
        let yaml =
            "- targets: [\"b.example:443\"]\n- targets:\n    - dnssrv+_grpc._tcp.c.example\n";
        assert_eq!(parse_file_sd(yaml).expect("yaml").len(), 2);
        assert!(parse_file_sd("").expect("empty").is_empty());
    }

    #[test]
    fn bad_documents_are_errors() {
        assert!(parse_file_sd("[{\"targetz\": []}]").is_err());
        assert!(parse_file_sd("[{\"targets\": [\"no-port\"]}]").is_err());
        assert!(parse_file_sd("{not a list").is_err());
    }
}
