//! PutMedia acknowledgements: newline-separated JSON events on the response body, and
//! what each error means for the fragment and the connection.

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

/// What to do about an ERROR ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAction {
    /// The fragment itself is unacceptable (too big, too long, bad MKV, ...): resending
    /// it can never work; move it to dead letters and go on with the next.
    DeadLetter,
    /// The connection is at fault or too old (4003) or the service failed (5000): open
    /// a new connection and resend from the first unacknowledged fragment.
    Reconnect,
}

/// ErrorIds (DESIGN.md, "Kinesis Video Streams facts") and what they mean.
pub fn describe(error_id: u32) -> (&'static str, ErrorAction) {
    use ErrorAction::*;
    match error_id {
        4000 => ("the service could not read the stream", Reconnect),
        4001 => ("fragment larger than 50 MB", DeadLetter),
        4002 => ("fragment longer than 10 s", DeadLetter),
        4003 => ("connection older than 45 minutes", Reconnect),
        4004 => ("fragment timecode not greater than the previous one", Reconnect),
        4006 => ("invalid MKV", DeadLetter),
        4007 => ("invalid producer timestamp", DeadLetter),
        4009 => ("fragment metadata limit reached", DeadLetter),
        4010 => ("track number not declared in Tracks", DeadLetter),
        4011 => ("a declared track has no frames", DeadLetter),
        5000 => ("internal service error", Reconnect),
        4005 | 4008 => ("stream or fragment refused", Reconnect),
        _ if error_id >= 5000 => ("service error", Reconnect),
        _ => ("unknown error", Reconnect),
    }
}

/// Whether an ERROR can be about the fragment itself (its content, size, duration,
/// timecode, or the stream not reading it), so that repeated ones should end in a dead
/// letter; the service's own failures (5000 and up), an old connection (4003) and a
/// refused stream (4005, 4008) are not, and only make a new connection.
pub fn about_the_fragment(error_id: u32) -> bool {
    !matches!(error_id, 4003 | 4005 | 4008) && error_id < 5000
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

    #[test]
    fn fragment_errors_dead_letter_and_connection_errors_reconnect() {
        assert_eq!(describe(4006).1, ErrorAction::DeadLetter);
        assert_eq!(describe(4002).1, ErrorAction::DeadLetter);
        assert_eq!(describe(4003).1, ErrorAction::Reconnect);
        assert_eq!(describe(5000).1, ErrorAction::Reconnect);
        assert!(about_the_fragment(4006) && about_the_fragment(4004) && about_the_fragment(4000));
        assert!(!about_the_fragment(5000) && !about_the_fragment(5001) && !about_the_fragment(4003));
    }
}
