//! `azure-vnet install` / `uninstall`, the contract case by case, on a temporary host root
//! (read-only and full destinations in a private mount namespace).

mod common;
use common::*;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// A host root with the two directories a node has, and some of other people's files.
fn host_root(tag: &str) -> TempDir {
    let root = TempDir::new(tag);
    for d in ["opt/cni/bin", "etc/cni/net.d"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    // Other plugins, another conflist, upstream's leftovers: never touched.
    std::fs::write(root.join("opt/cni/bin/portmap"), b"#!/bin/sh\n").unwrap();
    std::fs::write(
        root.join("opt/cni/bin/azure-vnet.old"),
        b"upstream's previous binary",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/cni/net.d/99-loopback.conf"),
        b"{\"type\":\"loopback\"}",
    )
    .unwrap();
    std::fs::write(root.join("etc/cni/net.d/10-azure.conflist.old"), b"{}").unwrap();
    root
}

fn tool(args: &[&str], root: &Path) -> Output {
    Command::new(vnet_bin())
        .args(args)
        .arg("--host-root")
        .arg(root)
        .env_remove("CNI_COMMAND")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A file as a comparison sees it: mode, inode, mtime (s, ns), content.
type FileView = (u32, u64, i64, i64, Vec<u8>);

/// Every file under the node's two directories, to compare before and after.
fn tree(root: &Path) -> BTreeMap<String, FileView> {
    let mut out = BTreeMap::new();
    for d in ["opt/cni/bin", "etc/cni/net.d"] {
        for e in std::fs::read_dir(root.join(d)).unwrap().flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let content = std::fs::read(e.path()).unwrap_or_default();
            out.insert(
                format!("{d}/{}", e.file_name().to_string_lossy()),
                (m.mode(), m.ino(), m.mtime(), m.mtime_nsec(), content),
            );
        }
    }
    out
}

/// The files that are not ours.
fn others(t: &BTreeMap<String, FileView>) -> Vec<(String, FileView)> {
    t.iter()
        .filter(|(k, _)| {
            !k.ends_with("/azure-vnet")
                && !k.ends_with("/azure-vnet-ipam")
                && !k.ends_with("/10-azure.conflist")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[test]
fn install_puts_one_file_under_two_names_then_the_conflist_and_a_second_run_changes_nothing() {
    require_root();
    let root = host_root("inst");
    let before = tree(root.path());
    let out = tool(&["install"], root.path());
    assert!(out.status.success(), "{}", text(&out));
    let (bin, conf) = (root.join("opt/cni/bin"), root.join("etc/cni/net.d"));
    let (vnet, ipam) = (bin.join("azure-vnet"), bin.join("azure-vnet-ipam"));
    let (mv, mi) = (
        std::fs::metadata(&vnet).unwrap(),
        std::fs::metadata(&ipam).unwrap(),
    );
    assert_eq!(
        (mv.dev(), mv.ino()),
        (mi.dev(), mi.ino()),
        "one file, two names"
    );
    assert_eq!(mv.mode() & 0o7777, 0o755);
    assert_eq!((mv.uid(), mv.gid()), (0, 0));
    assert_eq!(
        std::fs::read(&vnet).unwrap(),
        std::fs::read(vnet_bin()).unwrap()
    );
    let c = std::fs::metadata(conf.join("10-azure.conflist")).unwrap();
    assert_eq!(c.mode() & 0o7777, 0o644);
    assert_eq!(
        std::fs::read(conf.join("10-azure.conflist")).unwrap(),
        std::fs::read(repo().join("conflist/10-azure.conflist")).unwrap(),
        "the seed's conflist, built in"
    );
    // Both names work as plugins.
    for b in [&vnet, &ipam] {
        let v = Command::new(b).arg("-v").output().unwrap();
        assert!(String::from_utf8_lossy(&v.stdout).starts_with("Azure CNI Version"));
    }
    // Nobody else's files changed.
    let after = tree(root.path());
    assert_eq!(others(&before), others(&after));
    // Again: nothing changes, not even an mtime.
    let again = tool(&["install"], root.path());
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(
        text(&again).matches("unchanged").count(),
        3,
        "{}",
        text(&again)
    );
    assert_eq!(tree(root.path()), after);
    // No temporary file is left.
    assert!(!after.keys().any(|k| k.ends_with(".tmp")), "{after:?}");
}

#[test]
fn an_install_killed_mid_way_never_blocks_the_next_one_run_as_pid_1() {
    require_root();
    let root = host_root("pid1");
    let bin = root.join("opt/cni/bin");
    let conf = root.join("etc/cni/net.d");
    // What killed runs left: ours, older than any running install's (removed), one of a
    // run that may still be going (kept), and an earlier version's PID-named one (not ours).
    let stale = [
        bin.join(".azure-vnet.00000000deadbeef.tmp"),
        bin.join(".azure-vnet-ipam.00000000deadbeef.tmp"),
        conf.join(".10-azure.conflist.00000000deadbeef.tmp"),
    ];
    let fresh = bin.join(".azure-vnet.00000000cafef00d.tmp");
    let foreign = bin.join(".azure-vnet.1.tmp");
    for f in stale.iter().chain([&fresh, &foreign]) {
        std::fs::write(f, b"half a file").unwrap();
    }
    for f in &stale {
        sh(&["touch", "-d", "1 hour ago", f.to_str().unwrap()]);
    }
    // The installer as a container runs it: PID 1 of its own PID namespace, twice.
    for _ in 0..2 {
        let out = Command::new("unshare")
            .args(["--pid", "--fork", "--"])
            .arg(vnet_bin())
            .args(["install", "--host-root"])
            .arg(root.path())
            .env_remove("CNI_COMMAND")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let t = tree(root.path());
    for f in &stale {
        assert!(!f.exists(), "{} was left", f.display());
    }
    assert!(fresh.exists() && foreign.exists(), "{t:?}");
    let tmps = t.keys().filter(|k| k.ends_with(".tmp")).count();
    assert_eq!(tmps, 2, "only the two kept: {t:?}");
    let (v, i) = (
        std::fs::metadata(bin.join("azure-vnet")).unwrap(),
        std::fs::metadata(bin.join("azure-vnet-ipam")).unwrap(),
    );
    assert_eq!(v.ino(), i.ino());
}

#[test]
fn install_replaces_an_older_version_without_a_moment_of_a_missing_or_partial_file() {
    require_root();
    let root = host_root("upg");
    let bin = root.join("opt/cni/bin");
    // Version N: another file (as an older release is), running while N+1 is installed.
    let old = b"#!/bin/sh\n# an older azure-vnet\nexec cat\n".repeat(20_000);
    write_executable(&bin.join("azure-vnet"), &old);
    std::fs::hard_link(bin.join("azure-vnet"), bin.join("azure-vnet-ipam")).unwrap();
    let mut running = Command::new(bin.join("azure-vnet"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let new = std::fs::read(vnet_bin()).unwrap();
    // A reader that must always see a whole file: the old one or the new one.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for name in ["azure-vnet", "azure-vnet-ipam"] {
                    let b = std::fs::read(bin.join(name)).expect("the file is always there");
                    assert!(
                        b == old || b == new,
                        "{name}: a partial file ({} bytes)",
                        b.len()
                    );
                    reads += 1;
                }
            }
            reads
        });
        for _ in 0..3 {
            let out = tool(&["install"], root.path());
            assert!(out.status.success(), "{}", text(&out));
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(reader.join().unwrap() > 0);
    });
    // The running old plugin was not disturbed ("text file busy" cannot happen: nothing is
    // opened for writing under its name); it still runs its old inode.
    assert!(
        running.try_wait().unwrap().is_none(),
        "the running plugin survived"
    );
    running.kill().unwrap();
    running.wait().unwrap();
    assert_eq!(std::fs::read(bin.join("azure-vnet-ipam")).unwrap(), new);
}

#[test]
fn a_read_only_or_full_destination_fails_clearly_and_changes_nothing() {
    require_root();
    // (what to do to the host root, words of the error)
    let cases: [(&str, &str); 3] = [
        ("ro-bin", "Read-only file system"),
        ("ro-conf", "Read-only file system"),
        ("full-bin", "No space left on device"),
    ];
    for (case, words) in cases {
        let root = host_root(case);
        // An older version is there: it must stay exactly as it is.
        let bin = root.join("opt/cni/bin");
        std::fs::write(bin.join("azure-vnet"), b"older").unwrap();
        let conf = root.join("etc/cni/net.d");
        std::fs::write(conf.join("10-azure.conflist"), b"{\"older\":1}").unwrap();
        let (out, before, after) = in_private_mounts(|| {
            let (dir, ro) = match case {
                "ro-bin" => (bin.clone(), true),
                "ro-conf" => (conf.clone(), true),
                _ => (bin.clone(), false),
            };
            if ro {
                sh(&[
                    "mount",
                    "--bind",
                    &dir.display().to_string(),
                    &dir.display().to_string(),
                ]);
                sh(&["mount", "-o", "remount,bind,ro", &dir.display().to_string()]);
            } else {
                // Room for the old files, not for the new binary.
                let keep = tree(root.path());
                mount_tmpfs(&dir, "256k");
                for (k, v) in &keep {
                    if let Some(name) = k.strip_prefix("opt/cni/bin/") {
                        std::fs::write(dir.join(name), &v.4).unwrap();
                    }
                }
            }
            let before = tree(root.path());
            let out = tool(&["install"], root.path());
            (out, before, tree(root.path()))
        });
        assert_eq!(out.status.code(), Some(1), "{case}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(words) && err.contains(root.path().to_str().unwrap()),
            "{case}: {err}"
        );
        assert_eq!(before, after, "{case}: the node changed");
    }
}

#[test]
fn a_conflist_that_is_not_one_is_refused_before_anything_changes() {
    require_root();
    let root = host_root("badconf");
    let before = tree(root.path());
    let bad = root.join("bad.conflist");
    for content in [
        &b"{not json"[..],
        b"{\"name\":\"x\"}",
        b"{\"name\":\"x\",\"plugins\":[{}]}",
    ] {
        std::fs::write(&bad, content).unwrap();
        let out = tool(
            &["install", "--conflist", bad.to_str().unwrap()],
            root.path(),
        );
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("bad.conflist"),
            "{}",
            text(&out)
        );
        assert_eq!(tree(root.path()), before);
    }
    // A good one is installed as given.
    std::fs::write(
        &bad,
        std::fs::read(repo().join("conflist/azure-1.0.0.conflist")).unwrap(),
    )
    .unwrap();
    let out = tool(
        &["install", "--conflist", bad.to_str().unwrap()],
        root.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(root.join("etc/cni/net.d/10-azure.conflist")).unwrap(),
        std::fs::read(&bad).unwrap()
    );
}

#[test]
fn uninstall_removes_the_conflist_first_and_leaves_state_and_logs() {
    require_root();
    let root = host_root("uninst");
    assert!(tool(&["install"], root.path()).status.success());
    let run = root.join("var/run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("azure-vnet.json"), b"{}").unwrap();
    let before = tree(root.path());
    let out = tool(&["uninstall"], root.path());
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    let (c, i, v) = (
        t.find("10-azure.conflist").unwrap(),
        t.find("azure-vnet-ipam").unwrap(),
        t.find("bin/azure-vnet ").unwrap(),
    );
    assert!(c < i && i < v, "conflist, then the binaries: {t}");
    let after = tree(root.path());
    assert_eq!(others(&before), others(&after));
    assert!(!after.contains_key("opt/cni/bin/azure-vnet"));
    assert!(run.join("azure-vnet.json").exists(), "state stays");
    // Again: nothing to remove, still success.
    assert!(tool(&["uninstall"], root.path()).status.success());
}

#[test]
fn usage_errors_and_help() {
    let out = Command::new(vnet_bin())
        .arg("frobnicate")
        .env_remove("CNI_COMMAND")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown command"));
    for args in [
        &["--help"][..],
        &["install", "--help"],
        &["uninstall", "-h"],
    ] {
        let out = Command::new(vnet_bin())
            .args(args)
            .env_remove("CNI_COMMAND")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("usage: azure-vnet"),
            "{args:?}"
        );
    }
    // Values no wait can take (refused, never a panic), and a listen address that names
    // nothing (a port in use is not a usage error): exit 2. The paths are private, should a
    // value ever get past its check.
    let private = TempDir::new("usage");
    let seconds = "not a number of seconds";
    let address = "not an address to listen on";
    let grace = |v| (["reconcile", "--grace", v], seconds);
    let listen = |v| (["metrics", "--listen", v], address);
    for (args, words) in [
        grace("inf"),
        grace("1e309"),
        grace("18446744073709551616"),
        grace("-1"),
        grace("nan"),
        grace(""),
        grace("5s"),
        listen("garbage"),
        listen(":99999"),
    ] {
        let out = Command::new(vnet_bin())
            .args(args)
            .env_remove("CNI_COMMAND")
            .env("AZURE_VNET_RUN_DIR", private.path())
            .env("AZURE_VNET_LOG_DIR", private.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(words), "{args:?}: {err}");
    }
    // A runtime's call is never the tool: CNI_COMMAND set, or no arguments.
    let out = Command::new(vnet_bin())
        .arg("install")
        .env("CNI_COMMAND", "VERSION")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("supportedVersions"));
}
