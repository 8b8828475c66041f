//! A key's events as fixed-size records in one ring buffer: `[ts, seq, amount, mask,
//! tag…]`, one `u64` word each, so a window holds no per-event allocation; in a rule
//! without `count_distinct` the first event of a key (most cards and customers never
//! have a second) needs none at all. The ring doubles when full and does not shrink:
//! it holds at most twice the most events its key held at once (≤ `max_events_per_key`).
//!
//! Written here because the record size is the rule's (four words and one per
//! `count_distinct` field, known only when the pack loads): `VecDeque` would keep one
//! heap-boxed slice per event, and no ring crate stores runtime-sized records
//! contiguously.

use super::{Entry, Event};
use smallvec::SmallVec;

/// Words of an event before its tags.
const HEAD: usize = 4;

/// Words held without an allocation: one event of a rule without `count_distinct`.
const INLINE: usize = HEAD;

/// Events of one key, oldest first. The record size (`stride`) is not stored: every
/// call passes the rule's (see [`stride`]).
#[derive(Debug, Clone, Default)]
pub struct Ring {
    words: SmallVec<[u64; INLINE]>,
    /// Record index of the oldest event in `words`.
    head: u32,
    len: u32,
}

/// The words of one event of a rule with `tags` distinct fields.
pub fn stride(tags: usize) -> usize {
    HEAD + tags
}

impl Ring {
    pub fn len(&self) -> usize {
        self.len as usize
    }

    fn capacity(&self, stride: usize) -> usize {
        self.words.len() / stride
    }

    /// Word offset of the `i`-th oldest event.
    fn offset(&self, stride: usize, i: usize) -> usize {
        let cap = self.capacity(stride);
        (self.head as usize + i) % cap * stride
    }

    /// The `i`-th oldest event.
    pub fn get(&self, stride: usize, i: usize) -> Entry<'_> {
        debug_assert!(i < self.len());
        let at = self.offset(stride, i);
        let w = &self.words[at..at + stride];
        Entry {
            ts: w[0] as i64,
            seq: w[1],
            amount: w[2] as i64,
            mask: w[3] as u32,
            tags: &w[HEAD..],
        }
    }

    pub fn front(&self, stride: usize) -> Option<Entry<'_>> {
        (self.len > 0).then(|| self.get(stride, 0))
    }

    /// Makes room for one more event: doubles the records held, oldest first at 0.
    fn reserve_one(&mut self, stride: usize) {
        let cap = self.capacity(stride);
        if self.len() < cap {
            return;
        }
        let new_cap = (cap * 2).max(1);
        let mut words: SmallVec<[u64; INLINE]> = SmallVec::with_capacity(new_cap * stride);
        for i in 0..self.len() {
            let at = self.offset(stride, i);
            words.extend_from_slice(&self.words[at..at + stride]);
        }
        words.resize(new_cap * stride, 0);
        self.words = words;
        self.head = 0;
    }

    fn write(&mut self, stride: usize, i: usize, ev: &Event) {
        let at = self.offset(stride, i);
        let w = &mut self.words[at..at + stride];
        w[0] = ev.ts as u64;
        w[1] = ev.seq;
        w[2] = ev.amount as u64;
        w[3] = u64::from(ev.mask);
        w[HEAD..].copy_from_slice(&ev.tags);
    }

    pub fn push_back(&mut self, stride: usize, ev: &Event) {
        debug_assert_eq!(ev.tags.len() + HEAD, stride);
        self.reserve_one(stride);
        self.len += 1;
        self.write(stride, self.len() - 1, ev);
    }

    pub fn pop_front(&mut self, stride: usize) {
        if self.len == 0 {
            return;
        }
        self.head = ((self.head as usize + 1) % self.capacity(stride)) as u32;
        self.len -= 1;
        if self.len == 0 {
            self.head = 0;
        }
    }

    /// Inserts `ev` so that it becomes the `pos`-th oldest (the rare out-of-order path:
    /// moves the younger events up by one).
    pub fn insert(&mut self, stride: usize, pos: usize, ev: &Event) {
        debug_assert!(pos <= self.len());
        self.reserve_one(stride);
        self.len += 1;
        for i in (pos + 1..self.len()).rev() {
            let (from, to) = (self.offset(stride, i - 1), self.offset(stride, i));
            self.words.copy_within(from..from + stride, to);
        }
        self.write(stride, pos, ev);
    }

    /// The index of the first event for which `pred` is false (events partitioned by it).
    pub fn partition_point(&self, stride: usize, pred: impl Fn(&Entry<'_>) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(&self.get(stride, mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The events oldest first, as their words (what a snapshot stores).
    pub fn to_words(&self, stride: usize) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.len() * stride);
        for i in 0..self.len() {
            let at = self.offset(stride, i);
            out.extend_from_slice(&self.words[at..at + stride]);
        }
        out
    }

    /// Events from their words, oldest first; `None` unless they are whole records.
    pub fn from_words(stride: usize, words: Vec<u64>) -> Option<Ring> {
        if stride == 0 || !words.len().is_multiple_of(stride) {
            return None;
        }
        let len = u32::try_from(words.len() / stride).ok()?;
        Some(Ring {
            words: SmallVec::from_vec(words),
            head: 0,
            len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, ts: i64, tag: u64) -> Event {
        Event {
            ts,
            seq,
            amount: -(seq as i64),
            tags: smallvec::smallvec![tag],
            mask: seq as u32,
        }
    }

    fn seqs(r: &Ring, stride: usize) -> Vec<u64> {
        (0..r.len()).map(|i| r.get(stride, i).seq).collect()
    }

    #[test]
    fn events_keep_their_fields_and_order_through_wrap_around_growth_and_inserts() {
        let s = stride(1);
        let mut r = Ring::default();
        let mut model: std::collections::VecDeque<u64> = Default::default();
        for seq in 1..200u64 {
            if seq % 3 == 0 {
                r.pop_front(s);
                model.pop_front();
            }
            if seq % 7 == 0 {
                let pos = model.len() / 2;
                r.insert(s, pos, &ev(seq, seq as i64, seq * 10));
                model.insert(pos, seq);
            } else {
                r.push_back(s, &ev(seq, seq as i64, seq * 10));
                model.push_back(seq);
            }
            assert_eq!(seqs(&r, s), model.iter().copied().collect::<Vec<_>>());
        }
        for i in 0..r.len() {
            let e = r.get(s, i);
            assert_eq!(
                (e.ts, e.amount, e.mask, e.tags),
                (e.seq as i64, -(e.seq as i64), e.seq as u32, &[e.seq * 10][..])
            );
        }
        let back = Ring::from_words(s, r.to_words(s)).expect("whole records");
        assert_eq!(seqs(&back, s), seqs(&r, s));
        assert!(Ring::from_words(s, vec![1, 2, 3]).is_none());
    }

    #[test]
    fn one_event_without_tags_needs_no_allocation() {
        let mut r = Ring::default();
        r.push_back(
            stride(0),
            &Event {
                tags: Default::default(),
                ..ev(1, 1, 0)
            },
        );
        assert!(!r.words.spilled());
    }
}
