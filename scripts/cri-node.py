#!/usr/bin/env python3
"""containerd's CRI plugin on a simulated node, as kubelet's runtime: the harness of the CRI tests
(tests/common/cri.rs), usable from shell scripts too (the demo, the benchmark).

  cri-node.py containerd DIR NODE_NETNS [--conflist FILE | --no-conflist] [--bin FILE]...
                                        [--env K=V]... [--bind SRC:DST]... [--criclient PATH]
      Runs in the foreground until SIGTERM/SIGINT (start it in the background): becomes the
      holder of a private mount namespace inside the network namespace NODE_NETNS (a tmpfs on
      /run for the pod netns pins and shim sockets, a private /var/lib/cni for libcni's result
      cache under DIR/cni-cache), builds the pause and busybox images offline, starts containerd
      (root, state, sockets, CNI dirs all under DIR) with the CRI plugin, imports the images, and
      writes DIR/ready (JSON: socket, holder, containerd pids) once CRI answers. The CNI plugins
      are exec'd by containerd with containerd's environment: --env sets it (e.g. AZURE_VNET_*).
      --bin copies a plugin into the CNI bin dir, keeping hard links between them (loopback and
      portmap are always there: the CRI plugin always runs loopback); --conflist is the one network config (default: the seed's
      conflist/10-azure.conflist, unchanged); --no-conflist starts with DIR/cni/net.d empty (CRI's
      NetworkReady is false until a conflist appears there: containerd watches the directory, as
      on a node whose CNI plugin a DaemonSet installs). /var/lib/cni being private, so is host-local's
      /var/lib/cni/networks (e.g. ptp + host-local: --bin /usr/lib/cni/ptp --bin
      /usr/lib/cni/host-local --conflist FILE). --bind SRC:DST bind-mounts SRC over DST in the
      private mount namespace.
      SIGUSR1: SIGKILL containerd (a crash) and start it again in the same mount namespace; pods
      keep running. SIGTERM/SIGINT: stop and remove every sandbox through CRI (their CNI DELs
      run), stop containerd, delete what runc still runs, kill every process left under it
      (the holder is their subreaper), exit.
  cri-node.py hold DIR NODE_NETNS [--bind SRC:DST]...
      The same private namespaces without containerd (podman runs in them through `exec`).
  cri-node.py ready DIR [--timeout SECS]   wait for DIR/ready; print the CRI socket path
  cri-node.py restart DIR                  containerd SIGKILLed and started again; waits for CRI
  cri-node.py stop DIR [--timeout SECS]    SIGTERM to the holder; waits until it is gone
  cri-node.py exec DIR CMD...              CMD in the node's network and private mount namespace

From a shell (scripts/cri-example.sh does all of it):
  scripts/cri-node.py containerd "$D/cri" "$NODE" --bin dist/azure-vnet --bin dist/azure-vnet-ipam \\
      --env AZURE_VNET_RUN_DIR="$D/run" ... > "$D/cri.log" 2>&1 &
  HOLDER=$!
  trap 'scripts/cri-node.py stop "$D/cri"; wait $HOLDER' EXIT
  SOCK=$(scripts/cri-node.py ready "$D/cri")
  criclient "$SOCK" --get /id runp --name web --namespace default --uid "$UID" --port 8080:80
Start it as a background job of the script itself and `wait` for it after `stop`: on this kind of
machine PID 1 does not reap orphans promptly, so a holder started through `( ... & )` or setsid
stays a zombie for a while after it exits.

Nothing is written to the machine's /run, /var/lib/cni, /etc/cni or /opt/cni; nothing is added to
its network namespace. Needs: containerd, ctr, runc, nsenter, unshare, mount, gcc (static libc),
busybox-static, containernetworking-plugins, and the CRI client (scripts/build-criclient.sh).
"""
import argparse
import ctypes
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
PAUSE_IMAGE = "localhost/pause:azvt"
BUSYBOX_IMAGE = "localhost/rcbusybox:latest"
INNER = "AZVT_CRI_NODE_INNER"
PR_SET_CHILD_SUBREAPER = 36
SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD}


def die(msg):
    print(f"cri-node.py: {msg}", file=sys.stderr)
    sys.exit(1)


def criclient_default():
    return os.path.join(REPO, "target/criclient/release/criclient")


