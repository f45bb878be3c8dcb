//! The CNI protocol: environment, network config, results, versions, errors, and the
//! dispatcher that turns (env, stdin) into (stdout, exit code). Nothing here touches the kernel.

pub mod args;
pub mod config;
pub mod env;
pub mod result;
pub mod skel;
pub mod version;

use serde::Serialize;
use serde_json::{json, Value};

use crate::error::Error;
use version::Version;

/// JSON indented with four spaces, as libcni's `PrintResult` and `Error.Print` write it.
pub fn pretty4<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    // Serializing a serde_json::Value or our derive'd types into a Vec cannot fail (no I/O,
    // no non-string map keys); fall back to an empty document rather than panic.
    if value.serialize(&mut ser).is_err() {
        out.clear();
        out.extend_from_slice(b"{}");
    }
    out
}

/// The CNI error document: `{cniVersion, code, msg, details}` (CNI spec "Error").
pub fn error_json(err: &Error, version: Option<Version>) -> Vec<u8> {
    let mut v = json!({
        "cniVersion": version.unwrap_or(Version::V1_1_0).as_str(),
        "code": err.code().cni_code(),
        "msg": err.msg(),
    });
    if let (Some(d), Value::Object(o)) = (err.details(), &mut v) {
        o.insert("details".into(), json!(d));
    }
    pretty4(&v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    #[test]
    fn error_document_shape() {
        let e =
            Error::new(Code::Runtime, "No available addresses").with_details("pool 10.224.0.0/16");
        let v: Value = serde_json::from_slice(&error_json(&e, Some(Version::V0_3_0))).unwrap();
        assert_eq!(
            v,
            json!({"cniVersion":"0.3.0","code":100,"msg":"No available addresses","details":"pool 10.224.0.0/16"})
        );
        let v: Value =
            serde_json::from_slice(&error_json(&Error::new(Code::InvalidEnv, "x"), None)).unwrap();
        assert_eq!(v, json!({"cniVersion":"1.1.0","code":4,"msg":"x"}));
    }
}
