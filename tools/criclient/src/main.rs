//! criclient: a small CRI v1 client that speaks to a container runtime's CRI socket exactly as
//! kubelet does (gRPC over a unix socket, `runtime.v1.RuntimeService` and `ImageService`), one
//! call per run, so that tests, the demo and the benchmark can drive containerd's CRI plugin from
//! Rust or from a shell script. It is not part of the product: the plugins never link it.
//!
//! Output: one JSON document on stdout (the CRI response, plus `elapsed_ms`, the time of the
//! gRPC call alone, without process start or connection set-up). `--get /json/pointer` prints
//! one field of it instead (strings bare), e.g. `runp ... --get /id`.
//! Errors: `criclient: <call>: <gRPC code>: <message>` on stderr, the runtime's message verbatim
//! (a CNI plugin's error text reaches the caller through it), and exit status 1; 2 for usage.
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use serde_json::{json, Value};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

const USAGE: &str = "\
usage: criclient [--timeout SECS] [--get /json/pointer] SOCKET COMMAND [ARGS...]
       (options and flags go anywhere before a `--`; what follows `--` is a command line)

  version                               Version (CRI runtime API version)
  wait [SECS]                           retry Version until the runtime answers (default 30 s)
  images                                ListImages
  runp POD                              RunPodSandbox            -> {\"id\"}
  statusp SANDBOX [--verbose]           PodSandboxStatus (verbose: info values parsed as JSON;
                                        the pause process is /info/info/pid)
  lsp [--name N] [--namespace NS]       ListPodSandbox
  stopp SANDBOX                         StopPodSandbox
  rmp SANDBOX                           RemovePodSandbox
  create SANDBOX POD --image IMG [--container NAME] [--container-attempt N] [--] CMD...
                                        CreateContainer           -> {\"id\"}
  start CONTAINER                       StartContainer
  status CONTAINER                      ContainerStatus
  ps [--sandbox SANDBOX]                ListContainers
  exec CONTAINER [--] CMD...            ExecSync (stdout, stderr as text; exit_code)
  stop CONTAINER [--grace SECS]         StopContainer (default grace 5 s)
  rm CONTAINER                          RemoveContainer

POD (the PodSandboxConfig kubelet sends):
  --name N --namespace NS --uid UID     PodSandboxMetadata and kubelet's pod labels (required)
  [--attempt N]                         metadata.attempt (kubelet's next sandbox of a pod: 1, 2...)
  [--port HOSTPORT:CONTAINERPORT[/tcp|/udp|/sctp]]...   port mappings (hostPort)
  [--log-dir DIR]                       log_directory (container logs go to DIR/NAME/0.log)
  [--host-network]                      hostNetwork: the node's network namespace (no CNI call)
";

/// A usage error (exit status 2), or a failed CRI call (exit status 1).
enum Fail {
    Usage(String),
    Call(&'static str, tonic::Status),
    Other(String),
}

impl From<String> for Fail {
    fn from(s: String) -> Fail {
        Fail::Usage(s)
    }
}

type Res<T> = Result<T, Fail>;

/// The pod as kubelet describes it in RunPodSandbox and again in CreateContainer.
struct Pod {
    name: String,
    namespace: String,
    uid: String,
    attempt: u32,
    ports: Vec<PortMapping>,
    log_dir: String,
    host_network: bool,
}

/// Command-line words, consumed front to back.
struct Args {
    words: Vec<String>,
}

impl Args {
    fn next(&mut self, what: &str) -> Res<String> {
        if self.words.is_empty() {
            return Err(Fail::Usage(format!("missing {what}")));
        }
        Ok(self.words.remove(0))
    }

    /// `--flag value`, removed from the words wherever it is (before a `--`).
    fn take_opt(&mut self, flag: &str) -> Res<Option<String>> {
        let end = self
            .words
            .iter()
            .position(|w| w == "--")
            .unwrap_or(self.words.len());
        match self.words[..end].iter().position(|w| w == flag) {
            None => Ok(None),
            Some(i) if i + 1 < end => {
                let v = self.words.remove(i + 1);
                self.words.remove(i);
                Ok(Some(v))
            }
            Some(_) => Err(Fail::Usage(format!("{flag} needs a value"))),
        }
    }

    fn take_all(&mut self, flag: &str) -> Res<Vec<String>> {
        let mut out = Vec::new();
        while let Some(v) = self.take_opt(flag)? {
            out.push(v);
        }
        Ok(out)
    }

    fn take_flag(&mut self, flag: &str) -> bool {
        let end = self
            .words
            .iter()
            .position(|w| w == "--")
            .unwrap_or(self.words.len());
        match self.words[..end].iter().position(|w| w == flag) {
            Some(i) => {
                self.words.remove(i);
                true
            }
            None => false,
        }
    }

    /// What is left: a command line (after an optional `--`).
    fn rest(&mut self) -> Vec<String> {
        if self.words.first().is_some_and(|w| w == "--") {
            self.words.remove(0);
        }
        std::mem::take(&mut self.words)
    }

    fn done(&self) -> Res<()> {
        match self.words.first() {
            None => Ok(()),
            Some(w) => Err(Fail::Usage(format!("unexpected argument {w:?}"))),
        }
    }

    fn pod(&mut self) -> Res<Pod> {
        let need =
            |v: Option<String>, f: &str| v.ok_or_else(|| Fail::Usage(format!("{f} is required")));
        let name = need(self.take_opt("--name")?, "--name")?;
        let namespace = need(self.take_opt("--namespace")?, "--namespace")?;
        let uid = need(self.take_opt("--uid")?, "--uid")?;
        let attempt = match self.take_opt("--attempt")? {
            Some(a) => a
                .parse()
                .map_err(|_| Fail::Usage(format!("--attempt {a:?} is not a number")))?,
            None => 0,
        };
        let ports = self
            .take_all("--port")?
            .iter()
            .map(|p| port_mapping(p))
            .collect::<Res<Vec<_>>>()?;
        let log_dir = self.take_opt("--log-dir")?.unwrap_or_default();
        let host_network = self.take_flag("--host-network");
        Ok(Pod {
            name,
            namespace,
            uid,
            attempt,
            ports,
            log_dir,
            host_network,
        })
    }
}

/// `8080:80`, `8080:80/udp`.
fn port_mapping(s: &str) -> Res<PortMapping> {
    let bad = || {
        Fail::Usage(format!(
            "--port {s:?}: want HOSTPORT:CONTAINERPORT[/tcp|/udp|/sctp]"
        ))
    };
    let (ports, proto) = match s.split_once('/') {
        Some((p, proto)) => (p, proto),
        None => (s, "tcp"),
    };
    let (host, container) = ports.split_once(':').ok_or_else(bad)?;
    let protocol = match proto {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        _ => return Err(bad()),
    };
    Ok(PortMapping {
        protocol: protocol as i32,
        container_port: container.parse().map_err(|_| bad())?,
        host_port: host.parse().map_err(|_| bad())?,
        host_ip: String::new(),
    })
}

/// The PodSandboxConfig kubelet sends for a pod (the parts a runtime and its CNI plugins see:
/// metadata, kubelet's labels, hostname, DNS, port mappings, pod network namespace).
fn sandbox_config(p: &Pod) -> PodSandboxConfig {
    let labels: HashMap<String, String> = [
        ("io.kubernetes.pod.name", &p.name),
        ("io.kubernetes.pod.namespace", &p.namespace),
        ("io.kubernetes.pod.uid", &p.uid),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.clone()))
    .collect();
    let annotations: HashMap<String, String> = [
        ("kubernetes.io/config.source".to_string(), "api".to_string()),
        (
            "kubernetes.io/config.seen".to_string(),
            "2026-01-01T00:00:00Z".to_string(),
        ),
    ]
    .into_iter()
    .collect();
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: p.name.clone(),
            uid: p.uid.clone(),
            namespace: p.namespace.clone(),
            attempt: p.attempt,
        }),
        // kubelet sets no hostname for a hostNetwork pod (it shares the node's UTS namespace)
        hostname: if p.host_network {
            String::new()
        } else {
            p.name.clone()
        },
        log_directory: p.log_dir.clone(),
        dns_config: Some(DnsConfig {
            servers: vec!["10.0.0.10".into()],
            searches: vec![
                format!("{}.svc.cluster.local", p.namespace),
                "svc.cluster.local".into(),
                "cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        }),
        port_mappings: p.ports.clone(),
        labels,
        annotations,
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    // hostNetwork: the runtime makes no network namespace and runs no CNI plugin
                    network: if p.host_network {
                        NamespaceMode::Node as i32
                    } else {
                        NamespaceMode::Pod as i32
                    },
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn connect(sock: &str) -> Result<Channel, String> {
    let sock = sock.to_string();
    // The URI is required by tonic and never used: the connector dials the unix socket.
    Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(service_fn(move |_: Uri| {
            let p = sock.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(p).await?)) }
        }))
        .await
        .map_err(|e| format!("connect: {e}"))
}

fn to_json<T: serde::Serialize>(v: &T) -> Res<Value> {
    serde_json::to_value(v).map_err(|e| Fail::Other(format!("encode response: {e}")))
}

/// PodSandboxStatus's verbose `info` values are JSON documents in strings: parse them, so that
/// `--get /info/info/pid` reaches the pause process.
fn expand_info(mut v: Value) -> Value {
    if let Some(info) = v.get_mut("info").and_then(Value::as_object_mut) {
        for val in info.values_mut() {
            if let Some(parsed) = val
                .as_str()
                .and_then(|s| serde_json::from_str::<Value>(s).ok())
            {
                *val = parsed;
            }
        }
    }
    v
}

fn add_elapsed(mut v: Value, t: Instant) -> Value {
    let ms = (t.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    if let Some(o) = v.as_object_mut() {
        o.insert("elapsed_ms".into(), json!(ms));
    }
    v
}

async fn call(sock: &str, mut a: Args) -> Res<Value> {
    let cmd = a.next("COMMAND")?;
    if cmd == "wait" {
        let secs: f64 = match a.words.first() {
            Some(s) => s
                .parse()
                .map_err(|_| Fail::Usage(format!("wait {s:?}: not a number of seconds")))?,
            None => 30.0,
        };
        return wait(sock, Duration::from_secs_f64(secs)).await;
    }
    let ch = connect(sock).await.map_err(Fail::Other)?;
    let mut rt = RuntimeServiceClient::new(ch.clone());
    let mut img = ImageServiceClient::new(ch);
    let v = match cmd.as_str() {
        "version" => {
            a.done()?;
            let t = Instant::now();
            let r = rt
                .version(VersionRequest {
                    version: "v1".into(),
                })
                .await
                .map_err(|e| Fail::Call("Version", e))?;
            add_elapsed(to_json(r.get_ref())?, t)
        }
        "images" => {
            a.done()?;
            let t = Instant::now();
            let r = img
                .list_images(ListImagesRequest { filter: None })
                .await
                .map_err(|e| Fail::Call("ListImages", e))?;
            add_elapsed(to_json(r.get_ref())?, t)
        }
        "runp" => {
            let pod = a.pod()?;
            a.done()?;
            let t = Instant::now();
            let r = rt
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(sandbox_config(&pod)),
                    runtime_handler: String::new(),
                })
                .await
                .map_err(|e| Fail::Call("RunPodSandbox", e))?;
            add_elapsed(json!({ "id": r.get_ref().pod_sandbox_id }), t)
        }
        "statusp" => {
            let id = a.next("SANDBOX")?;
            let verbose = a.take_flag("--verbose");
            a.done()?;
            let t = Instant::now();
            let r = rt
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: id,
                    verbose,
                })
                .await
                .map_err(|e| Fail::Call("PodSandboxStatus", e))?;
            add_elapsed(expand_info(to_json(r.get_ref())?), t)
        }
        "lsp" => {
            let mut labels = HashMap::new();
            if let Some(n) = a.take_opt("--name")? {
                labels.insert("io.kubernetes.pod.name".to_string(), n);
            }
            if let Some(n) = a.take_opt("--namespace")? {
                labels.insert("io.kubernetes.pod.namespace".to_string(), n);
            }
            a.done()?;
            let t = Instant::now();
            let r = rt
                .list_pod_sandbox(ListPodSandboxRequest {
                    filter: Some(PodSandboxFilter {
                        label_selector: labels,
                        ..Default::default()
                    }),
                })
                .await
                .map_err(|e| Fail::Call("ListPodSandbox", e))?;
            add_elapsed(to_json(r.get_ref())?, t)
        }
        "stopp" => {
            let id = a.next("SANDBOX")?;
            a.done()?;
            let t = Instant::now();
            rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id })
                .await
                .map_err(|e| Fail::Call("StopPodSandbox", e))?;
            add_elapsed(json!({}), t)
        }
        "rmp" => {
            let id = a.next("SANDBOX")?;
            a.done()?;
            let t = Instant::now();
            rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
                .await
                .map_err(|e| Fail::Call("RemovePodSandbox", e))?;
            add_elapsed(json!({}), t)
        }
        "create" => {
            let sandbox = a.next("SANDBOX")?;
            let pod = a.pod()?;
            let image = a
                .take_opt("--image")?
                .ok_or_else(|| Fail::Usage("--image is required".into()))?;
            let name = a.take_opt("--container")?.unwrap_or_else(|| "main".into());
            let attempt = match a.take_opt("--container-attempt")? {
                Some(n) => n.parse().map_err(|_| {
                    Fail::Usage(format!("--container-attempt {n:?} is not a number"))
                })?,
                None => 0,
            };
            let command = a.rest();
            let cfg = ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: name.clone(),
                    attempt,
                }),
                image: Some(ImageSpec {
                    image,
                    ..Default::default()
                }),
                command,
                // Without a log directory containerd would resolve the path against its cwd.
                log_path: if pod.log_dir.is_empty() {
                    String::new()
                } else {
                    format!("{name}/{attempt}.log")
                },
                labels: [("io.kubernetes.container.name".to_string(), name)]
                    .into_iter()
                    .collect(),
                linux: Some(LinuxContainerConfig::default()),
                ..Default::default()
            };
            let t = Instant::now();
            let r = rt
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: sandbox,
                    config: Some(cfg),
                    sandbox_config: Some(sandbox_config(&pod)),
                })
                .await
                .map_err(|e| Fail::Call("CreateContainer", e))?;
            add_elapsed(json!({ "id": r.get_ref().container_id }), t)
        }
        "start" => {
            let id = a.next("CONTAINER")?;
            a.done()?;
            let t = Instant::now();
            rt.start_container(StartContainerRequest { container_id: id })
                .await
                .map_err(|e| Fail::Call("StartContainer", e))?;
            add_elapsed(json!({}), t)
        }
        "status" => {
            let id = a.next("CONTAINER")?;
            a.done()?;
            let t = Instant::now();
            let r = rt
                .container_status(ContainerStatusRequest {
                    container_id: id,
                    verbose: false,
                })
                .await
                .map_err(|e| Fail::Call("ContainerStatus", e))?;
            add_elapsed(to_json(r.get_ref())?, t)
        }
        "ps" => {
            let sandbox = a.take_opt("--sandbox")?.unwrap_or_default();
            a.done()?;
            let t = Instant::now();
            let r = rt
                .list_containers(ListContainersRequest {
                    filter: Some(ContainerFilter {
                        pod_sandbox_id: sandbox,
                        ..Default::default()
                    }),
                })
                .await
                .map_err(|e| Fail::Call("ListContainers", e))?;
            add_elapsed(to_json(r.get_ref())?, t)
        }
        "exec" => {
            let id = a.next("CONTAINER")?;
            let cmd = a.rest();
            if cmd.is_empty() {
                return Err(Fail::Usage("exec: missing CMD".into()));
            }
            let t = Instant::now();
            let r = rt
                .exec_sync(ExecSyncRequest {
                    container_id: id,
                    cmd,
                    timeout: 30,
                })
                .await
                .map_err(|e| Fail::Call("ExecSync", e))?;
            let r = r.get_ref();
            add_elapsed(
                json!({
                    "exit_code": r.exit_code,
                    "stdout": String::from_utf8_lossy(&r.stdout),
                    "stderr": String::from_utf8_lossy(&r.stderr),
                }),
                t,
            )
        }
        "stop" => {
            let id = a.next("CONTAINER")?;
            let grace = match a.take_opt("--grace")? {
                Some(g) => g
                    .parse()
                    .map_err(|_| Fail::Usage(format!("--grace {g:?} is not a number")))?,
                None => 5,
            };
            a.done()?;
            let t = Instant::now();
            rt.stop_container(StopContainerRequest {
                container_id: id,
                timeout: grace,
            })
            .await
            .map_err(|e| Fail::Call("StopContainer", e))?;
            add_elapsed(json!({}), t)
        }
        "rm" => {
            let id = a.next("CONTAINER")?;
            a.done()?;
            let t = Instant::now();
            rt.remove_container(RemoveContainerRequest { container_id: id })
                .await
                .map_err(|e| Fail::Call("RemoveContainer", e))?;
            add_elapsed(json!({}), t)
        }
        c => return Err(Fail::Usage(format!("unknown command {c:?}"))),
    };
    Ok(v)
}

