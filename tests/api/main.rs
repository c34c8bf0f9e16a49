//! Integration tests: each starts a real Signet server in-process and talks to it over HTTP.

mod cli;
mod config;
mod devices;
mod helpers;
mod jwt;
mod login;
mod message_key;
mod restart;
mod secrets;
mod sessions;
mod token_source;
