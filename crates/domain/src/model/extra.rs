//! The fields a struct of the wire model does not name.

/// Fields a struct does not name, kept verbatim.
pub type Extra = serde_json::Map<String, serde_json::Value>;
