//! The checks a request passes before any provider sees it. Each failure names
//! its `param` the way OpenAI does (`messages[1].content`).

use std::ops::RangeInclusive;

use crate::error::ValidationError;
use crate::model::{ChatRequest, ContentFacts, MessageFacts, Role};

/// The most choices one request may ask for, as OpenAI allows.
pub const MAX_CHOICES: i64 = 128;

impl ChatRequest {
    /// Checks the request against the OpenAI contract. The other APIs'
    /// requests are checked as they are parsed
    /// ([`ChatRequest::parse_for`]).
    ///
    /// # Errors
    /// The first [`ValidationError`] found, naming its field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.endpoint() != crate::model::Endpoint::Chat {
            return Ok(());
        }
        let fields = self.fields();
        if fields.model.trim().is_empty() {
            return Err(ValidationError::new(
                "model",
                "`model` must be a non-empty string",
            ));
        }
        if fields.messages.is_empty() {
            return Err(ValidationError::new(
                "messages",
                "`messages` must contain at least one message",
            ));
        }
        for (index, message) in fields.messages.iter().enumerate() {
            validate_message(index, message)?;
        }
        in_range("temperature", fields.temperature, 0.0..=2.0)?;
        in_range("top_p", fields.top_p, 0.0..=1.0)?;
        in_range("frequency_penalty", fields.frequency_penalty, -2.0..=2.0)?;
        in_range("presence_penalty", fields.presence_penalty, -2.0..=2.0)?;
        at_least_one("max_tokens", fields.max_tokens)?;
        at_least_one("max_completion_tokens", fields.max_completion_tokens)?;
        at_least_one("n", fields.n)?;
        if let Some(n) = fields.n.filter(|n| *n > MAX_CHOICES) {
            return Err(ValidationError::new(
                "n",
                format!("`n` must be at most {MAX_CHOICES}, got {n}"),
            ));
        }
        Ok(())
    }
}

fn validate_message(index: usize, message: &MessageFacts) -> Result<(), ValidationError> {
    let param = |field: &str| format!("messages[{index}].{field}");
    match (&message.content, message.role) {
        (ContentFacts::None, Role::Assistant) if message.tool_calls || message.function_call => {}
        (ContentFacts::None, Role::Assistant) => {
            return Err(ValidationError::new(
                param("content"),
                format!("messages[{index}]: an assistant message needs `content` or `tool_calls`"),
            ));
        }
        (ContentFacts::None, role) => {
            return Err(ValidationError::new(
                param("content"),
                format!("messages[{index}]: a {role} message needs `content`"),
            ));
        }
        (ContentFacts::Parts(parts), _) => {
            for (part_index, typed) in parts.iter().enumerate() {
                if !typed {
                    return Err(ValidationError::new(
                        format!("messages[{index}].content[{part_index}]"),
                        format!(
                            "messages[{index}].content[{part_index}] must be an object with a string `type` \
                             (\"text\", \"image_url\", ...)"
                        ),
                    ));
                }
            }
        }
        (ContentFacts::Text, _) => {}
    }
    if message.role == Role::Tool && !message.tool_call_id {
        return Err(ValidationError::new(
            param("tool_call_id"),
            format!("messages[{index}]: a tool message needs `tool_call_id`"),
        ));
    }
    Ok(())
}

fn in_range(param: &str, value: Option<f64>, range: RangeInclusive<f64>) -> Result<(), ValidationError> {
    match value {
        Some(value) if !range.contains(&value) => Err(ValidationError::new(
            param,
            format!(
                "`{param}` must be between {} and {}, got {value}",
                range.start(),
                range.end()
            ),
        )),
        _ => Ok(()),
    }
}

fn at_least_one(param: &str, value: Option<i64>) -> Result<(), ValidationError> {
    match value {
        Some(value) if value < 1 => Err(ValidationError::new(
            param,
            format!("`{param}` must be at least 1, got {value}"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn base() -> Value {
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    }

    fn with(patch: Value) -> ChatRequest {
        let mut body = base();
        for (key, value) in patch.as_object().unwrap() {
            body[key] = value.clone();
        }
        ChatRequest::parse(serde_json::to_vec(&body).unwrap().into()).unwrap()
    }

    #[test]
    fn valid_requests_pass() {
        let cases = [
            json!({}),
            json!({"temperature": 0, "top_p": 1, "frequency_penalty": -2, "presence_penalty": 2}),
            json!({"temperature": 2.0, "max_tokens": 1, "max_completion_tokens": 4096, "n": 128}),
            json!({"messages": [
                {"role": "system", "content": "be brief"},
                {"role": "developer", "content": "really"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function"}]},
                {"role": "tool", "content": "42", "tool_call_id": "c1"},
                {"role": "assistant", "content": "done", "name": "bot"}
            ]}),
        ];
        for case in cases {
            let request = with(case.clone());
            assert_eq!(request.validate(), Ok(()), "{case}");
        }
    }

    #[test]
    fn invalid_requests_fail_naming_their_param() {
        let cases = [
            (json!({"model": ""}), "model"),
            (json!({"model": "  "}), "model"),
            (json!({"messages": []}), "messages"),
            (json!({"messages": [{"role": "user"}]}), "messages[0].content"),
            (
                json!({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": null}]}),
                "messages[1].content",
            ),
            (
                json!({"messages": [{"role": "tool", "content": "x"}]}),
                "messages[0].tool_call_id",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"text": "no type"}]}]}),
                "messages[0].content[0]",
            ),
            (json!({"temperature": 2.01}), "temperature"),
            (json!({"temperature": -0.1}), "temperature"),
            (json!({"top_p": 1.5}), "top_p"),
            (json!({"frequency_penalty": -2.5}), "frequency_penalty"),
            (json!({"presence_penalty": 3}), "presence_penalty"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"max_completion_tokens": -1}), "max_completion_tokens"),
            (json!({"n": 0}), "n"),
            (json!({"n": 129}), "n"),
        ];
        for (case, param) in cases {
            let err = with(case.clone()).validate().unwrap_err();
            assert_eq!(err.param.as_deref(), Some(param), "{case}: {}", err.message);
            assert!(
                err.message.contains(param.split('[').next().unwrap_or(param)),
                "{case}: {}",
                err.message
            );
        }
    }

    #[test]
    fn an_unknown_role_is_rejected_when_parsing() {
        let body = json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]});
        let err = ChatRequest::parse(serde_json::to_vec(&body).unwrap().into()).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages[0].role"));
        assert!(err.message.contains("unknown variant `robot`"), "{err}");
    }
}
