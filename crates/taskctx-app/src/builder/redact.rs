//! Redaction (SPEC R6.6): the `Redactor` port and the default rule-based redactor.
//!
//! Every piece of text that reaches an `AgentTaskInput` (ids, goals, outputs, summaries, error
//! messages, caller inputs) passes through a [`Redactor`] first. The default [`RuleRedactor`]
//! replaces
//!
//! - values under sensitive keys, in JSON (any nesting) and in text (`key: value`, `key=value`,
//!   quoted or not, and HTTP header lines), where a key is sensitive when its lower-cased
//!   letters and digits contain a listed name (`password`, `passwd`, `pwd`, `secret`, `token`,
//!   `api_key`, `apikey`, `access_key`, `authorization`, `cookie`, `private_key`, `credential`),
//!   so `x-api-key`, `client_secret`, `AWS_SECRET_ACCESS_KEY` and `sessionToken` are covered;
//! - secret-shaped strings anywhere: OpenAI/Anthropic `sk-…`, Stripe `sk_live_…`, Google `AIza…`,
//!   AWS `AKIA…`, GitHub `ghp_…`/`github_pat_…`, Slack `xox…-` tokens and webhooks, JWTs,
//!   `Bearer …` credentials, PEM private-key blocks and passwords in connection URLs,
//!
//! with `[REDACTED:<kind>]`. Rules are data ([`RedactionRules`]): extend or replace them and
//! compile once with [`RuleRedactor::new`]. The default set is compiled once per process.
//!
//! The rules err on the side of removing too much: prose such as "password: must be rotated"
//! loses the word after the colon. Numbers under keys whose only sensitive name is `token`
//! (`max_tokens`, `total_tokens`, lists of token ids) are kept, since token counts are common and
//! harmless.

use std::borrow::Cow;
use std::fmt::{self, Debug};
use std::sync::{Arc, LazyLock};

use regex::{Captures, Regex, RegexSet};
use serde::{Deserialize, Serialize};
use taskctx_domain::{Map, Value};

/// Removes secrets from text and JSON before they reach a context.
///
/// # Contract
///
/// Implementations are pure and deterministic (same input, same output), never panic, and are
/// idempotent on their own output (redacting redacted text changes nothing), so the builder may
/// apply them more than once.
pub trait Redactor: Send + Sync + Debug {
    /// `text` with secrets replaced; borrowed when nothing was found.
    fn redact_text<'a>(&self, text: &'a str) -> Cow<'a, str>;

    /// `value` with sensitive keys' values and secret-shaped strings replaced; borrowed when
    /// nothing was found.
    fn redact_json<'a>(&self, value: &'a Value) -> Cow<'a, Value>;
}

/// A key name whose values are secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensitiveKey {
    /// The name, e.g. `api_key`. Matching ignores case and every character that is not a letter
    /// or digit, on both sides, and looks for it anywhere in the key.
    pub name: String,
    /// The `<kind>` in `[REDACTED:<kind>]`.
    pub kind: String,
}

/// A regular expression for secret-shaped text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretPattern {
    /// The `<kind>` in `[REDACTED:<kind>]`.
    pub kind: String,
    /// The pattern (Rust `regex` syntax). When it has a group named `secret`, only that group is
    /// replaced (e.g. the password of a URL); otherwise the whole match.
    pub pattern: String,
}

/// A configurable rule set for [`RuleRedactor`].
///
/// ```
/// use taskctx_app::builder::{Redactor, RedactionRules, RuleRedactor};
/// let rules = RedactionRules::default()
///     .with_key("ssn", "ssn")
///     .with_pattern("employee_id", r"\bEMP-\d{6}\b");
/// let redactor = RuleRedactor::new(rules).unwrap();
/// assert_eq!(redactor.redact_text("badge EMP-123456"), "badge [REDACTED:employee_id]");
/// assert_eq!(redactor.redact_text("ssn=123-45-6789"), "ssn=[REDACTED:ssn]");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RedactionRules {
    /// Key names whose values are replaced.
    pub sensitive_keys: Vec<SensitiveKey>,
    /// Secret shapes replaced anywhere, applied in order.
    pub patterns: Vec<SecretPattern>,
    /// Keep numbers under keys whose only sensitive name is `token` (token counts).
    pub keep_token_counts: bool,
}

