use super::*;

#[test]
fn empty_config_is_all_defaults() {
    let c = load_str("").unwrap();
    assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.journal.max_batch_rows, 512);
    assert!(c.archive().is_some());
}

#[test]
fn unknown_key_names_key_and_line() {
    let e = load_str("data_dir = \"/tmp/x\"\n\n[journal]\nmax_byte = \"1GiB\"\n").unwrap_err();
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.message.contains("unknown field `max_byte`"), "{e}");
    assert!(e.to_string().contains("line 4"), "{e}");
}

#[test]
fn bad_size_names_key_line_and_what_is_allowed() {
    let e = load_str("[journal]\ndurability = \"os\"\nmax_bytes = \"12 parsecs\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("journal.max_bytes"), "{e}");
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("KiB, MiB"), "{e}");
}

#[test]
fn bad_duration_and_enum_are_located() {
    let e = load_str("[journal]\nretention = \"forever\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("journal.retention"), "{e}");
    assert_eq!(e.line, Some(2));
    let e = load_str("[journal]\n\ndurability = \"sometimes\"\n").unwrap_err();
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("fsync") && e.message.contains("os"), "{e}");
}

#[test]
fn semantic_errors_name_key_and_line() {
    let e = load_str("[http]\nlisten = \"0.0.0.0:8080\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("http.listen"));
    assert_eq!(e.line, Some(2));
    assert!(e.message.contains("http.token"), "{e}");
    let e = load_str("[journal]\nmax_batch_rows = 0\n").unwrap_err();
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("journal.max_batch_rows"), Some(2)),
        "{e}"
    );
}

#[test]
fn non_loopback_listen_with_token_is_fine() {
    let c = load_str("[http]\nlisten = \"0.0.0.0:8080\"\ntoken = { env = \"TOKEN\" }\n").unwrap();
    assert_eq!(c.http.token.unwrap().env.as_deref(), Some("TOKEN"));
}

#[test]
fn malformed_toml_is_located() {
    let e = load_str("[journal\nmax_bytes = 1").unwrap_err();
    assert_eq!(e.line, Some(1), "{e}");
}

#[test]
fn mqtt_errors_name_key_line_and_what_is_allowed() {
    let e = load_str("[mqtt]\nhost = \"broker\"\nqos = 2\n").unwrap_err();
    assert_eq!((e.key.as_deref(), e.line), (Some("mqtt.qos"), Some(3)), "{e}");
    assert!(e.message.contains("allowed: 0 or 1"), "{e}");
    let e = load_str("[mqtt]\ndecision_topic = \"pos/{store}/decision\"\n").unwrap_err();
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("mqtt.decision_topic"), Some(2)),
        "{e}"
    );
    assert!(e.message.contains("unknown placeholder `{store}`"), "{e}");
    let e = load_str("[mqtt]\nsubsribe = []\n").unwrap_err();
    assert_eq!(e.line, Some(2), "a typo is an error, not a default: {e}");
    let e = load_str("[mqtt]\n[mqtt.tls]\nca_file = \"/nonexistent/ca.pem\"\n").unwrap_err();
    assert_eq!((e.key.as_deref(), e.line), (Some("mqtt.tls.ca_file"), Some(3)), "{e}");
    assert!(e.message.contains("cannot read /nonexistent/ca.pem"), "{e}");
    let e = load_str("[mqtt]\n[mqtt.tls]\nca_file = \"/etc/hostname\"\nclient_cert_file = \"/x\"\n").unwrap_err();
    assert!(e.message.contains("both"), "{e}");
}

#[test]
fn a_disabled_mqtt_section_is_not_checked_against_the_filesystem() {
    let c = load_str("[mqtt]\nenabled = false\n[mqtt.tls]\nca_file = \"/nonexistent/ca.pem\"\n").unwrap();
    assert_eq!(crate::components::sources(&c).len(), 1, "only HTTP: MQTT is off");
    let c = load_str("[mqtt]\nhost = \"10.0.0.2\"\n").unwrap();
    assert_eq!(c.mqtt.as_ref().map(|m| m.port()), Some(1883));
    assert_eq!(crate::components::sources(&c)[1], "mqtt mqtt://10.0.0.2:1883");
}

