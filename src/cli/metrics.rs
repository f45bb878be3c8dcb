//! `azure-vnet metrics`: the node in Prometheus' text exposition format: pools, endpoints and
//! problems (what `status` sees), and the plugins' operations by command and result with their
//! latencies and the last error, counted from the plugins' own log lines, read incrementally
//! (nothing is added to the ADD/DEL path). Printed once (node_exporter's textfile collector;
//! the counts since the previous run are kept in a cursor file), or served on `/metrics` with
//! `--listen ADDR`.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cli::node::ProblemKind;
use crate::cli::status::look;
use crate::cli::{Options, Usage};

const HELP: &str = "\
usage: azure-vnet metrics [--listen ADDR] [--conflist FILE] [--cursor FILE]

Prints the node's metrics in Prometheus' text format, once (for node_exporter's textfile
collector: the operation counts go on from where the previous run left them, kept in --cursor,
default <runDir>/azure-vnet/metrics-cursor.json), or serves them on http://ADDR/metrics
(--listen :9091, as the DaemonSet's metrics container does). Operations are counted from the
plugins' log lines written since the first run (or the start of the server).
";

/// Latency buckets (seconds): a CNI operation takes milliseconds, a lock wait up to 30 s.
const BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];
const PLUGINS: [&str; 2] = ["azure-vnet", "azure-vnet-ipam"];

/// Where reading a log file got to: which file (inode, 0 for none yet) and how far.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Cursor {
    /// The first look starts at the end of what is there; a file that appears later is
    /// read from its start.
    looked: bool,
    inode: u64,
    offset: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Hist {
    /// Observations at or below each of `BUCKETS` (not cumulative), and above the last.
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LastError {
    time: f64,
    command: String,
    code: String,
    error: String,
}

/// Everything counted from the logs so far.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Totals {
    cursors: BTreeMap<String, Cursor>,
    /// "plugin command code" -> operations.
    operations: BTreeMap<String, u64>,
    /// "plugin command" -> latency.
    latency: BTreeMap<String, Hist>,
    last_error: BTreeMap<String, LastError>,
    /// Why the state could not be read, as last said on stderr (a server says it once, not
    /// at every scrape).
    #[serde(skip)]
    unreadable: Option<String>,
}

impl Totals {
    fn count(&mut self, line: &[u8]) {
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            return;
        };
        let (Some(plugin), Some(command)) = (v["plugin"].as_str(), v["command"].as_str()) else {
            return;
        };
        let code = match v["msg"].as_str() {
            Some("done") => "0".to_string(),
            Some("failed") => v["code"]
                .as_u64()
                .map_or("unknown".into(), |c| c.to_string()),
            _ => return,
        };
        *self
            .operations
            .entry(format!("{plugin} {command} {code}"))
            .or_default() += 1;
        if let Some(ms) = v["durationMs"].as_f64() {
            let h = self
                .latency
                .entry(format!("{plugin} {command}"))
                .or_default();
            h.buckets.resize(BUCKETS.len() + 1, 0);
            let s = ms / 1e3;
            let i = BUCKETS
                .iter()
                .position(|b| s <= *b)
                .unwrap_or(BUCKETS.len());
            h.buckets[i] += 1;
            h.sum += s;
            h.count += 1;
        }
        if code != "0" {
            self.last_error.insert(
                plugin.to_string(),
                LastError {
                    time: v["time"].as_str().and_then(parse_time).unwrap_or(0.0),
                    command: command.to_string(),
                    code,
                    error: v["error"].as_str().unwrap_or_default().to_string(),
                },
            );
        }
    }

    /// Count the lines the plugins logged since the cursors (from the end, the first time).
    fn read_logs(&mut self, log_dir: &Path) {
        for plugin in PLUGINS {
            let path = log_dir.join(format!("{plugin}.log"));
            let mut cur = self.cursors.get(plugin).copied().unwrap_or_default();
            let mut lines = Vec::new();
            read_new(&path, &mut cur, &mut lines);
            self.cursors.insert(plugin.to_string(), cur);
            for l in lines.split(|b| *b == b'\n') {
                self.count(l);
            }
        }
    }
}

