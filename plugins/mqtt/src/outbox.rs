//! What the agent publishes (decisions, errors, alerts), kept until the broker
//! acknowledges it, and published again on the next connection if it was not.
//!
//! Written by hand because rumqttc reports a publish only as packet ids in its event
//! stream (`Outgoing::Publish(pkid)`, then `PubAck { pkid }`), and drops unacknowledged
//! publishes when a session is not resumed. The outbox pairs each publish with its
//! packet id in the order the event loop sends them (one event loop per connection,
//! so the order is exact), completes the publisher's [`Receipt`] on the PUBACK, and on
//! a new connection sends everything still unacknowledged again, in publish order.

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{PubAckReason, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::AsyncClient;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Message {
    /// `decision`, `error`, `alert`: for metrics and logs.
    pub kind: &'static str,
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    /// MQTT 5 properties (correlation data for a response).
    pub properties: PublishProperties,
}

/// Why a publish was not accepted by the broker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The broker answered with an error reason code (not authorized, quota, ...).
    #[error("the broker refused the publish to {topic}: {reason:?}")]
    Refused { topic: String, reason: PubAckReason },
    /// The outbox was dropped (agent stopping).
    #[error("the MQTT connection is closed")]
    Closed,
}

/// Completes when the broker has acknowledged the publish (at once for QoS 0).
pub type Receipt = oneshot::Receiver<Result<(), PublishError>>;

/// A queued publish: `handed` completes once it is in the event loop's request
/// channel (so a request queued after that goes out after it on the wire), `receipt`
/// once the broker acknowledged it.
#[derive(Debug)]
pub struct Queued {
    pub handed: oneshot::Receiver<()>,
    pub receipt: Receipt,
}

#[derive(Debug)]
struct Entry {
    message: Message,
    done: Option<oneshot::Sender<Result<(), PublishError>>>,
    handed: Option<oneshot::Sender<()>>,
    _slot: OwnedSemaphorePermit,
}

/// The current connection's side of the pairing.
#[derive(Debug)]
struct Link {
    client: AsyncClient,
    /// Not yet in the event loop's request channel (it was full), in order.
    unsent: VecDeque<u64>,
    /// In the request channel, waiting for their `Outgoing::Publish(pkid)`.
    sent: VecDeque<u64>,
    /// On the wire and waiting for the PUBACK.
    by_pkid: HashMap<u16, u64>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// Everything not yet acknowledged, in publish order.
    entries: BTreeMap<u64, Entry>,
    link: Option<Link>,
}

/// The publish side of the MQTT connection; cheap to share.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    slots: Arc<Semaphore>,
    /// Counts broker refusals by kind, when given.
    refused: Option<prometheus::IntCounterVec>,
}

