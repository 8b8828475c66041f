//! A key's events as fixed-size records in one ring buffer, one `u64` word per field
//! and only the fields the rule reads: the time always, the amount if an aggregate sums
//! or compares it, the condition bits if an aggregate has its own filter, one tag per
//! `count_distinct` field ([`Layout`]). A window holds no per-event allocation, and a
//! key's first events (most cards and customers never have more) need none at all
//! ([`INLINE`] words). The ring doubles when full and does not shrink: it holds at most
//! twice the most events its key held at once (≤ `max_events_per_key`).
//!
//! Written here because the record size is the rule's, known only when the pack loads:
//! `VecDeque` would keep one heap-boxed slice per event, and no ring crate stores
//! runtime-sized records contiguously.
//!
//! No arrival order is stored: events reach a window in journal order (decisions, a
//! replay after a snapshot, a rule's rebuild all go by sequence), so an event arriving
//! now follows every held one of the same time.

use super::{Entry, Event};
use smallvec::SmallVec;

/// Words held without an allocation: as many whole records as fit in four words (the
/// first four events of a count, two of a count and sum, none of a record wider than
/// four words).
const INLINE: usize = 4;

/// Which words a rule's event records hold (a rule's is fixed when it loads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout(u8);

const AMOUNT: u8 = 1 << 7;
const MASK: u8 = 1 << 6;
/// Tags a record may hold (the low bits of [`Layout`]).
pub const MAX_TAGS: usize = (MASK - 1) as usize;

impl Layout {
    /// Records with the time, then the amount and the condition bits if asked for, then
    /// `tags` tags (at most [`MAX_TAGS`]).
    pub fn new(amount: bool, mask: bool, tags: usize) -> Layout {
        assert!(tags <= MAX_TAGS, "a rule's distinct fields are few (validated)");
        Layout(if amount { AMOUNT } else { 0 } | if mask { MASK } else { 0 } | tags as u8)
    }

    /// The layout a snapshot names (a decoded window checks it against its rule's).
    pub fn from_byte(b: u8) -> Layout {
        Layout(b)
    }

    pub fn to_byte(self) -> u8 {
        self.0
    }

    fn amount(self) -> bool {
        self.0 & AMOUNT != 0
    }

    fn mask(self) -> bool {
        self.0 & MASK != 0
    }

    /// `e` as a record of this layout reads back: the fields it leaves out are 0. What
    /// enters a window's running aggregates, so that what leaves them later (read back
    /// from the ring) is the same (a count-only rule's sum would otherwise grow forever).
    pub fn held(self, e: Entry<'_>) -> Entry<'_> {
        Entry {
            amount: if self.amount() { e.amount } else { 0 },
            mask: if self.mask() { e.mask } else { 0 },
            ..e
        }
    }

    pub fn tags(self) -> usize {
        usize::from(self.0 & (MASK - 1))
    }

    /// Words before the tags.
    fn head(self) -> usize {
        1 + usize::from(self.amount()) + usize::from(self.mask())
    }

    /// Words per record.
    pub fn stride(self) -> usize {
        self.head() + self.tags()
    }
}

/// Events of one key, oldest first. The layout is not stored: every call passes the
/// rule's.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    words: SmallVec<[u64; INLINE]>,
    /// Record index of the oldest event in `words`.
    head: u32,
    len: u32,
}

impl Ring {
    pub fn len(&self) -> usize {
        self.len as usize
    }

    fn capacity(&self, l: Layout) -> usize {
        self.words.len() / l.stride()
    }

    /// Word offset of the `i`-th oldest event (`i` below the capacity). Wrapped by a
    /// subtraction, not a division: this is on every read of an event.
    fn offset(&self, l: Layout, i: usize) -> usize {
        let at = (self.head as usize + i) * l.stride();
        if at >= self.words.len() {
            at - self.words.len()
        } else {
            at
        }
    }

