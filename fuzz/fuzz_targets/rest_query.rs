//! Fuzzes the REST query parsers (history and sync) of the gateway.
#![no_main]

#[path = "../../gateway/tests/api/hostile_checks.rs"]
mod hostile_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| hostile_checks::check_query(data));
