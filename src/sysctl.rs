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

/// Open for writing, if the file exists (opened inside a namespace, it is that namespace's).
pub fn open_if_exists(key: &str) -> Result<Option<std::fs::File>> {
    match std::fs::OpenOptions::new().write(true).open(path(key)?) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::os(Code::Internal, &e).context(format!("open sysctl {key}"))),
    }
}

/// Write `value` through a sysctl file opened earlier.
pub fn write_to(f: &mut std::fs::File, value: &str) -> Result<()> {
    f.write_all(value.as_bytes())
        .map_err(|e| Error::os(Code::Internal, &e))
}

/// Write only if the file exists (upstream skips `accept_ra` when IPv6 is disabled). One
/// lookup: a /proc/sys path walk is a search among every interface's entries.
pub fn write_if_exists(key: &str, value: &str) -> Result<()> {
    match std::fs::OpenOptions::new().write(true).open(path(key)?) {
        Ok(mut f) => f.write_all(value.as_bytes()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
    .map_err(|e| Error::os(Code::Internal, &e).context(format!("set sysctl {key}={value}")))
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
