//! Window arithmetic against a brute-force model of the documented semantics.

use super::*;
use proptest::prelude::*;

fn specs() -> Vec<AggSpec> {
    vec![
        AggSpec {
            name: "n".into(),
            kind: AggKind::Count,
            group: 0,
        },
        AggSpec {
            name: "sum".into(),
            kind: AggKind::Sum,
            group: 0,
        },
        AggSpec {
            name: "min".into(),
            kind: AggKind::Min,
            group: 0,
        },
        AggSpec {
            name: "max".into(),
            kind: AggKind::Max,
            group: 0,
        },
        AggSpec {
            name: "cards".into(),
            kind: AggKind::CountDistinct(0),
            group: 0,
        },
    ]
}

fn ev(ts: i64, amount: i64, card: Option<u64>) -> Event {
    Event {
        ts,
        amount,
        // Shifted: the model counts raw values, the window their tags (0 is absence).
        tags: smallvec::smallvec![tag(card.map(|c| c + 2))],
        mask: 0,
    }
}

/// The semantics, written the slow way: the window of event k holds the events that
/// arrived no later than k, have time in [t_k − W, t_k], and were still retained
/// (time ≥ max time of earlier events − W − L), plus k itself.
fn model_time(events: &[Event], w: i64, l: i64) -> Vec<Vec<i64>> {
    let mut out = Vec::new();
    for (k, e) in events.iter().enumerate() {
        let prev_max = events[..k].iter().map(|x| x.ts).max();
        let in_window: Vec<&Event> = events[..=k]
            .iter()
            .enumerate()
            .filter(|(j, x)| {
                x.ts >= e.ts - w && x.ts <= e.ts && (*j == k || prev_max.is_none_or(|m| x.ts >= m - w - l))
            })
            .map(|(_, x)| x)
            .collect();
        out.push(summarize(&in_window));
    }
    out
}

fn summarize(w: &[&Event]) -> Vec<i64> {
    let cards: std::collections::HashSet<u64> = w
        .iter()
        .filter_map(|e| e.tags.first().copied())
        .filter(|t| *t != NO_TAG)
        .collect();
    vec![
        w.len() as i64,
        w.iter().map(|e| e.amount).sum(),
        w.iter().map(|e| e.amount).min().unwrap_or(0),
        w.iter().map(|e| e.amount).max().unwrap_or(0),
        cards.len() as i64,
    ]
}

fn ints(v: &AggValues) -> Vec<i64> {
    v.0.iter()
        .map(|x| match x {
            aggregate::AggValue::Int(i) => *i,
            aggregate::AggValue::Float(f) => *f as i64,
        })
        .collect()
}

fn stream() -> impl Strategy<Value = Vec<(i64, i64, Option<u64>)>> {
    // Mostly increasing times with jitter backwards (out-of-order and late arrivals),
    // duplicates of the same time, a few distinct cards or many (past the list of few
    // values a window keeps before a hash table).
    let card = prop::option::of(prop_oneof![0u64..4, 0u64..40]);
    prop::collection::vec((-30i64..60, 1i64..500, card), 1..80).prop_map(|steps| {
        let mut t = 1_000_000;
        steps
            .into_iter()
            .map(|(dt, amount, card)| {
                t += dt.max(0);
                (t + dt.min(0) * 3, amount, card)
            })
            .collect()
    })
}

/// `events` through one time window of width `w` and lateness `l` (no event cap): each
/// event's aggregates, and whether every state reached fits its rule (what a snapshot of
/// it is checked against at a restore).
fn observe_all(events: &[Event], specs: &[AggSpec], tags: usize, w: i64, l: i64) -> (Vec<Vec<i64>>, bool) {
    let mut kw = KeyWindow::new(specs, tags);
    let spec = WindowSpec::Time {
        width_ms: w,
        lateness_ms: l,
        max_events: usize::MAX,
    };
    let mut every_state_fits = true;
    let got = events
        .iter()
        .map(|e| {
            let values = ints(&kw.observe(spec, specs, e).0);
            every_state_fits &= kw.fits(spec, specs, tags);
            values
        })
        .collect();
    (got, every_state_fits)
}

