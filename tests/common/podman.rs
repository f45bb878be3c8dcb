//! podman 4.3 (Debian 12) with its CNI backend on a simulated node: the fixture of
//! tests/podman.rs.
//!
//! Everything podman has is private: its storage (`--root`, vfs driver), its run root
//! (`--runroot`), libpod's tmp dir, the network config dir and the CNI plugin dir
//! (containers.conf given by CONTAINERS_CONF), and podman runs (through `scripts/cri-node.py
//! exec`) in the node's network namespace and a private mount namespace held by
//! `scripts/cri-node.py hold` (a tmpfs on /run for the netns pins podman makes at
//! /run/netns/netns-*, a private /var/lib/cni for libcni's cache, a private /var/tmp and /dev/shm). Drop removes the containers
//! (their DELs run), stops the holder, kills any conmon left and removes the cgroups podman made.

use super::cgroups::CgroupSweep;
use super::cri::{need_cmd, need_file, sweep, PATH};
use super::*;

use std::collections::BTreeSet;
use std::fs::File;

pub const IMAGE: &str = "localhost/rcbusybox:latest";

pub struct Podman {
    pub dir: TempDir,
    holder: Option<Child>,
    cgroups: CgroupSweep,
}

fn preflight() {
    for c in [
        "podman", "conmon", "runc", "nsenter", "unshare", "mount", "python3", "curl",
    ] {
        need_cmd(c);
    }
    need_file(Path::new("/usr/lib/cni/portmap"));
    need_file(Path::new("/usr/lib/cni/loopback"));
}

impl Podman {
    /// podman on node `n` with one network: `conflist` (its `name` is the network's), whose
    /// plugins are looked up in a private dir holding `bins`, Debian's portmap and loopback.
    pub fn start(tb: &Testbed, n: &str, conflist: &Value, bins: &[PathBuf]) -> Podman {
        require_root();
        preflight();
        // conmon daemonizes: if the holder dies before it, it is reparented to us.
        nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
        let dir = TempDir::new("podman");
        for d in [
            "net.d",
            "bin",
            "storage",
            "runroot",
            "tmp",
            "libpod-tmp",
            "shm",
        ] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let name = conflist["name"].as_str().expect("a conflist name");
        std::fs::write(
            dir.join(&format!("net.d/{name}.conflist")),
            serde_json::to_string_pretty(conflist).unwrap(),
        )
        .unwrap();
        for b in [
            Path::new("/usr/lib/cni/portmap"),
            Path::new("/usr/lib/cni/loopback"),
        ] {
            copy_executable(b, &dir.join("bin").join(b.file_name().unwrap()));
        }
        // Ours as the installer puts them: one file under both names.
        assert!(bins.iter().all(|b| b.starts_with(bin_dir())), "{bins:?}");
        install_plugins(&dir.join("bin"));
        let d = dir.path().display();
        // runc cannot raise rlimits here (no CAP_SYS_RESOURCE) and podman's defaults for root
        // are above what conmon gets: small explicit limits instead.
        let conf = format!(
            r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[network]
network_backend = "cni"
network_config_dir = "{d}/net.d"
cni_plugin_dirs = ["{d}/bin"]
default_network = "{name}"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "none"
tmp_dir = "{d}/libpod-tmp"
image_copy_tmp_dir = "{d}/tmp"
"#
        );
        std::fs::write(dir.join("containers.conf"), conf).unwrap();
        let out = File::create(dir.join("holder.out")).unwrap();
        let holder = Command::new("python3")
            .arg(repo().join("scripts/cri-node.py"))
            .arg("hold")
            .arg(dir.join("holder"))
            .arg(tb.node(n))
            // containers/image unpacks archives in /var/tmp whatever TMPDIR says
            .arg("--bind")
            .arg(format!("{}:/var/tmp", dir.join("tmp").display()))
            // podman's lock table is a POSIX shared memory object, /dev/shm/libpod_lock
            .arg("--bind")
            .arg(format!("{}:/dev/shm", dir.join("shm").display()))
            .env_clear()
            .env("PATH", PATH)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn scripts/cri-node.py hold");
        let pm = Podman {
            dir,
            holder: Some(holder),
            cgroups: CgroupSweep::new("libpod_parent"),
        };
        let ready = Command::new("python3")
            .arg(repo().join("scripts/cri-node.py"))
            .arg("ready")
            .arg(pm.dir.join("holder"))
            .output()
            .unwrap();
        assert!(
            ready.status.success(),
            "the namespace holder did not come up: {}{}",
            String::from_utf8_lossy(&ready.stderr),
            std::fs::read_to_string(pm.dir.join("holder.out")).unwrap_or_default()
        );
        let tar = pm.dir.join("busybox.tar");
        sh(&[
            "python3",
            &repo()
                .join("scripts/mk-busybox-oci.py")
                .display()
                .to_string(),
            &tar.display().to_string(),
            IMAGE,
        ]);
        pm.ok(&["load", "-q", "-i", &tar.display().to_string()]);
        pm
    }

    /// `podman <args>` with our private paths, in the node's namespaces, with PATH, TMPDIR and
    /// CONTAINERS_CONF only, plus `env`.
    pub fn run_env(&self, args: &[&str], env: &[(String, String)]) -> Output {
        let d = self.dir.path();
        Command::new("python3")
            .arg(repo().join("scripts/cri-node.py"))
            .arg("exec")
            .arg(d.join("holder"))
            .args(["--", "podman", "--root"])
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env_clear()
            .env("PATH", PATH)
            .env("TMPDIR", d.join("tmp"))
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `podman inspect --format <go template>` of one container.
    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["inspect", "--format", format, name])
    }

    /// libcni's result cache as podman's libcni left it (`<network>-<container id>-<ifname>`).
    pub fn cache_entries(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.dir.join("holder/cni-cache/results"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    pub fn cached(&self, net: &str, id: &str) -> Value {
        read_json(
            &self
                .dir
                .join(&format!("holder/cni-cache/results/{net}-{id}-eth0")),
        )
    }

    /// The netns pins podman made (/run/netns/netns-* in the private /run).
    pub fn netns_pins(&self) -> BTreeSet<String> {
        let out = Command::new("python3")
            .arg(repo().join("scripts/cri-node.py"))
            .arg("exec")
            .arg(self.dir.join("holder"))
            .args(["--", "ls", "-1", "/run/netns"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Running containers are stopped at once and removed: podman runs their DELs.
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
        let _ = Command::new("python3")
            .arg(repo().join("scripts/cri-node.py"))
            .args(["stop", "--timeout", "60"])
            .arg(self.dir.join("holder"))
            .status();
        if let Some(mut h) = self.holder.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
        // conmon (its command line names our paths) and the containers under it, if any.
        sweep(&self.dir.path().display().to_string());
        self.cgroups.remove_new();
    }
}
