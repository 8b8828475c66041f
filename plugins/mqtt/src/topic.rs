//! Topic templates: `tillgate/v1/{store_id}/{terminal_id}/txn`.
//!
//! A placeholder is a whole topic level. For a subscription it becomes `+` and the level
//! of each received topic is captured; for a publish topic it is filled in, with
//! characters MQTT reserves in topic levels (`/`, `+`, `#`, NUL) replaced by `_`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    /// `+` or `#` in a subscription: matched, not captured.
    Wildcard(String),
    Var(Var),
}

/// The values a template can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    StoreId,
    TerminalId,
}

impl Var {
    fn parse(name: &str) -> Option<Var> {
        match name {
            "store_id" => Some(Var::StoreId),
            "terminal_id" => Some(Var::TerminalId),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Var::StoreId => "store_id",
            Var::TerminalId => "terminal_id",
        }
    }
}

/// Why a template is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("is empty")]
    Empty,
    #[error("level {level} (`{text}`): a placeholder must be a whole level, like `{{store_id}}`")]
    PartialPlaceholder { level: usize, text: String },
    #[error("level {level}: unknown placeholder `{{{name}}}`; allowed here: {allowed}")]
    UnknownPlaceholder {
        level: usize,
        name: String,
        allowed: String,
    },
    #[error("level {level}: `{text}` — wildcards (`+`, `#`) are only allowed in `subscribe`")]
    WildcardInPublish { level: usize, text: String },
    #[error("level {level}: `#` must be the last level and alone in it")]
    MisplacedHash { level: usize },
    #[error("level {level}: `+` must be alone in its level")]
    MisplacedPlus { level: usize },
}

/// Values captured from a received topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captures<'a> {
    pub store_id: Option<&'a str>,
    pub terminal_id: Option<&'a str>,
}

/// A parsed topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    levels: Vec<Level>,
}

impl Template {
    /// Parses `text`; `filter` allows `+`/`#`; `allowed` names the placeholders.
    pub fn parse(text: &str, filter: bool, allowed: &[&str]) -> Result<Template, TemplateError> {
        if text.is_empty() {
            return Err(TemplateError::Empty);
        }
        let parts: Vec<&str> = text.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let level = i + 1;
            let parsed = if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                match Var::parse(name).filter(|v| allowed.contains(&v.name())) {
                    Some(v) => Ok(Level::Var(v)),
                    None => Err(TemplateError::UnknownPlaceholder {
                        level,
                        name: name.to_string(),
                        allowed: allowed
                            .iter()
                            .map(|a| format!("{{{a}}}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                    }),
                }
            } else if part.contains('{') || part.contains('}') {
                Err(TemplateError::PartialPlaceholder {
                    level,
                    text: part.to_string(),
                })
            } else if part.contains('+') || part.contains('#') {
                if !filter {
                    Err(TemplateError::WildcardInPublish {
                        level,
                        text: part.to_string(),
                    })
                } else if *part == "#" && i + 1 == parts.len() {
                    Ok(Level::Wildcard("#".into()))
                } else if *part == "+" {
                    Ok(Level::Wildcard("+".into()))
                } else if part.contains('#') {
                    Err(TemplateError::MisplacedHash { level })
                } else {
                    Err(TemplateError::MisplacedPlus { level })
                }
            } else {
                Ok(Level::Literal(part.to_string()))
            };
            levels.push(parsed?);
        }
        Ok(Template { levels })
    }

    /// The subscription filter: placeholders become `+`.
    pub fn filter(&self) -> String {
        self.levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) | Level::Wildcard(s) => s.as_str(),
                Level::Var(_) => "+",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Matches a received topic; the placeholders' levels are captured.
    pub fn capture<'t>(&self, topic: &'t str) -> Option<Captures<'t>> {
        let mut captures = Captures::default();
        let mut parts = topic.split('/');
        for level in &self.levels {
            if let Level::Wildcard(w) = level {
                if w == "#" {
                    return Some(captures);
                }
            }
            let part = parts.next()?;
            match level {
                Level::Literal(s) if s != part => return None,
                Level::Var(Var::StoreId) => captures.store_id = Some(part),
                Level::Var(Var::TerminalId) => captures.terminal_id = Some(part),
                _ => {}
            }
        }
        parts.next().is_none().then_some(captures)
    }

    /// True when `topic` matches and the levels the template names are this store's
    /// and this terminal's (a response topic in the requester's own namespace).
    pub fn allows(&self, topic: &str, store_id: Option<&str>, terminal_id: Option<&str>) -> bool {
        let Some(c) = self.capture(topic) else {
            return false;
        };
        let names = |v: Var| self.levels.contains(&Level::Var(v));
        (!names(Var::StoreId) || (c.store_id.is_some() && c.store_id == store_id))
            && (!names(Var::TerminalId) || (c.terminal_id.is_some() && c.terminal_id == terminal_id))
    }

    /// The topic for a store and terminal.
    pub fn render(&self, store_id: &str, terminal_id: &str) -> String {
        self.levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) | Level::Wildcard(s) => s.clone(),
                Level::Var(Var::StoreId) => level_safe(store_id),
                Level::Var(Var::TerminalId) => level_safe(terminal_id),
            })
            .collect::<Vec<_>>()
            .join("/")
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text: Vec<String> = self
            .levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) | Level::Wildcard(s) => s.clone(),
                Level::Var(v) => format!("{{{}}}", v.name()),
            })
            .collect();
        f.write_str(&text.join("/"))
    }
}

/// The longest value put into a topic level: a rendered topic stays far below MQTT's
/// 65,535 bytes whatever a client put in the topic it published to.
const MAX_LEVEL_BYTES: usize = 128;