proptest! {
    #[test]
    fn time_windows_match_the_model(raw in stream(), w in 1i64..120, l in 0i64..60) {
        let events: Vec<Event> = raw.iter().map(|(ts, a, c)| ev(*ts, *a, *c)).collect();
        let (got, every_state_fits) = observe_all(&events, &specs(), 1, w, l);
        prop_assert!(every_state_fits);
        prop_assert_eq!(got, model_time(&events, w, l));
    }

    /// Count and sum only: a late event's window comes from the running aggregates
    /// corrected by the events that differ (`KeyWindow::aggregates_of`), not a fresh sum.
    #[test]
    fn late_events_of_count_and_sum_windows_match_the_model(raw in stream(), w in 1i64..120, l in 0i64..60) {
        let events: Vec<Event> = raw
            .iter()
            .map(|(ts, a, _)| Event { tags: Default::default(), ..ev(*ts, *a, None) })
            .collect();
        let light: Vec<AggSpec> = specs().into_iter().take(2).collect();
        let (got, every_state_fits) = observe_all(&events, &light, 0, w, l);
        prop_assert!(every_state_fits);
        let want: Vec<Vec<i64>> = model_time(&events, w, l).into_iter().map(|m| m[..2].to_vec()).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn count_windows_hold_the_last_n(raw in stream(), n in 1usize..10) {
        let events: Vec<Event> = raw.iter().map(|(ts, a, c)| ev(*ts, *a, *c)).collect();
        let specs = specs();
        let mut kw = KeyWindow::new(&specs, 1);
        for (k, e) in events.iter().enumerate() {
            let got = ints(&kw.observe(WindowSpec::Count { n }, &specs, e).0);
            prop_assert!(kw.fits(WindowSpec::Count { n }, &specs, 1), "the window fits its own rule");
            let from = (k + 1).saturating_sub(n);
            let want = summarize(&events[from..=k].iter().collect::<Vec<_>>());
            prop_assert_eq!(got, want);
        }
        prop_assert!(kw.len() <= n);
    }
}

#[test]
fn boundary_is_inclusive_and_state_is_bounded() {
    let specs = specs();
    let mut kw = KeyWindow::new(&specs, 1);
    let spec = WindowSpec::Time {
        width_ms: 100,
        lateness_ms: 0,
        max_events: usize::MAX,
    };
    assert_eq!(ints(&kw.observe(spec, &specs, &ev(1000, 5, None)).0)[0], 1);
    assert_eq!(
        ints(&kw.observe(spec, &specs, &ev(1100, 5, None)).0)[0],
        2,
        "t − W is inside"
    );
    assert_eq!(
        ints(&kw.observe(spec, &specs, &ev(1101, 5, None)).0)[0],
        2,
        "1000 left at 1101"
    );
    for i in 0..10_000 {
        kw.observe(spec, &specs, &ev(2000 + i as i64 * 50, 1, None));
    }
    assert!(kw.len() <= 3, "only the window is kept, got {}", kw.len());
}

#[test]
fn a_key_holds_at_most_its_event_cap_and_reports_what_left_early() {
    let specs = specs();
    let mut kw = KeyWindow::new(&specs, 1);
    let spec = WindowSpec::Time {
        width_ms: 600_000,
        lateness_ms: 0,
        max_events: 100,
    };
    let mut dropped = 0;
    for i in 0..1_000u64 {
        let (values, gone) = kw.observe(spec, &specs, &ev(1_000 + i as i64, 7, None));
        assert!(kw.fits(spec, &specs, 1), "a capped window is one a snapshot restores");
        dropped += gone;
        assert_eq!(
            ints(&values)[0],
            (i as i64 + 1).min(100),
            "the count saturates at the cap"
        );
        assert_eq!(
            ints(&values)[1],
            7 * (i as i64 + 1).min(100),
            "the sum follows the events held"
        );
    }
    assert_eq!(kw.len(), 100);
    assert_eq!(dropped, 900, "every early departure is counted");
}

#[test]
fn sums_stay_exact_at_the_extremes() {
    let specs = specs();
    let mut kw = KeyWindow::new(&specs, 1);
    let spec = WindowSpec::Count { n: 2 };
    for (i, amount) in [i64::MAX, i64::MAX, -5, 3].into_iter().enumerate() {
        kw.observe(spec, &specs, &ev(i as i64, amount, None));
    }
    let (values, _) = kw.observe(spec, &specs, &ev(9, 4, None));
    assert_eq!(ints(&values)[1], 7, "the huge amounts left without corrupting the sum");
}

#[test]
fn a_decoded_window_whose_parts_disagree_does_not_fit() {
    let specs = specs();
    let spec = WindowSpec::Time {
        width_ms: 100,
        lateness_ms: 0,
        max_events: 10,
    };
    let mut kw = KeyWindow::new(&specs, 1);
    for i in 0..3u64 {
        kw.observe(spec, &specs, &ev(1000 + i as i64, 5, Some(i)));
    }
    assert!(kw.fits(spec, &specs, 1));
    assert!(
        !kw.fits(WindowSpec::Count { n: 2 }, &specs, 1),
        "more events than the last 2"
    );
    assert!(!kw.fits(spec, &specs, 2), "records of another shape");
    let json = serde_json::to_value(&kw).expect("encodes");
    let fits_altered = |alter: &dyn Fn(&mut serde_json::Value)| {
        let mut j = json.clone();
        alter(&mut j);
        serde_json::from_value::<KeyWindow>(j).is_ok_and(|w| w.fits(spec, &specs, 1))
    };
    assert!(fits_altered(&|_| {}), "the round trip itself fits");
    assert!(!fits_altered(&|j| j["active_from"] = 1.into()), "3 counted, 2 active");
    assert!(!fits_altered(&|j| j["layout"] = 0xC1.into()), "records of another size");
    assert!(
        !fits_altered(&|j| j["layout"] = 0x41.into()),
        "records of the same size holding the condition bits where the rule keeps the amount"
    );
    let few = |j: &mut serde_json::Value| -> serde_json::Value {
        j["running"]["all"]["extra"]["distinct"][0][1]["Few"].clone()
    };
    assert_eq!(few(&mut json.clone()).as_array().map(Vec::len), Some(3));
    assert!(
        !fits_altered(&|j| j["running"]["all"]["extra"]["distinct"][0][1]["Few"][0][1] = 0.into()),
        "a value counted zero times"
    );
    assert!(
        !fits_altered(&|j| {
            let first = few(j)[0].clone();
            j["running"]["all"]["extra"]["distinct"][0][1]["Few"][1] = first;
        }),
        "a value listed twice"
    );
}

/// A count-only window keeps no amounts, so none enter its running sum either: after
/// events slid out its state is the one a replay of what is left builds (the running sum
/// of a count-only rule grew with every event before, since leaving took away nothing).
#[test]
fn a_window_that_keeps_no_amount_sums_none() {
    let specs = vec![AggSpec {
        name: "n".into(),
        kind: AggKind::Count,
        group: 0,
    }];
    let spec = WindowSpec::Time {
        width_ms: 100,
        lateness_ms: 0,
        max_events: 10,
    };
    let event = |ts| Event {
        ts,
        amount: 100,
        tags: Default::default(),
        mask: 0,
    };
    let mut slid = KeyWindow::new(&specs, 0);
    for ts in [1000, 1050, 1200] {
        slid.observe(spec, &specs, &event(ts));
    }
    let mut replayed = KeyWindow::new(&specs, 0);
    replayed.observe(spec, &specs, &event(1200));
    assert_eq!(
        serde_json::to_value(&slid).unwrap(),
        serde_json::to_value(&replayed).unwrap()
    );
}
