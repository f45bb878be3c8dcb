//! The dispatcher: CNI environment and stdin in, stdout and exit status out. Both binaries are
//! `dispatch(&Plugin, env, stdin)`; it is unit-testable without a process.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use serde_json::Value;

use crate::cni::args::CniArgs;
use crate::cni::config::ParsedConf;
use crate::cni::env::{CniEnv, Command};
use crate::cni::result::CniResult;
use crate::cni::version::{version_info, Version};
use crate::cni::{error_json, version};
use crate::error::{Code, Error, Result};
use crate::logging::{Level, Logger};
use crate::settings::Settings;

/// Everything a plugin command gets: validated env, parsed config, resolved settings, the raw
/// variables (to pass on to delegated plugins) and the logger.
pub struct Request<'a> {
    pub env: CniEnv,
    pub conf: ParsedConf,
    pub settings: Settings,
    pub vars: &'a HashMap<String, String>,
    pub log: &'a Logger,
}

pub trait Plugin {
    /// Binary name: also the log file's name (`<logDir>/<name>.log`).
    fn name(&self) -> &'static str;
    fn add(&self, req: &Request) -> Result<CniResult>;
    fn del(&self, req: &Request) -> Result<()>;
    fn check(&self, req: &Request) -> Result<()>;
    fn gc(&self, req: &Request) -> Result<()>;
    fn status(&self, req: &Request) -> Result<()>;
}

#[derive(Debug)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub exit_code: i32,
}

/// The answer to an invocation refused before dispatch (the process boundary found its input
/// unusable): the error document, exit status 1.
pub fn refuse(e: Error) -> Outcome {
    Outcome {
        stdout: error_json(&e, None),
        exit_code: 1,
    }
}

pub fn dispatch(plugin: &dyn Plugin, vars: &HashMap<String, String>, stdin: &[u8]) -> Outcome {
    // VERSION answers before any validation (as the CNI skel does) and touches no file.
    if vars.get("CNI_COMMAND").map(String::as_str) == Some("VERSION") {
        return Outcome {
            stdout: version_info().into_bytes(),
            exit_code: 0,
        };
    }
    let started = Instant::now();
    let mut conf_settings = None;
    let mut version = None;
    let mut log = None;
    let result = (|| -> Result<Option<Vec<u8>>> {
        let env = CniEnv::from_vars(vars)?;
        let conf = ParsedConf::parse(stdin)?;
        version = Some(conf.version);
        let settings = conf_settings
            .insert(Settings::resolve(Some(&conf.conf), vars))
            .clone();
        conf.validate_name()?;
        let min = match env.command {
            Command::Check => Some(Version::V0_4_0),
            Command::Gc | Command::Status => Some(Version::V1_1_0),
            _ => None,
        };
        if let Some(min) = min.filter(|m| conf.version < *m) {
            return Err(Error::new(
                Code::IncompatibleVersion,
                format!(
                    "config version {} does not allow {} (needs {min} or later)",
                    conf.version,
                    env.command.as_str()
                ),
            ));
        }
        let logger = log.insert(logger_for(plugin, &settings, vars));
        if logger.enabled(Level::Debug) {
            logger.debug(
                "request",
                &[
                    (
                        "cniArgs",
                        Value::from(vars.get("CNI_ARGS").cloned().unwrap_or_default()),
                    ),
                    (
                        "netns",
                        Value::from(vars.get("CNI_NETNS").cloned().unwrap_or_default()),
                    ),
                    ("ifname", Value::from(env.ifname.as_str())),
                    ("config", conf.raw.clone()),
                ],
            );
        }
        let req = Request {
            env,
            conf,
            settings,
            vars,
            log: logger,
        };
        run_guarded(plugin, &req)
    })();
    // A failure before the config was read still goes to a log (the environment's).
    let log = log.unwrap_or_else(|| {
        let settings = conf_settings.unwrap_or_else(|| Settings::resolve(None, vars));
        logger_for(plugin, &settings, vars)
    });
    let ms = Value::from(started.elapsed().as_secs_f64() * 1e3);
    match result {
        Ok(out) => {
            log.outcome(Level::Info, "done", &[("durationMs", ms)]);
            Outcome {
                stdout: out.unwrap_or_default(),
                exit_code: 0,
            }
        }
        Err(e) => {
            log.outcome(
                Level::Error,
                "failed",
                &[
                    ("durationMs", ms),
                    ("code", Value::from(e.code().cni_code())),
                    ("error", Value::from(e.msg())),
                ],
            );
            Outcome {
                stdout: error_json(&e, version),
                exit_code: 1,
            }
        }
    }
}

/// The plugin's log, each line naming the command, the container and the pod (kubelet's
/// CNI_ARGS), from the raw variables (valid or not: a failure is logged too).
fn logger_for(plugin: &dyn Plugin, settings: &Settings, vars: &HashMap<String, String>) -> Logger {
    let mut l = Logger::open(&settings.log, plugin.name());
    let var = |k: &str| vars.get(k).filter(|v| !v.is_empty());
    if let Some(c) = var("CNI_COMMAND") {
        l.set("command", c.as_str());
    }
    if let Some(c) = var("CNI_CONTAINERID") {
        l.set("containerID", c.as_str());
    }
    let args = var("CNI_ARGS")
        .and_then(|a| CniArgs::parse(a).ok())
        .unwrap_or_default();
    if let (Some(ns), Some(name)) = (args.pod_namespace(), args.pod_name()) {
        l.set("pod", format!("{ns}/{name}"));
    }
    l
}