/// A value as one topic level: never empty, no level separator or wildcard, no card
/// number (a refused payload's store or terminal may be one), at most
/// [`MAX_LEVEL_BYTES`].
fn level_safe(value: &str) -> String {
    if value.is_empty() {
        return "_".into();
    }
    let mut out = String::new();
    for c in tillgate_sdk::pan::redact_text(value).chars() {
        let c = if matches!(c, '/' | '+' | '#' | '\0') { '_' } else { c };
        if out.len() + c.len_utf8() > MAX_LEVEL_BYTES {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: &[&str] = &["store_id", "terminal_id"];

    #[test]
    fn default_subscription_captures_store_and_terminal() {
        let t = Template::parse("tillgate/v1/{store_id}/{terminal_id}/txn", true, BOTH).unwrap();
        assert_eq!(t.filter(), "tillgate/v1/+/+/txn");
        let c = t.capture("tillgate/v1/S1/T9/txn").unwrap();
        assert_eq!((c.store_id, c.terminal_id), (Some("S1"), Some("T9")));
        assert!(t.capture("tillgate/v1/S1/T9/decision").is_none());
        assert!(t.capture("tillgate/v1/S1/txn").is_none());
        assert!(t.capture("tillgate/v1/S1/T9/txn/extra").is_none());
    }

    #[test]
    fn wildcards_match_without_capturing() {
        let t = Template::parse("pos/+/{terminal_id}/#", true, BOTH).unwrap();
        assert_eq!(t.filter(), "pos/+/+/#");
        let c = t.capture("pos/any/T1/a/b").unwrap();
        assert_eq!((c.store_id, c.terminal_id), (None, Some("T1")));
    }

    #[test]
    fn a_response_topic_must_be_in_the_requesters_own_namespace() {
        let t = Template::parse("tillgate/v1/{store_id}/{terminal_id}/#", true, BOTH).unwrap();
        assert!(t.allows("tillgate/v1/S1/T9/reply/42", Some("S1"), Some("T9")));
        assert!(
            !t.allows("tillgate/v1/S1/T8/reply/42", Some("S1"), Some("T9")),
            "another terminal's topic"
        );
        assert!(
            !t.allows("tillgate/v1/S2/T9/reply", Some("S1"), Some("T9")),
            "another store's topic"
        );
        assert!(
            !t.allows("payments/refund", Some("S1"), Some("T9")),
            "outside the pattern"
        );
        assert!(
            !t.allows("tillgate/v1/S1/T9/x", None, Some("T9")),
            "no store to compare with"
        );
    }

    #[test]
    fn render_fills_levels_and_neutralises_reserved_characters() {
        let t = Template::parse("tillgate/v1/{store_id}/{terminal_id}/decision", false, BOTH).unwrap();
        assert_eq!(t.render("S1", "T9"), "tillgate/v1/S1/T9/decision");
        assert_eq!(t.render("a/b", "+#"), "tillgate/v1/a_b/__/decision");
        assert_eq!(t.render("", "T"), "tillgate/v1/_/T/decision");
        assert_eq!(t.to_string(), "tillgate/v1/{store_id}/{terminal_id}/decision");
    }

    #[test]
    fn a_rendered_topic_is_short_and_carries_no_card_number() {
        let t = Template::parse("tillgate/v1/{store_id}/{terminal_id}/error", false, BOTH).unwrap();
        let topic = t.render(&"s".repeat(65_000), "4111111111111111");
        assert!(topic.len() < 300, "{}", topic.len());
        assert!(topic.ends_with("/************1111/error"), "{topic}");
    }

    /// Found by fuzzing (`mqtt_topic`): a level of digits is masked when rendered, and a
    /// subscription captures the masked value, not the original.
    #[test]
    fn a_digit_level_is_captured_as_rendered() {
        let t = Template::parse("x/{terminal_id}/txn", true, BOTH).unwrap();
        let p = Template::parse("x/{terminal_id}/txn", false, BOTH).unwrap();
        let terminal = "222222222222222222222222222";
        let topic = p.render("s", terminal);
        let captured = t.capture(&topic).unwrap().terminal_id.unwrap();
        assert_ne!(captured, terminal, "a Luhn-valid window of it is masked");
        assert!(!captured.contains("2222222222222"), "{captured}");
    }

    #[test]
    fn errors_name_the_level_and_what_is_allowed() {
        let e = Template::parse("a/{shop}/b", false, BOTH).unwrap_err();
        assert_eq!(
            e.to_string(),
            "level 2: unknown placeholder `{shop}`; allowed here: {store_id}, {terminal_id}"
        );
        let e = Template::parse("tillgate/{store_id}/{terminal_id}/alerts", false, &["store_id"]).unwrap_err();
        assert!(e.to_string().contains("allowed here: {store_id}"), "{e}");
        assert!(matches!(
            Template::parse("a/x{store_id}", false, BOTH),
            Err(TemplateError::PartialPlaceholder { level: 2, .. })
        ));
        assert!(matches!(
            Template::parse("a/+/b", false, BOTH),
            Err(TemplateError::WildcardInPublish { level: 2, .. })
        ));
        assert!(matches!(
            Template::parse("a/#/b", true, BOTH),
            Err(TemplateError::MisplacedHash { level: 2 })
        ));
        assert!(matches!(
            Template::parse("a/x+", true, BOTH),
            Err(TemplateError::MisplacedPlus { level: 2 })
        ));
        assert_eq!(Template::parse("", true, BOTH), Err(TemplateError::Empty));
    }
}