class Holder:
    """The long-lived process owning the private mount namespace, and containerd's parent."""

    def __init__(self, args):
        self.dir = os.path.abspath(args.dir)
        self.args = args
        self.sock = os.path.join(self.dir, "containerd.sock")
        self.containerd = None
        # runc's default cgroup parent (/k8s.io/<id>, cgroupfs): removed at the end if we made it
        self.cgroups_before = set(glob.glob("/sys/fs/cgroup/k8s.io") + glob.glob("/sys/fs/cgroup/*/k8s.io"))
        self.log = open(os.path.join(self.dir, "holder.log"), "a", buffering=1)

    def say(self, msg):
        self.log.write(f"{time.strftime('%H:%M:%S')} {msg}\n")

    def run(self, argv, timeout=60, check=True, **kw):
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout, preexec_fn=unblock, **kw)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stdout}{r.stderr}")
        return r

    # ---------------------------------------------------------------- set-up
    def mounts(self):
        # The pod netns pins (/run/netns/cni-*), the shims' sockets (/run/containerd) and runc's
        # state live on this tmpfs, which lives as long as this process.
        self.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "azvt-run", "/run"])
        # libcni's result cache is hard-wired to /var/lib/cni: an overlay on /var/lib makes the
        # mount point without creating it on the machine, then a private directory goes over it.
        for d in ["varlib/upper", "varlib/work", "cni-cache"]:
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        self.run(["mount", "-t", "overlay", "azvt-varlib", "-o",
                  f"lowerdir=/var/lib,upperdir={self.dir}/varlib/upper,workdir={self.dir}/varlib/work",
                  "/var/lib"])
        os.makedirs("/var/lib/cni", exist_ok=True)
        self.run(["mount", "--bind", os.path.join(self.dir, "cni-cache"), "/var/lib/cni"])
        for b in getattr(self.args, "bind", None) or []:
            src, dst = b.split(":", 1)
            self.run(["mount", "--bind", src, dst])

    def cni_dirs(self):
        bindir = os.path.join(self.dir, "cni/bin")
        confdir = os.path.join(self.dir, "cni/net.d")
        os.makedirs(bindir, exist_ok=True)
        os.makedirs(confdir, exist_ok=True)
        # Files that are one (hard links: azure-vnet and azure-vnet-ipam) stay one, as the
        # installer makes them: azure-vnet then runs its IPAM in-process.
        copied = {}
        for b in ["/usr/lib/cni/loopback", "/usr/lib/cni/portmap"] + (self.args.bin or []):
            st = os.stat(b)
            dst = os.path.join(bindir, os.path.basename(b))
            if (st.st_dev, st.st_ino) in copied:
                os.link(copied[(st.st_dev, st.st_ino)], dst)
            else:
                shutil.copy(b, dst)
                copied[(st.st_dev, st.st_ino)] = dst
        if not self.args.no_conflist:
            conflist = self.args.conflist or os.path.join(REPO, "conflist/10-azure.conflist")
            shutil.copy(conflist, confdir)
        return bindir, confdir

    def images(self):
        img = os.path.join(self.dir, "img")
        os.makedirs(img, exist_ok=True)
        self.run(["gcc", "-static", "-Os", "-s", "-o", f"{img}/pause", f"{REPO}/scripts/pause.c"])
        self.run([sys.executable, f"{REPO}/scripts/mk-pause-oci.py", f"{img}/pause",
                  f"{img}/pause.tar", PAUSE_IMAGE])
        self.run([sys.executable, f"{REPO}/scripts/mk-busybox-oci.py", f"{img}/busybox.tar",
                  BUSYBOX_IMAGE])
        return [f"{img}/pause.tar", f"{img}/busybox.tar"]

    def config(self, bindir, confdir):
        d = self.dir
        cfg = f"""version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{d}/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{PAUSE_IMAGE}"
    disable_apparmor = true
    enable_selinux = false
    # Without CAP_SYS_RESOURCE (this kind of machine) runc cannot give the sandbox kubelet's
    # oom_score_adj of -998 and fails with "can't get final child's PID from pipe: EOF".
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{bindir}"
      conf_dir = "{confdir}"
      max_conf_num = 1
"""
        path = os.path.join(d, "config.toml")
        with open(path, "w") as f:
            f.write(cfg)
        return path

    def start_containerd(self):
        env = {"PATH": PATH}
        for kv in self.args.env or []:
            k, v = kv.split("=", 1)
            env[k] = v
        logf = open(os.path.join(self.dir, "containerd.log"), "a")
        p = subprocess.Popen(["containerd", "--config", os.path.join(self.dir, "config.toml")],
                             env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                             preexec_fn=unblock)
        logf.close()
        self.containerd = p.pid
        self.say(f"containerd started, pid {p.pid}")
        r = self.run([self.args.criclient, "--timeout", "60", self.sock, "wait", "30"],
                     timeout=70, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"CRI does not answer: {r.stderr}\n{tail(self.dir, 'containerd.log')}")
        write(os.path.join(self.dir, "containerd.pid"), str(p.pid))

    # ---------------------------------------------------------------- running
    def reap(self):
        while True:
            try:
                pid, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.containerd:
                self.say(f"containerd (pid {pid}) exited, status {st}")
                self.containerd = None

    def kill_containerd(self, sig, grace):
        pid = self.containerd
        if pid is None:
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        t = time.monotonic()
        while True:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done == pid:
                break
            if time.monotonic() - t > grace:
                os.kill(pid, signal.SIGKILL)
                grace = 3600
            time.sleep(0.02)
        self.containerd = None
        self.say(f"containerd (pid {pid}) stopped with signal {sig}")

    def restart(self):
        self.kill_containerd(signal.SIGKILL, 0)
        self.start_containerd()

    def teardown(self):
        if self.containerd is not None and self.args.criclient:
            # Every sandbox left is stopped and removed as kubelet would, so its CNI DELs run.
            r = self.run([self.args.criclient, "--timeout", "30", self.sock, "lsp"], check=False)
            try:
                ids = [p["id"] for p in json.loads(r.stdout).get("items", [])]
            except ValueError:
                ids = []
            for i in ids:
                for c in ["stopp", "rmp"]:
                    r = self.run([self.args.criclient, "--timeout", "60", self.sock, c, i],
                                 timeout=70, check=False)
                    if r.returncode != 0:
                        self.say(f"teardown {c} {i}: {r.stderr.strip()}")
        self.kill_containerd(signal.SIGTERM, 10)
        # Containers runc still runs (a failed test, a killed containerd): their processes and
        # cgroups go through runc, which knows them.
        for root in glob.glob("/run/containerd/runc/*"):
            r = self.run(["runc", "--root", root, "list", "-q"], check=False)
            for cid in r.stdout.split():
                self.run(["runc", "--root", root, "delete", "--force", cid], check=False)
        # Whatever is left under us (shims, their orphans) is ours: we are their subreaper.
        t = time.monotonic()
        while time.monotonic() - t < 20:
            left = descendants(os.getpid())
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
            self.reap()
        for cg in set(glob.glob("/sys/fs/cgroup/k8s.io") + glob.glob("/sys/fs/cgroup/*/k8s.io")):
            if cg not in self.cgroups_before:
                rmdir_tree(cg)
        self.say("teardown done")


