//! Small helpers on frames, and the names `ws_client` expects here.

use std::time::Duration;

use serde_json::Value;

/// The longest a single wait for a server reply may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A frame's integer field.
pub fn u64_of(frame: &Value, field: &str) -> u64 {
    frame[field]
        .as_u64()
        .unwrap_or_else(|| panic!("`{field}` is not an integer in {frame}"))
}

/// The `client_msg_id`s of inbox entries (or history messages), in order.
pub fn msg_ids(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| {
            e["client_msg_id"]
                .as_str()
                .unwrap_or_else(|| panic!("an entry without client_msg_id: {e}"))
                .to_owned()
        })
        .collect()
}

/// Asserts that `entries` are in strictly increasing seq order, all above `since`.
pub fn assert_ascending(entries: &[Value], since: u64) {
    let mut last = since;
    for entry in entries {
        let seq = u64_of(entry, "seq");
        assert!(seq > last, "seq {seq} follows {last}: {entries:?}");
        last = seq;
    }
}

/// An `ack` without its `rid`, to compare acks of different requests.
pub fn without_rid(frame: &Value) -> Value {
    let mut frame = frame.clone();
    if let Some(fields) = frame.as_object_mut() {
        fields.remove("rid");
    }
    frame
}
