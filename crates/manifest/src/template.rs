//! `{{ variable }}` templates, as Spin's `spin-expressions` parses them.

use std::fmt;

/// A string with `{{ name }}` expressions naming application variables.
///
/// Whitespace inside the braces is trimmed. There is no escaping: any `{{`
/// starts an expression, which ends at the next `}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Variable(String),
}

/// Why a template could not be parsed or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `{{` has no closing `}}`.
    #[error("invalid variable template: unmatched '{{{{' in template")]
    Unmatched,
    /// The template names a variable that is not defined.
    #[error("invalid variable template: unknown variable {0:?}")]
    UnknownVariable(String),
}

impl Template {
    /// Parses a template; fails only on an unmatched `{{`.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(after_open) = rest.strip_prefix("{{") {
                let (expr, after) = after_open
                    .split_once("}}")
                    .ok_or(TemplateError::Unmatched)?;
                parts.push(Part::Variable(expr.trim().to_owned()));
                rest = after;
            } else {
                let end = rest.find("{{").unwrap_or(rest.len());
                parts.push(Part::Literal(rest[..end].to_owned()));
                rest = &rest[end..];
            }
        }
        Ok(Template {
            source: text.to_owned(),
            parts,
        })
    }

    /// The names of the variables the template uses, in order (with repeats).
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::Variable(name) => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Whether the template has no `{{ }}` expressions.
    pub fn is_literal(&self) -> bool {
        self.variables().next().is_none()
    }

    /// The template text as written in the manifest.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Substitutes each variable with `lookup(name)`; a `None` is an
    /// [`TemplateError::UnknownVariable`] error.
    pub fn render(&self, lookup: impl Fn(&str) -> Option<String>) -> Result<String, TemplateError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Variable(name) => {
                    let value =
                        lookup(name).ok_or_else(|| TemplateError::UnknownVariable(name.clone()))?;
                    out.push_str(&value);
                }
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        (name == "host").then(|| "example.com".to_owned())
    }

    #[test]
    fn parses_and_renders() {
        let t = Template::parse("https://{{ host }}/{{host}}x}}").unwrap();
        assert_eq!(t.variables().collect::<Vec<_>>(), ["host", "host"]);
        assert!(!t.is_literal());
        assert_eq!(
            t.render(lookup).unwrap(),
            "https://example.com/example.comx}}"
        );
        assert_eq!(t.as_str(), "https://{{ host }}/{{host}}x}}");
    }

    #[test]
    fn literal_and_empty() {
        assert!(Template::parse("").unwrap().is_literal());
        assert_eq!(
            Template::parse("abc").unwrap().render(lookup).unwrap(),
            "abc"
        );
    }

    #[test]
    fn unmatched_braces() {
        let err = Template::parse("{{ a }} {{ b").unwrap_err();
        assert_eq!(err, TemplateError::Unmatched);
        assert_eq!(
            err.to_string(),
            "invalid variable template: unmatched '{{' in template"
        );
    }

    #[test]
    fn unknown_variable_on_render() {
        let err = Template::parse("{{ nope }}")
            .unwrap()
            .render(lookup)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid variable template: unknown variable \"nope\""
        );
    }
}
