//! Integration tests: each starts a real Signet server in-process and talks to it over HTTP.

mod cli;
mod config;
mod conformance;
mod devices;
mod helpers;
mod hub_limits;
mod hub_negotiate;
mod hub_protocol;
mod jwt;
mod lifetime;
mod login;
mod message_key;
mod restart;
mod secrets;
mod sessions;
mod shutdown;
mod token_source;
mod ws_client;
