use super::*;
use crate::txn::parse;
use chrono::Utc;
use std::io::Write;

fn txn(extra: &str) -> crate::txn::Transaction {
    let now = Utc::now().to_rfc3339();
    let raw = format!(
        r#"{{"txn_id":"t1","store_id":"s1","terminal_id":"p1","occurred_at":"{now}","type":"sale",
            "total_minor":150000,"currency":"USD","card":{{"token":"tok_bad","bin":"411111","entry_mode":"keyed"}}{extra}}}"#
    );
    parse(raw.as_bytes(), Utc::now()).unwrap()
}

fn write_rules(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("pack.toml");
    std::fs::File::create(&p)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    p
}

#[test]
fn strongest_enforced_action_wins_and_shadow_never_decides() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("tokens.txt"), "# denied\ntok_bad\n").unwrap();
    let p = write_rules(
        tmp.path(),
        r#"
[[rule]]
id = "high-amount"
action = "review"
[rule.match]
total_minor_at_least = 100000

[[rule]]
id = "denied-token"
action = "block"
mode = "shadow"
[rule.match]
in_list = { field = "card.token", file = "tokens.txt" }

[[rule]]
id = "keyed"
action = "allow"
[rule.match]
entry_modes = ["keyed", "fallback"]
"#,
    );
    let mut rules = load_paths(&[p]).unwrap();
    let d = rules.decide(&txn(""));
    assert_eq!(d.action, Action::Review);
    let ids: Vec<&str> = d.hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids, ["high-amount", "denied-token", "keyed"]);
    assert!(
        d.hits[1]
            .reason
            .contains("card.token is on deny list tokens.txt"),
        "{:?}",
        d.hits[1]
    );
}

#[test]
fn refund_without_original_uses_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write_rules(
        tmp.path(),
        "[[rule]]\nid = \"refund-no-original\"\naction = \"review\"\n[rule.match]\ntypes = [\"return\"]\nmissing = [\"original_txn_id\"]\n",
    );
    let mut rules = load_paths(&[p]).unwrap();
    let mut t = txn("");
    assert_eq!(rules.decide(&t).action, Action::Allow);
    t.txn_type = crate::txn::TxnType::Return;
    assert_eq!(rules.decide(&t).action, Action::Review);
    t.original_txn_id = Some("t0".into());
    assert_eq!(rules.decide(&t).action, Action::Allow);
}

#[test]
fn broken_rule_files_name_file_rule_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write_rules(tmp.path(), "[[rule]]\nid = \"a\"\naction = \"block\"\n[rule.match]\n\n[[rule]]\nid = \"b\"\naction = \"maybe\"\n[rule.match]\ntypes=[\"sale\"]\n");
    let e = load_paths(std::slice::from_ref(&p)).unwrap_err();
    assert_eq!(e.line, Some(8), "{e}");
    assert!(
        e.message.contains("allow") && e.message.contains("block"),
        "{e}"
    );
    assert!(e.to_string().contains("pack.toml"), "{e}");

    let p = write_rules(tmp.path(), "[[rule]]\nid = \"a\"\naction = \"block\"\n[rule.match]\ntypes=[\"sale\"]\n[[rule]]\nid = \"empty\"\naction = \"block\"\n[rule.match]\n");
    let e = load_paths(std::slice::from_ref(&p)).unwrap_err();
    assert!(
        e.message.contains("rule `empty`") && e.message.contains("no condition"),
        "{e}"
    );
    assert_eq!(e.line, Some(7), "{e}");

    let p = write_rules(tmp.path(), "[[rule]]\nid = \"l\"\naction = \"block\"\n[rule.match]\nin_list = { field = \"card.token\", file = \"nope.txt\" }\n");
    let e = load_paths(std::slice::from_ref(&p)).unwrap_err();
    assert!(e.message.contains("nope.txt"), "{e}");
}
