//! The connection task: connect, subscribe when the session was not resumed, feed
//! received transactions to the agent in order, pair publishes with their PUBACKs,
//! and reconnect with backoff and jitter.
//!
//! Each connection gets a fresh rumqttc event loop. rumqttc would reconnect by itself,
//! but it silently drops unacknowledged publishes when the broker starts a new session;
//! with one event loop per connection the outbox owns re-sending, and acknowledgements
//! owed on a dead connection die with it (the broker redelivers those messages).

use crate::acks::AckWindow;
use crate::inbound::Inbound;
use crate::metrics::{MqttMetrics, MqttState, StatusCell};
use crate::options::ConnectOptions;
use crate::outbox::Outbox;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event};
use rumqttc::Outgoing;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tillgate_sdk::Backoff;
use tokio::sync::watch;

/// Everything the connection task needs.
#[derive(Debug)]
pub struct Connection {
    pub options: ConnectOptions,
    pub filters: Vec<String>,
    pub qos: QoS,
    pub inbound: Arc<Inbound>,
    pub outbox: Arc<Outbox>,
    pub metrics: MqttMetrics,
    pub status: Arc<StatusCell>,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
}

/// How the task was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Stop taking transactions; keep publishing (alerts drain, answers go out).
    Draining,
    /// Disconnect and return.
    Closed,
}

/// What lasts from one connection to the next.
#[derive(Debug)]
struct Across {
    backoff: Backoff,
    /// The first connection of this run subscribed (the config may have changed the
    /// filters since the session was made).
    subscribed_once: bool,
    /// Overflows are counted always, logged at most once a minute.
    overflow_logged: Option<Instant>,
}

impl Connection {
    /// Runs until `phase` is [`Phase::Closed`].
    pub async fn run(self, mut phase: watch::Receiver<Phase>) {
        let mut across = Across {
            backoff: Backoff::new(self.reconnect_initial, self.reconnect_max),
            subscribed_once: false,
            overflow_logged: None,
        };
        loop {
            if *phase.borrow() == Phase::Closed {
                break;
            }
            let cap = self.options.options.request_channel_capacity();
            let (client, mut eventloop) = AsyncClient::new(self.options.options.clone(), cap);
            let window = Arc::new(AckWindow::new(client.clone()));
            self.status.update(|s| s.state = MqttState::Connecting);
            let outcome = self
                .connection(&client, &mut eventloop, &window, &mut phase, &mut across)
                .await;
            if matches!(outcome, Outcome::Resync) {
                self.wait_for_disconnect(&mut eventloop).await;
            }
            self.outbox.detach();
            self.metrics.connected.set(0);
            match outcome {
                Outcome::Resync => {
                    self.metrics.connections.with_label_values(&["resync"]).inc();
                    self.status.update(|s| s.state = MqttState::Reconnecting);
                }
                Outcome::Closed => {
                    // A clean DISCONNECT keeps the session (its expiry is in CONNECT):
                    // unacknowledged transactions are redelivered to the next run.
                    let _ = client.try_disconnect();
                    self.wait_for_disconnect(&mut eventloop).await;
                    break;
                }
                Outcome::Failed(e) => self.wait_to_reconnect(&e, &mut across.backoff, &mut phase).await,
            }
        }
        self.status.update(|s| s.state = MqttState::Stopped);
    }

