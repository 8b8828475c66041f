//! PutMedia's ErrorIds: what each means, what the uploader does about it, and what an
//! operator can do (the camera's status line). From the PutMedia API reference and the
//! KVS producer SDK's table of service call results (4012, 4507 and 5001 are only there).

/// What the uploader does about an ERROR acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAction {
    /// The fragment itself is unacceptable (too big, too long, bad MKV, ...): resending
    /// it can never work; move it to dead letters and go on with the next.
    DeadLetter,
    /// The connection is at fault or too old, or the service failed: open a new
    /// connection and resend from the first unacknowledged fragment.
    Reconnect,
    /// The stream was deleted: look it up again (and create it, when
    /// `video.create_streams` allows) before a new connection.
    StreamGone,
    /// The stream's KMS key cannot be used: no resend helps until an operator acts.
    /// Retried at the longest backoff; fragments stay in the ring meanwhile.
    Persistent,
}

/// One ErrorId.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorId {
    pub id: u32,
    /// The service's name for it.
    pub name: &'static str,
    /// What happened, in a few words (logs and dead letters quote it).
    pub meaning: &'static str,
    pub action: ErrorAction,
    /// What an operator can do about it.
    pub remedy: &'static str,
}

impl ErrorId {
    /// The camera's status line for it.
    pub fn status_line(&self) -> String {
        format!(
            "KVS error {} {} ({}): {}",
            self.id, self.name, self.meaning, self.remedy
        )
    }

    /// Whether it can be about the fragment (its content, size, duration, timecode, or
    /// the stream not reading it), so that repeated ones end in a dead letter. The
    /// service's own failures, an old connection, a deleted stream and the KMS key are
    /// not: they only make a new connection.
    pub fn about_the_fragment(&self) -> bool {
        match self.action {
            ErrorAction::DeadLetter => true,
            ErrorAction::StreamGone | ErrorAction::Persistent => false,
            ErrorAction::Reconnect => self.id < 5000 && self.id != 4003,
        }
    }
}

use ErrorAction::{DeadLetter, Persistent, Reconnect, StreamGone};

const fn e(id: u32, name: &'static str, meaning: &'static str, action: ErrorAction, remedy: &'static str) -> ErrorId {
    ErrorId {
        id,
        name,
        meaning,
        action,
        remedy,
    }
}

const CLOCK: &str = "check the gateway's clock (NTP): producer timestamps come from it";
const REPORT: &str = "the fragment is kept in the camera's dead/ directory; report it with that file";
const KMS: &str =
    "uploads retry at video.retry_max_backoff; fragments stay on disk meanwhile (the oldest go when the ring is full)";

/// Every ErrorId PutMedia documents.
pub const TABLE: &[ErrorId] = &[
    e(4000, "STREAM_READ_ERROR", "the service could not read the stream", Reconnect,
      "sent again on a new connection; if it keeps happening, check the gateway's uplink"),
    e(4001, "MAX_FRAGMENT_SIZE_REACHED", "fragment larger than 50 MB", DeadLetter,
      "lower the camera's bitrate or video.fragment_duration"),
    e(4002, "MAX_FRAGMENT_DURATION_REACHED", "fragment longer than 10 s", DeadLetter,
      "set the camera's key-frame interval (GOP) to at most video.fragment_duration"),
    e(4003, "MAX_CONNECTION_DURATION_REACHED", "connection older than 45 minutes", Reconnect,
      "nothing: a new connection is opened (expired credentials end a connection this way too)"),
    e(4004, "FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS", "fragment timecode not greater than the previous one", Reconnect, CLOCK),
    e(4005, "MORE_THAN_ALLOWED_TRACKS_FOUND", "more than one track (deprecated id)", DeadLetter,
      "give the camera's stream one video track"),
    e(4006, "INVALID_MKV_DATA", "invalid MKV", DeadLetter, REPORT),
    e(4007, "INVALID_PRODUCER_TIMESTAMP", "invalid producer timestamp", DeadLetter, CLOCK),
    e(4008, "STREAM_NOT_ACTIVE", "the stream was deleted", StreamGone,
      "it is created again when video.create_streams = true; otherwise create it, and the camera resumes"),
    e(4009, "FRAGMENT_METADATA_LIMIT_REACHED", "fragment metadata limit reached", DeadLetter, REPORT),
    e(4010, "TRACK_NUMBER_MISMATCH", "track number not declared in Tracks", DeadLetter, REPORT),
    e(4011, "FRAMES_MISSING_FOR_TRACK", "a declared track has no frames", DeadLetter, REPORT),
    e(4012, "MORE_THAN_ALLOWED_TRACKS_FOUND", "more than 3 tracks", DeadLetter,
      "give the camera's stream one video track"),
    e(4500, "KMS_KEY_ACCESS_DENIED", "access to the stream's KMS key denied", Persistent,
      "let Kinesis Video Streams use the key (its key policy); uploads retry at video.retry_max_backoff, fragments stay on disk"),
    e(4501, "KMS_KEY_DISABLED", "the stream's KMS key is disabled", Persistent, KMS),
    e(4502, "KMS_KEY_VALIDATION_ERROR", "the stream's KMS key failed validation", Persistent, KMS),
    e(4503, "KMS_KEY_UNAVAILABLE", "the stream's KMS key is unavailable", Persistent, KMS),
    e(4504, "KMS_KEY_INVALID_USAGE", "the stream's KMS key is not for encryption", Persistent, KMS),
    e(4505, "KMS_KEY_INVALID_STATE", "the stream's KMS key is in an invalid state (pending deletion?)", Persistent, KMS),
    e(4506, "KMS_KEY_NOT_FOUND", "the stream's KMS key was not found", Persistent, KMS),
    e(4507, "STREAM_DELETED", "the stream has been or is being deleted", StreamGone,
      "it is created again when video.create_streams = true; otherwise create it, and the camera resumes"),
    e(5000, "INTERNAL_ERROR", "internal service error", Reconnect, "nothing: sent again on a new connection"),
    e(5001, "ARCHIVAL_ERROR", "the service could not persist the fragment", Reconnect,
      "nothing: sent again on a new connection"),
];

