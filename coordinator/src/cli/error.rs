//! The CLI's error: what failed, and the exit code that says whose fault it is.

use tonic::Code;

/// A failed command. [`CliError::exit_code`] is the process's exit code; the README's table
/// of exit codes lists the same.
#[derive(Debug)]
pub enum CliError {
    /// The job ran and did not succeed, or was cancelled (exit 1).
    JobFailed(anyhow::Error),
    /// Invalid configuration, arguments or request (exit 2).
    BadInput(anyhow::Error),
    /// Infrastructure: the coordinator, the network, state, processes (exit 3).
    Infra(anyhow::Error),
    /// Already explained on stdout (as JSON, say): only the exit code is left to give.
    Reported(u8),
}

impl CliError {
    /// Exit code of [`CliError::JobFailed`].
    pub const JOB_FAILED: u8 = 1;
    /// Exit code of [`CliError::BadInput`].
    pub const BAD_INPUT: u8 = 2;
    /// Exit code of [`CliError::Infra`].
    pub const INFRA: u8 = 3;

    /// A job that ran and did not succeed.
    pub fn job_failed(error: impl Into<anyhow::Error>) -> Self {
        Self::JobFailed(error.into())
    }

    /// Bad configuration, arguments or request.
    pub fn bad_input(error: impl Into<anyhow::Error>) -> Self {
        Self::BadInput(error.into())
    }

    /// A failure of the infrastructure.
    pub fn infra(error: impl Into<anyhow::Error>) -> Self {
        Self::Infra(error.into())
    }

    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::JobFailed(_) => Self::JOB_FAILED,
            Self::BadInput(_) => Self::BAD_INPUT,
            Self::Infra(_) => Self::INFRA,
            Self::Reported(code) => *code,
        }
    }

    /// What went wrong, with causes; `None` when it is already printed.
    pub fn error(&self) -> Option<&anyhow::Error> {
        match self {
            Self::JobFailed(e) | Self::BadInput(e) | Self::Infra(e) => Some(e),
            Self::Reported(_) => None,
        }
    }
}

/// The error with its causes, one line.
impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.error() {
            Some(error) => f.write_str(&kiln_proto::error_chain(error.as_ref())),
            None => f.write_str("(reported above)"),
        }
    }
}

/// A failed RPC: the coordinator's own message, and the exit code its status code stands for
/// (the request was wrong: 2; the coordinator or the network failed: 3).
impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        let mut message = if status.message().is_empty() {
            status.code().description().to_owned()
        } else {
            status.message().to_owned()
        };
        if let Some(source) = std::error::Error::source(&status) {
            message = format!("{message}: {}", kiln_proto::error_chain(source));
        }
        let error = anyhow::anyhow!(message);
        match status.code() {
            Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unauthenticated
            | Code::PermissionDenied => Self::BadInput(error),
            // Unavailable, DeadlineExceeded, Internal, Unknown, ...: not the request's fault.
            _ => Self::Infra(error),
        }
    }
}

/// Tags an error with what kind of failure it is.
pub(crate) trait ResultExt<T> {
    /// As [`CliError::BadInput`].
    fn bad_input(self) -> Result<T, CliError>;
    /// As [`CliError::Infra`].
    fn infra(self) -> Result<T, CliError>;
}

impl<T, E: Into<anyhow::Error>> ResultExt<T> for Result<T, E> {
    fn bad_input(self) -> Result<T, CliError> {
        self.map_err(CliError::bad_input)
    }

    fn infra(self) -> Result<T, CliError> {
        self.map_err(CliError::infra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_status_codes_map_to_whose_fault_it_is() {
        let code = |code| CliError::from(tonic::Status::new(code, "x")).exit_code();
        for bad in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::FailedPrecondition,
            Code::AlreadyExists,
        ] {
            assert_eq!(code(bad), CliError::BAD_INPUT, "{bad:?}");
        }
        for infra in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Internal,
            Code::Unknown,
        ] {
            assert_eq!(code(infra), CliError::INFRA, "{infra:?}");
        }
        let empty = CliError::from(tonic::Status::new(Code::Unavailable, ""));
        assert_eq!(
            empty.error().map(ToString::to_string).as_deref(),
            Some(Code::Unavailable.description())
        );
    }
}
