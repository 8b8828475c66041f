use super::*;
use crate::config::load_str;

fn outputs() -> StackOutputs {
    StackOutputs::parse(
        r#"[
        {"OutputKey": "Region", "OutputValue": "eu-west-1"},
        {"OutputKey": "TransactionsStreamName", "OutputValue": "chain-transactions"},
        {"OutputKey": "DecisionsStreamName", "OutputValue": "chain-decisions"},
        {"OutputKey": "AlertsStreamName", "OutputValue": "chain-alerts"},
        {"OutputKey": "GatewayRoleAliasArn", "OutputValue": "arn:aws:iot:eu-west-1:123456789012:rolealias/chain-gateway"},
        {"OutputKey": "VideoRetentionHours", "OutputValue": "168"}
    ]"#,
    )
    .unwrap()
}

/// A certificate and key the config loader accepts (it checks they are PEM files).
fn pem_files(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let cert = dir.join("gateway.cert.pem");
    let key = dir.join("gateway \"key\".pem");
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\n").unwrap();
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\n").unwrap();
    (cert, key)
}

/// A gateway with the IoT provider; its certificate files live as long as the `TempDir`
/// (each test its own: tests run in parallel).
fn iot_gateway(cameras: Vec<Camera>) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = pem_files(dir.path());
    let gateway = Gateway {
        thing_name: "store-0042-gw".into(),
        credentials: Credentials::Iot {
            endpoint: "c2x.credentials.iot.eu-west-1.amazonaws.com".into(),
            cert_file,
            key_file,
            ca_file: None,
        },
        cameras,
    };
    (gateway, dir)
}

#[test]
fn the_kinesis_section_reads_back_through_the_agents_loader_with_the_stacks_names() {
    let (gateway, _dir) = iot_gateway(vec![]);
    let text = render(&outputs(), &gateway).unwrap();
    let config = load_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let kinesis = config.kinesis.expect("[kinesis]");
    assert_eq!(kinesis.region.as_deref(), Some("eu-west-1"));
    assert_eq!(kinesis.streams.transactions.as_deref(), Some("chain-transactions"));
    assert_eq!(kinesis.streams.decisions.as_deref(), Some("chain-decisions"));
    assert_eq!(kinesis.streams.alerts.as_deref(), Some("chain-alerts"));
    let iot = kinesis.iot.expect("[kinesis.iot]");
    assert_eq!(iot.role_alias, "chain-gateway");
    assert_eq!(iot.thing_name, "store-0042-gw");
    assert!(iot.key_file.ends_with("gateway \"key\".pem"), "quoted as TOML requires");
    assert!(!text.contains("[video]"), "no cameras, no [video]:\n{text}");
}

#[cfg(feature = "video")]
#[test]
fn each_camera_gets_a_stream_named_after_the_thing_that_the_role_allows() {
    let cameras = vec![
        Camera {
            name: "till-1".into(),
            url: "rtsp://10.0.0.21/stream1".into(),
        },
        Camera {
            name: "door".into(),
            url: "rtsp://10.0.0.22:8554/live".into(),
        },
    ];
    let (gateway, _dir) = iot_gateway(cameras);
    let text = render(&outputs(), &gateway).unwrap();
    let config = load_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let video = config.video.expect("[video]");
    assert!(video.create_streams);
    assert_eq!(video.data_retention_hours, 168);
    assert_eq!(video.iot.expect("[video.iot]").role_alias, "chain-gateway");
    let streams: Vec<_> = video.cameras.iter().map(|c| c.stream_name().to_string()).collect();
    // cloud/template.yaml's GatewayRole allows stream/${credentials-iot:ThingName}.*.
    assert_eq!(streams, ["store-0042-gw.till-1", "store-0042-gw.door"]);
}

#[test]
fn the_sdk_chain_leaves_out_the_iot_tables() {
    let gateway = Gateway {
        thing_name: "gw".into(),
        credentials: Credentials::SdkChain,
        cameras: vec![],
    };
    let text = render(&outputs(), &gateway).unwrap();
    assert!(!text.contains("iot"), "{text}");
    assert!(load_str(&text).unwrap().kinesis.unwrap().iot.is_none());
}

#[test]
fn names_the_stream_cannot_hold_are_refused_before_anything_is_printed() {
    let (mut gateway, _dir) = iot_gateway(vec![]);
    gateway.thing_name = "store:42".into();
    assert!(render(&outputs(), &gateway).unwrap_err().contains("--thing-name"));
    for name in ["till 1", "front.door", &"c".repeat(65)] {
        let (gateway, _dir) = iot_gateway(vec![Camera {
            name: name.into(),
            url: "rtsp://x/y".into(),
        }]);
        let e = render(&outputs(), &gateway).unwrap_err();
        assert!(e.contains(&format!("--camera {name:?}")), "{e}");
    }
    let (gateway, _dir) = iot_gateway(vec![Camera {
        name: "till".into(),
        url: "http://x/y".into(),
    }]);
    assert!(render(&outputs(), &gateway).unwrap_err().contains("rtsp://"));
}

#[test]
fn an_output_from_another_template_is_named() {
    let bad = StackOutputs::parse(
        r#"[{"OutputKey": "Region", "OutputValue": "eu-west-1"},
            {"OutputKey": "GatewayRoleAliasArn", "OutputValue": "arn:aws:iam::1:role/x"}]"#,
    )
    .unwrap();
    let (gateway, _dir) = iot_gateway(vec![]);
    let e = render(&bad, &gateway).unwrap_err();
    assert!(e.contains("GatewayRoleAliasArn"), "{e}");
}
