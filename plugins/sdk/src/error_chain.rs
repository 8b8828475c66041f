//! An error with its sources on one line, for status and logs.
//!
//! HTTP clients and the AWS SDK put the useful part in the sources: the top-level
//! message alone says "error sending request" or "dispatch failure", the cause says
//! "invalid peer certificate: UnknownIssuer".

/// `error: source: source's source`, each text once (wrappers often repeat their cause).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct E {
        text: &'static str,
        #[source]
        source: Option<Box<E>>,
    }

    #[test]
    fn sources_follow_the_error_and_repeats_are_dropped() {
        let inner = E {
            text: "invalid peer certificate: UnknownIssuer",
            source: None,
        };
        let middle = E {
            text: "client error (Connect)",
            source: Some(Box::new(inner)),
        };
        let outer = E {
            text: "error sending request: client error (Connect)",
            source: Some(Box::new(middle)),
        };
        assert_eq!(
            error_chain(&outer),
            "error sending request: client error (Connect): invalid peer certificate: UnknownIssuer"
        );
    }
}
