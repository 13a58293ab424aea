//! Vertical query sharding applied locally, for remotes that do not honour
//! `shard_info` themselves.

use xxhash_rust::xxh64::Xxh64;

use crate::proto::thanos::ShardInfo;

/// Keeps the series whose label hash falls into one shard.
#[derive(Debug, Clone)]
pub struct ShardMatcher {
    index: u64,
    total: u64,
    by: bool,
    labels: Vec<String>,
}

impl ShardMatcher {
    /// `None` when the request is not sharded (no info, or fewer than one shard).
    pub fn new(info: Option<&ShardInfo>) -> Option<Self> {
        let info = info?;
        if info.total_shards < 1 {
            return None;
        }
        Some(Self {
            index: info.shard_index as u64,
            total: info.total_shards as u64,
            by: info.by,
            labels: info.labels.clone(),
        })
    }

    /// Hashes `name 0xff value 0xff` of the labels that count (`by`: the listed
    /// ones; otherwise all but the listed ones), xxHash64 seed 0, as Thanos does.
    pub fn matches<'a>(&self, labels: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> bool {
        let mut hasher = Xxh64::new(0);
        for (name, value) in labels {
            if self.labels.iter().any(|l| l.as_bytes() == name) == self.by {
                hasher.update(name);
                hasher.update(&[0xff]);
                hasher.update(value);
                hasher.update(&[0xff]);
            }
        }
        hasher.digest() % self.total == self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labelset::{self, from_pairs};

    #[test]
    fn every_series_lands_in_exactly_one_shard() {
        let shards: Vec<_> = (0..3)
            .map(|i| {
                ShardMatcher::new(Some(&ShardInfo {
                    shard_index: i,
                    total_shards: 3,
                    by: false,
                    labels: vec!["replica".into()],
                }))
                .expect("sharded")
            })
            .collect();
        for n in 0..200 {
            let value = n.to_string();
            let series = from_pairs([("__name__", "m"), ("i", value.as_str())]);
            assert_eq!(
                shards
                    .iter()
                    .filter(|s| s.matches(labelset::as_bytes(&series)))
                    .count(),
                1
            );
            // Ignoring `replica` keeps replicas of a series in the same shard.
            let replica = from_pairs([("__name__", "m"), ("i", value.as_str()), ("replica", "1")]);
            for s in &shards {
                assert_eq!(
                    s.matches(labelset::as_bytes(&series)),
                    s.matches(labelset::as_bytes(&replica))
                );
            }
        }
    }

    #[test]
    fn unsharded_requests_have_no_matcher() {
        assert!(ShardMatcher::new(None).is_none());
        assert!(ShardMatcher::new(Some(&ShardInfo::default())).is_none());
    }
}
