//! The chain's alert handler: an AWS Lambda function on the alerts stream.
//!
//! The store gateways ship their alerts channel KPL-aggregated; Lambda hands the
//! function each Kinesis record as it is, so the function de-aggregates it
//! ([`tillgate_kpl::deaggregate`], which checks the MD5). Alerts arrive at least once
//! (a gateway re-ships after an ambiguous failure; Lambda retries a batch), so each
//! alert is claimed in a DynamoDB table before it is published ([`claims`]); a
//! redelivered one is dropped. Each alert becomes one SNS message a person can act on
//! ([`message`]). A record that cannot be read is reported as a batch item failure:
//! Lambda retries it a bounded number of times, then hands its position to the
//! on-failure destination (the stack's dead-letter queue) and moves on.
//!
//! Layout: [`alert`] (the gateway's alert records), [`message`] (what the fraud team
//! reads), [`claims`] (once-only publication), [`topic`] (SNS), [`handler`] (a batch),
//! [`settings`] (the function's environment). Two programs: `bootstrap` (the Lambda
//! runtime) and `alerts-from-stream` (the same handler over a stream read directly, for
//! local runs and tests).

pub mod alert;
pub mod claims;
pub mod handler;
pub mod message;
pub mod settings;
pub mod topic;