/// What `id` means; ids not in [`TABLE`] are treated as the service's (5000 and up),
/// as the KMS key's (4500–4599: persistent, never the fragment's), or as possibly the
/// fragment's (they reconnect, and repeated ones dead-letter it).
pub fn describe(id: u32) -> ErrorId {
    let unknown = match id {
        5000.. => e(
            id,
            "UNKNOWN",
            "service error",
            Reconnect,
            "nothing: sent again on a new connection",
        ),
        4500..=4599 => e(id, "UNKNOWN", "an error of the stream's KMS key", Persistent, KMS),
        _ => e(
            id,
            "UNKNOWN",
            "unknown error",
            Reconnect,
            "sent again; a fragment refused 5 times goes to dead/",
        ),
    };
    TABLE.iter().copied().find(|e| e.id == id).unwrap_or(unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_errors_dead_letter_and_connection_errors_reconnect() {
        assert_eq!(describe(4006).action, DeadLetter);
        assert_eq!(describe(4002).action, DeadLetter);
        assert_eq!(describe(4012).action, DeadLetter);
        assert_eq!(describe(4003).action, Reconnect);
        assert_eq!(describe(5000).action, Reconnect);
        assert_eq!(describe(5001).action, Reconnect);
        assert_eq!(describe(4008).action, StreamGone);
        assert_eq!(describe(4507).action, StreamGone);
        assert_eq!(describe(4599).action, Persistent, "a KMS error not listed yet");
        let fragment = |id| describe(id).about_the_fragment();
        assert!(fragment(4006) && fragment(4004) && fragment(4000) && fragment(4321));
        assert!(!fragment(5000) && !fragment(5001) && !fragment(5999) && !fragment(4003) && !fragment(4008));
        assert!(!fragment(4507) && !fragment(4550));
    }

    #[test]
    fn every_kms_error_is_persistent_and_never_the_fragments_fault() {
        for id in 4500..=4506 {
            let e = describe(id);
            assert_eq!(e.action, Persistent, "{id}");
            assert!(!e.about_the_fragment(), "{id}");
            assert!(e.name.starts_with("KMS_KEY_"), "{id}");
        }
    }

    #[test]
    fn the_table_is_complete_unique_and_every_line_says_what_to_do() {
        let ids: Vec<u32> = TABLE.iter().map(|e| e.id).collect();
        let documented: Vec<u32> = (4000..=4012).chain(4500..=4507).chain(5000..=5001).collect();
        assert_eq!(ids, documented);
        for e in TABLE {
            let line = e.status_line();
            assert!(
                line.contains(&e.id.to_string()) && line.contains(e.name) && !e.remedy.is_empty(),
                "{line}"
            );
        }
    }
}
