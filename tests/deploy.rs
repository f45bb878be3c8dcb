//! The deployment (issue 12): the installer's container image (scripts/build-image.sh) and the
//! DaemonSet (deploy/azure-vnet-cni.yaml).
//!
//! * the manifest validates, strictly and offline (in a network namespace of its own, with no
//!   route anywhere), against the Kubernetes API schemas of pinned releases, and copies of it
//!   broken on purpose do not;
//! * the manifest asks for what a node's CNI installer needs and no more (host network,
//!   every taint, system-node-critical, no privilege, no capability, nothing writable but the
//!   two CNI directories, requests and limits, a rolling update);
//! * the image holds the static executable and the conflist only, and builds to the same bytes
//!   twice;
//! * containerd imports the image and runs it as the DaemonSet's init container, through CRI,
//!   with the manifest's own security context, mounts and limits (read from the manifest, so
//!   what runs is what is deployed); containerd picks up the conflist it installs, and pods get
//!   their network, with traffic, from the plugin it installed; the pod's metrics container,
//!   run the same way, serves what the node's plugin did.

mod common;
use common::cri::*;
use common::*;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The Kubernetes releases the manifest is validated against (kubernetes-validate 1.37.0, as
/// scripts/install-deps.sh pins it, bundles their schemas).
const K8S_VERSIONS: [&str; 3] = ["1.31.0", "1.34.0", "1.37.0"];

const MANIFEST: &str = "deploy/azure-vnet-cni.yaml";

fn venv_bin(name: &str) -> PathBuf {
    let p = repo().join("target/tools/venv/bin").join(name);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/install-deps.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

/// kubernetes-validate, strict, against `version`, in a new network namespace (only a down
/// loopback: any attempt to reach the network fails), as the test's proof that it is offline.
fn validate(file: &Path, version: &str) -> (bool, String) {
    let out = Command::new("unshare")
        .arg("--net")
        .arg(venv_bin("kubernetes-validate"))
        .args(["--strict", "-k", version])
        .arg(file)
        .env_clear()
        .env("PATH", PATH)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The documents of a YAML file, as JSON (PyYAML from the same venv).
fn yaml_docs(file: &Path) -> Vec<Value> {
    let out = Command::new(venv_bin("python"))
        .args([
            "-c",
            "import json, sys, yaml\n\
             json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)",
        ])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn daemonset() -> Value {
    let docs = yaml_docs(&repo().join(MANIFEST));
    let ds: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "DaemonSet").collect();
    assert_eq!(ds.len(), 1, "one DaemonSet in {MANIFEST}");
    ds[0].clone()
}

/// `64Mi` -> bytes, `200m` (CPU) -> millicores.
fn quantity_bytes(q: &str) -> i64 {
    let (n, mult) = [("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)]
        .iter()
        .find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m)))
        .unwrap_or((q, 1));
    n.parse::<i64>().unwrap_or_else(|_| panic!("quantity {q}")) * mult
}

fn millicores(q: &str) -> i64 {
    match q.strip_suffix('m') {
        Some(m) => m.parse().unwrap(),
        None => q.parse::<i64>().unwrap() * 1000,
    }
}

/// What kubelet asks of the runtime for container `c` of the DaemonSet's pod: its hostPath
/// mounts (each host path mapped by `host` to where this test keeps that node directory), its
/// security context and limits, as criclient's CONTAINER options, then its command line if it
/// sets one.
fn cri_options(ds: &Value, c: &Value, host: &dyn Fn(&str) -> PathBuf) -> Vec<String> {
    let spec = &ds["spec"]["template"]["spec"];
    let volumes: BTreeMap<&str, &str> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap(),
                v["hostPath"]["path"]
                    .as_str()
                    .expect("hostPath volumes only"),
            )
        })
        .collect();
    let mut o: Vec<String> = Vec::new();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let hp = volumes[m["name"].as_str().unwrap()];
        let ro = if m["readOnly"] == true { ":ro" } else { "" };
        o.push("--mount".into());
        o.push(format!(
            "{}:{}{ro}",
            host(hp).display(),
            m["mountPath"].as_str().unwrap()
        ));
    }
    let sc = &c["securityContext"];
    assert_ne!(
        sc["privileged"], true,
        "this harness runs no privileged container"
    );
    if let Some(u) = sc["runAsUser"].as_i64() {
        o.extend(["--user".into(), u.to_string()]);
    }
    if sc["readOnlyRootFilesystem"] == true {
        o.push("--readonly-rootfs".into());
    }
    if sc["allowPrivilegeEscalation"] == false {
        o.push("--no-new-privs".into());
    }
    for (key, flag) in [("drop", "--cap-drop"), ("add", "--cap-add")] {
        for cap in sc["capabilities"][key].as_array().into_iter().flatten() {
            o.extend([flag.to_string(), cap.as_str().unwrap().to_string()]);
        }
    }
    let seccomp = sc["seccompProfile"]["type"]
        .as_str()
        .or(spec["securityContext"]["seccompProfile"]["type"].as_str());
    if seccomp == Some("RuntimeDefault") {
        o.push("--seccomp-runtime-default".into());
    }
    let limits = &c["resources"]["limits"];
    let command: Vec<String> = c["command"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(c["args"].as_array().into_iter().flatten())
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    if let Some(m) = limits["memory"].as_str() {
        o.extend(["--memory-limit".into(), quantity_bytes(m).to_string()]);
    }
    if let Some(cpu) = limits["cpu"].as_str() {
        // kubelet: quota = millicores * period / 1000, period 100 ms
        o.extend(["--cpu-quota".into(), (millicores(cpu) * 100).to_string()]);
    }
    // command and args replace the image's entrypoint (kubelet passes both; the runtime runs
    // the one command line they make)
    if !command.is_empty() {
        o.push("--".into());
        o.extend(command);
    }
    o
}