impl Default for RedactionRules {
    fn default() -> Self {
        let key = |name: &str, kind: &str| SensitiveKey {
            name: name.into(),
            kind: kind.into(),
        };
        let pattern = |kind: &str, pattern: &str| SecretPattern {
            kind: kind.into(),
            pattern: pattern.into(),
        };
        Self {
            sensitive_keys: vec![
                key("password", "password"),
                key("passwd", "password"),
                key("pwd", "password"),
                key("secret", "secret"),
                key("token", "token"),
                key("api_key", "api_key"),
                key("access_key", "access_key"),
                key("authorization", "authorization"),
                key("cookie", "cookie"),
                key("private_key", "private_key"),
                key("credential", "credential"),
            ],
            patterns: vec![
                // First the shapes that span several lines or contain other shapes.
                pattern(
                    "private_key",
                    r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----(?s:.*?)(?:-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|\z)",
                ),
                pattern(
                    "jwt",
                    r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
                ),
                pattern(
                    "url_password",
                    r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]+:(?P<secret>[^\s/@]+)@",
                ),
                pattern(
                    "bearer_token",
                    r"\b[Bb](?:earer|EARER)\s+(?P<secret>[A-Za-z0-9._~+/-]{16,}=*)",
                ),
                pattern("api_key", r"\bsk-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_-]{20,}"),
                pattern("api_key", r"\b[rs]k_(?:live|test)_[0-9A-Za-z]{16,}"),
                pattern("api_key", r"\bAIza[0-9A-Za-z_-]{35}"),
                pattern("aws_access_key", r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b"),
                pattern(
                    "github_token",
                    r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}",
                ),
                pattern("github_token", r"\bgithub_pat_[A-Za-z0-9_]{22,}"),
                pattern("slack_token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
                pattern(
                    "slack_webhook",
                    r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+",
                ),
            ],
            keep_token_counts: true,
        }
    }
}

impl RedactionRules {
    /// No rules at all: nothing is redacted. For tests and trusted data only.
    pub fn empty() -> Self {
        Self {
            sensitive_keys: Vec::new(),
            patterns: Vec::new(),
            keep_token_counts: true,
        }
    }

    /// Adds a sensitive key name.
    pub fn with_key(mut self, name: impl Into<String>, kind: impl Into<String>) -> Self {
        self.sensitive_keys.push(SensitiveKey {
            name: name.into(),
            kind: kind.into(),
        });
        self
    }

    /// Adds a secret pattern (applied after the existing ones).
    pub fn with_pattern(mut self, kind: impl Into<String>, pattern: impl Into<String>) -> Self {
        self.patterns.push(SecretPattern {
            kind: kind.into(),
            pattern: pattern.into(),
        });
        self
    }
}

/// A rule set that does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("redaction rule {kind:?} does not compile: {detail}")]
pub struct RedactionRuleError {
    /// The rule's kind.
    pub kind: String,
    /// The regex compiler's message.
    pub detail: String,
}

/// The default [`Redactor`]: compiled [`RedactionRules`]. Cheap to clone.
#[derive(Clone)]
pub struct RuleRedactor {
    compiled: Arc<Compiled>,
}

struct Compiled {
    /// Normalised key names and their kinds.
    keys: Vec<(String, String)>,
    /// Patterns in application order, each with its kind and whether it has a `secret` group.
    patterns: Vec<(String, Regex, bool)>,
    /// `key: value` assignments in text, for every sensitive name.
    assignment: Option<Regex>,
    /// `Authorization:` / `Cookie:` header lines, whose whole value is secret.
    header: Option<Regex>,
    /// One pass that says which of `patterns` (then `header`, `assignment`) may match.
    set: RegexSet,
    keep_token_counts: bool,
    /// Set only when the default rules failed to compile: everything is hidden.
    fail_closed: bool,
}

const UNVERIFIED: &str = "[REDACTED:unverified]";

static DEFAULT_RULES: LazyLock<Option<Arc<Compiled>>> =
    LazyLock::new(|| Compiled::new(&RedactionRules::default()).ok().map(Arc::new));

