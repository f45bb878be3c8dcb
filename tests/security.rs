//! Files and paths: state files 0600, logs 0644, the lock directory not world-writable, even
//! under a runtime with umask 0; nothing built from env input lands outside the run and log
//! directories; symlinked state files are refused (see also bad_input.rs).

mod common;
use common::*;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn tree(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            for sub in tree(&e.path()) {
                out.insert(format!("{name}/{sub}"));
            }
        }
        out.insert(name);
    }
    out
}

/// Run azure-vnet under `umask 000`, as a careless runtime might.
fn call_umask0(tb: &Testbed, cmd: &str, cid: &str, netns: &str, args: &str) -> PluginOut {
    let env = with(
        tb.env("a"),
        &[
            ("CNI_COMMAND".into(), cmd.into()),
            ("CNI_CONTAINERID".into(), cid.into()),
            ("CNI_NETNS".into(), netns.into()),
            ("CNI_IFNAME".into(), "eth0.1".into()),
            ("CNI_PATH".into(), cni_path()),
            ("CNI_ARGS".into(), args.into()),
        ],
    );
    let sh = std::path::PathBuf::from("/bin/sh");
    let mut full = env.clone();
    full.push(("PLUGIN".into(), vnet_bin().display().to_string()));
    // sh -c 'umask 000; exec "$PLUGIN"'
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &tb.node("a")])
        .arg(&sh)
        .args(["-c", "umask 000; exec \"$PLUGIN\""])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(full.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    run_with_stdin(cmd, VNET_CONF.as_bytes())
}

#[test]
fn modes_and_paths_under_umask_0_with_hostile_names() {
    let tb = Testbed::up(5);
    let run = tb.run_dir("a");
    let log = tb.log_dir("a");
    let parent = tb.dir.path().to_path_buf();
    let parent_before = tree(&parent);
    let (_, path) = tb.pod("sec");
    // Valid but unusual: a dotted container ID and interface, and pod identity full of path
    // syntax (K8S_POD_* are only hashed and recorded, never used as paths).
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=../../etc;K8S_POD_NAME=../passwd%00/x";
    let r = call_umask0(&tb, "ADD", "a.b_c-d", &path.display().to_string(), args);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    let res = r.json();
    assert_eq!(res["interfaces"][1]["name"], "eth0.1");

    assert_eq!(mode(&run.join("azure-vnet.json")), 0o600);
    assert_eq!(mode(&run.join("azure-vnet-ipam.json")), 0o600);
    assert_eq!(mode(&log.join("azure-vnet.log")), 0o644);
    assert_eq!(mode(&log.join("azure-vnet-ipam.log")), 0o644);
    let lockdir = run.join("azure-vnet");
    assert_eq!(mode(&lockdir), 0o755, "lock directory not world-writable");
    for e in std::fs::read_dir(&lockdir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "azure-vnet.json.index" {
            // The byte index of azure-vnet.json: state, so 0600.
            assert_eq!(mode(&e.path()), 0o600);
            continue;
        }
        assert_eq!(mode(&e.path()), 0o644, "{}", e.path().display());
        assert!(
            name == "azure-vnet.lock"
                || name == "azure-vnet-ipam.lock"
                || (name.starts_with("veth-") && name.len() == "veth-00.lock".len()),
            "unexpected lock file {name}"
        );
    }
    // Only our files, only where they belong.
    let files = tree(&run);
    let expected: BTreeSet<&str> = ["azure-vnet.json", "azure-vnet-ipam.json", "azure-vnet"]
        .into_iter()
        .collect();
    for f in &files {
        assert!(
            expected.contains(f.as_str()) || f.starts_with("azure-vnet/"),
            "unexpected {f} in the run dir"
        );
    }
    assert_eq!(
        tree(&log),
        ["azure-vnet-ipam.log", "azure-vnet.log"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    let parent_after = tree(&parent);
    let new: Vec<&String> = parent_after
        .difference(&parent_before)
        .filter(|f| !f.starts_with("node-a/run/") && !f.starts_with("node-a/log/"))
        .collect();
    assert!(
        new.is_empty(),
        "files outside the run and log dirs: {new:?}"
    );
    // The hostile pod name is data in the record, escaped, and nothing more.
    let eps = endpoints(&vnet_state(&tb, "a"), "azure");
    assert_eq!(eps.values().next().unwrap()["PODName"], "../passwd%00/x");

    let r = call_umask0(&tb, "DEL", "a.b_c-d", &path.display().to_string(), args);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(
        mode(&run.join("azure-vnet.json")),
        0o600,
        "still 0600 after a rewrite"
    );
}

#[test]
fn a_planted_symlink_at_the_temp_name_is_not_followed() {
    let tb = Testbed::up(5);
    let run = tb.run_dir("a");
    let target = tb.dir.join("victim");
    std::fs::write(&target, "precious").unwrap();
    std::os::unix::fs::symlink(&target, run.join(".azure-vnet-ipam.json.tmp")).unwrap();
    let (_, path) = tb.pod("sym");
    vnet_call(
        &tb,
        "a",
        "ADD",
        "cid-sym",
        &path.display().to_string(),
        Some("sym"),
        VNET_CONF,
    )
    .succeeded();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
    assert!(!std::fs::symlink_metadata(run.join("azure-vnet-ipam.json"))
        .unwrap()
        .file_type()
        .is_symlink());
}
