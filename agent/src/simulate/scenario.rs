//! What the simulated terminals send: ordinary sales, and injected fraud that the demo
//! rule pack (`config/rules/`) is written to catch.

use rand::seq::IndexedRandom;
use rand::Rng;
use serde_json::{json, Value};

/// Card tokens on the demo deny list (`config/rules/lists/denied_card_tokens.txt`).
pub const DENIED_TOKENS: [&str; 3] = ["tok_stolen_0001", "tok_stolen_0002", "tok_stolen_0003"];
/// A BIN on the demo deny list (`config/rules/lists/denied_bins.txt`).
pub const DENIED_BIN: &str = "999001";

/// One kind of injected fraud or bad input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// An everyday sale.
    Normal,
    /// A sale far above the store's threshold.
    HighAmount,
    /// A card on the deny list.
    DeniedCard,
    /// A card from a denied BIN.
    DeniedBin,
    /// Keyed entry (card not present at the reader).
    KeyedEntry,
    /// A return with no original transaction.
    RefundWithoutOriginal,
    /// A terminal leaking a full card number: refused, dead-lettered, never stored.
    PanInCardField,
    /// A broken payload.
    Malformed,
}

impl Scenario {
    /// The injected kinds, chosen uniformly when fraud is injected.
    pub const FRAUD: [Scenario; 7] = [
        Scenario::HighAmount,
        Scenario::DeniedCard,
        Scenario::DeniedBin,
        Scenario::KeyedEntry,
        Scenario::RefundWithoutOriginal,
        Scenario::PanInCardField,
        Scenario::Malformed,
    ];

    /// Picks a scenario: fraud with probability `fraud_rate`.
    pub fn pick(rng: &mut impl Rng, fraud_rate: f64) -> Scenario {
        if rng.random_bool(fraud_rate.clamp(0.0, 1.0)) {
            *Scenario::FRAUD.choose(rng).expect("non-empty")
        } else {
            Scenario::Normal
        }
    }
}

/// Builds the payload of one transaction.
pub fn payload(rng: &mut impl Rng, scenario: Scenario, store: &str, terminal: &str, txn_id: &str) -> Vec<u8> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut doc: Value = json!({
        "txn_id": txn_id,
        "store_id": store,
        "terminal_id": terminal,
        "occurred_at": now,
        "type": "sale",
        "total_minor": rng.random_range(99..15_000),
        "currency": "USD",
        "operator_id": format!("op-{}", rng.random_range(1..20)),
        "customer_id": format!("cust-{}", rng.random_range(1..5_000)),
        "card": {
            "token": format!("tok_{:012x}", rng.random::<u64>() & 0xffff_ffff_ffff),
            "bin": "411111",
            "last4": format!("{:04}", rng.random_range(0..10_000)),
            "entry_mode": if rng.random_bool(0.7) { "contactless" } else { "chip" },
        },
        "line_items": [{"sku": format!("sku-{}", rng.random_range(1..900)), "qty": 1}],
    });
    match scenario {
        Scenario::Normal => {}
        Scenario::HighAmount => doc["total_minor"] = json!(rng.random_range(250_000..900_000)),
        Scenario::DeniedCard => doc["card"]["token"] = json!(*DENIED_TOKENS.choose(rng).expect("non-empty")),
        Scenario::DeniedBin => doc["card"]["bin"] = json!(DENIED_BIN),
        Scenario::KeyedEntry => doc["card"]["entry_mode"] = json!("keyed"),
        Scenario::RefundWithoutOriginal => doc["type"] = json!("return"),
        Scenario::PanInCardField => doc["card"]["token"] = json!("4111111111111111"),
        Scenario::Malformed => {
            let mut s = serde_json::to_vec(&doc).expect("JSON serializes");
            s.truncate(s.len() / 2);
            return s;
        }
    }
    serde_json::to_vec(&doc).expect("JSON serializes")
}