def rmdir_tree(path):
    """rmdir a cgroup and its child cgroups (a busy one stays: someone still uses it)."""
    for e in os.scandir(path):
        if e.is_dir(follow_symlinks=False):
            rmdir_tree(e.path)
    try:
        os.rmdir(path)
    except OSError:
        pass


def unblock():
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def tail(d, name, n=30):
    try:
        with open(os.path.join(d, name)) as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def procs():
    """pid -> (ppid, state) for every process."""
    out = {}
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2:].split()
        out[int(e)] = (int(rest[1]), rest[0])
    return out


def descendants(root):
    ps = procs()
    kids = {}
    for pid, (ppid, _) in ps.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def alive(pid):
    """Running, not a zombie waiting for its parent."""
    p = procs().get(pid)
    return p is not None and p[1] != "Z"


def enter_namespaces(args):
    """Re-exec this command inside the node's netns and a new private mount namespace; the pid
    stays the same (nsenter and unshare exec), so the caller's child is the holder."""
    if os.environ.get(INNER) == os.path.abspath(args.dir):
        return
    netns = f"/run/netns/{args.netns}"
    if not os.path.exists(netns):
        die(f"no network namespace {args.netns} ({netns})")
    os.makedirs(args.dir, exist_ok=True)
    for f in ["ready", "failed", "containerd.pid", "holder.pid"]:
        try:
            os.unlink(os.path.join(args.dir, f))
        except FileNotFoundError:
            pass
    env = dict(os.environ, **{INNER: os.path.abspath(args.dir)})
    argv = ["nsenter", f"--net={netns}", "unshare", "--mount", "--propagation", "private",
            sys.executable, os.path.abspath(__file__)] + sys.argv[1:]
    os.execvpe("nsenter", argv, env)


