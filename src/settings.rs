//! Paths and knobs, resolved in one place (spec A.4): the config field, else the environment
//! variable, else upstream's default. Tests and demos set these so nothing touches real paths
//! or real addresses.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::cni::config::NetConf;
use crate::logging::{Level, LogConfig, DEFAULT_BACKUPS, DEFAULT_MAX_BYTES};

pub const ENV_RUN_DIR: &str = "AZURE_VNET_RUN_DIR";
pub const ENV_LOG_DIR: &str = "AZURE_VNET_LOG_DIR";
pub const ENV_LOG_LEVEL: &str = "AZURE_VNET_LOG_LEVEL";
pub const ENV_LOG_MAX_SIZE_MB: &str = "AZURE_VNET_LOG_MAX_SIZE_MB";
pub const ENV_LOG_MAX_BACKUPS: &str = "AZURE_VNET_LOG_MAX_BACKUPS";
pub const ENV_WIRESERVER_URL: &str = "AZURE_VNET_WIRESERVER_URL";
pub const ENV_INTERFACES_FILE: &str = "AZURE_VNET_INTERFACES_FILE";
pub const ENV_LOCK_TIMEOUT_MS: &str = "AZURE_VNET_LOCK_TIMEOUT_MS";

pub const DEFAULT_RUN_DIR: &str = "/var/run";
pub const DEFAULT_LOG_DIR: &str = "/var/log";
pub const DEFAULT_WIRESERVER_URL: &str =
    "http://168.63.129.16/machine/plugins?comp=nmagent&type=getinterfaceinfov1";
pub const DEFAULT_INTERFACES_FILE: &str = "/etc/kubernetes/interfaces.json";
/// Upstream's Linux store-lock timeout (`DefaultLockTimeoutLinux`, spec B.4.5).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Holds `azure-vnet.json`, `azure-vnet-ipam.json` and the lock directory `azure-vnet/`.
    pub run_dir: PathBuf,
    /// The log files' directory, level and rotation.
    pub log: LogConfig,
    pub wireserver_url: String,
    pub interfaces_file: PathBuf,
    pub lock_timeout: Duration,
}

impl Settings {
    pub fn resolve(conf: Option<&NetConf>, vars: &HashMap<String, String>) -> Settings {
        let env = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
        let ipam = conf.and_then(|c| c.ipam.as_ref());
        Settings {
            run_dir: conf
                .and_then(|c| c.run_dir.clone())
                .or_else(|| env(ENV_RUN_DIR).map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR)),
            log: LogConfig {
                dir: conf
                    .and_then(|c| c.log_dir.clone())
                    .or_else(|| env(ENV_LOG_DIR).map(PathBuf::from))
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_LOG_DIR)),
                level: conf
                    .and_then(|c| c.log_level.clone())
                    .or_else(|| env(ENV_LOG_LEVEL))
                    .map_or(Level::Info, |l| Level::parse(&l)),
                max_bytes: conf
                    .and_then(|c| c.log_max_size_mb)
                    .or_else(|| env(ENV_LOG_MAX_SIZE_MB).and_then(|v| v.parse().ok()))
                    .map_or(DEFAULT_MAX_BYTES, |mb: u64| {
                        mb.max(1).saturating_mul(1 << 20)
                    }),
                backups: conf
                    .and_then(|c| c.log_max_backups)
                    .or_else(|| env(ENV_LOG_MAX_BACKUPS).and_then(|v| v.parse().ok()))
                    .unwrap_or(DEFAULT_BACKUPS),
            },
            wireserver_url: ipam
                .and_then(|i| i.wireserver_url.clone())
                .or_else(|| env(ENV_WIRESERVER_URL))
                .unwrap_or_else(|| DEFAULT_WIRESERVER_URL.to_string()),
            interfaces_file: ipam
                .and_then(|i| i.interfaces_file.clone())
                .or_else(|| env(ENV_INTERFACES_FILE).map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(DEFAULT_INTERFACES_FILE)),
            lock_timeout: env(ENV_LOCK_TIMEOUT_MS)
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_LOCK_TIMEOUT),
        }
    }

    /// Lock files live in `<runDir>/azure-vnet/` (upstream's directory).
    pub fn lock_dir(&self) -> PathBuf {
        self.run_dir.join("azure-vnet")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::config::ParsedConf;

    #[test]
    fn config_beats_env_beats_default() {
        let vars: HashMap<String, String> = [
            (ENV_RUN_DIR, "/env/run"),
            (ENV_LOG_DIR, "/env/log"),
            (ENV_WIRESERVER_URL, "http://127.0.0.1:1/env"),
            (ENV_LOCK_TIMEOUT_MS, "250"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();

        let none = Settings::resolve(None, &HashMap::new());
        assert_eq!(none.run_dir, PathBuf::from("/var/run"));
        assert_eq!(none.log.dir, PathBuf::from("/var/log"));
        assert_eq!(none.wireserver_url, DEFAULT_WIRESERVER_URL);
        assert_eq!(none.interfaces_file, PathBuf::from(DEFAULT_INTERFACES_FILE));
        assert_eq!(none.lock_timeout, DEFAULT_LOCK_TIMEOUT);
        assert_eq!(none.lock_dir(), PathBuf::from("/var/run/azure-vnet"));

        let env_only = Settings::resolve(None, &vars);
        assert_eq!(env_only.run_dir, PathBuf::from("/env/run"));
        assert_eq!(env_only.wireserver_url, "http://127.0.0.1:1/env");
        assert_eq!(env_only.lock_timeout, Duration::from_millis(250));

        let p = ParsedConf::parse(
            br#"{"name":"n","runDir":"/conf/run","logDir":"/conf/log",
                 "ipam":{"type":"azure-vnet-ipam","wireserverUrl":"http://127.0.0.1:2/c","interfacesFile":"/conf/if.json"}}"#,
        )
        .unwrap();
        let both = Settings::resolve(Some(&p.conf), &vars);
        assert_eq!(both.run_dir, PathBuf::from("/conf/run"));
        assert_eq!(both.log.dir, PathBuf::from("/conf/log"));
        assert_eq!(both.wireserver_url, "http://127.0.0.1:2/c");
        assert_eq!(both.interfaces_file, PathBuf::from("/conf/if.json"));
    }
}
