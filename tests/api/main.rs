//! Integration tests: each starts a real Signet server in-process and talks to it over HTTP.

mod config;
mod helpers;
mod hub_limits;
mod hub_negotiate;
mod hub_protocol;
mod jwt;
mod secrets;
mod token_source;
mod ws_client;
