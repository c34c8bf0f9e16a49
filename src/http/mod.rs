//! HTTP plumbing shared by every route: the JSON error type, the JSON body extractor, request
//! logging, and the small routes that belong to no layer (health).

pub mod client_addr;
mod error;
pub mod health;
pub mod json;
pub mod metrics;
pub mod request_log;

pub use client_addr::{client_addr, ClientAddresses};
pub use error::ApiError;
pub use json::{Json, JsonLimit};
