//! The gateway: WebSocket sessions, JWT auth, REST routes, notify routing to
//! local sockets, draining. `App::build(config)` then `App::run(shutdown)`.

mod app;
pub mod auth;
mod background;
mod budget;
mod close;
pub mod config;
mod error;
mod extract;
pub mod head;
pub mod hot_metrics;
pub mod hub;
mod linger;
mod ops;
pub mod presence;
pub mod query;
pub mod read_rate;
mod rest;
mod schema;
pub mod session;
pub mod slots;
mod startup;
pub mod state;
pub mod typing;
mod typing_throttle;
mod unread;
mod ws;

pub use config::Config;
pub use error::{Error, Result};
pub use startup::App;