    /// One connection's events, until it fails, is closed or must be renewed.
    async fn connection(
        &self,
        client: &AsyncClient,
        eventloop: &mut rumqttc::v5::EventLoop,
        window: &Arc<AckWindow>,
        phase: &mut watch::Receiver<Phase>,
        across: &mut Across,
    ) -> Outcome {
        // Set once a message beyond `max_in_flight` arrived (see `Overflow`).
        let mut overflow: Option<Overflow> = None;
        loop {
            if overflow.is_some() && window.is_empty() && self.outbox.unacked() == 0 && !self.inbound.in_flight.full() {
                // Everything taken on this connection is acknowledged, and every answer
                // too: rumqttc holds all requests (PUBACKs included) while its own
                // publishes wait for the broker, and a new connection would send the
                // unacknowledged answers again. Now a connection with the same session
                // has the rest redelivered.
                let _ = client.try_disconnect();
                return Outcome::Resync;
            }
            let event = tokio::select! {
                biased;
                changed = phase.changed() => {
                    if changed.is_err() || *phase.borrow() == Phase::Closed {
                        return Outcome::Closed;
                    }
                    continue;
                }
                event = eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => self.on_connack(client, ack.session_present, across),
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let running = *phase.borrow() == Phase::Running;
                    self.on_publish(window, publish, &mut overflow, across, running).await;
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => self.outbox.on_puback(ack.pkid, ack.reason),
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => self.outbox.on_sent(pkid),
                Ok(Event::Incoming(Packet::SubAck(ack))) => self.check_suback(&ack.return_codes),
                Ok(Event::Incoming(Packet::Disconnect(d))) => {
                    tracing::warn!(reason = ?d.reason_code, "the MQTT broker sent DISCONNECT");
                }
                Ok(_) => {}
                Err(e) => return Outcome::Failed(e),
            }
            // The event loop drained some of its channel: hand it what waited.
            self.outbox.flush();
            window.flush();
            self.status.update(|s| {
                s.in_flight = window.len();
                s.unacked_publishes = self.outbox.unacked();
            });
            self.metrics.unacked_publishes.set(self.outbox.unacked() as i64);
        }
    }

    /// Connected: subscribe when the session is new (or on this run's first connection),
    /// re-send what the outbox holds.
    fn on_connack(&self, client: &AsyncClient, resumed: bool, across: &mut Across) {
        across.backoff.reset();
        self.metrics.connections.with_label_values(&["connected"]).inc();
        self.metrics.connected.set(1);
        let subscribe = !resumed || !across.subscribed_once;
        if subscribe {
            let filters = self.filters.iter().map(|f| Filter::new(f.clone(), self.qos));
            if let Err(e) = client.try_subscribe_many(filters) {
                tracing::error!(error = %e, "MQTT subscribe could not be queued");
            }
            across.subscribed_once = true;
        }
        let resent = self.outbox.attach(client.clone());
        tracing::info!(
            broker = %self.options.broker,
            session_resumed = resumed,
            resent,
            "MQTT connected"
        );
        self.status.update(|s| {
            s.state = MqttState::Connected;
            // A resumed session keeps its subscriptions; new ones wait for SUBACK.
            s.subscribed = !subscribe;
            s.session_resumed = resumed;
            s.last_error = None;
            s.connects += 1;
        });
    }

    /// A delivery: taken while the window has room and intake runs; otherwise left
    /// unacknowledged for the broker to deliver again (see [`Overflow`]).
    async fn on_publish(
        &self,
        window: &Arc<AckWindow>,
        publish: Publish,
        overflow: &mut Option<Overflow>,
        across: &mut Across,
        running: bool,
    ) {
        let full = self.inbound.in_flight.full() || window.len() >= self.inbound.in_flight.max();
        if overflow.is_none() && full {
            *overflow = Some(Overflow::default());
            self.metrics.overflows.inc();
            if across
                .overflow_logged
                .is_none_or(|at| at.elapsed() > Duration::from_secs(60))
            {
                across.overflow_logged = Some(Instant::now());
                tracing::warn!(
                    max_in_flight = self.inbound.in_flight.max(),
                    "the MQTT broker sent more than max_in_flight unacknowledged transactions \
                     (it ignores Receive Maximum): the rest of this connection's deliveries are \
                     left unacknowledged and come again on a fresh connection"
                );
            }
        }
        if let Some(o) = overflow.as_mut() {
            // Not taken, not acknowledged: the broker keeps it for the session. Nothing
            // after it may be acknowledged either (PUBACKs go in arrival order), so
            // nothing more is taken on this connection.
            o.left += 1;
            if self.qos == QoS::AtMostOnce || self.options.options.clean_start() {
                // No session to redeliver from: this one is gone. Said loudly.
                self.metrics.overflow_lost.inc();
            } else {
                self.metrics.left_for_redelivery.inc();
            }
        } else if running {
            self.inbound.receive(window, publish).await;
        }
        // Draining: left unacknowledged for the next session.
    }

