//! Fuzzes `proto::parse_client_frame` with the checks of the frame tests.
#![no_main]

#[path = "../../proto/tests/hostile/frame_checks.rs"]
mod frame_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| frame_checks::check_frame(data));