/// Append to `out` the complete lines written to `path` since `cur`, following a rotation
/// (the file `cur` points into is then one of `path.1`..`path.8`), and move `cur` on. A cursor
/// that never saw the file starts at its end.
fn read_new(path: &Path, cur: &mut Cursor, out: &mut Vec<u8>) {
    let meta = std::fs::metadata(path).ok();
    if !cur.looked {
        *cur = Cursor {
            looked: true,
            inode: meta.as_ref().map_or(0, |m| m.ino()),
            offset: meta.as_ref().map_or(0, |m| m.len()),
        };
        return;
    }
    let Some(meta) = meta else {
        return;
    };
    if cur.inode != meta.ino() {
        let rotated = (1..=8)
            .map(|n| PathBuf::from(format!("{}.{n}", path.display())))
            .find(|p| std::fs::metadata(p).is_ok_and(|m| cur.inode != 0 && m.ino() == cur.inode));
        if let Some(old) = rotated {
            read_from(&old, cur.offset, out);
        }
        *cur = Cursor {
            looked: true,
            inode: meta.ino(),
            offset: 0,
        };
    }
    cur.offset += read_from(path, cur.offset, out);
}

/// The complete lines of `path` from `offset`; how many bytes they were.
fn read_from(path: &Path, offset: u64, out: &mut Vec<u8>) -> u64 {
    let mut buf = Vec::new();
    let read = crate::files::open_regular(path).and_then(|mut f| {
        f.seek(SeekFrom::Start(offset))?;
        f.read_to_end(&mut buf)
    });
    if read.is_err() {
        return 0;
    }
    let whole = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    out.extend_from_slice(&buf[..whole]);
    out.push(b'\n');
    whole as u64
}

/// RFC 3339 (as the logs write it, UTC) to seconds since the epoch.
fn parse_time(s: &str) -> Option<f64> {
    let (date, rest) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let rest = rest.strip_suffix('Z')?;
    let mut t = rest.split(':');
    let (hh, mm) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let ss: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60) as f64 + ss)
}

// ---- the exposition ---------------------------------------------------------------------

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name(k.to_string());
            l.set_value(v.to_string());
            l
        })
        .collect()
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(format!("azure_vnet_{name}"));
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn gauge(pairs: &[(&str, &str)], v: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(v);
    let mut m = Metric::default();
    m.set_label(labels(pairs));
    m.set_gauge(g);
    m
}

