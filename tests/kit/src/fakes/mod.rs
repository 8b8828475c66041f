//! Endpoints the kit serves in place of AWS, each checking requests the way the service
//! does and able to play faults: Kinesis Data Streams, Kinesis Video Streams (PutMedia
//! with SigV4), the IoT credentials provider, Greengrass's token exchange service.

pub mod iot;
pub mod kinesis;
pub mod kvs;
pub mod outage;
pub mod sigv4;
pub mod tes;
