//! The CNI_* environment, validated. The caller passes the variables in as data, so nothing
//! here reads the process environment.
//!
//! Validation follows the CNI spec (and libcni's `ValidateContainerID`/`ValidateInterfaceName`):
//! nothing taken from the environment may contain a `/` that could later become part of a path.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::cni::args::CniArgs;
use crate::error::{invalid_env, Result};

/// The CNI operations (CNI spec 1.1.0 plus the pre-1.0 set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

impl Command {
    pub fn parse(s: &str) -> Result<Command> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            other => return Err(invalid_env(format!("unknown CNI_COMMAND {other:?}"))),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Gc => "GC",
            Command::Status => "STATUS",
        }
    }
}

/// The validated CNI environment of one invocation.
#[derive(Debug, Clone)]
pub struct CniEnv {
    pub command: Command,
    /// Empty only for VERSION, GC and STATUS, which have no container.
    pub container_id: String,
    /// `None` when unset or empty (DEL, GC, STATUS; containerd sends `CNI_NETNS=""` on DEL).
    pub netns: Option<PathBuf>,
    /// Empty only for VERSION, GC and STATUS.
    pub ifname: String,
    pub args: CniArgs,
    pub path: Vec<PathBuf>,
}

/// Which variables each command needs (libcni skel's table, CNI spec "Parameters").
fn required(command: Command) -> (bool, bool, bool, bool) {
    // (container id, netns, ifname, path)
    match command {
        Command::Add | Command::Check => (true, true, true, true),
        Command::Del => (true, false, true, true),
        Command::Gc | Command::Status => (false, false, false, true),
        // Never validated: the dispatcher answers VERSION first, whatever the rest holds
        // (libcni's `GetVersionInfo` sends CNI_NETNS=dummy).
        Command::Version => (false, false, false, false),
    }
}

