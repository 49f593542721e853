//! Fuzzes the gateway's token verification: nothing the fuzzer writes may
//! verify (it cannot know the HMAC secret), and nothing may panic.
#![no_main]

#[path = "../../gateway/tests/api/hostile_checks.rs"]
mod hostile_checks;

use std::sync::LazyLock;

use gateway::auth::Auth;

static AUTH: LazyLock<Auth> = LazyLock::new(hostile_checks::check_auth);

libfuzzer_sys::fuzz_target!(|data: &[u8]| hostile_checks::check_token(&AUTH, &[], data));