impl RuleRedactor {
    /// Compiles `rules`.
    pub fn new(rules: RedactionRules) -> Result<Self, RedactionRuleError> {
        Ok(Self {
            compiled: Arc::new(Compiled::new(&rules)?),
        })
    }
}

impl Default for RuleRedactor {
    /// The default rule set, compiled once per process.
    fn default() -> Self {
        match DEFAULT_RULES.as_ref() {
            Some(compiled) => Self {
                compiled: Arc::clone(compiled),
            },
            // The default rules are tested to compile; should that ever break, fail closed:
            // a redactor that hides everything rather than one that hides nothing.
            None => Self {
                compiled: Arc::new(Compiled::fail_closed()),
            },
        }
    }
}

impl Debug for RuleRedactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleRedactor")
            .field("keys", &self.compiled.keys.len())
            .field("patterns", &self.compiled.patterns.len())
            .finish()
    }
}

fn normalise_key(key: &str) -> String {
    key.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// A pattern for `name` that tolerates one separator between any two of its characters, so
/// `api_key` also matches `apikey`, `api-key`, `API.KEY` and `api key`.
fn tolerant(name: &str) -> String {
    let normalised = normalise_key(name);
    let mut out = String::new();
    for (i, c) in normalised.chars().enumerate() {
        if i > 0 {
            out.push_str("[-_. ]?");
        }
        out.push_str(&regex::escape(&c.to_string()));
    }
    out
}

fn compile(kind: &str, pattern: &str) -> Result<Regex, RedactionRuleError> {
    Regex::new(pattern).map_err(|e| RedactionRuleError {
        kind: kind.into(),
        detail: e.to_string(),
    })
}

impl Compiled {
    fn new(rules: &RedactionRules) -> Result<Self, RedactionRuleError> {
        let keys: Vec<(String, String)> = rules
            .sensitive_keys
            .iter()
            .map(|k| (normalise_key(&k.name), k.kind.clone()))
            .filter(|(name, _)| !name.is_empty())
            .collect();
        let mut patterns = Vec::with_capacity(rules.patterns.len());
        let mut sources: Vec<String> = Vec::with_capacity(rules.patterns.len() + 2);
        for p in &rules.patterns {
            let regex = compile(&p.kind, &p.pattern)?;
            let has_secret = regex.capture_names().any(|n| n == Some("secret"));
            sources.push(p.pattern.clone());
            patterns.push((p.kind.clone(), regex, has_secret));
        }
        let (assignment, header) = if keys.is_empty() {
            (None, None)
        } else {
            let names = keys
                .iter()
                .map(|(name, _)| tolerant(name))
                .collect::<Vec<_>>()
                .join("|");
            // A key (letters, digits, `_.-`, optionally quoted) that contains a sensitive name,
            // then `:` or `=`, then a quoted value, or an optional auth scheme and an unquoted
            // value running to whitespace, a separator or a bracket.
            let assignment = format!(
                r#"(?i)(?P<key>[a-z0-9_.-]*(?:{names})[a-z0-9_.-]*)["']?[ \t]*[:=][ \t]*(?P<secret>"(?:[^"\\\n]|\\.)*"|'[^'\n]*'|(?:(?:basic|bearer|digest|token|negotiate)[ \t]+)?[^\s,;&"'<>{{}}\[\]]+)"#
            );
            let header = r"(?im)^[ \t]*(?P<key>(?:proxy-)?authorization|cookie|set-cookie|x-api-key|x-auth-token)[ \t]*:[ \t]*(?P<secret>[^\r\n]+)".to_string();
            let header_regex = compile("header", &header)?;
            let assignment_regex = compile("assignment", &assignment)?;
            sources.push(header);
            sources.push(assignment);
            (Some(assignment_regex), Some(header_regex))
        };
        let set = RegexSet::new(&sources).map_err(|e| RedactionRuleError {
            kind: "rule set".into(),
            detail: e.to_string(),
        })?;
        Ok(Self {
            keys,
            patterns,
            assignment,
            header,
            set,
            keep_token_counts: rules.keep_token_counts,
            fail_closed: false,
        })
    }

    fn fail_closed() -> Self {
        Self {
            keys: Vec::new(),
            patterns: Vec::new(),
            assignment: None,
            header: None,
            set: RegexSet::empty(),
            keep_token_counts: true,
            fail_closed: true,
        }
    }

    /// The kind of a sensitive key, and whether `token` is the only name it contains.
    fn key_kind(&self, key: &str) -> Option<(&str, bool)> {
        let normalised = normalise_key(key);
        let mut found: Option<&str> = None;
        let mut only_token = true;
        for (name, kind) in &self.keys {
            if normalised.contains(name.as_str()) {
                if found.is_none() {
                    found = Some(kind);
                }
                if name != "token" {
                    only_token = false;
                }
            }
        }
        found.map(|kind| (kind, only_token))
    }

    fn redact_text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if text.is_empty() {
            return Cow::Borrowed(text);
        }
        let matches = self.set.matches(text);
        if !matches.matched_any() {
            return Cow::Borrowed(text);
        }
        let mut out: Cow<'a, str> = Cow::Borrowed(text);
        for (index, (kind, regex, has_secret)) in self.patterns.iter().enumerate() {
            if matches.matched(index) {
                out = replace(out, regex, |_| Some(kind.as_str()), *has_secret);
            }
        }
        let n = self.patterns.len();
        if let Some(header) = &self.header
            && matches.matched(n)
        {
            out = replace(
                out,
                header,
                |caps| {
                    let key = caps.name("key").map_or("", |m| m.as_str());
                    Some(if key.to_ascii_lowercase().contains("cookie") {
                        "cookie"
                    } else if key.to_ascii_lowercase().contains("authorization") {
                        "authorization"
                    } else {
                        "api_key"
                    })
                },
                true,
            );
        }
        if let Some(assignment) = &self.assignment
            && matches.matched(n + 1)
        {
            out = replace(
                out,
                assignment,
                |caps| {
                    let key = caps.name("key").map_or("", |m| m.as_str());
                    let value = caps.name("secret").map_or("", |m| m.as_str());
                    let (kind, only_token) = self.key_kind(key)?;
                    // A count, possibly ending a sentence: `tokens: 512.`
                    let number = value.trim_end_matches(['.', ',']);
                    let digits = !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit());
                    if only_token && self.keep_token_counts && digits {
                        return None;
                    }
                    Some(kind)
                },
                true,
            );
        }
        out
    }

    fn redact_json<'a>(&self, value: &'a Value) -> Cow<'a, Value> {
        match self.redact_value(value) {
            Some(changed) => Cow::Owned(changed),
            None => Cow::Borrowed(value),
        }
    }

    /// `None` when nothing changed, so unchanged subtrees are never copied.
    fn redact_value(&self, value: &Value) -> Option<Value> {
        match value {
            Value::String(s) => match self.redact_text(s) {
                Cow::Borrowed(_) => None,
                Cow::Owned(changed) => Some(Value::String(changed)),
            },
            Value::Array(items) => {
                let changed: Vec<Option<Value>> =
                    items.iter().map(|v| self.redact_value(v)).collect();
                if changed.iter().all(Option::is_none) {
                    return None;
                }
                Some(Value::Array(
                    changed
                        .into_iter()
                        .zip(items)
                        .map(|(c, original)| c.unwrap_or_else(|| original.clone()))
                        .collect(),
                ))
            }
            Value::Object(map) => {
                let mut changed: Vec<(usize, String, Value)> = Vec::new();
                for (i, (key, inner)) in map.iter().enumerate() {
                    let new_key = match self.redact_text(key) {
                        Cow::Borrowed(_) => None,
                        Cow::Owned(k) => Some(k),
                    };
                    let new_value = match self.key_kind(key) {
                        Some((kind, only_token)) => match inner {
                            Value::Null | Value::Bool(_) => None,
                            v if only_token && self.keep_token_counts && numeric(v) => None,
                            _ => Some(Value::String(format!("[REDACTED:{kind}]"))),
                        },
                        None => self.redact_value(inner),
                    };
                    if new_key.is_some() || new_value.is_some() {
                        changed.push((
                            i,
                            new_key.unwrap_or_else(|| key.clone()),
                            new_value.unwrap_or_else(|| inner.clone()),
                        ));
                    }
                }
                if changed.is_empty() {
                    return None;
                }
                let mut out = Map::new();
                let mut next = changed.into_iter().peekable();
                for (i, (key, inner)) in map.iter().enumerate() {
                    match next.peek() {
                        Some((j, _, _)) if *j == i => {
                            if let Some((_, k, v)) = next.next() {
                                out.insert(k, v);
                            }
                        }
                        _ => {
                            out.insert(key.clone(), inner.clone());
                        }
                    }
                }
                Some(Value::Object(out))
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => None,
        }
    }
}