/// Run the command, turning a panic into a CNI error (code 100, as upstream's recover does)
/// rather than an empty stdout the runtime cannot parse.
fn run_guarded(plugin: &dyn Plugin, req: &Request) -> Result<Option<Vec<u8>>> {
    let out = catch_unwind(AssertUnwindSafe(|| -> Result<Option<Vec<u8>>> {
        match req.env.command {
            Command::Add => {
                let res = plugin.add(req)?;
                Ok(Some(res.to_bytes(req.conf.version)))
            }
            Command::Del => plugin.del(req).map(|_| None),
            Command::Check => plugin.check(req).map(|_| None),
            Command::Gc => plugin.gc(req).map(|_| None),
            Command::Status => plugin.status(req).map(|_| None),
            Command::Version => Ok(Some(version::version_info().into_bytes())),
        }
    }));
    match out {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::new(
                Code::Runtime,
                format!("plugin panicked: {what}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::result::IpConfig;

    struct Fake;
    impl Plugin for Fake {
        fn name(&self) -> &'static str {
            "fake-plugin"
        }
        fn add(&self, req: &Request) -> Result<CniResult> {
            if req.env.container_id == "panic" {
                panic!("boom");
            }
            Ok(CniResult {
                ips: vec![IpConfig {
                    interface: None,
                    address: "10.224.0.5/16".parse().unwrap(),
                    gateway: None,
                }],
                ..Default::default()
            })
        }
        fn del(&self, _: &Request) -> Result<()> {
            Ok(())
        }
        fn check(&self, _: &Request) -> Result<()> {
            Ok(())
        }
        fn gc(&self, _: &Request) -> Result<()> {
            Ok(())
        }
        fn status(&self, _: &Request) -> Result<()> {
            Err(Error::new(Code::NotAvailable, "no pools"))
        }
    }

    fn env(cmd: &str, cid: &str) -> HashMap<String, String> {
        [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", cid),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
            ("AZURE_VNET_LOG_DIR", "/proc/nonexistent-log-dir"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn run(cmd: &str, cid: &str, stdin: &str) -> (i32, Value) {
        let out = dispatch(&Fake, &env(cmd, cid), stdin.as_bytes());
        let v = if out.stdout.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&out.stdout).unwrap()
        };
        (out.exit_code, v)
    }

    #[test]
    fn dispatch_table() {
        // (command, container id, stdin, exit code, CNI error code if failing)
        let table: &[(&str, &str, &str, i32, Option<u64>)] = &[
            (
                "ADD",
                "c1",
                r#"{"cniVersion":"0.3.0","name":"azure"}"#,
                0,
                None,
            ),
            (
                "DEL",
                "c1",
                r#"{"cniVersion":"0.3.0","name":"azure"}"#,
                0,
                None,
            ),
            ("VERSION", "", "", 0, None),
            (
                "CHECK",
                "c1",
                r#"{"cniVersion":"0.3.0","name":"azure"}"#,
                1,
                Some(1),
            ),
            (
                "CHECK",
                "c1",
                r#"{"cniVersion":"0.4.0","name":"azure"}"#,
                0,
                None,
            ),
            (
                "GC",
                "",
                r#"{"cniVersion":"1.0.0","name":"azure"}"#,
                1,
                Some(1),
            ),
            (
                "GC",
                "",
                r#"{"cniVersion":"1.1.0","name":"azure"}"#,
                0,
                None,
            ),
            (
                "STATUS",
                "",
                r#"{"cniVersion":"1.1.0","name":"azure"}"#,
                1,
                Some(50),
            ),
            ("ADD", "c1", "{", 1, Some(6)),
            ("ADD", "c1", r#"{"cniVersion":"0.3.0"}"#, 1, Some(7)),
            (
                "ADD",
                "c1",
                r#"{"cniVersion":"2.0.0","name":"azure"}"#,
                1,
                Some(1),
            ),
            ("ADD", "-bad", r#"{"name":"azure"}"#, 1, Some(4)),
            ("NOPE", "c1", r#"{"name":"azure"}"#, 1, Some(4)),
            (
                "ADD",
                "panic",
                r#"{"cniVersion":"1.0.0","name":"azure"}"#,
                1,
                Some(100),
            ),
        ];
        for (cmd, cid, stdin, exit, code) in table {
            let (got_exit, v) = run(cmd, cid, stdin);
            assert_eq!(got_exit, *exit, "{cmd} {cid} {stdin}: {v}");
            if let Some(code) = code {
                assert_eq!(v["code"], *code, "{cmd} {cid} {stdin}: {v}");
                assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()));
            }
        }
    }

    #[test]
    fn version_answers_whatever_the_rest_holds() {
        // libcni's GetVersionInfo (podman, ValidateNetworkList): placeholders everywhere.
        let mut vars = env("VERSION", "-not/valid");
        for k in ["CNI_NETNS", "CNI_IFNAME", "CNI_PATH", "CNI_ARGS"] {
            vars.insert(k.into(), "dummy".into());
        }
        let out = dispatch(&Fake, &vars, b"garbage");
        assert_eq!(out.exit_code, 0);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
    }

    #[test]
    fn add_prints_at_config_version() {
        let (_, v) = run("ADD", "c1", r#"{"cniVersion":"0.2.0","name":"azure"}"#);
        assert_eq!(v["ip4"]["ip"], "10.224.0.5/16");
        let (_, v) = run("ADD", "c1", r#"{"cniVersion":"0.3.1","name":"azure"}"#);
        assert_eq!(v["ips"][0]["version"], "4");
        let (_, v) = run("ADD", "c1", r#"{"name":"azure"}"#);
        assert_eq!(v["cniVersion"], "0.2.0", "missing cniVersion means 0.2.0");
    }

    #[test]
    fn errors_carry_the_config_version() {
        let (_, v) = run("CHECK", "c1", r#"{"cniVersion":"0.3.0","name":"azure"}"#);
        assert_eq!(v["cniVersion"], "0.3.0");
    }
}
