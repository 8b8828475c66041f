//! PutMedia acknowledgements as KVS streams them: the same events whatever the chunk
//! boundaries, never a panic, and a bounded buffer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tillgate_video::ack::{AckReader, MAX_ACK_LINE};

fuzz_target!(|input: (u16, &[u8])| {
    let (split, data) = input;
    let at = usize::from(split) % (data.len() + 1);
    let whole: Vec<String> = AckReader::default()
        .feed(data)
        .into_iter()
        .map(|r| format!("{r:?}"))
        .collect();
    let mut chunked = AckReader::default();
    let mut parts: Vec<String> = chunked
        .feed(&data[..at])
        .into_iter()
        .map(|r| format!("{r:?}"))
        .collect();
    parts.extend(chunked.feed(&data[at..]).into_iter().map(|r| format!("{r:?}")));
    if data.len() <= MAX_ACK_LINE {
        assert_eq!(whole, parts, "chunking changed what was read");
    }
});
