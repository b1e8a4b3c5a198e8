//! Clients of the outside world, built once per process and shared through `Ctx`, and the one
//! rendering of an AWS SDK error that every AWS client uses for its messages.

pub mod aws;
pub mod dns;
pub mod pg;
pub mod pgtools;
pub mod rds;

// Smithy's types, which every SDK crate re-exports: these fit RDS errors as well as Route 53's.
use aws_sdk_route53::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// An SDK error as one line: the service's code and message (`NoSuchHostedZone: No hosted zone
/// found with ID: Z1`), or for a request that got no answer, why. Used by dns.rs and rds.rs. Never
/// a secret: a signature error's message quotes the canonical request, which holds the session
/// token of temporary credentials, so only its code is kept.
pub(crate) fn aws_problem<E, R>(service: &str, e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match (e.code(), e.message()) {
        (Some(c @ ("SignatureDoesNotMatch" | "IncompleteSignature")), _) => {
            format!("{c}: {service} refused the request's signature (check this host's clock and AWS credentials)")
        }
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        (None, _) => match e {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
                format!("{service} could not be reached: {}", DisplayErrorContext(e))
            }
            _ => DisplayErrorContext(e).to_string(),
        },
    }
}
