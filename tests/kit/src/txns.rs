//! Building and posting transactions.

use serde_json::{json, Value};

/// A valid `pos.txn.v1` sale.
pub fn txn(txn_id: &str, terminal: &str, total_minor: i64) -> Value {
    json!({
        "txn_id": txn_id,
        "store_id": "store-1",
        "terminal_id": terminal,
        "occurred_at": chrono_now(),
        "type": "sale",
        "total_minor": total_minor,
        "currency": "USD",
        "card": {"token": format!("tok_{txn_id}"), "bin": "411111", "last4": "1111", "entry_mode": "chip"},
        "vendor_extension": {"lane": 3},
    })
}

/// A sale whose `line_items` make the document about `bytes` long (a large basket).
pub fn basket(txn_id: &str, terminal: &str, bytes: usize) -> Value {
    let mut t = txn(txn_id, terminal, 100);
    let item = |i: usize| json!({"sku": format!("SKU-{i:08}"), "name": "Organic whole milk 1L carton", "qty": 1, "unit_minor": 129});
    let one = item(0).to_string().len() + 1;
    let n = bytes.saturating_sub(t.to_string().len()) / one;
    t["line_items"] = Value::Array((0..n).map(item).collect());
    t
}

fn chrono_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// POSTs one body as JSON; returns the status and the parsed answer.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Result<(u16, Value)> {
    let resp = client
        .post(format!("{url}/v1/transactions"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await?;
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

/// POSTs an NDJSON batch; returns the status and each answer line.
pub async fn post_ndjson(client: &reqwest::Client, url: &str, body: String) -> reqwest::Result<(u16, Vec<Value>)> {
    let resp = client
        .post(format!("{url}/v1/transactions"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((
        status,
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
            .collect(),
    ))
}