impl Outbox {
    /// At most `max_unacked` publishes wait for the broker; more wait in [`Outbox::publish`].
    pub fn new(max_unacked: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            slots: Arc::new(Semaphore::new(max_unacked)),
            refused: None,
        }
    }

    /// Counts broker refusals in `counter` (label: the message's kind).
    pub fn with_refusal_counter(mut self, counter: prometheus::IntCounterVec) -> Outbox {
        self.refused = Some(counter);
        self
    }

    /// Queues `message`: sent now when connected, else on the next connection.
    pub async fn publish(&self, message: Message) -> Queued {
        let (done, receipt) = oneshot::channel();
        let (handed_tx, handed) = oneshot::channel();
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            let _ = done.send(Err(PublishError::Closed));
            return Queued { handed, receipt };
        };
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.entries.insert(
            id,
            Entry {
                message,
                done: Some(done),
                handed: Some(handed_tx),
                _slot: slot,
            },
        );
        if let Some(link) = state.link.as_mut() {
            link.unsent.push_back(id);
        }
        state.flush();
        Queued { handed, receipt }
    }

    /// A new connection is up: everything unacknowledged goes out on it, in order.
    pub fn attach(&self, client: AsyncClient) -> usize {
        let mut state = self.lock();
        let unsent: VecDeque<u64> = state.entries.keys().copied().collect();
        let resent = unsent.len();
        state.link = Some(Link {
            client,
            unsent,
            sent: VecDeque::new(),
            by_pkid: HashMap::new(),
        });
        state.flush();
        resent
    }

    /// Hands what waits for room to the event loop; the connection task calls this
    /// after every event, as the event loop drains its channel.
    pub fn flush(&self) {
        self.lock().flush();
    }

    /// The connection is gone; publishes wait for the next one.
    pub fn detach(&self) {
        self.lock().link = None;
    }

    /// The event loop put a publish on the wire with packet id `pkid` (0 for QoS 0).
    pub fn on_sent(&self, pkid: u16) {
        let mut state = self.lock();
        let Some(link) = state.link.as_mut() else { return };
        if pkid != 0 && link.by_pkid.contains_key(&pkid) {
            return; // a retransmission of one already paired
        }
        let Some(id) = link.sent.pop_front() else {
            tracing::warn!(pkid, "MQTT publish event with nothing waiting for it");
            return;
        };
        if pkid == 0 {
            state.complete(id, Ok(()));
        } else {
            link.by_pkid.insert(pkid, id);
        }
    }

    /// The broker acknowledged packet `pkid`.
    pub fn on_puback(&self, pkid: u16, reason: PubAckReason) {
        let mut state = self.lock();
        let Some(id) = state.link.as_mut().and_then(|l| l.by_pkid.remove(&pkid)) else {
            return;
        };
        let result = match reason {
            PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Ok(()),
            reason => Err(reason),
        };
        let result = result.map_err(|reason| {
            let (kind, topic) = state
                .entries
                .get(&id)
                .map(|e| (e.message.kind, e.message.topic.clone()))
                .unwrap_or_default();
            tracing::warn!(kind, topic, ?reason, "the MQTT broker refused a publish");
            if let Some(c) = &self.refused {
                c.with_label_values(&[kind]).inc();
            }
            PublishError::Refused { topic, reason }
        });
        state.complete(id, result);
    }

    /// Publishes not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.lock().entries.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn complete(&mut self, id: u64, result: Result<(), PublishError>) {
        if let Some(mut entry) = self.entries.remove(&id) {
            if let Some(done) = entry.done.take() {
                let _ = done.send(result);
            }
        }
    }
}

