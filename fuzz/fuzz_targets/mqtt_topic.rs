//! Topic templates from the config and topics from the wire: parsing never panics; a
//! rendered topic has no wildcard; a subscription captures what a publish template
//! rendered for the same store and terminal.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tillgate_mqtt::topic::Template;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    template: &'a str,
    topic: &'a str,
    store: &'a str,
    terminal: &'a str,
}

const VARS: &[&str] = &["store_id", "terminal_id"];

/// A value a rendered level keeps as it is: no reserved character, short, and no digits
/// the card-number mask would change (rendered levels are cut to 128 bytes and masked).
fn level_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && !s.contains(['/', '+', '#', '\0']) && tillgate_sdk::pan::redact_text(s) == s
}

fuzz_target!(|input: Input<'_>| {
    if let Ok(t) = Template::parse(input.template, true, VARS) {
        let _ = t.filter();
        if let Some(c) = t.capture(input.topic) {
            let _ = t.allows(input.topic, c.store_id, c.terminal_id);
        }
    }
    if let Ok(publish) = Template::parse(input.template, false, VARS) {
        let topic = publish.render(input.store, input.terminal);
        assert!(
            !topic.contains(['+', '#']),
            "a rendered topic holds a wildcard: {topic}"
        );
        let subscribe = Template::parse(input.template, true, VARS).expect("a publish template is a filter too");
        let c = subscribe.capture(&topic).expect("a template matches what it rendered");
        let text = publish.to_string();
        if level_ok(input.store) && text.contains("{store_id}") {
            assert_eq!(c.store_id, Some(input.store));
        }
        if level_ok(input.terminal) && text.contains("{terminal_id}") {
            assert_eq!(c.terminal_id, Some(input.terminal));
        }
    }
});
