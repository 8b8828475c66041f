//! Transaction fields that rules key on or count distinct values of.

use crate::txn::Transaction;
use siphasher::sip128::{Hasher128, SipHasher13};
use std::hash::Hasher;

/// A rule key's identity: its values hashed to 128 bits (see [`key_id`]). A window is
/// found by it, so the key's strings are neither kept nor compared.
pub type KeyId = u128;

/// Fixed SipHash keys: a key's id must be the same in every process and build, so that
/// snapshots (`snapshot.rs`) stay valid across restarts and upgrades.
const KEY_ID_SEED: (u64, u64) = (0x7469_6c6c_6761_7465, 0x6b65_7973_2d76_0001);

/// The key's values (`fields` of `txn`) as a [`KeyId`]; `None` when one is absent (the
/// rule does not apply). SipHash-1-3 with 128-bit output: two different keys share an
/// id only by a collision, which takes about 2^64 tries even to someone who knows the
/// seed (a rule's keys are what terminals send, so they must not be able to merge two
/// customers' windows). Each value is followed by 0xFF, a byte no UTF-8 text contains,
/// so ("ab", "c") and ("a", "bc") differ.
pub fn key_id(fields: &[TxnField], txn: &Transaction) -> Option<KeyId> {
    key_id_of(fields.iter().map(|f| f.get(txn)))
}

fn key_id_of<'a>(values: impl Iterator<Item = Option<&'a str>>) -> Option<KeyId> {
    let mut h = SipHasher13::new_with_keys(KEY_ID_SEED.0, KEY_ID_SEED.1);
    for v in values {
        h.write(v?.as_bytes());
        h.write_u8(0xff);
    }
    Some(h.finish128().as_u128())
}

/// The id of a fixed key, for snapshot fingerprints: a build that computed ids
/// differently would not find the snapshot's keys.
pub fn key_id_probe() -> KeyId {
    key_id_of([Some("tillgate"), Some("probe")].into_iter()).expect("every value present")
}

/// A field named in a rule's `key` or in `count_distinct(...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnField {
    CardToken,
    CardBin,
    CustomerId,
    OperatorId,
    TerminalId,
    StoreId,
    Type,
    EntryMode,
}

impl TxnField {
    /// Every field, as written in rule files.
    pub const NAMES: &'static str =
        "card.token, card.bin, customer_id, operator_id, terminal_id, store_id, type, card.entry_mode";

    /// Parses a name from a rule file.
    pub fn parse(s: &str) -> Option<TxnField> {
        Some(match s.trim() {
            "card.token" => TxnField::CardToken,
            "card.bin" => TxnField::CardBin,
            "customer_id" => TxnField::CustomerId,
            "operator_id" => TxnField::OperatorId,
            "terminal_id" => TxnField::TerminalId,
            "store_id" => TxnField::StoreId,
            "type" => TxnField::Type,
            "card.entry_mode" => TxnField::EntryMode,
            _ => return None,
        })
    }

    /// The field's value in `txn`, if present.
    pub fn get(self, txn: &Transaction) -> Option<&str> {
        match self {
            TxnField::CardToken => txn.card.as_ref()?.token.as_deref(),
            TxnField::CardBin => txn.card.as_ref()?.bin.as_deref(),
            TxnField::CustomerId => txn.customer_id.as_deref(),
            TxnField::OperatorId => txn.operator_id.as_deref(),
            TxnField::TerminalId => Some(&txn.terminal_id),
            TxnField::StoreId => Some(&txn.store_id),
            TxnField::Type => Some(txn.txn_type.name()),
            TxnField::EntryMode => txn.card.as_ref()?.entry_mode.map(|m| m.name()),
        }
    }
}

/// A 64-bit hash of a value for `count_distinct`: SipHash-1-3 with the fixed seed of
/// [`key_id`], so it is the same in every process and build, and state restored from a
/// snapshot counts a value it already holds once.
pub fn stable_hash(value: &str) -> u64 {
    let mut h = SipHasher13::new_with_keys(KEY_ID_SEED.0, KEY_ID_SEED.1);
    h.write(value.as_bytes());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `key_id_probe()` as first computed.
    const PINNED: KeyId = 0x7181_5180_2404_f534_16a9_8305_18ab_9196;

    #[test]
    fn key_ids_keep_values_apart_and_stay_the_same_across_builds() {
        let id = |values: &[&str]| key_id_of(values.iter().map(|v| Some(*v))).unwrap();
        assert_ne!(id(&["ab", "c"]), id(&["a", "bc"]), "a value boundary is part of the id");
        assert_ne!(id(&["a/b", "c"]), id(&["a", "b/c"]));
        assert_ne!(id(&["tok-1"]), id(&["tok-2"]));
        assert_eq!(id(&["tok-1"]), id(&["tok-1"]));
        assert!(
            key_id_of([Some("a"), None].into_iter()).is_none(),
            "an absent field: no key"
        );
        // Fixed seed: the id of a key never changes, so snapshots stay valid across
        // restarts and builds (a change here must bump the snapshot format).
        assert_eq!(key_id_probe(), id(&["tillgate", "probe"]));
        assert_eq!(key_id_probe(), PINNED, "{:#x}", key_id_probe());
        assert_eq!(stable_hash("tok-1"), stable_hash("tok-1"));
        assert_ne!(stable_hash("tok-1"), stable_hash("tok-2"));
    }
}