impl State {
    /// Hands unsent publishes to the event loop in order, until its channel is full.
    fn flush(&mut self) {
        let Some(link) = self.link.as_mut() else { return };
        while let Some(&id) = link.unsent.front() {
            let Some(entry) = self.entries.get_mut(&id) else {
                link.unsent.pop_front();
                continue;
            };
            let m = &entry.message;
            let handed = link.client.try_publish_with_properties(
                m.topic.clone(),
                m.qos,
                false,
                m.payload.clone(),
                m.properties.clone(),
            );
            if handed.is_err() {
                // Full (or the event loop is gone): the rest waits, in order.
                return;
            }
            link.unsent.pop_front();
            link.sent.push_back(id);
            if let Some(h) = entry.handed.take() {
                let _ = h.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::v5::{EventLoop, MqttOptions};

    fn message(topic: &str) -> Message {
        Message {
            kind: "decision",
            topic: topic.into(),
            payload: Bytes::from_static(b"{}"),
            qos: QoS::AtLeastOnce,
            properties: PublishProperties::default(),
        }
    }

    fn link(cap: usize) -> (AsyncClient, EventLoop) {
        AsyncClient::new(MqttOptions::new("t", "127.0.0.1", 1), cap)
    }

    #[tokio::test]
    async fn receipts_complete_on_their_own_puback() {
        let outbox = Outbox::new(8);
        let (client, _el) = link(16);
        outbox.attach(client);
        let a = outbox.publish(message("a")).await.receipt;
        let mut b = outbox.publish(message("b")).await.receipt;
        outbox.on_sent(1);
        outbox.on_sent(2);
        outbox.on_puback(2, PubAckReason::Success);
        assert_eq!(b.try_recv(), Ok(Ok(())));
        assert_eq!(outbox.unacked(), 1);
        outbox.on_puback(1, PubAckReason::NotAuthorized);
        assert!(matches!(a.await, Ok(Err(PublishError::Refused { topic, .. })) if topic == "a"));
        assert_eq!(outbox.unacked(), 0);
    }

    #[tokio::test]
    async fn unacknowledged_publishes_go_out_again_in_order_on_the_next_connection() {
        let outbox = Outbox::new(8);
        let (client, el) = link(16);
        outbox.attach(client);
        let mut a = outbox.publish(message("a")).await.receipt;
        let mut b = outbox.publish(message("b")).await.receipt;
        outbox.on_sent(1);
        outbox.detach();
        drop(el);
        outbox.on_puback(1, PubAckReason::Success); // a stale ack of the old connection
        assert!(
            a.try_recv().is_err(),
            "an ack after the connection died pairs with nothing"
        );
        let c = outbox.publish(message("c")).await; // while disconnected
        let mut c_handed = c.handed;
        assert!(c_handed.try_recv().is_err(), "not handed while disconnected");
        let mut c = c.receipt;
        let (client, _el) = link(16);
        assert_eq!(outbox.attach(client), 3);
        assert_eq!(c_handed.try_recv(), Ok(()), "handed on the next connection");
        // The new event loop numbers them afresh, in publish order: a, b, c.
        for pkid in [1, 2, 3] {
            outbox.on_sent(pkid);
        }
        outbox.on_puback(2, PubAckReason::Success);
        assert_eq!(b.try_recv(), Ok(Ok(())));
        assert!(a.try_recv().is_err() && c.try_recv().is_err());
        outbox.on_puback(1, PubAckReason::Success);
        outbox.on_puback(3, PubAckReason::NoMatchingSubscribers);
        assert_eq!((a.try_recv(), c.try_recv()), (Ok(Ok(())), Ok(Ok(()))));
    }

    #[tokio::test]
    async fn a_full_request_channel_holds_publishes_back_in_order_instead_of_losing_them() {
        let outbox = Outbox::new(8);
        let (client, _el) = link(2);
        outbox.attach(client);
        let a = outbox.publish(message("a")).await;
        let b = outbox.publish(message("b")).await;
        let c = outbox.publish(message("c")).await;
        let (mut a, mut b, mut c) = (a.handed, b.handed, c.handed);
        assert_eq!((a.try_recv(), b.try_recv()), (Ok(()), Ok(())));
        assert!(c.try_recv().is_err(), "the channel holds two: c waits");
        outbox.flush();
        assert!(c.try_recv().is_err(), "still full");
        // The connection dies before the event loop drained anything; the next one
        // gets all three, in order.
        outbox.detach();
        let (client, _el) = link(16);
        assert_eq!(outbox.attach(client), 3);
        assert_eq!(c.try_recv(), Ok(()));
    }

    #[tokio::test]
    async fn qos0_completes_when_sent_and_capacity_bounds_waiting_publishers() {
        let outbox = Arc::new(Outbox::new(1));
        let (client, _el) = link(16);
        outbox.attach(client);
        let mut m = message("zero");
        m.qos = QoS::AtMostOnce;
        let r = outbox.publish(m).await.receipt;
        let blocked = {
            let outbox = outbox.clone();
            tokio::spawn(async move { drop(outbox.publish(message("next")).await) })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!blocked.is_finished(), "a second publish waits for the single slot");
        outbox.on_sent(0);
        assert_eq!(r.await, Ok(Ok(())));
        blocked.await.unwrap();
    }
}
