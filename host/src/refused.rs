//! Why a control request was not carried out. Each kind is an `ErrorCode` on the wire; the
//! message says what was wrong and what to do.

use trellis_claims::ClaimsError;
use trellis_lattice::signing::RequestDenied;
use trellis_proto::{self as pb, ErrorCode};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// A field of the request is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// The named component or provider does not run here.
    #[error("{0}")]
    NotFound(String),
    /// Another component or provider runs under the id.
    #[error("{0}")]
    AlreadyExists(String),
    /// The artifact is not a usable component.
    #[error("{0}")]
    InvalidComponent(String),
    /// The artifact could not be fetched.
    #[error("{0}")]
    ArtifactUnavailable(String),
    /// The provider could not be started.
    #[error("{0}")]
    ProviderFailed(String),
    /// Refused by operator, claims or policy checks.
    #[error("{0}")]
    Denied(String),
    /// A failure of this host (see its log).
    #[error("{0}")]
    Internal(String),
    /// More control requests than the host checks at a time.
    #[error("{0}")]
    Busy(String),
    /// The host drains and takes no new work.
    #[error("{0}")]
    Draining(String),
}

impl Refused {
    /// The code on the wire.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refused::BadRequest(_) => ErrorCode::BadRequest,
            Refused::NotFound(_) => ErrorCode::NotFound,
            Refused::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Refused::InvalidComponent(_) => ErrorCode::InvalidComponent,
            Refused::ArtifactUnavailable(_) => ErrorCode::ArtifactUnavailable,
            Refused::ProviderFailed(_) => ErrorCode::ProviderFailed,
            Refused::Denied(_) => ErrorCode::Denied,
            Refused::Internal(_) => ErrorCode::Internal,
            Refused::Busy(_) => ErrorCode::Busy,
            Refused::Draining(_) => ErrorCode::ShuttingDown,
        }
    }

    /// The reply status.
    pub fn status(&self) -> pb::Status {
        pb::Status { code: self.code().into(), message: self.to_string() }
    }
}

impl From<ClaimsError> for Refused {
    fn from(e: ClaimsError) -> Self {
        Refused::Denied(e.to_string())
    }
}

impl From<RequestDenied> for Refused {
    fn from(e: RequestDenied) -> Self {
        Refused::Denied(e.to_string())
    }
}

/// What a control verb returns.
pub(crate) type ControlResult = Result<(), Refused>;