#[test]
fn deploy_manifest_validates_offline_against_pinned_kubernetes_releases_and_broken_copies_do_not() {
    require_root(); // a network namespace of its own
    let file = repo().join(MANIFEST);
    let kinds: Vec<String> = yaml_docs(&file)
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap().to_lowercase(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert!(!kinds.is_empty());
    for v in K8S_VERSIONS {
        let (ok, out) = validate(&file, v);
        assert!(ok, "{MANIFEST} against {v}:\n{out}");
        // A kind the validator has no schema for is only a warning: every resource must have
        // been checked.
        assert!(!out.contains("WARN") && !out.contains("ERROR"), "{out}");
        let minor = v.rsplit_once('.').unwrap().0;
        for k in &kinds {
            assert!(
                out.contains(&format!("passed for resource {k} against version {minor}")),
                "{k} against {v}: {out}"
            );
        }
    }

    // Broken on purpose, each must fail, naming what is wrong.
    let text = std::fs::read_to_string(&file).unwrap();
    let dir = TempDir::new("manifest");
    let cases: [(&str, String, &str); 4] = [
        (
            "a misspelt field (strict)",
            text.replacen("hostNetwork: true", "hostNetwrok: true", 1),
            "'hostNetwrok' was unexpected",
        ),
        (
            "a string for a boolean",
            text.replacen(
                "readOnlyRootFilesystem: true",
                "readOnlyRootFilesystem: \"yes\"",
                1,
            ),
            "is not of type 'boolean'",
        ),
        (
            "a required field missing",
            text.replacen(
                "  selector:\n    matchLabels:\n      app.kubernetes.io/name: azure-vnet-cni\n",
                "",
                1,
            ),
            "'selector' is a required property",
        ),
        (
            "a string for an integer",
            text.replacen("containerPort: 9091", "containerPort: \"9091\"", 1),
            "is not of type 'integer'",
        ),
    ];
    for (what, broken, words) in cases {
        assert_ne!(broken, text, "{what}: the mutation applies");
        let f = dir.join("broken.yaml");
        std::fs::write(&f, broken).unwrap();
        let (ok, out) = validate(&f, K8S_VERSIONS[1]);
        assert!(!ok, "{what}: validated anyway:\n{out}");
        assert!(
            out.contains("ERROR") && out.contains(words),
            "{what}: {out}"
        );
    }
}

#[test]
fn deploy_manifest_asks_for_what_a_cni_installer_needs_and_no_more() {
    let ds = daemonset();
    assert_eq!(ds["apiVersion"], "apps/v1");
    assert_eq!(ds["metadata"]["namespace"], "kube-system");
    let spec = &ds["spec"];
    let pod = &spec["template"]["spec"];
    // The selector selects the template's pods.
    for (k, v) in spec["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&spec["template"]["metadata"]["labels"][k], v, "label {k}");
    }
    assert_eq!(spec["updateStrategy"]["type"], "RollingUpdate");
    assert!(spec["updateStrategy"]["rollingUpdate"]["maxUnavailable"].is_string());
    // Every Linux node, whatever its taints, first.
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
    let tolerations = pod["tolerations"].as_array().unwrap();
    assert!(
        tolerations.iter().any(|t| t["operator"] == "Exists"
            && t.get("key").is_none()
            && t.get("effect").is_none()),
        "a toleration of every taint: {tolerations:?}"
    );
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "Default", "no cluster DNS before the CNI");
    assert_eq!(pod["automountServiceAccountToken"], false);
    for ns in ["hostPID", "hostIPC"] {
        assert!(pod.get(ns).is_none_or(|v| v == false), "{ns}");
    }

    // The volumes: the two CNI directories, the state, lock and log directories; nothing else.
    let volumes: BTreeMap<&str, &str> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap(),
                v["hostPath"]["path"].as_str().unwrap(),
            )
        })
        .collect();
    let mut paths: Vec<&str> = volumes.values().copied().collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/etc/cni/net.d",
            "/opt/cni/bin",
            "/var/log",
            "/var/run",
            "/var/run/azure-vnet"
        ]
    );

    let version = version_of(&vnet_bin());
    let inits = pod["initContainers"].as_array().unwrap();
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(inits.len(), 1);
    let install = &inits[0];
    // The image's entrypoint is the install: no command or args to override it.
    assert!(install.get("command").is_none() && install.get("args").is_none());
    let mounts = |c: &Value| -> Vec<(String, String, bool)> {
        let mut m: Vec<_> = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    volumes[m["name"].as_str().unwrap()].to_string(),
                    m["mountPath"].as_str().unwrap().to_string(),
                    m["readOnly"] == true,
                )
            })
            .collect();
        m.sort();
        m
    };
    assert_eq!(
        mounts(install),
        [
            (
                "/etc/cni/net.d".to_string(),
                "/host/etc/cni/net.d".to_string(),
                false
            ),
            (
                "/opt/cni/bin".to_string(),
                "/host/opt/cni/bin".to_string(),
                false
            ),
        ],
        "the installer writes the two CNI directories, under --host-root /host, and nothing else"
    );
    for c in inits.iter().chain(containers) {
        let name = c["name"].as_str().unwrap();
        let sc = &c["securityContext"];
        assert_eq!(sc["privileged"], false, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{name}"
        );
        assert!(
            sc["capabilities"].get("add").is_none(),
            "{name}: no capability"
        );
        for kind in ["requests", "limits"] {
            for r in ["cpu", "memory"] {
                assert!(
                    c["resources"][kind][r].is_string(),
                    "{name}: resources.{kind}.{r}"
                );
            }
        }
        // One image, the version this source builds.
        let image = c["image"].as_str().unwrap();
        assert!(
            image.ends_with(&format!("/azure-vnet-cni:{version}")),
            "{name}: {image} (this source builds {version})"
        );
    }
    // The long-running container reads the node where the plugins keep it; it writes only
    // the plugins' lock directory (it reads the state under their locks).
    let metrics = containers
        .iter()
        .find(|c| c["name"] == "metrics")
        .expect("a metrics container");
    let writable: Vec<_> = mounts(metrics).into_iter().filter(|m| !m.2).collect();
    assert_eq!(
        writable,
        [(
            "/var/run/azure-vnet".to_string(),
            "/var/run/azure-vnet".to_string(),
            false
        )]
    );
    for m in metrics["volumeMounts"].as_array().unwrap() {
        if m["readOnly"] == true {
            assert_eq!(m["recursiveReadOnly"], "IfPossible", "{m}");
        }
    }
    assert_eq!(metrics["command"], serde_json::json!(["/azure-vnet"]));
    let port = metrics["ports"][0]["containerPort"].as_i64().unwrap();
    assert_eq!(
        spec["template"]["metadata"]["annotations"]["prometheus.io/port"],
        port.to_string()
    );
    assert_eq!(
        metrics["args"],
        serde_json::json!(["metrics", "--listen", format!(":{port}")])
    );
    assert_eq!(
        spec["template"]["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
}

/// The image, built once per test process by scripts/build-image.sh.
struct Image {
    archive: PathBuf,
    reference: String,
    version: String,
}

fn build_image(out: &Path) -> String {
    let o = Command::new(repo().join("scripts/build-image.sh"))
        .arg("--out")
        .arg(out)
        .output()
        .expect("run scripts/build-image.sh");
    assert!(
        o.status.success(),
        "scripts/build-image.sh: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = repo().join("target/deploy-test");
        std::fs::create_dir_all(&dir).unwrap();
        let archive = dir.join("azure-vnet-cni.oci.tar");
        assert_eq!(build_image(&archive), archive.display().to_string());
        let layout = OciLayout::open(&archive);
        Image {
            reference: layout.index["manifests"][0]["annotations"]["io.containerd.image.name"]
                .as_str()
                .unwrap()
                .to_string(),
            version: layout.config["config"]["Labels"]["org.opencontainers.image.version"]
                .as_str()
                .unwrap()
                .to_string(),
            archive,
        }
    })
}

