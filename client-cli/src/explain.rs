//! What each refusal means for the person at the keyboard: one sentence per server
//! error code that a command can meet, with the wait when the server gives one, and
//! for a send the client itself refused (a verified contact's identity changed).

use parley_protocol::business::Category;
use parley_protocol::e2e::E2eError;
use parley_protocol::ids::Handle;
use parley_protocol::wire::ErrorCode;
use parley_sdk::SdkError;

/// The error of a send to `to` (in `category`, for a business): the SDK's, or, when the
/// client refused it because `to` belonged to a verified contact and now names another
/// account, what to do about it, naming the handle; `parley` is the command as the person
/// runs it. A send without a category that the relay refuses was blocked by the
/// recipient (the relay does not say so, and neither does this): categories are not
/// mentioned to a person who never used one.
pub fn send_error(
    error: SdkError,
    to: &Handle,
    category: Option<Category>,
    parley: &str,
) -> anyhow::Error {
    match error {
        SdkError::Refused {
            code: ErrorCode::Refused,
            ..
        } if category.is_none() => {
            anyhow::anyhow!("not delivered: {to} does not accept messages from you")
        }
        SdkError::Crypto(E2eError::IdentityChanged { .. }) => anyhow::anyhow!(
            "not sent: you verified {to}, but the server now names another account for it; \
             compare safety numbers ({parley} safety-number {to}), and to write to the new \
             account anyway, run: {parley} unverify {to}"
        ),
        other => other.into(),
    }
}

/// For a profile without an account, the command that registers it as the person runs
/// it (`parley --profile NAME register`); `None` for any other error.
pub fn not_registered(error: &anyhow::Error, parley: &str) -> Option<String> {
    matches!(error.downcast_ref::<SdkError>()?, SdkError::NotRegistered)
        .then(|| format!("not registered: run `{parley} register <handle>` first"))
}

/// A sentence for `error`, when it is a refusal worth explaining; `None` otherwise.
pub fn refusal(error: &anyhow::Error) -> Option<String> {
    let SdkError::Refused {
        code,
        retry_after_ms,
        ..
    } = error.downcast_ref::<SdkError>()?
    else {
        return None;
    };
    let retry = retry_after_ms
        .map(|ms| format!("; retry in {} s", ms.div_ceil(1000)))
        .unwrap_or_default();
    Some(match code {
        ErrorCode::Refused => "not delivered: the recipient does not accept messages from you \
                               in this category"
            .to_owned(),
        ErrorCode::ReachExhausted => {
            format!("not sent: this business reached its daily limit of new recipients{retry}")
        }
        ErrorCode::RateLimited => format!("too many requests{retry}"),
        ErrorCode::Suspended => {
            "not sent: this business account is suspended; contact the server's operator".to_owned()
        }
        ErrorCode::CategoryNotAllowed => "not sent: a business must send with --category, \
                                          in a category its certificate lists"
            .to_owned(),
        ErrorCode::NotABusiness => "not sent: --category is only for verified business \
                                    accounts, and this account is not one; send without \
                                    --category"
            .to_owned(),
        ErrorCode::InvalidConsent => "the server refused the consent record: forged, replayed, \
                                      expired, dated in the future, or the account is not a \
                                      verified business"
            .to_owned(),
        ErrorCode::NameReserved => "that name is reserved: it looks like a verified business's \
                                    name or contains a check mark"
            .to_owned(),
        _ => return None,
    })
}