/// A number, or a list of numbers (token counts, token ids).
fn numeric(value: &Value) -> bool {
    match value {
        Value::Number(_) => true,
        Value::Array(items) => items.iter().all(|v| matches!(v, Value::Number(_))),
        _ => false,
    }
}

/// Replaces every match of `regex` in `text`: the `secret` group when `group` is set, else the
/// whole match, by `[REDACTED:<kind>]`; a `None` kind keeps the match. Values that already are
/// redaction markers are left alone so the redactor stays idempotent.
fn replace<'a, 'k>(
    text: Cow<'a, str>,
    regex: &Regex,
    kind: impl Fn(&Captures<'_>) -> Option<&'k str>,
    group: bool,
) -> Cow<'a, str> {
    let replaced = regex.replace_all(&text, |caps: &Captures<'_>| {
        let whole = caps.get(0).map_or("", |m| m.as_str());
        let secret = if group {
            caps.name("secret")
        } else {
            caps.get(0)
        };
        let (Some(secret), Some(whole_match)) = (secret, caps.get(0)) else {
            return whole.to_string();
        };
        if secret.as_str().starts_with("[REDACTED:") || secret.as_str().starts_with("\"[REDACTED:")
        {
            return whole.to_string();
        }
        match kind(caps) {
            Some(kind) => {
                let start = secret.start() - whole_match.start();
                let end = secret.end() - whole_match.start();
                format!("{}[REDACTED:{kind}]{}", &whole[..start], &whole[end..])
            }
            None => whole.to_string(),
        }
    });
    match replaced {
        // A match whose replacement kept it (a token count) changes nothing: stay borrowed.
        Cow::Owned(changed) if changed != *text => Cow::Owned(changed),
        _ => text,
    }
}

