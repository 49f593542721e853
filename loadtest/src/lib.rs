//! The load tester of the chat backend: simulated clients that speak the
//! client protocol (PROTOCOL.md), the scenarios they run, the exactly-once
//! checker, the report, and the baseline relay server.

pub mod checker;
pub mod client;
pub mod handoff;
pub mod relay;
pub mod report;
pub mod run;
pub mod scenario;
pub mod stats;
pub mod target;
