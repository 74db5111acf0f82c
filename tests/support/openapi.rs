//! Checks real responses against api/openapi.json: the status must be
//! documented for the operation, and a JSON body must match its schema
//! (types, required, additionalProperties: false, enum, nullable, items, $ref).

use serde_json::Value;

/// The API document.
pub struct OpenApi(Value);

impl OpenApi {
    /// Loads api/openapi.json.
    pub fn load() -> OpenApi {
        let text = std::fs::read_to_string(super::repo().join("api/openapi.json")).unwrap();
        OpenApi(serde_json::from_str(&text).unwrap())
    }

    /// Panics unless `status` and `body` are what the document says for
    /// `method` on the path template `template`.
    pub fn check(&self, method: &str, template: &str, status: u16, body: &Value) {
        let operation = &self.0["paths"][template][method.to_ascii_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {template} is not documented"
        );
        let response = &operation["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{method} {template} answered {status}, which is not documented"
        );
        let schema = &response["content"]["application/json"]["schema"];
        if schema.is_object() {
            let mut problems = Vec::new();
            self.validate(schema, body, "$", &mut problems);
            assert!(
                problems.is_empty(),
                "{method} {template} {status}: {problems:?}\nbody: {body}"
            );
        }
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema["$ref"].as_str() {
            Some(reference) => {
                let name = reference.trim_start_matches("#/components/schemas/");
                &self.0["components"]["schemas"][name]
            }
            None => schema,
        }
    }

    fn validate(&self, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if value.is_null() && schema["nullable"] == true {
            return;
        }
        let ok = match schema["type"].as_str() {
            Some("object") => value.is_object(),
            Some("array") => value.is_array(),
            Some("string") => value.is_string(),
            Some("integer") => value.is_i64() || value.is_u64(),
            Some("number") => value.is_number(),
            Some("boolean") => value.is_boolean(),
            _ => true,
        };
        if !ok {
            problems.push(format!("{at}: expected {}, got {value}", schema["type"]));
            return;
        }
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(value)
        {
            problems.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
        if let Some(object) = value.as_object() {
            for name in schema["required"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap();
                if !object.contains_key(name) {
                    problems.push(format!("{at}: missing required `{name}`"));
                }
            }
            for (name, field) in object {
                match schema["properties"].get(name) {
                    Some(property) => {
                        self.validate(property, field, &format!("{at}.{name}"), problems)
                    }
                    None if schema["additionalProperties"] == false => {
                        problems.push(format!("{at}: undocumented field `{name}`"))
                    }
                    None => {}
                }
            }
        }
        if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
            for (i, item) in array.iter().enumerate() {
                self.validate(items, item, &format!("{at}[{i}]"), problems);
            }
        }
    }
}
