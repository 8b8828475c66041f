//! PutMedia acknowledgements: newline-separated JSON events on the response body (what
//! each ErrorId means: `error_ids.rs`).

use serde::Deserialize;

/// One ACK event. Read tolerantly: numbers bare or quoted, fields it does not know
/// ignored (the service may add some).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Ack {
    #[serde(rename = "EventType")]
    pub event: Event,
    /// The fragment's cluster timecode (absolute ms with ABSOLUTE timecodes). Some
    /// ERROR acknowledgements leave it out.
    #[serde(rename = "FragmentTimecode", default, deserialize_with = "number")]
    pub timecode: Option<u64>,
    #[serde(rename = "FragmentNumber", default)]
    pub number: Option<String>,
    #[serde(rename = "ErrorId", default, deserialize_with = "number")]
    pub error_id: Option<u32>,
}

/// A number written bare (`4006`) or as a string (`"4006"`).
fn number<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr + TryFrom<u64>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Bare(u64),
        Quoted(String),
    }
    let invalid = |what: &str| serde::de::Error::custom(format!("{what} is not a number in range"));
    match Option::<Written>::deserialize(d)? {
        None => Ok(None),
        Some(Written::Bare(n)) => T::try_from(n).map(Some).map_err(|_| invalid(&n.to_string())),
        Some(Written::Quoted(s)) => s.trim().parse().map(Some).map_err(|_| invalid(&format!("{s:?}"))),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Event {
    Buffering,
    Received,
    Persisted,
    Error,
    Idle,
}

/// The longest ACK line kept while waiting for its end (real ones are ~200 bytes): a
/// body that never sends a newline must not grow the agent's memory.
pub const MAX_ACK_LINE: usize = 64 * 1024;

/// Splits a response body into ACK lines as bytes arrive.
#[derive(Debug, Default)]
pub struct AckReader {
    buffer: Vec<u8>,
}

impl AckReader {
    /// Feeds bytes; returns the complete events (and the text of lines that are not
    /// ACKs, which are logged, never fatal).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Result<Ack, String>> {
        self.buffer.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            out.push(serde_json::from_str::<Ack>(text).map_err(|e| format!("{e}: {text}")));
        }
        if self.buffer.len() > MAX_ACK_LINE {
            out.push(Err(format!(
                "an acknowledgement line longer than {MAX_ACK_LINE} bytes was dropped"
            )));
            self.buffer.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_read_across_chunk_boundaries() {
        let mut r = AckReader::default();
        let body = b"{\"EventType\":\"BUFFERING\",\"FragmentTimecode\":1700000000000,\"FragmentNumber\":\"91343852333181432392682062607743920146264627010\"}\n\
                     {\"EventType\":\"PERSISTED\",\"FragmentTimecode\":1700000000000,\"FragmentNumber\":\"9134\"}\n\
                     {\"EventType\":\"ERROR\",\"FragmentTimecode\":1700000002000,\"ErrorId\":4004}\n{\"EventType\":\"IDLE\"}\n";
        let (a, b) = body.split_at(40);
        let mut acks = r.feed(a);
        assert!(acks.is_empty());
        acks.extend(r.feed(b));
        let acks: Vec<Ack> = acks.into_iter().map(Result::unwrap).collect();
        assert_eq!(acks.len(), 4);
        assert_eq!(acks[0].event, Event::Buffering);
        assert_eq!(acks[1].event, Event::Persisted);
        assert_eq!(acks[1].timecode, Some(1_700_000_000_000));
        assert_eq!(acks[2].error_id, Some(4004));
        assert_eq!(acks[3].event, Event::Idle);
        assert!(r.feed(b"not json\n")[0].is_err());
    }

    #[test]
    fn numbers_may_be_quoted_and_unknown_fields_are_ignored() {
        let mut r = AckReader::default();
        let acks = r.feed(
            b"{\"EventType\":\"ERROR\",\"FragmentTimecode\":\"1700000002000\",\"ErrorId\":\"4006\",\"Reason\":\"x\"}\n\
              {\"EventType\":\"ERROR\",\"ErrorId\":4006}\n\
              {\"EventType\":\"ERROR\",\"ErrorId\":\"forty\"}\n\
              {\"EventType\":\"ERROR\",\"ErrorId\":99999999999}\n",
        );
        let first = acks[0].as_ref().unwrap();
        assert_eq!((first.timecode, first.error_id), (Some(1_700_000_002_000), Some(4006)));
        let second = acks[1].as_ref().unwrap();
        assert_eq!((second.timecode, second.error_id), (None, Some(4006)));
        assert!(acks[2].is_err(), "{:?}", acks[2]);
        assert!(acks[3].is_err(), "an ErrorId beyond u32 is refused: {:?}", acks[3]);
    }

    #[test]
    fn a_body_without_newlines_cannot_grow_the_buffer() {
        let mut r = AckReader::default();
        let chunk = vec![b'x'; 4096];
        let mut errors = 0;
        for _ in 0..100 {
            errors += r.feed(&chunk).iter().filter(|a| a.is_err()).count();
            assert!(r.buffer.len() <= MAX_ACK_LINE + chunk.len());
        }
        assert!(errors >= 1, "the dropped line is reported");
        let ok = r.feed(b"\n{\"EventType\":\"IDLE\"}\n");
        assert!(ok.iter().any(|a| a.as_ref().is_ok_and(|a| a.event == Event::Idle)));
    }
}
