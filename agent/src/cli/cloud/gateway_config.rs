//! A gateway's `[kinesis]` and `[video]` sections from the chain stack's outputs.
//!
//! Serialized with the `toml` crate from typed sections (no string pasting), so names
//! and paths are quoted as TOML requires; a test reads the result back through the
//! agent's own config loader.

use super::outputs::StackOutputs;
use serde::Serialize;
use std::path::PathBuf;

/// What the cloud team knows about one gateway.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// The AWS IoT thing; its video streams are `<thing>.<camera>`, the only ones the
    /// stack's role lets it reach.
    pub thing_name: String,
    pub credentials: Credentials,
    pub cameras: Vec<Camera>,
}

/// Where the gateway's AWS credentials come from.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// The AWS IoT credentials provider, with the thing's certificate (the stack's role
    /// alias; `aws iot describe-endpoint --endpoint-type iot:CredentialProvider`).
    Iot {
        endpoint: String,
        cert_file: PathBuf,
        key_file: PathBuf,
        ca_file: Option<PathBuf>,
    },
    /// The AWS SDK's chain (environment, profile, Greengrass' container credentials).
    SdkChain,
}

/// One RTSP camera of the gateway.
#[derive(Debug, Clone)]
pub struct Camera {
    pub name: String,
    pub url: String,
}

#[derive(Serialize)]
struct Sections {
    kinesis: KinesisSection,
    #[serde(skip_serializing_if = "Option::is_none")]
    video: Option<VideoSection>,
}

#[derive(Serialize)]
struct KinesisSection {
    region: String,
    streams: Streams,
    #[serde(skip_serializing_if = "Option::is_none")]
    iot: Option<IotSection>,
}

#[derive(Serialize)]
struct Streams {
    transactions: String,
    decisions: String,
    alerts: String,
}

#[derive(Serialize, Clone)]
struct IotSection {
    endpoint: String,
    role_alias: String,
    thing_name: String,
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca_file: Option<PathBuf>,
}

#[derive(Serialize)]
struct VideoSection {
    region: String,
    create_streams: bool,
    data_retention_hours: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    iot: Option<IotSection>,
    cameras: Vec<CameraSection>,
}

#[derive(Serialize)]
struct CameraSection {
    name: String,
    source: &'static str,
    url: String,
    stream: String,
}

/// The sections as TOML, with a header saying where they came from.
pub fn render(outputs: &StackOutputs, gateway: &Gateway) -> Result<String, String> {
    check_thing_name(&gateway.thing_name)?;
    let region = outputs.get("Region")?.to_string();
    let iot = match &gateway.credentials {
        Credentials::SdkChain => None,
        Credentials::Iot {
            endpoint,
            cert_file,
            key_file,
            ca_file,
        } => Some(IotSection {
            endpoint: endpoint.clone(),
            role_alias: role_alias_name(outputs.get("GatewayRoleAliasArn")?)?,
            thing_name: gateway.thing_name.clone(),
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            ca_file: ca_file.clone(),
        }),
    };
    let video = if gateway.cameras.is_empty() {
        None
    } else {
        let retention = outputs.get("VideoRetentionHours")?;
        Some(VideoSection {
            region: region.clone(),
            create_streams: true,
            data_retention_hours: retention
                .parse()
                .map_err(|_| format!("output `VideoRetentionHours` is {retention:?}, not a number of hours"))?,
            iot: iot.clone(),
            cameras: gateway
                .cameras
                .iter()
                .map(|c| camera_section(&gateway.thing_name, c))
                .collect::<Result<_, _>>()?,
        })
    };
    let sections = Sections {
        kinesis: KinesisSection {
            region,
            streams: Streams {
                transactions: outputs.get("TransactionsStreamName")?.to_string(),
                decisions: outputs.get("DecisionsStreamName")?.to_string(),
                alerts: outputs.get("AlertsStreamName")?.to_string(),
            },
            iot,
        },
        video,
    };
    let body = toml::to_string(&sections).map_err(|e| format!("cannot write TOML: {e}"))?;
    Ok(format!(
        "# Written by `tillgate cloud gateway-config` for thing {:?} from the chain stack's\n\
         # outputs (cloud/template.yaml). Paste into tillgate.toml; see docs/cloud.md.\n{body}",
        gateway.thing_name
    ))
}

/// AWS IoT thing names: 1–128 of `a-z A-Z 0-9 : _ -`; here without `:`, which a
/// Kinesis Video stream name (`<thing>.<camera>`) cannot hold. No thing name holds a
/// `.`, so the role's `<thing>.*` matches no other thing's streams.
fn check_thing_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if name.is_empty() || name.len() > 128 || !name.chars().all(allowed) {
        return Err(format!(
            "--thing-name {name:?}: allowed: 1–128 of a-z A-Z 0-9 _ - (it prefixes the gateway's video stream names)"
        ));
    }
    Ok(())
}

/// `arn:aws:iot:<region>:<account>:rolealias/<name>` → `<name>`.
fn role_alias_name(arn: &str) -> Result<String, String> {
    match arn.split_once(":rolealias/") {
        Some((_, name)) if !name.is_empty() && !name.contains('/') => Ok(name.to_string()),
        _ => Err(format!(
            "output `GatewayRoleAliasArn` is {arn:?}, not an IoT role alias ARN"
        )),
    }
}

/// The video plugin's camera names (`[video]`'s `cameras[].name`: 1–64 of
/// `a-z A-Z 0-9 _ -`, a folder on the gateway); `<thing>.<camera>` then fits KVS' 256.
fn camera_section(thing: &str, camera: &Camera) -> Result<CameraSection, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-');
    if camera.name.is_empty() || camera.name.len() > 64 || !camera.name.chars().all(allowed) {
        return Err(format!(
            "--camera {:?}: a camera name is 1–64 of a-z A-Z 0-9 _ - (the video section's rule)",
            camera.name
        ));
    }
    let stream = format!("{thing}.{}", camera.name);
    if !camera.url.starts_with("rtsp://") {
        return Err(format!(
            "--camera {}={:?}: the URL must be rtsp://host[:port]/path",
            camera.name, camera.url
        ));
    }
    Ok(CameraSection {
        name: camera.name.clone(),
        source: "rtsp",
        url: camera.url.clone(),
        stream,
    })
}

#[cfg(test)]
#[path = "gateway_config_tests.rs"]
mod tests;
