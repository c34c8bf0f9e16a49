//! Integration tests: each starts a real Signet server in-process and talks to it over HTTP.

mod browser;
mod cli;
mod config;
mod conformance;
mod demo;
mod devices;
mod helpers;
mod hub_limits;
mod hub_negotiate;
mod hub_protocol;
mod hub_rules;
mod jwt;
mod lifetime;
mod login;
mod login_throttling;
mod long_polling;
mod message_key;
mod restart;
mod secrets;
mod server_sent_events;
mod sessions;
mod shutdown;
mod token_source;
mod transport_client;
mod transports;
mod ws_client;
