//! The chain's alert handler: an AWS Lambda function on the alerts stream.
//!
//! The store gateways ship their alerts channel KPL-aggregated; Lambda hands the
//! function each Kinesis record as it is, so the function de-aggregates it
//! ([`tillgate_kpl::deaggregate`], which checks the MD5). Alerts arrive at least once
//! (a gateway re-ships after an ambiguous failure; Lambda retries a batch), so each
//! alert is claimed in a DynamoDB table before it is published ([`claims`]); a
//! redelivered one is dropped. Each alert becomes one SNS message a person can act on
//! ([`message`]). A record that can never be published (not a readable aggregate, not
//! an alert) goes with its bytes to the stack's dead-letter queue ([`dead_letters`]) and
//! the shard moves on; a record whose claim or publish failed (SNS or DynamoDB away) is
//! reported as a batch item failure, and Lambda retries from it until it goes through.
//!
//! Layout: [`alert`] (the gateway's alert records), [`message`] (what the fraud team
//! reads), [`claims`] (once-only publication), [`topic`] (SNS), [`dead_letters`] (SQS),
//! [`handler`] (a batch, within the invocation's deadline), [`settings`] (the
//! function's environment and SDK clients). Two programs: `bootstrap` (the Lambda
//! runtime) and `alerts-from-stream` (the same handler over a stream read directly, for
//! local runs and tests).

pub mod alert;
pub mod claims;
pub mod dead_letters;
pub mod handler;
pub mod message;
pub mod settings;
pub mod topic;
