//! Integration tests: each starts a real Signet server in-process and talks to it over HTTP.

mod config;
mod conformance;
mod helpers;
mod hub_limits;
mod hub_negotiate;
mod hub_protocol;
mod jwt;
mod secrets;
mod shutdown;
mod token_source;
mod ws_client;