    /// A lost or refused connection: say why, wait the backoff (or until closed).
    async fn wait_to_reconnect(&self, e: &ConnectionError, backoff: &mut Backoff, phase: &mut watch::Receiver<Phase>) {
        self.metrics.connections.with_label_values(&["failed"]).inc();
        let wait = backoff.next_wait();
        tracing::warn!(
            broker = %self.options.broker,
            error = %describe(e),
            retry_in_ms = wait.as_millis() as u64,
            "MQTT connection lost or refused"
        );
        self.status.update(|s| {
            s.state = MqttState::Disconnected;
            s.last_error = Some(describe(e));
        });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = phase.wait_for(|p| *p == Phase::Closed) => {}
        }
    }

    /// Polls until the queued DISCONNECT is out, and with it every PUBACK queued before
    /// it (rumqttc writes requests in order, and holds them all while the broker has not
    /// acknowledged enough of the agent's own publishes: those acknowledgements are read
    /// here too). A PUBACK that never left makes the broker deliver its transaction again,
    /// which the journal answers as a duplicate.
    async fn wait_for_disconnect(&self, eventloop: &mut rumqttc::v5::EventLoop) {
        let left = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                    Ok(Event::Incoming(Packet::PubAck(ack))) => self.outbox.on_puback(ack.pkid, ack.reason),
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => self.outbox.on_sent(pkid),
                    Ok(_) => {}
                }
            }
        })
        .await;
        if left.is_err() {
            tracing::warn!("MQTT DISCONNECT not sent within 5 s; unsent acknowledgements will be redelivered");
        }
    }

    fn check_suback(&self, codes: &[SubscribeReasonCode]) {
        let all =
            codes.len() == self.filters.len() && codes.iter().all(|c| matches!(c, SubscribeReasonCode::Success(_)));
        self.status.update(|s| s.subscribed = all);
        for (filter, code) in self.filters.iter().zip(codes) {
            match code {
                SubscribeReasonCode::Success(_) => tracing::debug!(filter, "MQTT subscribed"),
                refused => {
                    self.metrics.subscribe_failures.inc();
                    tracing::error!(filter, reason = ?refused, "the MQTT broker refused a subscription; no transactions arrive on it");
                    self.status.update(|s| {
                        s.last_error = Some(format!("subscription to {filter} refused: {refused:?}"));
                    });
                }
            }
        }
    }
}

enum Outcome {
    Closed,
    Failed(ConnectionError),
    /// Deliveries were left unacknowledged (over `max_in_flight`): a new connection,
    /// same session, gets them again.
    Resync,
}

/// A broker that sends more than `max_in_flight` unacknowledged transactions (MQTT 5
/// Receive Maximum; mosquitto 2.0 does not honour it) cannot be slowed by not reading:
/// the PUBACKs for the agent's own publishes come on the same socket, and answers wait
/// for them. So the connection keeps reading, takes nothing beyond the window, leaves
/// those deliveries unacknowledged, and once what it took is acknowledged, reconnects
/// with the same session to have the rest redelivered. Memory stays within
/// `max_in_flight` transactions; nothing is lost.
#[derive(Debug, Default)]
struct Overflow {
    /// Deliveries left for redelivery on this connection.
    left: u64,
}

/// A connection error in words a store engineer can act on.
fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => {
            format!("the broker refused the connection: {code:?} (check mqtt.username/password and the broker's ACL)")
        }
        ConnectionError::Tls(t) => {
            format!("TLS: {t} (check mqtt.tls files and that mqtt.host matches the certificate)")
        }
        ConnectionError::Io(io) => format!("I/O: {io}"),
        other => {
            let text = other.to_string();
            if text.contains("CertificateRequired") {
                format!("{text} (the broker requires a client certificate: set mqtt.tls.client_cert_file and client_key_file)")
            } else if text.contains("fatal alert") {
                format!("{text} (the broker refused the TLS handshake: check mqtt.tls)")
            } else {
                text
            }
        }
    }
}
