//! KPL aggregation: what is aggregated de-aggregates to the same records in the same
//! order, the size accounting matches the encoding, and arbitrary bytes never panic
//! the de-aggregator (a Lambda reading the alerts stream runs it on what it is given).
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tillgate_kinesis::aggregate::{deaggregate, AggregateBuilder};

#[derive(Debug, Arbitrary)]
struct Input {
    records: Vec<(String, Vec<u8>)>,
    raw: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let _ = deaggregate("k", &input.raw);
    let records: Vec<(String, Vec<u8>)> = input
        .records
        .into_iter()
        .filter(|(k, _)| !k.is_empty())
        .take(64)
        .collect();
    if records.is_empty() {
        return;
    }
    let mut b = AggregateBuilder::new();
    for (k, d) in &records {
        b.push(k, Bytes::copy_from_slice(d));
    }
    let expected_size = b.size();
    let bytes = b.finish();
    assert_eq!(bytes.len(), expected_size, "size accounting");
    let back = deaggregate("outer", &bytes).expect("our own aggregate de-aggregates");
    let back: Vec<(String, Vec<u8>)> = back.into_iter().map(|(k, d)| (k, d.to_vec())).collect();
    assert_eq!(back, records);
});
