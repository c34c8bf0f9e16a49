//! Integration tests: each starts a real Signet server in-process and talks to it over HTTP.

mod config;
mod conformance;
mod helpers;
mod jwt;
mod secrets;
mod shutdown;
mod token_source;
