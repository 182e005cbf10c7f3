//! Endpoints.
/// Bad endpoint.
#[derive(Debug, thiserror::Error)]
#[error("bad endpoint")]
pub struct EndpointError;