    /// The `i`-th oldest event (fields the layout leaves out read as 0).
    pub fn get(&self, l: Layout, i: usize) -> Entry<'_> {
        debug_assert!(i < self.len());
        let at = self.offset(l, i);
        let w = &self.words[at..at + l.stride()];
        let mut next = 1;
        let mut field = |present: bool| {
            present.then(|| {
                next += 1;
                w[next - 1]
            })
        };
        let amount = field(l.amount()).unwrap_or(0) as i64;
        let mask = field(l.mask()).unwrap_or(0) as u32;
        Entry {
            ts: w[0] as i64,
            amount,
            mask,
            tags: &w[l.head()..],
        }
    }

    pub fn front(&self, l: Layout) -> Option<Entry<'_>> {
        (self.len > 0).then(|| self.get(l, 0))
    }

    /// Makes room for one more event: doubles the records held, oldest first at 0.
    fn reserve_one(&mut self, l: Layout) {
        let cap = self.capacity(l);
        if self.len() < cap {
            return;
        }
        let stride = l.stride();
        let new_cap = (cap * 2).max(1);
        let mut words: SmallVec<[u64; INLINE]> = SmallVec::with_capacity(new_cap * stride);
        for i in 0..self.len() {
            let at = self.offset(l, i);
            words.extend_from_slice(&self.words[at..at + stride]);
        }
        words.resize(new_cap * stride, 0);
        self.words = words;
        self.head = 0;
    }

    fn write(&mut self, l: Layout, i: usize, ev: &Event) {
        debug_assert_eq!(ev.tags.len(), l.tags());
        let at = self.offset(l, i);
        let w = &mut self.words[at..at + l.stride()];
        w[0] = ev.ts as u64;
        let mut next = 1;
        if l.amount() {
            w[next] = ev.amount as u64;
            next += 1;
        }
        if l.mask() {
            w[next] = u64::from(ev.mask);
            next += 1;
        }
        w[next..].copy_from_slice(&ev.tags);
    }

    pub fn push_back(&mut self, l: Layout, ev: &Event) {
        self.reserve_one(l);
        self.len += 1;
        self.write(l, self.len() - 1, ev);
    }

    pub fn pop_front(&mut self, l: Layout) {
        if self.len == 0 {
            return;
        }
        self.head = ((self.head as usize + 1) % self.capacity(l)) as u32;
        self.len -= 1;
        if self.len == 0 {
            self.head = 0;
        }
    }

    /// Inserts `ev` so that it becomes the `pos`-th oldest (the rare out-of-order path:
    /// moves the younger events up by one).
    pub fn insert(&mut self, l: Layout, pos: usize, ev: &Event) {
        debug_assert!(pos <= self.len());
        self.reserve_one(l);
        let stride = l.stride();
        if (self.head + self.len) as usize >= self.capacity(l) {
            // The younger events wrap around the end: straightened once (oldest at 0),
            // so this move and the next ones until the ring wraps again are one copy.
            self.words.rotate_left(self.head as usize * stride);
            self.head = 0;
        }
        let from = self.offset(l, pos);
        let end = self.offset(l, 0) + self.len() * stride;
        self.words.copy_within(from..end, from + stride);
        self.len += 1;
        self.write(l, pos, ev);
    }

    /// The index of the first event for which `pred` is false (events partitioned by it).
    pub fn partition_point(&self, l: Layout, pred: impl Fn(&Entry<'_>) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(&self.get(l, mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The events oldest first, as their words (what a snapshot stores).
    pub fn to_words(&self, l: Layout) -> Vec<u64> {
        let stride = l.stride();
        let mut out = Vec::with_capacity(self.len() * stride);
        for i in 0..self.len() {
            let at = self.offset(l, i);
            out.extend_from_slice(&self.words[at..at + stride]);
        }
        out
    }

    /// Events from their words, oldest first; `None` unless they are whole records.
    pub fn from_words(l: Layout, words: Vec<u64>) -> Option<Ring> {
        let stride = l.stride();
        if !words.len().is_multiple_of(stride) {
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

    fn ev(n: u64, tag: u64) -> Event {
        Event {
            ts: n as i64,
            amount: -(n as i64),
            tags: smallvec::smallvec![tag],
            mask: n as u32,
        }
    }

    fn times(r: &Ring, l: Layout) -> Vec<i64> {
        (0..r.len()).map(|i| r.get(l, i).ts).collect()
    }

    #[test]
    fn events_keep_their_fields_and_order_through_wrap_around_growth_and_inserts() {
        let l = Layout::new(true, true, 1);
        let mut r = Ring::default();
        let mut model: std::collections::VecDeque<i64> = Default::default();
        for n in 1..200u64 {
            if n % 3 == 0 {
                r.pop_front(l);
                model.pop_front();
            }
            if n % 7 == 0 {
                let pos = model.len() / 2;
                r.insert(l, pos, &ev(n, n * 10));
                model.insert(pos, n as i64);
            } else {
                r.push_back(l, &ev(n, n * 10));
                model.push_back(n as i64);
            }
            assert_eq!(times(&r, l), model.iter().copied().collect::<Vec<_>>());
        }
        for i in 0..r.len() {
            let e = r.get(l, i);
            assert_eq!(
                (e.amount, e.mask, e.tags),
                (-e.ts, e.ts as u32, &[e.ts as u64 * 10][..])
            );
        }
        let back = Ring::from_words(l, r.to_words(l)).expect("whole records");
        assert_eq!(times(&back, l), times(&r, l));
        assert!(Ring::from_words(l, vec![1, 2, 3]).is_none());
    }

    /// The ring keeps its largest size as events leave (the memory formula in
    /// docs/limits.md counts it so).
    #[test]
    fn a_ring_doubles_when_full_and_keeps_its_size_as_events_leave() {
        let l = Layout::new(true, true, 1);
        let mut r = Ring::default();
        for n in 1..=5 {
            r.push_back(l, &ev(n, 0));
        }
        assert_eq!(r.capacity(l), 8, "1, 2, 4, then 8 records");
        for _ in 0..5 {
            r.pop_front(l);
        }
        assert_eq!((r.len(), r.capacity(l)), (0, 8));
    }

    #[test]
    fn a_record_holds_only_the_fields_its_layout_names() {
        for (amount, mask, tags) in [(false, false, 0), (true, false, 0), (false, true, 2), (true, true, 1)] {
            let l = Layout::new(amount, mask, tags);
            assert_eq!(l.stride(), 1 + usize::from(amount) + usize::from(mask) + tags);
            assert_eq!(Layout::from_byte(l.to_byte()), l);
            let mut r = Ring::default();
            let e = Event {
                ts: 7,
                amount: 250,
                tags: (0..tags as u64).map(|t| t + 40).collect(),
                mask: 0b101,
            };
            r.push_back(l, &e);
            let got = r.get(l, 0);
            assert_eq!(
                (got.ts, got.amount, got.mask, got.tags),
                (
                    7,
                    if amount { 250 } else { 0 },
                    if mask { 0b101 } else { 0 },
                    &e.tags[..]
                )
            );
            assert_eq!(r.to_words(l).len(), l.stride());
        }
    }

    #[test]
    fn the_first_events_of_a_key_need_no_allocation() {
        let time_and_amount = Layout::new(true, false, 0);
        let mut r = Ring::default();
        for n in 1..=2 {
            r.push_back(
                time_and_amount,
                &Event {
                    tags: Default::default(),
                    ..ev(n, 0)
                },
            );
        }
        assert!(!r.words.spilled());
        r.push_back(
            time_and_amount,
            &Event {
                tags: Default::default(),
                ..ev(3, 0)
            },
        );
        assert!(r.words.spilled());
    }
}