impl CniEnv {
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<CniEnv> {
        let get = |k: &str| vars.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let command = Command::parse(
            get("CNI_COMMAND").ok_or_else(|| invalid_env("CNI_COMMAND is not set"))?,
        )?;
        let (need_cid, need_netns, need_ifname, need_path) = required(command);
        let missing = |k: &str| invalid_env(format!("required env variable {k} is not set"));

        let container_id = match get("CNI_CONTAINERID") {
            Some(id) => {
                validate_container_id(id)?;
                id.to_string()
            }
            None if need_cid => return Err(missing("CNI_CONTAINERID")),
            None => String::new(),
        };
        let netns = match get("CNI_NETNS") {
            Some(p) => Some(validate_netns(p)?),
            None if need_netns => return Err(missing("CNI_NETNS")),
            None => None,
        };
        let ifname = match get("CNI_IFNAME") {
            Some(name) => {
                validate_ifname(name)?;
                name.to_string()
            }
            None if need_ifname => return Err(missing("CNI_IFNAME")),
            None => String::new(),
        };
        let path: Vec<PathBuf> = get("CNI_PATH")
            .map(|p| {
                p.split(':')
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        if need_path && path.is_empty() {
            return Err(missing("CNI_PATH"));
        }
        let args = CniArgs::parse(get("CNI_ARGS").unwrap_or(""))?;
        Ok(CniEnv {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }
}

/// CNI spec: "a non-empty alphanumeric string, optionally with `_`, `.` and `-`", starting with
/// an alphanumeric character (libcni `ValidateContainerID`).
pub fn validate_container_id(id: &str) -> Result<()> {
    let ok = id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid_env(format!(
            "invalid CNI_CONTAINERID {id:?}: must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"
        )))
    }
}

/// Linux interface names (libcni `ValidateInterfaceName`): 1..=15 bytes, not `.` or `..`,
/// no `/`, `:` or whitespace.
pub fn validate_ifname(name: &str) -> Result<()> {
    let why = if name.is_empty() {
        Some("is empty")
    } else if name.len() > 15 {
        Some("is longer than 15 characters")
    } else if name == "." || name == ".." {
        Some("is a relative path element")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("contains '/', ':' or whitespace")
    } else if name.contains('%') {
        // The kernel takes a name with '%' as a template (`eth%d`) and picks another name.
        Some("contains '%', which the kernel reads as a name template")
    } else if name.bytes().any(|b| b == 0xa0) {
        // The kernel's isspace() counts byte 0xa0 (part of 'à' and other UTF-8 characters).
        Some("contains byte 0xa0, which the kernel counts as a space")
    } else {
        None
    };
    match why {
        Some(why) => Err(invalid_env(format!("invalid CNI_IFNAME {name:?}: {why}"))),
        None => Ok(()),
    }
}

fn validate_netns(p: &str) -> Result<PathBuf> {
    if !p.starts_with('/') {
        return Err(invalid_env(format!(
            "invalid CNI_NETNS {p:?}: must be an absolute path"
        )));
    }
    Ok(PathBuf::from(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const FULL: &[(&str, &str)] = &[
        ("CNI_CONTAINERID", "ee86fb8be619"),
        ("CNI_NETNS", "/var/run/netns/pod"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
    ];

    fn with(cmd: &str, overrides: &[(&str, &str)], remove: &[&str]) -> HashMap<String, String> {
        let mut v = vars(FULL);
        v.insert("CNI_COMMAND".into(), cmd.into());
        for k in remove {
            v.remove(*k);
        }
        for (k, val) in overrides {
            v.insert(k.to_string(), val.to_string());
        }
        v
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table of cases reads best as tuples
    fn validation_table() {
        // (command, overrides, removed, ok?)
        let table: &[(&str, &[(&str, &str)], &[&str], bool)] = &[
            ("ADD", &[], &[], true),
            ("DEL", &[], &[], true),
            ("CHECK", &[], &[], true),
            ("DEL", &[("CNI_NETNS", "")], &[], true),
            ("DEL", &[], &["CNI_NETNS"], true),
            (
                "VERSION",
                &[],
                &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"],
                true,
            ),
            (
                "GC",
                &[],
                &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
                true,
            ),
            (
                "STATUS",
                &[],
                &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
                true,
            ),
            ("ADD", &[], &["CNI_NETNS"], false),
            ("CHECK", &[], &["CNI_NETNS"], false),
            ("ADD", &[], &["CNI_CONTAINERID"], false),
            ("DEL", &[], &["CNI_IFNAME"], false),
            ("ADD", &[], &["CNI_PATH"], false),
            ("GC", &[], &["CNI_PATH"], false),
            ("ADD", &[("CNI_CONTAINERID", "../../etc")], &[], false),
            ("ADD", &[("CNI_CONTAINERID", "-abc")], &[], false),
            ("ADD", &[("CNI_CONTAINERID", "abc/def")], &[], false),
            ("ADD", &[("CNI_CONTAINERID", "default-c1")], &[], true),
            ("ADD", &[("CNI_CONTAINERID", "a_b.c-d")], &[], true),
            ("ADD", &[("CNI_IFNAME", "eth0/../x")], &[], false),
            ("ADD", &[("CNI_IFNAME", "..")], &[], false),
            ("ADD", &[("CNI_IFNAME", "a23456789012345")], &[], true),
            ("ADD", &[("CNI_IFNAME", "a234567890123456")], &[], false),
            ("ADD", &[("CNI_IFNAME", "eth 0")], &[], false),
            ("ADD", &[("CNI_IFNAME", "eth:0")], &[], false),
            ("ADD", &[("CNI_IFNAME", "eth%d")], &[], false),
            ("ADD", &[("CNI_IFNAME", "\u{e0}")], &[], false),
            ("ADD", &[("CNI_IFNAME", "e\"t\\h\u{1}\u{e9}")], &[], true),
            ("ADD", &[("CNI_NETNS", "relative/ns")], &[], false),
            (
                "ADD",
                &[("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=x")],
                &[],
                true,
            ),
            ("ADD", &[("CNI_ARGS", "garbage")], &[], false),
            ("BOGUS", &[], &[], false),
            ("", &[], &[], false),
        ];
        for (cmd, over, rm, ok) in table {
            let got = CniEnv::from_vars(&with(cmd, over, rm));
            match (got, ok) {
                (Ok(_), true) => {}
                (Err(e), false) => {
                    assert_eq!(e.code(), Code::InvalidEnv, "{cmd} {over:?} {rm:?}: {e}")
                }
                (got, _) => panic!("{cmd} {over:?} {rm:?}: got {got:?}"),
            }
        }
    }

    #[test]
    fn parsed_values() {
        let env = CniEnv::from_vars(&with("DEL", &[("CNI_NETNS", "")], &[])).unwrap();
        assert_eq!(env.command, Command::Del);
        assert_eq!(env.netns, None);
        assert_eq!(
            env.path,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        assert_eq!(env.ifname, "eth0");
    }
}
