//! The tags of the fragment being recorded. KVS takes 10 tags per fragment; a busy
//! moment (a burst of flagged sales, a rule firing on every sale of a queue) has more.
//! Up to ten flagged sales get a tag each; from the eleventh on, the tenth slot becomes a
//! summary of the whole fragment — counts per decision and the first ids without their
//! own tag — so the moment keeps its tag and nothing is silently lost.

use crate::fragmenter::{MAX_TAGS, MAX_TAG_VALUE};
use crate::tags::SaleTag;
use std::collections::BTreeMap;

/// The summary tag's name.
pub const SUMMARY_TAG: &str = "tillgate.summary";

/// What happened to one flagged sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagOutcome {
    /// It has its own tag.
    Tagged,
    /// It is counted (and, while there is room, named) in the summary tag.
    Summarised,
}

impl TagOutcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            TagOutcome::Tagged => "tagged",
            TagOutcome::Summarised => "summarised",
        }
    }
}

/// The tags of one fragment, until it closes.
#[derive(Debug, Default)]
pub struct FragmentTags {
    own: Vec<(String, String)>,
    own_ids: Vec<String>,
    /// Every flagged sale of the fragment, per decision.
    per_decision: BTreeMap<String, u32>,
    /// Sales without their own tag, in arrival order (named while the value has room).
    summarised: Vec<String>,
}

/// A closed fragment's tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClosedTags {
    /// At most [`MAX_TAGS`], the summary last.
    pub tags: Vec<(String, String)>,
    /// Flagged sales in the summary only.
    pub summarised: u32,
}

impl FragmentTags {
    pub fn add(&mut self, sale: &SaleTag) -> TagOutcome {
        *self.per_decision.entry(sale.decision.clone()).or_default() += 1;
        if self.summarised.is_empty() && self.own.len() < MAX_TAGS {
            self.own.push((sale.name(), sale.value()));
            self.own_ids.push(sale.txn_id.clone());
            return TagOutcome::Tagged;
        }
        if self.summarised.is_empty() {
            // The eleventh: the tenth tag makes room for the summary and joins it.
            self.own.pop();
            self.summarised.extend(self.own_ids.pop());
        }
        self.summarised.push(sale.txn_id.clone());
        TagOutcome::Summarised
    }

    /// The tags for the fragment that just closed; the next one starts empty.
    pub fn take(&mut self) -> ClosedTags {
        let mut tags = std::mem::take(&mut self.own);
        self.own_ids.clear();
        let summarised = std::mem::take(&mut self.summarised);
        let per_decision = std::mem::take(&mut self.per_decision);
        if !summarised.is_empty() {
            tags.push((SUMMARY_TAG.to_string(), summary(&per_decision, &summarised)));
        }
        ClosedTags {
            tags,
            summarised: summarised.len() as u32,
        }
    }
}

/// `block=3 review=22 untagged=16 ids=t-10,t-11,...`: the ids that fit in KVS's 256 bytes,
/// whole.
fn summary(per_decision: &BTreeMap<String, u32>, untagged: &[String]) -> String {
    let mut value: String = per_decision
        .iter()
        .map(|(decision, n)| format!("{decision}={n} "))
        .collect();
    value.push_str(&format!("untagged={} ids=", untagged.len()));
    let mut first = true;
    for id in untagged {
        let extra = id.len() + usize::from(!first);
        if value.len() + extra > MAX_TAG_VALUE {
            break;
        }
        if !first {
            value.push(',');
        }
        value.push_str(id);
        first = false;
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sale(decision: &str, id: &str) -> SaleTag {
        SaleTag {
            decision: decision.into(),
            txn_id: id.into(),
            terminal: "till-1".into(),
            rules: vec!["velocity".into()],
        }
    }

    #[test]
    fn nine_sales_keep_their_own_tags_and_the_rest_a_summary_of_the_whole_fragment() {
        let mut tags = FragmentTags::default();
        let outcomes: Vec<TagOutcome> = (0..25)
            .map(|i| tags.add(&sale(if i < 3 { "block" } else { "review" }, &format!("t-{i}"))))
            .collect();
        // The tenth was tagged when it came, and summarised when the eleventh did.
        assert_eq!(outcomes.iter().filter(|o| **o == TagOutcome::Tagged).count(), 10);
        let closed = tags.take();
        assert_eq!(closed.tags.len(), MAX_TAGS);
        assert_eq!(closed.summarised, 16);
        let (name, value) = closed.tags.last().unwrap();
        assert_eq!(name, SUMMARY_TAG);
        assert!(
            value.starts_with("block=3 review=22 untagged=16 ids=t-9,t-10,"),
            "{value}"
        );
        assert_eq!(tags.take(), ClosedTags::default(), "the next fragment starts empty");
    }

    #[test]
    fn the_summary_names_only_whole_ids_within_kvs_limits() {
        let mut tags = FragmentTags::default();
        for i in 0..200 {
            tags.add(&sale("review", &format!("{i:040}")));
        }
        let closed = tags.take();
        let value = &closed.tags.last().unwrap().1;
        assert!(value.len() <= MAX_TAG_VALUE, "{}", value.len());
        assert!(value.rsplit(',').next().unwrap().len() == 40, "no cut id: {value}");
        assert!(value.contains("untagged=191"), "{value}");
    }

    #[test]
    fn ten_sales_fit_without_a_summary() {
        let mut tags = FragmentTags::default();
        for i in 0..10 {
            assert_eq!(tags.add(&sale("block", &format!("t-{i}"))), TagOutcome::Tagged);
        }
        let closed = tags.take();
        assert_eq!((closed.tags.len(), closed.summarised), (10, 0));
        assert!(closed.tags.iter().all(|(n, _)| n != SUMMARY_TAG));
    }
}