def serve(args, with_containerd):
    enter_namespaces(args)
    h = Holder(args)
    write(os.path.join(h.dir, "holder.pid"), str(os.getpid()))
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    # Signals are taken synchronously (sigwait), so reaping never races a subprocess.run.
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        h.mounts()
        if with_containerd:
            if not os.access(args.criclient, os.X_OK):
                raise RuntimeError(f"{args.criclient} missing: run scripts/build-criclient.sh")
            bindir, confdir = h.cni_dirs()
            tars = h.images()
            h.config(bindir, confdir)
            h.start_containerd()
            for t in tars:
                h.run(["ctr", "-n", "k8s.io", "-a", h.sock, "images", "import", t])
            r = h.run([args.criclient, h.sock, "images"])
            if PAUSE_IMAGE not in r.stdout:
                raise RuntimeError(f"CRI does not see {PAUSE_IMAGE}: {r.stdout}")
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        h.say(f"set-up failed: {e}")
        write(os.path.join(h.dir, "failed"), str(e))
        h.teardown()
        sys.exit(1)
    write(os.path.join(h.dir, "ready"),
          json.dumps({"socket": h.sock if with_containerd else None, "holder": os.getpid(),
                      "containerd": h.containerd}))
    h.say("ready")
    while True:
        sig = signal.sigwait(SIGNALS)
        if sig == signal.SIGCHLD:
            h.reap()
        elif sig == signal.SIGUSR1:
            if not with_containerd:
                continue
            try:
                h.restart()
                h.say("restarted")
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                h.say(f"restart failed: {e}")
                write(os.path.join(h.dir, "failed"), str(e))
        else:
            h.say(f"signal {sig}: tearing down")
            break
    h.teardown()


def read_pid(d, name):
    try:
        with open(os.path.join(d, name)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def cmd_ready(args):
    d = os.path.abspath(args.dir)
    t = time.monotonic()
    while time.monotonic() - t < args.timeout:
        if os.path.exists(os.path.join(d, "failed")):
            with open(os.path.join(d, "failed")) as f:
                die(f"set-up failed: {f.read()}")
        if os.path.exists(os.path.join(d, "ready")):
            with open(os.path.join(d, "ready")) as f:
                info = json.load(f)
            print(info["socket"] or info["holder"])
            return
        h = read_pid(d, "holder.pid")
        if h is not None and not alive(h) and time.monotonic() - t > 1:
            die(f"the holder (pid {h}) is gone:\n{tail(d, 'holder.log')}")
        if h is None and time.monotonic() - t > 15:
            die(f"no holder started in {d} (see the output of cri-node.py containerd/hold)")
        time.sleep(0.05)
    die(f"not ready after {args.timeout} s:\n{tail(d, 'holder.log')}")


def cmd_restart(args):
    d = os.path.abspath(args.dir)
    h, old = read_pid(d, "holder.pid"), read_pid(d, "containerd.pid")
    if h is None or not alive(h):
        die("no holder running")
    os.kill(h, signal.SIGUSR1)
    t = time.monotonic()
    while time.monotonic() - t < args.timeout:
        if os.path.exists(os.path.join(d, "failed")):
            with open(os.path.join(d, "failed")) as f:
                die(f"restart failed: {f.read()}")
        new = read_pid(d, "containerd.pid")
        if new is not None and new != old and alive(new):
            print(new)
            return
        time.sleep(0.05)
    die(f"containerd not restarted after {args.timeout} s:\n{tail(d, 'holder.log')}")


def cmd_stop(args):
    d = os.path.abspath(args.dir)
    h = read_pid(d, "holder.pid")
    if h is None or not alive(h):
        return
    os.kill(h, signal.SIGTERM)
    t = time.monotonic()
    while alive(h):
        if time.monotonic() - t > args.timeout:
            os.kill(h, signal.SIGKILL)
            die(f"the holder did not finish in {args.timeout} s: killed")
        time.sleep(0.05)


def cmd_exec(args):
    h = read_pid(os.path.abspath(args.dir), "holder.pid")
    if h is None or not alive(h):
        die("no holder running")
    cmd = args.argv[1:] if args.argv and args.argv[0] == "--" else args.argv
    os.execvp("nsenter", ["nsenter", f"--target={h}", "--mount", "--net", "--"] + cmd)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("containerd")
    c.add_argument("dir")
    c.add_argument("netns")
    c.add_argument("--conflist")
    c.add_argument("--no-conflist", action="store_true")
    c.add_argument("--bin", action="append")
    c.add_argument("--env", action="append")
    c.add_argument("--bind", action="append")
    c.add_argument("--criclient", default=criclient_default())
    h = sub.add_parser("hold")
    h.add_argument("dir")
    h.add_argument("netns")
    h.add_argument("--bind", action="append")
    for name, timeout in [("ready", 90), ("restart", 90), ("stop", 120)]:
        p = sub.add_parser(name)
        p.add_argument("dir")
        p.add_argument("--timeout", type=float, default=timeout)
    e = sub.add_parser("exec")
    e.add_argument("dir")
    e.add_argument("argv", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    if args.cmd == "containerd":
        serve(args, True)
    elif args.cmd == "hold":
        args.criclient = None
        serve(args, False)
    else:
        {"ready": cmd_ready, "restart": cmd_restart, "stop": cmd_stop, "exec": cmd_exec}[args.cmd](args)


if __name__ == "__main__":
    main()
