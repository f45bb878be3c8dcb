//! HTTP GET of the wireserver's NMAgent URL: plain HTTP, no proxy (the wireserver is only
//! reachable directly from the VM), bounded time and size.

use std::time::Duration;

use crate::error::{Code, Error, Result};

pub fn get(url: &str, timeout: Duration, limit: u64) -> Result<Vec<u8>> {
    let err = |msg: String| Error::new(Code::Runtime, format!("wireserver {url}: {msg}"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .proxy(None)
        .max_redirects(0)
        .timeout_connect(Some(timeout))
        .timeout_recv_response(Some(timeout))
        .timeout_recv_body(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent.get(url).call().map_err(|e| err(e.to_string()))?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(err(format!("HTTP status {status}")));
    }
    resp.body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => {
                err(format!("response is larger than {limit} bytes"))
            }
            other => err(other.to_string()),
        })
}
