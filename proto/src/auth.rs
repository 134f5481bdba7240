//! Credentials on the wire: every call of a coordinator client carries one in its metadata
//! (a registered worker its secret under [`crate::WORKER_SECRET_HEADER`], the CLI the client
//! token under [`crate::CLIENT_TOKEN_HEADER`]), and the coordinator compares them in
//! constant time.

use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::v1::coordinator_client::CoordinatorClient;

/// Adds one metadata value to every request (or nothing, for a caller without one).
#[derive(Clone)]
pub struct Credential {
    header: &'static str,
    value: Option<AsciiMetadataValue>,
}

/// A secret that cannot travel as gRPC metadata (it is not printable ASCII).
#[derive(Debug, thiserror::Error)]
#[error("the {0} is not printable ASCII")]
pub struct NotAscii(pub &'static str);

impl Credential {
    /// `secret` under `header`; `what` names it in the error.
    pub fn new(header: &'static str, secret: &str, what: &'static str) -> Result<Self, NotAscii> {
        let value = secret.parse().map_err(|_| NotAscii(what))?;
        Ok(Self {
            header,
            value: Some(value),
        })
    }

    /// No credential: calls go out without one (and a coordinator that needs it says so).
    pub fn none(header: &'static str) -> Self {
        Self {
            header,
            value: None,
        }
    }
}

impl Interceptor for Credential {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.value {
            request.metadata_mut().insert(self.header, value.clone());
        }
        Ok(request)
    }
}

/// A coordinator client whose every call carries a [`Credential`].
pub type Client = CoordinatorClient<InterceptedService<Channel, Credential>>;

/// Whether `given` is `expected`, in time that depends on the length only: a refusal's
/// timing teaches no prefix of a secret.
pub fn same_secret(given: Option<&[u8]>, expected: &[u8]) -> bool {
    given.is_some_and(|given| {
        given.len() == expected.len()
            && given
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_bytes_are_the_same_secret() {
        assert!(same_secret(Some(b"abc"), b"abc"));
        assert!(!same_secret(Some(b"abd"), b"abc"));
        assert!(!same_secret(Some(b"ab"), b"abc"));
        assert!(!same_secret(None, b"abc"));
    }
}
