//! Reading one member of a request's JSON object as a typed value, with a
//! validation error that names the member (and the path inside it) the way
//! OpenAI does, quoting at most a short piece of the client's value.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::error::ValidationError;
use crate::json::JsonObject;
use crate::text::quote;

pub(super) fn required<T: DeserializeOwned>(object: &JsonObject, name: &str) -> Result<T, ValidationError> {
    optional(object, name)?.ok_or_else(|| {
        ValidationError::new(name, format!("Missing required parameter: `{name}`"))
            .with_code("missing_required_parameter")
    })
}

/// The member `name` read as a `T`; absent or `null` is `None`.
pub(super) fn optional<T: DeserializeOwned>(
    object: &JsonObject,
    name: &str,
) -> Result<Option<T>, ValidationError> {
    let Some(text) = object.get(name) else {
        return Ok(None);
    };
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize::<_, Option<T>>(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let param = match path.as_str() {
            "." => name.to_owned(),
            path if path.starts_with('[') => format!("{name}{path}"),
            path => format!("{name}.{path}"),
        };
        invalid(&param, error.inner())
    })
}

/// The error for a member whose value is not what it must be.
fn invalid(param: &str, error: &serde_json::Error) -> ValidationError {
    let param = quote(param).into_owned();
    let message = error.to_string();
    let message = message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(message, _)| message);
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        let param = format!("{param}.{}", quote(field));
        return ValidationError::new(param.clone(), format!("Missing required parameter: `{param}`"))
            .with_code("missing_required_parameter");
    }
    if error.classify() != Category::Data {
        // serde_json reports a value of a type an enum cannot start with
        // (`"role": 5`) as a syntax error; the body itself is valid JSON.
        return ValidationError::new(param.clone(), format!("Invalid type for `{param}`"));
    }
    let detail = match message.rsplit_once(", expected ") {
        Some((value, expected)) => Cow::Owned(format!("{}, expected {expected}", quote(value))),
        None => quote(message),
    };
    ValidationError::new(param.clone(), format!("Invalid value for `{param}`: {detail}"))
}
