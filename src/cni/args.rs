//! CNI_ARGS: `KEY=VALUE;KEY=VALUE`, as libcni's `LoadArgs` reads it.

use crate::error::{invalid_env, Result};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
    ignore_unknown: bool,
}

impl CniArgs {
    pub fn parse(raw: &str) -> Result<CniArgs> {
        let mut args = CniArgs::default();
        for pair in raw.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| invalid_env(format!("invalid CNI_ARGS pair {pair:?}: no '='")))?;
            if k == "IgnoreUnknown" {
                // libcni's UnmarshallableBool: 1/true/True and 0/false/False.
                args.ignore_unknown = match v {
                    "1" | "true" | "True" => true,
                    "0" | "false" | "False" => false,
                    _ => {
                        return Err(invalid_env(format!(
                            "invalid CNI_ARGS IgnoreUnknown value {v:?}"
                        )))
                    }
                };
            }
            args.pairs.push((k.to_string(), v.to_string()));
        }
        Ok(args)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Refuse keys outside `known` unless `IgnoreUnknown` is set (libcni semantics).
    pub fn check_known(&self, known: &[&str]) -> Result<()> {
        if self.ignore_unknown {
            return Ok(());
        }
        match self
            .pairs
            .iter()
            .find(|(k, _)| k != "IgnoreUnknown" && !known.contains(&k.as_str()))
        {
            Some((k, _)) => Err(invalid_env(format!(
                "unknown CNI_ARGS key {k:?} (set IgnoreUnknown=1 to allow it)"
            ))),
            None => Ok(()),
        }
    }

    pub fn pod_namespace(&self) -> Option<&str> {
        self.get("K8S_POD_NAMESPACE")
    }

    pub fn pod_name(&self) -> Option<&str> {
        self.get("K8S_POD_NAME")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let known = [
            "K8S_POD_NAMESPACE",
            "K8S_POD_NAME",
            "K8S_POD_INFRA_CONTAINER_ID",
        ];
        // (input, parses?, passes check_known?, pod name)
        let table: &[(&str, bool, bool, Option<&str>)] = &[
            ("", true, true, None),
            ("K8S_POD_NAME=nginx", true, true, Some("nginx")),
            (
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=nginx;K8S_POD_UID=u",
                true,
                true,
                Some("nginx"),
            ),
            (
                "K8S_POD_NAME=nginx;K8S_POD_UID=u",
                true,
                false,
                Some("nginx"),
            ),
            ("IgnoreUnknown=true;FOO=bar", true, true, None),
            ("IgnoreUnknown=0;FOO=bar", true, false, None),
            ("IgnoreUnknown=maybe", false, false, None),
            ("K8S_POD_NAME", false, false, None),
            (";;K8S_POD_NAME=a;", true, true, Some("a")),
            ("K8S_POD_NAME=", true, true, None),
            ("K8S_POD_NAME=a=b", true, true, Some("a=b")),
        ];
        for (input, parses, known_ok, name) in table {
            match CniArgs::parse(input) {
                Ok(a) => {
                    assert!(parses, "{input}");
                    assert_eq!(a.check_known(&known).is_ok(), *known_ok, "{input}");
                    assert_eq!(a.pod_name(), *name, "{input}");
                }
                Err(_) => assert!(!parses, "{input}"),
            }
        }
    }
}