/// The node's metrics as families, for `look`'s view and the log totals (brought up to date).
fn families(conflist: Option<&Path>, totals: &mut Totals) -> Vec<MetricFamily> {
    let mut out = Vec::new();
    let looked = look(conflist);
    out.push(family(
        "state_readable",
        "Whether the state files could be read (0: every other node gauge is missing).",
        MetricType::GAUGE,
        vec![gauge(&[], if looked.is_ok() { 1.0 } else { 0.0 })],
    ));
    let why = looked.as_ref().err().map(|e| e.msg().to_string());
    if why.is_some() && why != totals.unreadable {
        eprintln!(
            "azure-vnet metrics: the state cannot be read: {}",
            why.as_deref().unwrap_or_default()
        );
    }
    totals.unreadable = why;
    if let Ok((cfg, _, view)) = &looked {
        let per_pool = |f: fn(&crate::cli::node::PoolStat) -> usize| {
            view.pools
                .iter()
                .map(|p| gauge(&[("subnet", &p.subnet)], f(p) as f64))
                .collect()
        };
        out.push(family(
            "pool_addresses",
            "Addresses of each pool (secondary IPs of the node's NICs, as the source listed them).",
            MetricType::GAUGE,
            per_pool(|p| p.size),
        ));
        out.push(family(
            "pool_addresses_in_use",
            "Addresses of each pool held by a container.",
            MetricType::GAUGE,
            per_pool(|p| p.in_use),
        ));
        out.push(family(
            "pool_addresses_free",
            "Addresses of each pool that can be handed out.",
            MetricType::GAUGE,
            per_pool(|p| p.free),
        ));
        out.push(family(
            "endpoints",
            "Endpoint records of the network (pods attached by azure-vnet).",
            MetricType::GAUGE,
            vec![gauge(&[], view.endpoints.len() as f64)],
        ));
        out.push(family(
            "problems",
            "Problems `azure-vnet status` names, by kind.",
            MetricType::GAUGE,
            ProblemKind::ALL
                .iter()
                .map(|k| {
                    let n = view.problems.iter().filter(|p| p.kind == *k).count();
                    gauge(&[("kind", k.as_str())], n as f64)
                })
                .collect(),
        ));
        totals.read_logs(&cfg.settings.log.dir);
    }
    let ops = totals
        .operations
        .iter()
        .filter_map(|(k, n)| {
            let mut it = k.splitn(3, ' ');
            let (p, c, code) = (it.next()?, it.next()?, it.next()?);
            let mut counter = Counter::default();
            counter.set_value(*n as f64);
            let mut m = Metric::default();
            m.set_label(labels(&[("plugin", p), ("command", c), ("code", code)]));
            m.set_counter(counter);
            Some(m)
        })
        .collect();
    out.push(family(
        "operations_total",
        "CNI operations the plugins finished, by plugin, command and CNI result code (0: success).",
        MetricType::COUNTER,
        ops,
    ));
    let hists = totals
        .latency
        .iter()
        .filter_map(|(k, h)| {
            let (p, c) = k.split_once(' ')?;
            let mut cumulative = 0;
            let buckets = BUCKETS
                .iter()
                .zip(&h.buckets)
                .map(|(b, n)| {
                    cumulative += n;
                    let mut bucket = Bucket::default();
                    bucket.set_upper_bound(*b);
                    bucket.set_cumulative_count(cumulative);
                    bucket
                })
                .collect();
            let mut hist = Histogram::default();
            hist.set_sample_count(h.count);
            hist.set_sample_sum(h.sum);
            hist.set_bucket(buckets);
            let mut m = Metric::default();
            m.set_label(labels(&[("plugin", p), ("command", c)]));
            m.set_histogram(hist);
            Some(m)
        })
        .collect();
    out.push(family(
        "operation_duration_seconds",
        "How long the plugins' CNI operations took, by plugin and command.",
        MetricType::HISTOGRAM,
        hists,
    ));
    let errors = totals
        .last_error
        .iter()
        .map(|(p, e)| {
            gauge(
                &[
                    ("plugin", p),
                    ("command", &e.command),
                    ("code", &e.code),
                    ("error", &e.error),
                ],
                e.time,
            )
        })
        .collect();
    out.push(family(
        "last_error_timestamp_seconds",
        "When each plugin last failed (Unix time), with the command, CNI code and message.",
        MetricType::GAUGE,
        errors,
    ));
    out
}

fn render(families: &[MetricFamily]) -> Vec<u8> {
    use prometheus::Encoder;
    let mut out = Vec::new();
    let _ = prometheus::TextEncoder::new().encode(families, &mut out);
    out
}

