//! Hostile tokens and query strings, thousands per run from fixed seeds:
//! the same checks as the cargo-fuzz targets `jwt` and `rest_query` (see
//! `bench/fuzz.sh`), run by `cargo test`.

#[path = "../../../proto/tests/hostile/mutate.rs"]
mod mutate;

use jsonwebtoken::{EncodingKey, Header};
use mutate::Mutator;
use serde_json::json;

use crate::hostile_checks::{CHECK_SECRET, check_auth, check_query, check_token};

/// Valid tokens of the checked verifier, the seeds of the mutations.
fn valid_tokens() -> Vec<String> {
    let exp = crate::helpers::unix_now() + 3600;
    let key = EncodingKey::from_secret(CHECK_SECRET.as_bytes());
    [
        json!({"sub": "alice", "exp": exp}),
        json!({"sub": "bob", "exp": exp, "did": "phone", "nbf": exp - 7200}),
    ]
    .iter()
    .map(|claims| jsonwebtoken::encode(&Header::default(), claims, &key).expect("signing"))
    .collect()
}

#[test]
fn mutated_tokens_never_verify_and_never_panic() {
    let auth = check_auth();
    let valid = valid_tokens();
    for token in &valid {
        assert!(auth.verify(token).is_ok(), "the seeds themselves verify");
    }
    let mut m = Mutator::new(0x0007_0c3e);
    for i in 0..20_000 {
        let input = m.mutate(valid[i % valid.len()].as_bytes());
        check_token(&auth, &valid, &input);
    }
}

#[test]
fn mutated_query_strings_are_valid_or_bad_request() {
    let seeds: [&[u8]; 5] = [
        b"before=10&limit=50",
        b"after=0&limit=200",
        b"since=18&limit=100&wait_ms=1000",
        b"limit=1&since=18446744073709551615",
        b"",
    ];
    let mut m = Mutator::new(0x0009_e4e5);
    for i in 0..30_000 {
        check_query(&m.mutate(seeds[i % seeds.len()]));
    }
}
