//! Model kinds as a worker binary describes them: `kiln-worker models --json` prints a
//! [`Catalog`], and `kiln-worker models check` answers a [`CheckRequest`] with a
//! [`CheckReport`]. The configuration loader checks `model` blocks against these schemas; the
//! worker checks the attributes it is sent against the same ones.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Every model kind a worker binary can train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// The kinds, by name.
    pub kinds: Vec<KindSchema>,
    /// The compute backends the binary trains with: `cpu`, and `cuda` where it was built with
    /// the `cuda` feature. Empty (an older binary): `cpu`.
    #[serde(default)]
    pub backends: Vec<String>,
    /// Its gradient all-reduces: `ring`, and `nccl` with the `cuda` feature. Empty: `ring`.
    #[serde(default)]
    pub collectives: Vec<String>,
}

impl Catalog {
    /// The kind named `name`.
    pub fn kind(&self, name: &str) -> Option<&KindSchema> {
        self.kinds.iter().find(|k| k.name == name)
    }
}

/// One model kind: its name (the `model "NAME"` label) and the attributes it accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KindSchema {
    /// The label, e.g. `mlp`.
    pub name: String,
    /// One line on what the model is.
    pub doc: String,
    /// The attributes of its `model` block.
    pub attributes: Vec<AttrSchema>,
}

impl KindSchema {
    /// The attribute named `name`.
    pub fn attribute(&self, name: &str) -> Option<&AttrSchema> {
        self.attributes.iter().find(|a| a.name == name)
    }

    /// `attributes` checked against this schema, with the defaults filled in. Problems name
    /// the attribute; unknown attributes, wrong types and missing required ones are all
    /// reported.
    pub fn complete(&self, attributes: &Map<String, Value>) -> Result<Map<String, Value>, String> {
        let mut problems = Vec::new();
        for name in attributes.keys() {
            if self.attribute(name).is_none() {
                problems.push(format!("unknown attribute `{name}`"));
            }
        }
        let mut out = Map::new();
        for attr in &self.attributes {
            match attributes.get(&attr.name).or(attr.default.as_ref()) {
                Some(value) => match attr.ty.check(value) {
                    Ok(()) => {
                        out.insert(attr.name.clone(), value.clone());
                    }
                    Err(e) => problems.push(format!("`{}`: {e}", attr.name)),
                },
                None => problems.push(format!("`{}` is required", attr.name)),
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(format!("model {:?}: {}", self.name, problems.join("; ")))
        }
    }
}

/// One attribute of a `model` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttrSchema {
    /// Its name.
    pub name: String,
    /// The values it takes.
    #[serde(rename = "type")]
    pub ty: AttrType,
    /// Whether the block must set it (then it has no default).
    pub required: bool,
    /// The value when the block leaves it out (absent for required attributes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// One line on what it does.
    pub doc: String,
}

impl AttrSchema {
    /// An attribute the block must set.
    pub fn required(name: &str, ty: AttrType, doc: &str) -> Self {
        Self {
            name: name.to_owned(),
            ty,
            required: true,
            default: None,
            doc: doc.to_owned(),
        }
    }

    /// An attribute that takes `default` when the block leaves it out.
    pub fn optional(name: &str, ty: AttrType, default: Value, doc: &str) -> Self {
        Self {
            name: name.to_owned(),
            ty,
            required: false,
            default: Some(default),
            doc: doc.to_owned(),
        }
    }
}

/// The values an attribute takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttrType {
    /// A whole number, 0 or more.
    #[serde(rename = "integer")]
    Integer,
    /// Any finite number.
    #[serde(rename = "number")]
    Number,
    /// `true` or `false`.
    #[serde(rename = "bool")]
    Bool,
    /// A string.
    #[serde(rename = "string")]
    String,
    /// A list of whole numbers, each 0 or more.
    #[serde(rename = "list(integer)")]
    IntegerList,
    /// A list of finite numbers.
    #[serde(rename = "list(number)")]
    NumberList,
}

impl AttrType {
    /// How the type reads in messages and docs: `integer`, `list(number)`.
    pub fn name(self) -> &'static str {
        match self {
            AttrType::Integer => "integer",
            AttrType::Number => "number",
            AttrType::Bool => "bool",
            AttrType::String => "string",
            AttrType::IntegerList => "list(integer)",
            AttrType::NumberList => "list(number)",
        }
    }

    /// Whether `value` is of this type; the error says what was expected.
    pub fn check(self, value: &Value) -> Result<(), String> {
        let integer = |v: &Value| v.as_u64().is_some();
        let number = |v: &Value| v.as_f64().is_some_and(f64::is_finite);
        let ok = match self {
            AttrType::Integer => integer(value),
            AttrType::Number => number(value),
            AttrType::Bool => value.is_boolean(),
            AttrType::String => value.is_string(),
            AttrType::IntegerList => value.as_array().is_some_and(|a| a.iter().all(integer)),
            AttrType::NumberList => value.as_array().is_some_and(|a| a.iter().all(number)),
        };
        if ok {
            Ok(())
        } else {
            let expected = match self {
                AttrType::Integer => "a whole number, 0 or more",
                AttrType::Number => "a number",
                AttrType::Bool => "true or false",
                AttrType::String => "a string",
                AttrType::IntegerList => "a list of whole numbers, e.g. [16, 32]",
                AttrType::NumberList => "a list of numbers",
            };
            Err(format!("expected {expected}, got {value}"))
        }
    }
}

/// What `kiln-worker models check` is asked: can this model train on data of this shape?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRequest {
    /// The kind.
    pub kind: String,
    /// The `model` block's attributes, defaults filled in.
    pub attributes: Map<String, Value>,
    /// The dataset's features per sample.
    pub features: u32,
    /// The dataset's classes.
    pub classes: u32,
}

/// The answer to a [`CheckRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    /// Why the model cannot be built; absent when it can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<AttrProblem>,
    /// Trainable parameters (0 with a problem).
    #[serde(default)]
    pub parameters: u64,
    /// Activations one sample holds during a training step, in floats (0: the kind does not
    /// say).
    #[serde(default)]
    pub activations_per_sample: u64,
}

/// A model that cannot be built from its attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttrProblem {
    /// The attribute at fault, if one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> KindSchema {
        KindSchema {
            name: "k".into(),
            doc: "d".into(),
            attributes: vec![
                AttrSchema {
                    name: "width".into(),
                    ty: AttrType::Integer,
                    required: true,
                    default: None,
                    doc: String::new(),
                },
                AttrSchema {
                    name: "sizes".into(),
                    ty: AttrType::IntegerList,
                    required: false,
                    default: Some(json!([])),
                    doc: String::new(),
                },
            ],
        }
    }

    #[test]
    fn complete_fills_defaults_and_names_every_problem() {
        let attrs = json!({"width": 3}).as_object().cloned().unwrap_or_default();
        let done = schema().complete(&attrs).expect("valid");
        assert_eq!(Value::Object(done), json!({"width": 3, "sizes": []}));

        let attrs = json!({"widht": 3, "sizes": [1, -2]})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let err = schema().complete(&attrs).expect_err("invalid");
        assert!(err.contains("unknown attribute `widht`"), "{err}");
        assert!(err.contains("`width` is required"), "{err}");
        assert!(
            err.contains("`sizes`: expected a list of whole numbers"),
            "{err}"
        );
    }

    #[test]
    fn types_serialize_as_their_names() {
        let text = serde_json::to_string(&AttrType::IntegerList).expect("encode");
        assert_eq!(text, "\"list(integer)\"");
        assert_eq!(AttrType::IntegerList.name(), "list(integer)");
    }
}
