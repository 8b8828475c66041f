//! A CloudFormation stack's outputs, as `aws cloudformation describe-stacks` prints them.

use serde::Deserialize;
use std::collections::BTreeMap;

/// The outputs of one stack, by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackOutputs(BTreeMap<String, String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum Document {
    /// `describe-stacks` as it is: `{"Stacks": [{"Outputs": [...]}]}`.
    Stacks {
        #[serde(rename = "Stacks")]
        stacks: Vec<Stack>,
    },
    /// `describe-stacks --query 'Stacks[0].Outputs'`.
    Outputs(Vec<Output>),
}

#[derive(Deserialize)]
struct Stack {
    #[serde(rename = "Outputs", default)]
    outputs: Vec<Output>,
}

#[derive(Deserialize)]
struct Output {
    #[serde(rename = "OutputKey")]
    key: String,
    #[serde(rename = "OutputValue")]
    value: String,
}

impl StackOutputs {
    /// Reads either form of `describe-stacks` output; exactly one stack.
    pub fn parse(json: &str) -> Result<StackOutputs, String> {
        let document: Document = serde_json::from_str(json).map_err(|e| {
            format!(
                "not the output of `aws cloudformation describe-stacks` \
                 (expected {{\"Stacks\": [{{\"Outputs\": [...]}}]}} or the Outputs list): {e}"
            )
        })?;
        let outputs = match document {
            Document::Outputs(outputs) => outputs,
            Document::Stacks { mut stacks } => match stacks.len() {
                1 => stacks.remove(0).outputs,
                n => return Err(format!("holds {n} stacks; pass --stack-name to describe-stacks")),
            },
        };
        Ok(StackOutputs(outputs.into_iter().map(|o| (o.key, o.value)).collect()))
    }

    /// The output `key`, or an error naming it.
    pub fn get(&self, key: &str) -> Result<&str, String> {
        self.0.get(key).map(String::as_str).ok_or_else(|| {
            format!("the stack has no output `{key}`: was it deployed from this version's cloud/template.yaml?")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_of_describe_stacks_give_the_same_outputs() {
        let list = r#"[{"OutputKey": "Region", "OutputValue": "eu-west-1", "Description": "x"}]"#;
        let whole = format!(r#"{{"Stacks": [{{"StackName": "chain", "Outputs": {list}}}]}}"#);
        let a = StackOutputs::parse(list).unwrap();
        assert_eq!(a, StackOutputs::parse(&whole).unwrap());
        assert_eq!(a.get("Region").unwrap(), "eu-west-1");
    }

    #[test]
    fn a_missing_output_is_named() {
        let outputs = StackOutputs::parse("[]").unwrap();
        let e = outputs.get("AlertsStreamName").unwrap_err();
        assert!(
            e.contains("`AlertsStreamName`") && e.contains("cloud/template.yaml"),
            "{e}"
        );
    }

    #[test]
    fn two_stacks_or_other_json_are_refused() {
        let two = r#"{"Stacks": [{"Outputs": []}, {"Outputs": []}]}"#;
        assert!(StackOutputs::parse(two).unwrap_err().contains("2 stacks"));
        assert!(StackOutputs::parse(r#"{"Region": "x"}"#)
            .unwrap_err()
            .contains("describe-stacks"));
    }
}