pub(crate) fn metrics_cmd(p: &mut lexopt::Parser) -> std::result::Result<i32, Usage> {
    let o = Options::parse(p, &["listen", "conflist", "cursor"], &[])?;
    if o.help {
        print!("{HELP}");
        return Ok(0);
    }
    let conflist = o.path("conflist").map(PathBuf::as_path);
    let Some(addr) = o.path("listen") else {
        // Once: the counts go on from the cursor file, which is then brought up to date.
        let vars: std::collections::HashMap<String, String> = std::env::vars().collect();
        let cursor = o.path("cursor").cloned().or_else(|| {
            let cfg = crate::cli::node::NodeConfig::load(conflist, &vars).ok()?;
            Some(cfg.settings.lock_dir().join("metrics-cursor.json"))
        });
        let mut totals: Totals = cursor
            .as_ref()
            .and_then(|c| crate::files::read_regular(c, 1 << 20).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let text = render(&families(conflist, &mut totals));
        if let (Some(c), Ok(json)) = (&cursor, serde_json::to_vec(&totals)) {
            if let Err(e) = crate::store::write_atomic(c, &json) {
                eprintln!("azure-vnet metrics: {}: {}", c.display(), e.msg());
            }
        }
        print!("{}", String::from_utf8_lossy(&text));
        return Ok(0);
    };
    let addr = addr.to_string_lossy().into_owned();
    let bind = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.clone()
    };
    // An address that names nothing is the caller's mistake (usage); one that cannot be bound
    // (in use, not ours) is the node's.
    if std::net::ToSocketAddrs::to_socket_addrs(bind.as_str()).is_err() {
        return Err(Usage(format!(
            "--listen {addr}: not an address to listen on"
        )));
    }
    let server = match tiny_http::Server::http(&bind) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("azure-vnet metrics: listen on {addr}: {e}");
            return Ok(1);
        }
    };
    eprintln!("azure-vnet metrics: serving http://{bind}/metrics");
    // The server's counts start with it: the logs are read from their end.
    let mut totals = Totals::default();
    let _ = families(conflist, &mut totals);
    for req in server.incoming_requests() {
        let resp = if req.url() == "/metrics" {
            let body = render(&families(conflist, &mut totals));
            let header = tiny_http::Header::from_bytes(
                &b"Content-Type"[..],
                &b"text/plain; version=0.0.4; charset=utf-8"[..],
            );
            let mut r = tiny_http::Response::from_data(body);
            if let Ok(h) = header {
                r.add_header(h);
            }
            r
        } else {
            tiny_http::Response::from_data(b"azure-vnet metrics: see /metrics\n".to_vec())
                .with_status_code(if req.url() == "/" { 200 } else { 404 })
        };
        let _ = req.respond(resp);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_become_counts_histograms_and_the_last_error() {
        let mut t = Totals::default();
        for l in [
            r#"{"plugin":"azure-vnet","command":"ADD","msg":"done","durationMs":3.1,"time":"2026-12-02T05:00:00Z"}"#,
            r#"{"plugin":"azure-vnet","command":"ADD","msg":"failed","code":100,"error":"No available addresses","durationMs":1500.0,"time":"2026-12-02T05:00:01.5Z"}"#,
            r#"{"plugin":"azure-vnet","command":"ADD","msg":"endpoint created"}"#,
            "not json",
        ] {
            t.count(l.as_bytes());
        }
        assert_eq!(t.operations["azure-vnet ADD 0"], 1);
        assert_eq!(t.operations["azure-vnet ADD 100"], 1);
        let h = &t.latency["azure-vnet ADD"];
        // 3.1 ms in the 5 ms bucket, 1.5 s in the 2 s bucket.
        assert_eq!((h.count, h.buckets[2], h.buckets[10]), (2, 1, 1));
        let e = &t.last_error["azure-vnet"];
        assert_eq!(
            (e.code.as_str(), e.error.as_str()),
            ("100", "No available addresses")
        );
        assert_eq!(e.time, 1_796_187_601.5);
    }

    #[test]
    fn a_rotated_log_is_read_to_its_end_then_the_new_one() {
        let dir = crate::store::tests::tempdir("metrics");
        let log = dir.join("azure-vnet.log");
        let mut cur = Cursor::default();
        let mut out = Vec::new();
        read_new(&log, &mut cur, &mut out);
        std::fs::write(&log, "z\n").unwrap();
        read_new(&log, &mut cur, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "z\n\n",
            "a file that appears: from its start"
        );
        out.clear();
        let mut cur = Cursor::default();
        std::fs::write(&log, "a\n").unwrap();
        read_new(&log, &mut cur, &mut out);
        assert!(out.is_empty(), "the first look starts at the end");
        std::fs::write(&log, "a\nb\nhalf").unwrap();
        read_new(&log, &mut cur, &mut out);
        assert_eq!(String::from_utf8_lossy(&out), "b\n\n");
        // Rotation: the rest of the old file, then the new one.
        std::fs::write(&log, "a\nb\nhalf line\nc\n").unwrap();
        std::fs::rename(&log, dir.join("azure-vnet.log.1")).unwrap();
        std::fs::write(&log, "d\n").unwrap();
        out.clear();
        read_new(&log, &mut cur, &mut out);
        assert_eq!(String::from_utf8_lossy(&out), "half line\nc\n\nd\n\n");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
