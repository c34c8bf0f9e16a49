//! Why the dispatcher refuses a call before its method runs, and the one place that words each
//! refusal as the client sees it. The texts are ASP.NET Core's (the official clients' tests and
//! Signet's conformance suite compare them), except the envelope rejections, which are Signet's.

use crate::hub::HubError;
use crate::metrics::Outcome;

/// A call refused before its method ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CallRefusal {
    /// No method of that name on the hub.
    UnknownMethod,
    /// The caller holds none of the method's roles.
    Unauthorized,
    /// A plain `Invocation` of a streaming method.
    StreamingMethodInvoked,
    /// A `StreamInvocation` of a method that returns one result.
    PlainMethodStreamed,
    /// The invocation id of a call still running.
    InvocationIdInUse(String),
    /// Not as many client-to-server streams as the method takes.
    StreamCount { sent: usize, expected: usize },
    /// A client-to-server stream id that is already open.
    StreamIdInUse,
    /// The connection already has `max` streams open.
    TooManyStreams { max: usize },
    /// Not as many arguments as the method has parameters.
    ArgumentCount { sent: usize, expected: usize },
    /// More arguments than a method taking any arguments accepts.
    TooManyArguments { sent: usize, max: usize },
    /// Argument `index` is not of its parameter's type (`expected` names the type).
    ArgumentType {
        index: usize,
        expected: &'static str,
    },
    /// The protocol could not bind the arguments (`detail` says why).
    Unbindable(String),
    /// The signed envelope of a signed method was rejected (`code` is the envelope error code).
    EnvelopeRejected(&'static str),
}

impl CallRefusal {
    /// The completion error text for a refused call to `target`.
    pub(super) fn completion_text(&self, target: &str, detailed: bool) -> String {
        let as_hub_error = match self {
            Self::UnknownMethod => {
                // ASP.NET Core finds the method while binding the arguments, so an unknown one
                // is a binding failure with a HubException, shown even without detailed errors.
                return format!("Failed to invoke '{target}' due to an error on the server. HubException: Method does not exist.");
            }
            Self::Unauthorized => {
                return format!("Failed to invoke '{target}' because user is unauthorized")
            }
            Self::StreamingMethodInvoked => {
                return format!("The client attempted to invoke the streaming '{target}' method with a non-streaming invocation.")
            }
            Self::PlainMethodStreamed => {
                return format!("The client attempted to invoke the non-streaming '{target}' method with a streaming invocation.")
            }
            Self::InvocationIdInUse(id) => return format!("Invocation ID '{id}' is already in use."),
            Self::EnvelopeRejected(code) => {
                return format!("Failed to invoke '{target}': envelope rejected ({code})")
            }
            Self::StreamCount { sent, expected } => HubError::hub(format!(
                "Client sent {sent} stream(s), Hub method expects {expected}."
            )),
            Self::StreamIdInUse => HubError::hub("A stream id is already in use."),
            Self::TooManyStreams { max } => HubError::hub(format!(
                "A connection may have at most {max} streams open at once."
            )),
            Self::ArgumentCount { sent, expected } => HubError::Binding(format!(
                "Invocation provides {sent} argument(s) but target expects {expected}."
            )),
            Self::TooManyArguments { sent, max } => HubError::Binding(format!(
                "Invocation provides {sent} argument(s) but target accepts at most {max}."
            )),
            Self::ArgumentType { index, expected } => HubError::Binding(format!(
                "Error binding arguments. Make sure that the types of the provided values match \
                 the types of the hub method being invoked. Argument {index} must be {expected}."
            )),
            Self::Unbindable(detail) => HubError::Binding(detail.clone()),
        };
        as_hub_error.completion_text(target, detailed)
    }

    /// How the refusal counts in `signet_hub_invocations_total`.
    pub(super) fn outcome(&self) -> Outcome {
        match self {
            Self::Unauthorized => Outcome::Refused,
            Self::EnvelopeRejected(_) => Outcome::EnvelopeRejected,
            _ => Outcome::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CallRefusal::{self, *};

    fn text(refusal: CallRefusal, detailed: bool) -> String {
        refusal.completion_text("Send", detailed)
    }

    #[test]
    fn refusals_the_client_must_understand_read_the_same_with_or_without_details() {
        let cases = [
            (UnknownMethod, "Failed to invoke 'Send' due to an error on the server. HubException: Method does not exist."),
            (Unauthorized, "Failed to invoke 'Send' because user is unauthorized"),
            (StreamingMethodInvoked, "The client attempted to invoke the streaming 'Send' method with a non-streaming invocation."),
            (PlainMethodStreamed, "The client attempted to invoke the non-streaming 'Send' method with a streaming invocation."),
            (InvocationIdInUse("7".into()), "Invocation ID '7' is already in use."),
            (StreamCount { sent: 2, expected: 1 }, "An unexpected error occurred invoking 'Send' on the server. HubException: Client sent 2 stream(s), Hub method expects 1."),
            (StreamIdInUse, "An unexpected error occurred invoking 'Send' on the server. HubException: A stream id is already in use."),
            (TooManyStreams { max: 3 }, "An unexpected error occurred invoking 'Send' on the server. HubException: A connection may have at most 3 streams open at once."),
            (EnvelopeRejected("replayed"), "Failed to invoke 'Send': envelope rejected (replayed)"),
        ];
        for (refusal, expected) in cases {
            assert_eq!(text(refusal.clone(), false), expected, "{refusal:?}");
            assert_eq!(text(refusal.clone(), true), expected, "{refusal:?}");
        }
    }

    #[test]
    fn binding_refusals_show_their_detail_only_with_detailed_errors() {
        let hidden = "Failed to invoke 'Send' due to an error on the server.";
        let cases = [
            (ArgumentCount { sent: 0, expected: 1 }, "Invocation provides 0 argument(s) but target expects 1."),
            (ArgumentType { index: 1, expected: "a string" }, "Error binding arguments. Make sure that the types of the provided values match the types of the hub method being invoked. Argument 1 must be a string."),
            (TooManyArguments { sent: 3, max: 2 }, "Invocation provides 3 argument(s) but target accepts at most 2."),
            (Unbindable("not a number".into()), "not a number"),
        ];
        for (refusal, detail) in cases {
            assert_eq!(text(refusal.clone(), false), hidden, "{refusal:?}");
            assert_eq!(
                text(refusal.clone(), true),
                format!("{hidden} InvalidDataException: {detail}"),
            );
        }
    }

    #[test]
    fn only_role_and_envelope_refusals_count_apart_from_invalid_calls() {
        use crate::metrics::Outcome;
        assert_eq!(Unauthorized.outcome(), Outcome::Refused);
        assert_eq!(
            EnvelopeRejected("malformed").outcome(),
            Outcome::EnvelopeRejected
        );
        assert_eq!(UnknownMethod.outcome(), Outcome::Invalid);
        assert_eq!(
            ArgumentCount {
                sent: 1,
                expected: 2
            }
            .outcome(),
            Outcome::Invalid
        );
    }
}