/// An OCI archive unpacked: its index, manifest, config and the one layer's entries.
struct OciLayout {
    _dir: TempDir,
    index: Value,
    manifest: Value,
    config: Value,
    /// `tar -tv` of the layer: (mode string, owner, size, date, name)
    entries: Vec<(String, String, u64, String, String)>,
    rootfs: PathBuf,
}

impl OciLayout {
    fn open(archive: &Path) -> OciLayout {
        let dir = TempDir::new("oci");
        sh(&[
            "tar",
            "-xf",
            archive.to_str().unwrap(),
            "-C",
            dir.path().to_str().unwrap(),
        ]);
        let blob = |digest: &Value| {
            dir.join("blobs/sha256")
                .join(digest.as_str().unwrap().strip_prefix("sha256:").unwrap())
        };
        let index = read_json(&dir.join("index.json"));
        assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
        let manifest = read_json(&blob(&index["manifests"][0]["digest"]));
        let config = read_json(&blob(&manifest["config"]["digest"]));
        assert_eq!(manifest["layers"].as_array().unwrap().len(), 1, "one layer");
        let layer = blob(&manifest["layers"][0]["digest"]);
        let listing = sh(&[
            "tar",
            "--numeric-owner",
            "--full-time",
            "-tvzf",
            layer.to_str().unwrap(),
        ]);
        let entries = listing
            .lines()
            .map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (
                    w[0].to_string(),
                    w[1].to_string(),
                    w[2].parse().unwrap(),
                    format!("{} {}", w[3], w[4]),
                    w[5..].join(" "),
                )
            })
            .collect();
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        sh(&[
            "tar",
            "-xzf",
            layer.to_str().unwrap(),
            "-C",
            rootfs.to_str().unwrap(),
        ]);
        OciLayout {
            _dir: dir,
            index,
            manifest,
            config,
            entries,
            rootfs,
        }
    }
}

