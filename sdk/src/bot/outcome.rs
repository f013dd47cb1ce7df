//! What a business send came to, typed after the relay's answers (protocol §8, §14).

use std::time::Duration;

use parley_protocol::ids::MessageId;
use parley_protocol::wire::ErrorCode;

use crate::error::SdkError;

/// What became of one business send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// The relay stored it for delivery (or had already, under the same key).
    Accepted {
        /// Its id (derived from the idempotency key).
        id: MessageId,
    },
    /// The person does not take this message: unknown, not opted in to the category,
    /// outside the care window, or blocking you. The relay does not say which.
    NoConsent,
    /// Too many messages this second: send again after `retry_after`.
    RateLimited {
        /// How long to wait.
        retry_after: Duration,
    },
    /// The business reached its unique recipients for the rolling 24 h; a new
    /// recipient can be reached after `retry_after`.
    ReachExhausted {
        /// When a slot frees.
        retry_after: Duration,
    },
    /// The business is suspended (by the operator, or by reports): stop sending.
    Suspended,
    /// The category is not one the business's certificate lists.
    CategoryNotAllowed,
}

impl SendOutcome {
    /// Sorts a send's result into an outcome; other errors stay errors.
    pub fn from_result(result: Result<MessageId, SdkError>) -> Result<SendOutcome, SdkError> {
        let retry = |ms: Option<u64>| Duration::from_millis(ms.unwrap_or(1000));
        match result {
            Ok(id) => Ok(SendOutcome::Accepted { id }),
            Err(SdkError::NoSuchUser(_)) => Ok(SendOutcome::NoConsent),
            Err(SdkError::Refused {
                code,
                retry_after_ms,
                message,
            }) => match code {
                ErrorCode::Refused | ErrorCode::NotFound => Ok(SendOutcome::NoConsent),
                ErrorCode::RateLimited => Ok(SendOutcome::RateLimited {
                    retry_after: retry(retry_after_ms),
                }),
                ErrorCode::ReachExhausted => Ok(SendOutcome::ReachExhausted {
                    retry_after: retry(retry_after_ms),
                }),
                ErrorCode::Suspended => Ok(SendOutcome::Suspended),
                ErrorCode::CategoryNotAllowed => Ok(SendOutcome::CategoryNotAllowed),
                code => Err(SdkError::Refused {
                    code,
                    message,
                    retry_after_ms,
                }),
            },
            Err(e) => Err(e),
        }
    }

    /// Whether the relay took the message.
    pub fn is_accepted(&self) -> bool {
        matches!(self, SendOutcome::Accepted { .. })
    }
}

/// One line for a person reading a bot's log: `accepted (message 1a2b3c4d5e6f)`,
/// `not taken: ...`, with the wait in seconds where there is one.
impl std::fmt::Display for SendOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendOutcome::Accepted { id } => {
                let hex = id.to_hex();
                write!(f, "accepted (message {})", &hex[..hex.len().min(12)])
            }
            SendOutcome::NoConsent => f.write_str(
                "not taken: no consent to this category, outside the care window, blocked, \
                 or not on this server",
            ),
            SendOutcome::RateLimited { retry_after } => write!(
                f,
                "rate limited: retry in {} s",
                retry_after.as_secs_f64().ceil()
            ),
            SendOutcome::ReachExhausted { retry_after } => write!(
                f,
                "daily reach of new recipients exhausted: retry in {} s",
                retry_after.as_secs_f64().ceil()
            ),
            SendOutcome::Suspended => f.write_str("refused: this business is suspended"),
            SendOutcome::CategoryNotAllowed => {
                f.write_str("refused: the certificate does not list this category")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

    use super::*;

    #[test]
    fn outcomes_read_as_words() {
        let id = MessageId([0xab; 16]);
        assert_eq!(
            SendOutcome::Accepted { id }.to_string(),
            "accepted (message abababababab)"
        );
        let limited = SendOutcome::RateLimited {
            retry_after: Duration::from_millis(1500),
        };
        assert_eq!(limited.to_string(), "rate limited: retry in 2 s");
        assert!(SendOutcome::NoConsent
            .to_string()
            .starts_with("not taken: "));
    }
}
