//! Round trips against the JSON examples of PROTOCOL.md.

use proto::{
    ClientFrame, ConvId, Entry, ErrorCode, ProtoError, Rid, ServerFrame, SyncFrame, Target, UserId,
    parse_client_frame,
};
use serde_json::{Value, json};

fn assert_round_trip(example: &str) {
    let frame: ServerFrame = serde_json::from_str(example).expect("example parses");
    let back: Value = serde_json::from_str(&frame.to_json()).expect("output is JSON");
    let expected: Value = serde_json::from_str(example).expect("example is JSON");
    assert_eq!(back, expected, "round trip of {example}");
}

#[test]
fn the_send_example_parses_with_its_rid() {
    let text =
        r#"{"type":"send","rid":1,"client_msg_id":"c-42","conv_id":"dm:alice:bob","body":"hi"}"#;
    let (rid, frame) = parse_client_frame(text).expect("valid");
    assert_eq!(rid, Some(Rid::Num(1.into())));
    let ClientFrame::Send(send) = frame else {
        panic!("not a send: {frame:?}")
    };
    assert_eq!(send.client_msg_id.as_str(), "c-42");
    assert_eq!(
        send.target,
        Target::Conv(ConvId::parse("dm:alice:bob").expect("valid id"))
    );
    assert_eq!(send.body, "hi");
}

#[test]
fn a_send_may_name_the_peer_with_to() {
    let text =
        r#"{"type":"send","rid":"a","client_msg_id":"c","to":"bob","body":"hi","extra":{"x":1}}"#;
    let (rid, frame) = parse_client_frame(text).expect("unknown fields are ignored");
    assert_eq!(rid, Some(Rid::Str("a".into())));
    let ClientFrame::Send(send) = frame else {
        panic!("not a send")
    };
    assert_eq!(
        send.target,
        Target::Peer(UserId::parse("bob").expect("valid"))
    );
}