impl Redactor for RuleRedactor {
    fn redact_text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.compiled.fail_closed && !text.is_empty() {
            return Cow::Owned(UNVERIFIED.to_string());
        }
        self.compiled.redact_text(text)
    }

    fn redact_json<'a>(&self, value: &'a Value) -> Cow<'a, Value> {
        if self.compiled.fail_closed {
            return Cow::Owned(Value::String(UNVERIFIED.to_string()));
        }
        self.compiled.redact_json(value)
    }
}

impl<T: Redactor + ?Sized> Redactor for Arc<T> {
    fn redact_text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        (**self).redact_text(text)
    }
    fn redact_json<'a>(&self, value: &'a Value) -> Cow<'a, Value> {
        (**self).redact_json(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(text: &str) -> String {
        RuleRedactor::default().redact_text(text).into_owned()
    }

    #[test]
    fn the_default_rules_compile() {
        assert!(Compiled::new(&RedactionRules::default()).is_ok());
        assert!(DEFAULT_RULES.is_some());
    }

    #[test]
    fn clean_text_is_borrowed() {
        let redactor = RuleRedactor::default();
        let text = "Compare the cost per kWh of three vendors; tokens: 512.";
        assert!(matches!(redactor.redact_text(text), Cow::Borrowed(_)));
        let value = json!({"goal": "x", "max_tokens": 512, "tokens": [1, 2]});
        assert!(matches!(redactor.redact_json(&value), Cow::Borrowed(_)));
    }

    #[test]
    fn secret_shapes_are_replaced_with_their_kind() {
        let cases = [
            (
                "key sk-abcdefghijklmnopqrstuvwxyz0123 end",
                "key [REDACTED:api_key] end",
            ),
            ("sk-proj-AbCdEfGhIjKlMnOpQrStUvWx123", "[REDACTED:api_key]"),
            (
                "id AKIAIOSFODNN7EXAMPLE here",
                "id [REDACTED:aws_access_key] here",
            ),
            (
                "ghp_0123456789abcdefghijABCDEFGHIJklmnop",
                "[REDACTED:github_token]",
            ),
            (
                "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuv",
                "[REDACTED:github_token]",
            ),
            ("xoxb-123456789012-abcdefABCDEF", "[REDACTED:slack_token]"),
            (
                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
                "jwt [REDACTED:jwt]",
            ),
            (
                "send Bearer abcdefghijklmnop0123 now",
                "send Bearer [REDACTED:bearer_token] now",
            ),
            (
                "postgres://admin:hunter2secret@db:5432/app",
                "postgres://admin:[REDACTED:url_password]@db:5432/app",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\nafter",
                "[REDACTED:private_key]\nafter",
            ),
            ("password=hunter2!", "password=[REDACTED:password]"),
            ("DB_PASSWORD: 'p a s s'", "DB_PASSWORD: [REDACTED:password]"),
            (
                r#"{"client_secret": "abc\"def", "x": 1}"#,
                r#"{"client_secret": [REDACTED:secret], "x": 1}"#,
            ),
            ("x-api-key: abc123", "x-api-key: [REDACTED:api_key]"),
            (
                "Authorization: Basic dXNlcjpwYXNz",
                "Authorization: [REDACTED:authorization]",
            ),
            ("Cookie: a=1; b=2", "Cookie: [REDACTED:cookie]"),
            (
                "api_key = Bearer abcdefghijklmnopqrstu",
                "api_key = [REDACTED:api_key] [REDACTED:bearer_token]",
            ),
            (
                "max_tokens=512 total_tokens: 9",
                "max_tokens=512 total_tokens: 9",
            ),
            ("auth_token=abc", "auth_token=[REDACTED:token]"),
        ];
        for (input, expected) in cases {
            assert_eq!(r(input), expected, "input: {input}");
        }
    }

    #[test]
    fn redaction_is_idempotent() {
        for input in [
            "password=hunter2 and sk-abcdefghijklmnopqrstuvwxyz0123",
            "Authorization: Bearer abcdefghijklmnop0123",
            "x-api-key: abc123",
        ] {
            let once = r(input);
            assert_eq!(r(&once), once);
        }
    }

    #[test]
    fn json_values_under_sensitive_keys_are_replaced_at_any_depth() {
        let redactor = RuleRedactor::default();
        let value = json!({
            "user": "ann",
            "Password": "hunter2",
            "nested": [{"AWS_SECRET_ACCESS_KEY": "abc"}, {"credentials": {"user": "u", "pin": 1234}}],
            "x-api-key": 42,
            "token_count": 17,
            "has_password": true,
            "note": "call with sk-abcdefghijklmnopqrstuvwxyz0123",
            "sk-abcdefghijklmnopqrstuvwxyz0123": "key as key"
        });
        let out = redactor.redact_json(&value).into_owned();
        assert_eq!(out["user"], "ann");
        assert_eq!(out["Password"], "[REDACTED:password]");
        assert_eq!(
            out["nested"][0]["AWS_SECRET_ACCESS_KEY"],
            "[REDACTED:secret]"
        );
        assert_eq!(out["nested"][1]["credentials"], "[REDACTED:credential]");
        assert_eq!(out["x-api-key"], "[REDACTED:api_key]");
        assert_eq!(out["token_count"], 17);
        assert_eq!(out["has_password"], true);
        assert_eq!(out["note"], "call with [REDACTED:api_key]");
        assert!(out.get("[REDACTED:api_key]").is_some());
    }

    #[test]
    fn rules_are_configurable() {
        let redactor = RuleRedactor::new(
            RedactionRules::empty()
                .with_key("ssn", "ssn")
                .with_pattern("ticket", r"\bTKT-\d+\b"),
        )
        .unwrap();
        assert_eq!(
            redactor.redact_text("password=x TKT-42"),
            "password=x [REDACTED:ticket]"
        );
        assert_eq!(redactor.redact_text("ssn: 123"), "ssn: [REDACTED:ssn]");
        let err = RuleRedactor::new(RedactionRules::empty().with_pattern("bad", "(")).unwrap_err();
        assert_eq!(err.kind, "bad");
        let none = RuleRedactor::new(RedactionRules::empty()).unwrap();
        assert_eq!(none.redact_text("password=x"), "password=x");
    }
}