/// Whether an ELF executable names an interpreter (PT_INTERP): a dynamically linked one.
fn has_elf_interpreter(bytes: &[u8]) -> bool {
    assert_eq!(&bytes[..4], b"\x7fELF");
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) == 3
    })
}

#[test]
fn image_holds_the_static_executable_and_the_conflist_only_and_builds_to_the_same_bytes_twice() {
    let img = image();
    let l = OciLayout::open(&img.archive);

    // Exactly two files, root's, timestamps 0: no shell, no libc, no package manager.
    let names: Vec<(&str, &str, &str, &str)> = l
        .entries
        .iter()
        .map(|(mode, owner, _, date, name)| {
            (mode.as_str(), owner.as_str(), date.as_str(), name.as_str())
        })
        .collect();
    assert_eq!(
        names,
        [
            ("-rwxr-xr-x", "0/0", "1970-01-01 00:00:00", "azure-vnet"),
            (
                "-rw-r--r--",
                "0/0",
                "1970-01-01 00:00:00",
                "10-azure.conflist"
            ),
        ],
        "{:?}",
        l.entries
    );
    let exe = std::fs::read(l.rootfs.join("azure-vnet")).unwrap();
    assert_eq!(
        exe,
        std::fs::read(repo().join("dist/azure-vnet")).unwrap(),
        "the release executable of scripts/build-release.sh"
    );
    assert!(
        !has_elf_interpreter(&exe),
        "statically linked: the image has no dynamic loader"
    );
    assert!(has_elf_interpreter(
        &std::fs::read(env!("CARGO_BIN_EXE_azure-vnet")).unwrap()
    ));
    assert_eq!(
        std::fs::read(l.rootfs.join("10-azure.conflist")).unwrap(),
        std::fs::read(repo().join("conflist/10-azure.conflist")).unwrap()
    );

    // The entrypoint is the install, as the DaemonSet's init container runs it.
    let cfg = &l.config["config"];
    assert_eq!(
        cfg["Entrypoint"],
        serde_json::json!([
            "/azure-vnet",
            "install",
            "--host-root",
            "/host",
            "--conflist",
            "/10-azure.conflist"
        ])
    );
    assert!(cfg.get("Cmd").is_none());
    assert_eq!(
        img.version,
        version_of(&repo().join("dist/azure-vnet")),
        "the version label is the executable's"
    );
    assert_eq!(
        img.reference,
        format!("localhost/azure-vnet-cni:{}", img.version)
    );
    assert!(cfg["Labels"]["org.opencontainers.image.revision"].is_string());
    assert_eq!(l.manifest["annotations"], cfg["Labels"]);
    assert_eq!(l.config["os"], "linux");

    // Deterministic: a second build is the same bytes.
    let again = TempDir::new("image2");
    let second = again.join("again.tar");
    build_image(&second);
    assert!(
        std::fs::read(&img.archive).unwrap() == std::fs::read(&second).unwrap(),
        "two builds of one source differ"
    );
}

