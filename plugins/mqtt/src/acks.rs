//! PUBACKs for received transactions, sent only once the transaction is journaled, and
//! in the order the transactions arrived (MQTT 4.6: a receiver acknowledges QoS 1
//! publishes in the order it received them). A message still waiting — a journal that
//! refuses — holds back the acknowledgements after it; the broker, seeing its receive
//! maximum used up, stops sending: that is the back-pressure.

use rumqttc::v5::mqttbytes::v5::Publish;
use rumqttc::v5::AsyncClient;
use std::collections::VecDeque;
use std::sync::Mutex;

/// A place in the window, handed back to [`AckWindow::done`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

#[derive(Debug)]
enum Slot {
    Waiting(Publish),
    /// Finished, but behind one still waiting.
    Done(Publish),
}

#[derive(Debug, Default)]
struct Inner {
    /// Ticket number of `slots[0]`.
    base: u64,
    slots: VecDeque<Slot>,
    /// Released, in order, waiting for room in the event loop's request channel.
    ready: VecDeque<Publish>,
}

/// The acknowledgements owed on one connection.
#[derive(Debug)]
pub struct AckWindow {
    client: AsyncClient,
    inner: Mutex<Inner>,
}

impl AckWindow {
    pub fn new(client: AsyncClient) -> AckWindow {
        AckWindow {
            client,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Takes a received publish's place in line. Only what the acknowledgement needs
    /// is kept (packet id, QoS, topic), not the payload.
    pub fn push(&self, publish: &Publish) -> Ticket {
        // Copied, not sliced: a slice of the topic would keep the packet's whole read
        // buffer (up to max_packet_bytes) alive until the acknowledgement.
        let mut ack = publish.clone();
        ack.topic = bytes::Bytes::copy_from_slice(&publish.topic);
        ack.payload = bytes::Bytes::new();
        ack.properties = None;
        let mut inner = self.lock();
        let ticket = Ticket(inner.base + inner.slots.len() as u64);
        inner.slots.push_back(Slot::Waiting(ack));
        ticket
    }

    /// The transaction behind `ticket` is journaled (or dead-lettered) and its answer
    /// is queued: acknowledge it and every finished one after it that was only waiting
    /// for it. Returns how many acknowledgements were released.
    pub fn done(&self, ticket: Ticket) -> usize {
        let mut inner = self.lock();
        let Some(index) = ticket.0.checked_sub(inner.base) else {
            return 0;
        };
        let Some(slot) = inner.slots.get_mut(index as usize) else {
            return 0;
        };
        let Slot::Waiting(publish) = slot else { return 0 };
        *slot = Slot::Done(publish.clone());
        let mut released = 0;
        while let Some(Slot::Done(_)) = inner.slots.front() {
            if let Some(Slot::Done(publish)) = inner.slots.pop_front() {
                inner.base += 1;
                inner.ready.push_back(publish);
                released += 1;
            }
        }
        self.flush_locked(&mut inner);
        released
    }

    /// Hands released acknowledgements to the event loop, in order, until its channel
    /// is full; the connection task calls this after every event. If the event loop is
    /// gone they are never sent and the broker redelivers those messages.
    pub fn flush(&self) {
        let mut inner = self.lock();
        self.flush_locked(&mut inner);
    }

    fn flush_locked(&self, inner: &mut Inner) {
        while let Some(publish) = inner.ready.front() {
            if self.client.try_ack(publish).is_err() {
                return;
            }
            inner.ready.pop_front();
        }
    }

    /// Received and not yet acknowledged.
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.slots.len() + inner.ready.len()
    }

    /// Nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::MqttOptions;

    fn publish(pkid: u16) -> Publish {
        let mut p = Publish::new("t", QoS::AtLeastOnce, Bytes::new(), None);
        p.pkid = pkid;
        p
    }

    #[test]
    fn acknowledges_in_arrival_order_only() {
        let (client, _el) = AsyncClient::new(MqttOptions::new("t", "127.0.0.1", 1), 16);
        let w = AckWindow::new(client);
        let tickets: Vec<Ticket> = (1..=4).map(|i| w.push(&publish(i))).collect();
        assert_eq!(w.done(tickets[2]), 0, "third done first: held behind the first two");
        assert_eq!(w.done(tickets[1]), 0);
        assert_eq!(w.len(), 4);
        assert_eq!(w.done(tickets[0]), 3, "the first releases itself and the two behind it");
        assert_eq!(w.len(), 1);
        assert_eq!(w.done(tickets[0]), 0, "a ticket is acknowledged once");
        assert_eq!(w.done(tickets[3]), 1);
        assert_eq!(w.len(), 0);
    }
}