#[test]
fn the_sync_and_ping_examples_parse() {
    let (_, sync) =
        parse_client_frame(r#"{"type":"sync","rid":2,"since":18,"limit":100}"#).expect("valid");
    assert_eq!(
        sync,
        ClientFrame::Sync(SyncFrame {
            since: 18,
            limit: 100
        })
    );
    let (rid, ping) = parse_client_frame(r#"{"type":"ping","rid":3}"#).expect("valid");
    assert_eq!((rid, ping), (Some(Rid::Num(3.into())), ClientFrame::Ping));
    let (_, defaults) = parse_client_frame(r#"{"type":"sync"}"#).expect("valid");
    assert_eq!(
        defaults,
        ClientFrame::Sync(SyncFrame {
            since: 0,
            limit: 100
        })
    );
}

#[test]
fn server_frame_examples_round_trip() {
    assert_round_trip(
        r#"{"type":"ack","rid":1,"client_msg_id":"c-42","conv_id":"dm:alice:bob","conv_seq":7,"seq":19,"ts":1764262800000}"#,
    );
    assert_round_trip(r#"{"type":"pong","rid":3}"#);
    assert_round_trip(r#"{"type":"notify","head":26}"#);
    assert_round_trip(
        r#"{"type":"error","rid":1,"code":"rate_limited","message":"...","retry_after_ms":500}"#,
    );
    assert_round_trip(r#"{"type":"goaway","reconnect_after_ms":1500}"#);
    let entry = r#"{"seq":19,"conv_id":"dm:alice:bob","conv_seq":7,"from":"alice","client_msg_id":"c-42","kind":"text","body":"hi","ts":1764262800000}"#;
    assert_round_trip(&format!(
        r#"{{"type":"sync_result","rid":2,"entries":[{entry}],"head":25,"more":true}}"#
    ));
}

#[test]
fn the_inbox_entry_example_round_trips() {
    let text = r#"{"seq":19,"conv_id":"dm:alice:bob","conv_seq":7,"from":"alice","client_msg_id":"c-42","kind":"text","body":"hi","ts":1764262800000}"#;
    let entry: Entry = serde_json::from_str(text).expect("parses");
    assert_eq!(entry.seq, 19);
    assert_eq!(entry.message.from.as_str(), "alice");
    assert_eq!(
        serde_json::to_value(&entry).expect("serializes"),
        serde_json::from_str::<Value>(text).expect("json")
    );
}

#[test]
fn malformed_frames_are_errors_that_keep_the_rid() {
    let cases = [
        (json!({"type":"sync","rid":5,"since":-1}), "since"),
        (json!({"type":"sync","rid":5,"limit":1.5}), "limit"),
        (json!({"type":"sync","rid":5,"limit":0}), "limit"),
        (
            json!({"type":"send","rid":5,"conv_id":"g:x","body":"b"}),
            "client_msg_id",
        ),
        (
            json!({"type":"send","rid":5,"client_msg_id":"c","conv_id":"dm:b:a","body":"b"}),
            "conv_id",
        ),
        (
            json!({"type":"send","rid":5,"client_msg_id":"c","to":"bob","body":7}),
            "body",
        ),
        (json!({"rid":5}), "type"),
    ];
    for (frame, mentions) in cases {
        let err = parse_client_frame(&frame.to_string()).expect_err("invalid");
        assert_eq!(err.rid, Some(Rid::Num(5.into())), "{frame}");
        assert_eq!(err.error.code(), ErrorCode::BadRequest, "{frame}");
        assert!(
            err.error.to_string().contains(mentions),
            "{frame}: {}",
            err.error
        );
    }
}

#[test]
fn unknown_types_and_non_objects_are_errors_not_panics() {
    let unknown = parse_client_frame(r#"{"type":"dance","rid":"r"}"#).expect_err("unknown");
    assert_eq!(unknown.error, ProtoError::UnknownType("dance".into()));
    assert_eq!(unknown.rid, Some(Rid::Str("r".into())));
    for junk in [
        "",
        "[]",
        "null",
        "{",
        "\"send\"",
        "{\"type\":5}",
        "{\"type\":\"ping\",\"rid\":[1]}",
    ] {
        let err = parse_client_frame(junk).expect_err("junk");
        assert_eq!(err.error.code(), ErrorCode::BadRequest, "{junk}");
    }
}

#[test]
fn error_codes_map_to_their_http_status() {
    assert_eq!(ErrorCode::TooLarge.http_status(), 413);
    assert_eq!(ErrorCode::RateLimited.http_status(), 429);
    assert_eq!(ErrorCode::Unavailable.as_str(), "unavailable");
    assert_eq!(
        serde_json::to_string(&ErrorCode::NotFound).expect("serializes"),
        "\"not_found\""
    );
}

#[test]
fn the_recall_and_edit_examples_of_version_1_1_parse_as_sends_of_their_kind() {
    let recall =
        r#"{"type":"recall","rid":5,"client_msg_id":"c-44","conv_id":"dm:alice:bob","ref":7}"#;
    let edit = r#"{"type":"edit","rid":6,"client_msg_id":"c-45","conv_id":"dm:alice:bob","ref":7,"body":"hi!"}"#;
    for (text, kind, body) in [
        (recall, proto::MessageKind::Recall, ""),
        (edit, proto::MessageKind::Edit, "hi!"),
    ] {
        let (_, frame) = parse_client_frame(text).expect("valid");
        let ClientFrame::Send(change) = frame else {
            panic!("not a send: {frame:?}")
        };
        assert_eq!((change.kind, change.body.as_str()), (kind, body));
        assert_eq!(change.refers_to, Some(7));
        assert_eq!(
            change.target,
            Target::Conv(ConvId::parse("dm:alice:bob").expect("valid id"))
        );
    }
    let no_ref = r#"{"type":"recall","client_msg_id":"c","conv_id":"dm:alice:bob"}"#;
    assert!(parse_client_frame(no_ref).is_err());
    let empty_edit =
        r#"{"type":"edit","client_msg_id":"c","conv_id":"dm:alice:bob","ref":7,"body":""}"#;
    assert!(parse_client_frame(empty_edit).is_err());
    let recall_by_send =
        r#"{"type":"send","client_msg_id":"c","to":"bob","kind":"recall","body":"x"}"#;
    assert!(parse_client_frame(recall_by_send).is_err());
}

#[test]
fn recall_edit_and_recalled_entries_carry_ref_and_recalled_as_version_1_1_writes_them() {
    for text in [
        r#"{"seq":20,"conv_id":"dm:alice:bob","conv_seq":8,"from":"alice","client_msg_id":"c-44","kind":"recall","body":"","ts":1764262800000,"ref":7}"#,
        r#"{"seq":21,"conv_id":"dm:alice:bob","conv_seq":9,"from":"alice","client_msg_id":"c-45","kind":"edit","body":"hi!","ts":1764262800000,"ref":7}"#,
        r#"{"seq":19,"conv_id":"dm:alice:bob","conv_seq":7,"from":"alice","client_msg_id":"c-42","kind":"text","body":"","ts":1764262800000,"recalled":true}"#,
    ] {
        let entry: Entry = serde_json::from_str(text).expect("parses");
        assert_eq!(
            serde_json::to_value(&entry).expect("serializes"),
            serde_json::from_str::<Value>(text).expect("json")
        );
    }
}
