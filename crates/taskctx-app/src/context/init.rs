//! `ContextInit`: what a task context is created from (AIECS's `data` dict, typed).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use taskctx_domain::{ChatId, UserId, json_kind};

use super::error::ContextError;

/// The identity and metadata a task context starts with.
///
/// Missing `user_id` means `anonymous`; a missing `chat_id` gets a fresh unique id when the
/// context opens (AIECS gave every such context the shared id `"none"`, so they overwrote each
/// other's history file).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContextInit {
    /// Who the context belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// Which history it continues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<ChatId>,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// Per-key switches: a key whose toggle is `false` is hidden from the active metadata.
    #[serde(default)]
    pub metadata_toggles: BTreeMap<String, bool>,
}

impl ContextInit {
    /// A context for `chat`.
    pub fn for_chat(chat: ChatId) -> Self {
        Self {
            chat_id: Some(chat),
            ..Self::default()
        }
    }

    /// Sets the user.
    #[must_use]
    pub fn user(mut self, user: UserId) -> Self {
        self.user_id = Some(user);
        self
    }

    /// Adds one metadata entry.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: Value) -> Self {
        self.metadata.insert(key.into(), value);
        self
    }

    /// Reads an AIECS `data` dict: `user_id`, `chat_id`, `metadata`, `metadata_toggles`, and a
    /// top-level `aiPreference`, which AIECS copies into the metadata. Other keys are ignored, as
    /// AIECS ignores them; wrong types and invalid ids are errors that name the key.
    pub fn from_aiecs(data: &Value) -> Result<Self, ContextError> {
        let Some(object) = data.as_object() else {
            return Err(ContextError::InvalidData(format!(
                "expected a JSON object, got {}",
                json_kind(data)
            )));
        };
        let id_field = |key: &str| -> Result<Option<String>, ContextError> {
            match object.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                // AIECS stringifies whatever it is given; numbers are common chat ids.
                Some(Value::Number(n)) => Ok(Some(n.to_string())),
                Some(other) => Err(ContextError::InvalidData(format!(
                    "`{key}` must be a string, got {}",
                    json_kind(other)
                ))),
            }
        };
        let user_id = id_field("user_id")?.map(UserId::new).transpose()?;
        let chat_id = id_field("chat_id")?.map(ChatId::new).transpose()?;
        let mut metadata = match object.get("metadata") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => {
                return Err(ContextError::InvalidData(format!(
                    "`metadata` must be an object, got {}",
                    json_kind(other)
                )));
            }
        };
        if let Some(preference) = object.get("aiPreference") {
            metadata.insert("aiPreference".to_owned(), preference.clone());
        }
        let metadata_toggles = match object.get("metadata_toggles") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::Bool(b) => Ok((k.clone(), *b)),
                    other => Err(ContextError::InvalidData(format!(
                        "`metadata_toggles.{k}` must be true or false, got {}",
                        json_kind(other)
                    ))),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(ContextError::InvalidData(format!(
                    "`metadata_toggles` must be an object, got {}",
                    json_kind(other)
                )));
            }
        };
        Ok(Self {
            user_id,
            chat_id,
            metadata,
            metadata_toggles,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_an_aiecs_data_dict_and_copies_ai_preference() {
        let init = ContextInit::from_aiecs(&json!({
            "user_id": "u1",
            "chat_id": 42,
            "metadata": {"a": 1},
            "metadata_toggles": {"a": false},
            "aiPreference": {"model": "x"},
            "ignored": true
        }))
        .unwrap();
        assert_eq!(init.user_id.unwrap(), "u1");
        assert_eq!(init.chat_id.unwrap(), "42");
        assert_eq!(init.metadata["aiPreference"], json!({"model": "x"}));
        assert!(!init.metadata_toggles["a"]);
    }

    #[test]
    fn bad_data_names_the_key() {
        let err = ContextInit::from_aiecs(&json!({"metadata": [1]})).unwrap_err();
        assert!(
            err.to_string().contains("`metadata` must be an object"),
            "{err}"
        );
        let err = ContextInit::from_aiecs(&json!({"chat_id": "../\n"})).unwrap_err();
        assert!(err.to_string().contains("control character"), "{err}");
        let err = ContextInit::from_aiecs(&json!({"metadata_toggles": {"k": "no"}})).unwrap_err();
        assert!(err.to_string().contains("metadata_toggles.k"), "{err}");
        assert!(ContextInit::from_aiecs(&json!("x")).is_err());
    }
}
