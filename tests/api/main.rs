//! Integration tests: each starts a real Signet server in-process and talks to it over HTTP.

mod config;
mod conformance;
mod helpers;
mod jwt;
mod long_polling;
mod secrets;
mod server_sent_events;
mod shutdown;
mod token_source;
mod transport_client;
mod transports;