#[test]
fn kinesis_errors_name_key_line_and_what_is_allowed() {
    let e = load_str("[kinesis]\n[kinesis.streams]\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("kinesis.streams"), "{e}");
    assert!(e.message.contains("at least one of transactions"), "{e}");
    let e = load_str("[kinesis]\nmax_request_records = 900\n[kinesis.streams]\ntransactions = \"t\"\n").unwrap_err();
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("kinesis.max_request_records"), Some(2)),
        "{e}"
    );
    assert!(e.message.contains("1 to 500"), "{e}");
    let e = load_str("[kinesis]\npartition_key = \"{store}\"\n[kinesis.streams]\ntransactions = \"t\"\n").unwrap_err();
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("kinesis.partition_key"), Some(2)),
        "{e}"
    );
    let e = load_str("[kinesis]\n[kinesis.streams]\ntransactions = \"has space\"\n").unwrap_err();
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("kinesis.streams.transactions"), Some(3)),
        "{e}"
    );
    let e = load_str("[kinesis]\norder = \"sorted\"\n[kinesis.streams]\ntransactions = \"t\"\n").unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
    let e = load_str(
        "[kinesis]\n[kinesis.streams]\ntransactions = \"t\"\n[kinesis.iot]\nendpoint = \"x\"\nrole_alias = \"r\"\n\
         thing_name = \"t\"\ncert_file = \"/nonexistent/c.pem\"\nkey_file = \"/nonexistent/k.pem\"\n",
    )
    .unwrap_err();
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("kinesis.iot.cert_file"), Some(8)),
        "{e}"
    );
}

/// The commented-out section of config/tillgate.toml from the line `from` up to the text
/// `to`, with settings and tables uncommented (prose stays a comment).
fn documented_section(from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/tillgate.toml")).unwrap();
    let start = text.find(from).expect("documented section");
    let end = text[start..].find(to).expect("end of the section") + start;
    let mut section = String::new();
    for line in text[start..end].lines() {
        let body = line.trim_start_matches("# ");
        if body.starts_with('[') || body.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')) {
            section.push_str(body);
        } else {
            section.push('#');
            section.push_str(line);
        }
        section.push('\n');
    }
    section
}

#[test]
fn the_documented_kinesis_section_is_valid_once_uncommented() {
    let section = documented_section("# [kinesis]", "# [kinesis.iot]");
    let c = load_str(&section).unwrap_or_else(|e| panic!("{e}\n{section}"));
    let k = c.kinesis.as_ref().filter(|k| k.enabled).expect("enabled");
    assert_eq!(k.streams.pairs().len(), 3);
    assert_eq!(k.aggregate_max_bytes.get(), 50 * 1024);
}

#[cfg(feature = "video")]
#[test]
fn the_documented_video_section_is_valid_once_uncommented() {
    let section = documented_section("# [video]", "[shutdown]");
    let c = load_str(&section).unwrap_or_else(|e| panic!("{e}\n{section}"));
    let v = c.video.as_ref().filter(|v| v.enabled).expect("enabled with a camera");
    assert_eq!(v.cameras[0].stream_name(), "store-042-door");
    assert_eq!(v.fragment_duration.get(), std::time::Duration::from_secs(2));
}

