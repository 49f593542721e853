//! Hostile client frames, many thousands per run from fixed seeds: mutated
//! valid frames, random objects of the known fields with values of every
//! JSON type, and hand-picked extremes. The same checks as the cargo-fuzz
//! target `client_frame` (see `bench/fuzz.sh`), but run by `cargo test`.

#[path = "hostile/frame_checks.rs"]
mod frame_checks;
#[path = "hostile/mutate.rs"]
mod mutate;

use frame_checks::check_frame;
use mutate::Mutator;
use rand::Rng;
use serde_json::{Map, Value, json};

const VALID: &[&str] = &[
    r#"{"type":"send","rid":1,"client_msg_id":"c-42","conv_id":"dm:alice:bob","body":"hi"}"#,
    r#"{"type":"send","rid":"r","client_msg_id":"c-43","to":"bob","kind":"text","body":"yo"}"#,
    r#"{"type":"sync","rid":2,"since":18,"limit":100}"#,
    r#"{"type":"ping","rid":3}"#,
    r#"{"type":"send","client_msg_id":"x","conv_id":"g:abcdef","body":"group"}"#,
    r#"{"type":"typing","conv_id":"dm:alice:bob"}"#,
    r#"{"type":"typing","rid":4,"conv_id":"g:abcdef"}"#,
    r#"{"type":"presence","rid":5,"users":["bob","carol"],"watch":true}"#,
    r#"{"type":"recall","rid":6,"client_msg_id":"c-44","conv_id":"dm:alice:bob","ref":7}"#,
    r#"{"type":"edit","rid":7,"client_msg_id":"c-45","conv_id":"g:abcdef","ref":7,"body":"hi!"}"#,
    r#"{"type":"read","rid":8,"conv_id":"dm:alice:bob","conv_seq":7}"#,
];
const FIELDS: &[&str] = &[
    "type",
    "rid",
    "since",
    "limit",
    "client_msg_id",
    "conv_id",
    "to",
    "kind",
    "body",
    "users",
    "watch",
    "ref",
    "conv_seq",
];

/// A value of any JSON type, biased towards what the fields expect.
fn value(m: &mut Mutator, depth: u32) -> Value {
    let rng = m.rng();
    match rng.random_range(0..12) {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random::<u64>()),
        3 => json!(rng.random::<i64>()),
        4 => json!(rng.random::<f64>() * 1e20),
        5 => json!(
            [
                "send", "sync", "ping", "pong", "typing", "presence", "recall", "edit", "SEND", ""
            ][rng.random_range(0..10)]
        ),
        6 => json!(
            ["dm:alice:bob", "dm:bob:alice", "dm:a:a", "g:x", "g:", "dm:"][rng.random_range(0..6)]
        ),
        7 => json!("x".repeat(rng.random_range(0..70_000))),
        8 => json!(String::from_utf8_lossy(&m.mutate(b"alice")).into_owned()),
        9 if depth > 0 => Value::Array((0..3).map(|_| value(m, depth - 1)).collect()),
        10 if depth > 0 => Value::Object(object(m, depth - 1)),
        _ => json!(rng.random_range(0..1_000u32)),
    }
}

fn object(m: &mut Mutator, depth: u32) -> Map<String, Value> {
    let mut object = Map::new();
    for field in FIELDS {
        if m.rng().random_bool(0.6) {
            let v = value(m, depth);
            object.insert((*field).to_owned(), v);
        }
    }
    object
}

#[test]
fn mutated_valid_frames_never_panic_and_refusals_stay_small() {
    let mut m = Mutator::new(0x5eed_f4a3);
    for i in 0..30_000 {
        let input = m.mutate(VALID[i % VALID.len()].as_bytes());
        check_frame(&input);
    }
}

#[test]
fn random_objects_of_the_known_fields_never_panic_and_refusals_stay_small() {
    let mut m = Mutator::new(0x00b1_ec75);
    for _ in 0..2_000 {
        let frame = Value::Object(object(&mut m, 2)).to_string();
        check_frame(frame.as_bytes());
    }
}

#[test]
fn extreme_frames_are_refused_without_panicking() {
    let long_type = format!(r#"{{"type":"{}"}}"#, "t".repeat(60_000));
    let long_kind = format!(
        r#"{{"type":"send","client_msg_id":"c","to":"bob","body":"b","kind":"{}"}}"#,
        "k".repeat(60_000)
    );
    let extremes = [
        "[".repeat(100_000),
        "{\"a\":".repeat(50_000),
        format!("\"{}\"", "s".repeat(60_000)),
        long_type,
        long_kind,
        String::new(),
        "\u{0}".into(),
        r#"{"type":"sync","limit":1e400}"#.into(),
        r#"{"type":"send","client_msg_id":"c","to":"bob","body":"\ud800"}"#.into(),
    ];
    for frame in &extremes {
        check_frame(frame.as_bytes());
    }
}