/// Version, retried until the runtime answers or `limit` passes (a runtime starting up).
async fn wait(sock: &str, limit: Duration) -> Res<Value> {
    let t = Instant::now();
    let mut last;
    loop {
        match connect(sock).await {
            Ok(ch) => {
                match RuntimeServiceClient::new(ch)
                    .version(VersionRequest {
                        version: "v1".into(),
                    })
                    .await
                {
                    Ok(r) => return Ok(add_elapsed(to_json(r.get_ref())?, t)),
                    Err(e) => last = format!("Version: {:?}: {}", e.code(), e.message()),
                }
            }
            Err(e) => last = e,
        }
        if t.elapsed() >= limit {
            return Err(Fail::Other(format!(
                "no CRI answer on {sock} after {limit:?}: {last}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// RFC 6901 JSON pointer; a string prints bare, anything else as JSON.
fn pick(v: &Value, pointer: &str) -> Result<String, String> {
    match v.pointer(pointer) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Ok(other.to_string()),
        None => Err(format!("--get {pointer}: no such field in {v}")),
    }
}

fn main() -> ExitCode {
    let mut a = Args {
        words: std::env::args().skip(1).collect(),
    };
    let parsed = (|| -> Res<(u64, Option<String>, String)> {
        let timeout = match a.take_opt("--timeout")? {
            Some(s) => s
                .parse()
                .map_err(|_| Fail::Usage(format!("--timeout {s:?} is not a number")))?,
            // kubelet's default --runtime-request-timeout
            None => 120,
        };
        let get = a.take_opt("--get")?;
        if a.take_flag("-h") || a.take_flag("--help") {
            return Err(Fail::Usage(String::new()));
        }
        let sock = a.next("SOCKET")?;
        Ok((timeout, get, sock))
    })();
    let (timeout, get, sock) = match parsed {
        Ok(p) => p,
        Err(Fail::Usage(m)) if m.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(Fail::Usage(m)) => {
            eprintln!("criclient: {m} (criclient --help: usage)");
            return ExitCode::from(2);
        }
        Err(_) => return ExitCode::from(2),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("criclient: tokio runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let r = rt.block_on(async {
        match tokio::time::timeout(Duration::from_secs(timeout), call(&sock, a)).await {
            Ok(r) => r,
            Err(_) => Err(Fail::Other(format!("no answer within {timeout} s"))),
        }
    });
    match r {
        Ok(v) => {
            let out = match &get {
                Some(p) => pick(&v, p),
                None => serde_json::to_string_pretty(&v).map_err(|e| e.to_string()),
            };
            match out {
                Ok(s) => {
                    println!("{s}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("criclient: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Err(Fail::Usage(m)) => {
            eprintln!("criclient: {m} (criclient --help: usage)");
            ExitCode::from(2)
        }
        Err(Fail::Call(what, s)) => {
            eprintln!("criclient: {what}: {:?}: {}", s.code(), s.message());
            ExitCode::from(1)
        }
        Err(Fail::Other(m)) => {
            eprintln!("criclient: {m}");
            ExitCode::from(1)
        }
    }
}
