//! How workers and clients reach a coordinator: `http://` in plaintext, `https://` over TLS
//! with the coordinator's certificate verified against a CA the caller names (there is no
//! default trust: a cluster's CA is its own, `kiln tls init` makes one).

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// Why a coordinator URL cannot be connected to as given.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// Not a URL tonic can connect to.
    #[error("{url:?} is not a coordinator URL (http://HOST:PORT or https://HOST:PORT)")]
    Url {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// An `https://` URL without a CA to verify the coordinator with.
    #[error(
        "{url} serves TLS, and no CA certificate was given to verify it: pass --tls-ca-file FILE or set KILN_TLS_CA_FILE"
    )]
    NoCa {
        /// The URL.
        url: String,
    },
    /// The TLS settings were refused.
    #[error("TLS for {url}")]
    Tls {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
}

/// An endpoint for the coordinator at `url`; `ca_pem` verifies an `https://` one.
pub fn endpoint(url: &str, ca_pem: Option<&[u8]>) -> Result<Endpoint, EndpointError> {
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|source| EndpointError::Url {
        url: url.to_owned(),
        source,
    })?;
    if !url.starts_with("https://") {
        return Ok(endpoint);
    }
    let ca = ca_pem.ok_or_else(|| EndpointError::NoCa {
        url: url.to_owned(),
    })?;
    endpoint
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .map_err(|source| EndpointError::Tls {
            url: url.to_owned(),
            source,
        })
}

/// What to try when connecting to `url` failed, in words.
pub fn connect_hint(url: &str) -> &'static str {
    if url.starts_with("https://") {
        "check that the coordinator serves TLS there and that its certificate is signed by the given CA and names this host"
    } else {
        "check that a coordinator listens there; one that serves TLS is reached with its https:// URL and --tls-ca-file"
    }
}
