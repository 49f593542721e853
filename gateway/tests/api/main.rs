//! Integration tests of the gateway: the real server on port 0 (or the real
//! binary, for kill -9), driven over WebSocket and HTTP like a client.

mod auth;
mod authorization;
mod bad_input;
mod helpers;
mod hostile_checks;
mod hostile_input;
mod jwt_attacks;
mod kill9;
mod limits;
mod notify;
mod presence;
mod raw_http;
mod raw_ws;
mod read_markers;
mod recall_edit;
mod secrets;
mod shutdown;
mod slow_client;
mod typing;
mod web_client;
mod ws_abuse;
mod ws_client;
