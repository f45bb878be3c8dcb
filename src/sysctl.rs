//! `/proc/sys` reads and writes. Net sysctls resolve against the network namespace of the
//! thread that opens the file, so callers run these inside `Netns::run` for a pod.

use std::io::Write;
use std::path::PathBuf;

use crate::error::{Code, Error, Result};

fn path(key: &str) -> Result<PathBuf> {
    // Keys are built from names we validated (CNI_IFNAME) or generated (azv...); refuse
    // anything that could walk out of /proc/sys anyway.
    if key
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(Error::new(
            Code::Internal,
            format!("invalid sysctl key {key:?}"),
        ));
    }
    Ok(PathBuf::from("/proc/sys").join(key))
}

pub fn read(key: &str) -> Result<String> {
    let p = path(key)?;
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_string())
        .map_err(|e| Error::os(Code::Internal, &e).context(format!("read sysctl {key}")))
}

pub fn write(key: &str, value: &str) -> Result<()> {
    let p = path(key)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| Error::os(Code::Internal, &e).context(format!("set sysctl {key}={value}")))
}

/// Write only if the file exists (upstream skips `accept_ra` when IPv6 is disabled).
pub fn write_if_exists(key: &str, value: &str) -> Result<()> {
    if path(key)?.exists() {
        write(key, value)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_proc_sys() {
        for bad in [
            "../etc/passwd",
            "net/ipv4/conf/../../x",
            "net//x",
            "",
            "net/ipv4/conf/./x",
        ] {
            assert!(path(bad).is_err(), "{bad}");
        }
        assert_eq!(
            path("net/ipv4/ip_forward").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
    }
}
