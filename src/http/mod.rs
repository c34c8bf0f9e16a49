//! HTTP plumbing shared by every route: the JSON error type, request logging, and the small
//! routes that belong to no layer (health).

mod error;
pub mod health;
pub mod metrics;
pub mod request_log;

pub use error::ApiError;