#[test]
fn cri_the_image_runs_as_the_daemonsets_init_container_and_pods_get_their_network_from_it() {
    let img = image();
    let tb = Testbed::up(30);
    let ws = Wireserver::start(&tb.node("a"), &tb.nmagent_xml("a"), "ok");
    // A node before the DaemonSet: the node image's loopback and portmap, no conflist.
    let cri = CriNode::start(&tb, "a", CniSetup::not_installed(&tb, "a", &ws));
    let (ready, cond) = cri.network_ready();
    assert!(!ready, "no conflist yet, network not ready: {cond}");
    let (bin, conf) = (cri.cni_bin_dir(), cri.cni_conf_dir());
    let others_before: Vec<_> = ["loopback", "portmap"]
        .iter()
        .map(|f| file_identity(&bin.join(f)))
        .collect();

    cri.import_image(&img.archive);
    assert!(
        cri.call_ok(&["images"])
            .to_string()
            .contains(&img.reference),
        "CRI sees {}",
        img.reference
    );

    // The DaemonSet's pod: host network, its init container as the manifest says.
    let ds = daemonset();
    let init = &ds["spec"]["template"]["spec"]["initContainers"][0];
    let host = |p: &str| match p {
        "/opt/cni/bin" => bin.clone(),
        "/etc/cni/net.d" => conf.clone(),
        "/var/run" => tb.run_dir("a"),
        "/var/run/azure-vnet" => tb.run_dir("a").join("azure-vnet"),
        "/var/log" => tb.log_dir("a"),
        other => panic!("the manifest mounts {other}"),
    };
    let opts = cri_options(&ds, init, &host);
    let run = |pod: &Pod, opts: &[String]| -> (Sandbox, String, i64, String) {
        let sb = cri.runp(pod);
        let t = Instant::now();
        let id = cri.start_container(&sb, pod, "install", &img.reference, opts);
        let code = cri.wait_exit(&id, Duration::from_secs(60));
        let log = cri.container_log(pod, "install");
        eprintln!(
            "init container ran in {:?}, exit {code}:\n{log}",
            t.elapsed()
        );
        (sb, id, code, log)
    };
    let run_installer = |pod: &Pod| -> (Sandbox, String, String) {
        let (sb, id, code, log) = run(pod, &opts);
        assert_eq!(code, 0, "the init container failed: {log}\n{}", cri.diag());
        (sb, id, log)
    };

    // Less than uid 0 is not enough (the node's directories are root's, 0755): the install
    // fails while staging, clearly, and leaves the node as it was.
    let mut nobody = opts.clone();
    let at = nobody.iter().position(|o| o == "--user").unwrap();
    nobody[at + 1] = "65534".into();
    let (_, _, code, log) = run(
        &Pod::new("azure-vnet-cni-nonroot", "kube-system").host_network(),
        &nobody,
    );
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("azure-vnet install:") && log.contains("Permission denied"),
        "{log}"
    );
    assert!(!bin.join("azure-vnet").exists() && !conf.join("10-azure.conflist").exists());
    let pod = Pod::new("azure-vnet-cni-7xk2p", "kube-system").host_network();
    let (ds_sandbox, id, log) = run_installer(&pod);

    // It ran as the manifest says: uid 0, no capability at all, no_new_privs, read-only root,
    // the limits, seccomp, and the two CNI directories as its only writable host paths.
    let spec = cri.oci_spec(&id);
    let p = &spec["process"];
    assert_eq!(p["user"]["uid"], 0, "{p}");
    for set in [
        "bounding",
        "effective",
        "permitted",
        "inheritable",
        "ambient",
    ] {
        assert!(
            p["capabilities"][set]
                .as_array()
                .is_none_or(|c| c.is_empty()),
            "capabilities.{set}: {}",
            p["capabilities"]
        );
    }
    assert_eq!(p["noNewPrivileges"], true);
    assert_eq!(spec["root"]["readonly"], true);
    assert_eq!(
        spec["linux"]["resources"]["memory"]["limit"],
        quantity_bytes(init["resources"]["limits"]["memory"].as_str().unwrap())
    );
    assert!(
        spec["linux"]["seccomp"]["defaultAction"].is_string(),
        "seccomp RuntimeDefault: {}",
        spec["linux"]["seccomp"]
    );
    let writable_binds: Vec<(String, String)> = spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["type"] == "bind" || m["options"].to_string().contains("bind"))
        .filter(|m| !m["options"].to_string().contains("\"ro\""))
        .map(|m| {
            (
                m["source"].as_str().unwrap_or_default().to_string(),
                m["destination"].as_str().unwrap_or_default().to_string(),
            )
        })
        .filter(|(_, d)| !d.starts_with("/etc/") && d != "/dev/shm" && d != "/dev/termination-log")
        .collect();
    assert_eq!(
        writable_binds,
        [
            (bin.display().to_string(), "/host/opt/cni/bin".to_string()),
            (
                conf.display().to_string(),
                "/host/etc/cni/net.d".to_string()
            ),
        ],
        "{}",
        spec["mounts"]
    );

    // What it says it did, and what is on the node.
    for line in [
        "/host/opt/cni/bin/azure-vnet           installed",
        "/host/opt/cni/bin/azure-vnet-ipam      installed (the same file as azure-vnet)",
        "/host/etc/cni/net.d/10-azure.conflist  installed",
    ] {
        assert!(log.contains(line), "{line:?} in {log}");
    }
    let (v, i) = (bin.join("azure-vnet"), bin.join("azure-vnet-ipam"));
    let (mv, mi) = (
        std::fs::metadata(&v).unwrap(),
        std::fs::metadata(&i).unwrap(),
    );
    assert_eq!((mv.dev(), mv.ino()), (mi.dev(), mi.ino()), "one file");
    assert_eq!((mv.mode() & 0o7777, mv.uid(), mv.gid()), (0o755, 0, 0));
    let image_exe = {
        let l = OciLayout::open(&img.archive);
        std::fs::read(l.rootfs.join("azure-vnet")).unwrap()
    };
    assert!(
        std::fs::read(&v).unwrap() == image_exe,
        "the image's executable"
    );
    assert_eq!(version_of(&v), img.version);
    assert_eq!(version_of(&i), img.version);
    let c = std::fs::metadata(conf.join("10-azure.conflist")).unwrap();
    assert_eq!((c.mode() & 0o7777, c.uid(), c.gid()), (0o644, 0, 0));
    assert_eq!(
        std::fs::read(conf.join("10-azure.conflist")).unwrap(),
        std::fs::read(repo().join("conflist/10-azure.conflist")).unwrap()
    );
    let names: Vec<String> = std::fs::read_dir(&bin)
        .unwrap()
        .chain(std::fs::read_dir(&conf).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    let others_after: Vec<_> = ["loopback", "portmap"]
        .iter()
        .map(|f| file_identity(&bin.join(f)))
        .collect();
    assert!(
        others_before == others_after,
        "the node's other plugins untouched"
    );

    // containerd saw the conflist appear: the node's network is ready.
    let t = Instant::now();
    loop {
        let (ready, cond) = cri.network_ready();
        if ready {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "NetworkReady still false: {cond}\n{}",
            cri.diag()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("NetworkReady {:?} after the install", t.elapsed());

    // Then the pod's long-running container, as the manifest has it: the metrics server, on
    // the node's network, reading what the plugins keep where they keep it.
    let metrics = ds["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "metrics")
        .unwrap();
    let port = metrics["ports"][0]["containerPort"].as_i64().unwrap();
    std::fs::create_dir_all(tb.run_dir("a").join("azure-vnet")).unwrap();
    let mopts = cri_options(&ds, metrics, &host);
    let mid = cri.start_container(&ds_sandbox, &pod, "metrics", &img.reference, &mopts);
    let node = tb.node("a");
    let scrape = |path: &str| http_from(&node, &format!("http://127.0.0.1:{port}{path}"));
    scrape("/"); // what the readiness probe asks
    let mspec = cri.oci_spec(&mid);
    assert_eq!(mspec["process"]["user"]["uid"], 0);
    assert_eq!(mspec["process"]["capabilities"], serde_json::json!({}));
    assert_eq!(mspec["process"]["noNewPrivileges"], true);
    assert_eq!(mspec["root"]["readonly"], true);

    // Pods get their network from what it installed: address, records, traffic.
    let web = Pod::new("web", "default");
    let db = Pod::new("db", "default");
    let sb_web = cri.runp(&web);
    let sb_db = cri.runp(&db);
    cri.start_httpd(&sb_web, &web);
    assert_ne!(sb_web.ip, sb_db.ip);
    assert_eq!(
        http_from(&tb.node("b"), &format!("http://{}/", sb_web.ip)),
        "hello from rcbusybox\n"
    );
    in_pod(&sb_db, &["ping", "-c1", "-W2", &sb_web.ip]);
    in_pod(&sb_db, &["ping", "-c1", "-W2", API_IP]);
    let view = NodeView::of(&tb, "a");
    assert_eq!(view.records.len(), 2, "{view:?}");
    assert_eq!(view.ipam.get(&sb_web.ip), Some(&sb_web.id));
    let ipam_file = read_json(&tb.run_dir("a").join("azure-vnet-ipam.json"));
    assert_eq!(ipam_file["IPAM"]["Version"], img.version.as_str());

    // The metrics container sees the two pods and the operations that made them.
    let text = scrape("/metrics");
    for line in [
        "azure_vnet_state_readable 1",
        "azure_vnet_endpoints 2",
        "azure_vnet_pool_addresses_in_use{subnet=\"10.224.0.0/16\"} 2",
        "azure_vnet_operations_total{plugin=\"azure-vnet\",command=\"ADD\",code=\"0\"} 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} in the metrics:\n{text}\n{}",
            cri.container_log(&pod, "metrics")
        );
    }
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("azure_vnet_problems{") && !l.ends_with(" 0"))
        .collect();
    assert!(problems.is_empty(), "{problems:?}");

    // The DaemonSet's pod again (a node reboot, a rollout of the same version): nothing to do,
    // nothing rewritten, the pods undisturbed.
    let files_before: Vec<_> = [&v, &conf.join("10-azure.conflist")]
        .iter()
        .map(|p| file_identity(p))
        .collect();
    let (_, _, log2) =
        run_installer(&Pod::new("azure-vnet-cni-9q4fz", "kube-system").host_network());
    assert_eq!(log2.matches("unchanged").count(), 3, "{log2}");
    let files_after: Vec<_> = [&v, &conf.join("10-azure.conflist")]
        .iter()
        .map(|p| file_identity(p))
        .collect();
    assert!(files_before == files_after, "a second run rewrote files");
    assert_eq!(
        http_from(&tb.node("b"), &format!("http://{}/", sb_web.ip)),
        "hello from rcbusybox\n"
    );

    for sb in [&sb_web, &sb_db] {
        cri.stop_remove(&sb.id);
    }
    NodeView::of(&tb, "a").assert_empty("after the pods");
    azv_links_become(&tb, "a", &Default::default());
}