#[cfg(feature = "video")]
#[test]
fn video_errors_name_the_camera_key_and_line() {
    let base = "[video]\n[[video.cameras]]\nname = \"a\"\nsource = \"test\"\n";
    let e = load_str(&format!("{base}[[video.cameras]]\nname = \"b\"\nsource = \"rtsp\"\n")).unwrap_err();
    // Not set, so the camera's own table is the place to add it.
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("video.cameras[1].url"), Some(5)),
        "{e}"
    );
    assert!(e.message.contains("required for source = \"rtsp\""), "{e}");
    let e = load_str(&format!(
        "{base}[[video.cameras]]\nname = \"b\"\nsource = \"rtsp\"\nurl = \"rtsp://u:p@cam/1\"\n"
    ))
    .unwrap_err();
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("video.cameras[1].url"), Some(8)),
        "{e}"
    );
    assert!(e.message.contains("credentials_file"), "{e}");
    let e = load_str(&format!("{base}[[video.cameras]]\nname = \"a\"\nsource = \"test\"\n")).unwrap_err();
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("video.cameras[1].name"), Some(6)),
        "{e}"
    );
    let e = load_str("[video]\nfragment_duration = \"12s\"\n").unwrap_err();
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("video.fragment_duration"), Some(2)),
        "{e}"
    );
    assert!(e.message.contains("1s–10s"), "{e}");
    let e = load_str("[video]\nclip_after = \"4m51s\"\n").unwrap_err();
    assert_eq!((e.key.as_deref(), e.line), (Some("video.clip_after"), Some(2)), "{e}");
    assert!(e.message.contains("at most 5m"), "{e}");
    load_str("[video]\nclip_after = \"4m50s\"\n").expect("10s + 4m50s is 5m");
    let e = load_str(&format!("{base}fps = 0\n")).unwrap_err();
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("video.cameras[0].fps"), Some(5)),
        "{e}"
    );
    let e = load_str(&format!("{base}colour = \"red\"\n")).unwrap_err();
    assert!(e.message.contains("unknown field `colour`"), "{e}");
    let e = load_str("[video.events]\ndecisions = [\"review\", \"maybe\"]\n").unwrap_err();
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("video.events.decisions[1]"), Some(2)),
        "{e}"
    );
    assert!(
        e.message
            .contains("\"maybe\": allowed: \"allow\", \"review\", \"block\""),
        "{e}"
    );
    let e = load_str(&format!("{base}upload = \"events\"\n[video.events]\ndecisions = []\n")).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("video.events"), "{e}");
    assert!(e.message.contains("would upload nothing"), "{e}");
    load_str(&format!("{base}upload = \"off\"\n[video.events]\ndecisions = []\n")).expect("no events camera");
    let e = load_str(&format!("{base}upload = \"sometimes\"\n")).unwrap_err();
    assert!(e.message.contains("continuous") && e.message.contains("events"), "{e}");
}

/// Found by fuzzing: a file size near u64::MAX overflowed the budget check.
#[test]
fn huge_archive_file_size_is_refused_not_overflowed() {
    let e = load_str("[sinks.archive]\ndir = \"archive\"\nmax_file_bytes = \"11111111111110MiB\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("sinks.archive.max_total_bytes"), "{e}");
}

/// Semantic errors are located from the parser's spans, however the key is written.
#[test]
fn semantic_errors_are_located_in_inline_tables_quoted_keys_and_after_multi_line_values() {
    // An inline table: the key is on the table's line, not a line of its own.
    let e = load_str("journal = { max_batch_rows = 0 }\n").unwrap_err();
    assert_eq!(
        (e.key.as_deref(), e.line, e.column),
        (Some("journal.max_batch_rows"), Some(1), Some(13)),
        "{e}"
    );
    // A quoted key and a dotted key under a table.
    let e = load_str("[journal]\n\"max_batch_rows\" = 0\n").unwrap_err();
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("journal.max_batch_rows"), Some(2)),
        "{e}"
    );
    let e = load_str(
        "[sinks]\narchive.dir = \"a\"\narchive.max_file_bytes = \"10KiB\"\narchive.max_total_bytes = \"11KiB\"\n",
    )
    .unwrap_err();
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("sinks.archive.max_total_bytes"), Some(4)),
        "{e}"
    );
    // A multi-line string whose text looks like the key must not be taken for it.
    let e = load_str("[log]\nlevel = \"\"\"\ninfo\"\"\"\n[mqtt]\nhost = '''\nqos = 2\n'''\nqos = 2\n").unwrap_err();
    assert_eq!((e.key.as_deref(), e.line), (Some("mqtt.qos"), Some(8)), "{e}");
    // A key left at its default: the table that should hold it.
    let e = load_str("\n[sinks.archive]\ndir = \"a\"\nmax_file_bytes = \"2GiB\"\n").unwrap_err();
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("sinks.archive.max_total_bytes"), Some(2)),
        "{e}"
    );
}

/// A zero first wait would retry in a busy loop.
#[test]
fn zero_backoffs_are_refused() {
    let e = load_str("[mqtt]\nhost = \"broker\"\nreconnect_initial = \"0s\"\n").unwrap_err();
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("mqtt.reconnect_initial"), Some(3)),
        "{e}"
    );
}

#[cfg(feature = "video")]
#[test]
fn a_zero_camera_backoff_is_refused() {
    let e = load_str("[video]\nretry_initial_backoff = \"0s\"\n[[video.cameras]]\nname = \"a\"\nsource = \"test\"\n")
        .unwrap_err();
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("video.retry_initial_backoff"), Some(2)),
        "{e}"
    );
}
