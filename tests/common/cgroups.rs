//! The cgroups a container runtime made for its containers (cgroupfs driver) that it could
//! not delete because the process holding its namespaces died first: empty once their
//! processes are gone, and removed then. Shared by the CRI and podman harnesses and the CRI
//! benchmark (which includes this file by path: it has no `common`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The cgroups under `<hierarchy>/<parent>` when it was made; `remove_new` removes the ones
/// made since (deepest first), never one that was already there.
pub struct CgroupSweep {
    parent: &'static str,
    before: BTreeSet<PathBuf>,
}

impl CgroupSweep {
    /// `parent`: runc's `k8s.io` for CRI's containers, podman's `libpod_parent`.
    pub fn new(parent: &'static str) -> CgroupSweep {
        CgroupSweep {
            parent,
            before: cgroups_under(parent),
        }
    }

    pub fn remove_new(&self) {
        let mut left: Vec<PathBuf> = cgroups_under(self.parent)
            .difference(&self.before)
            .cloned()
            .collect();
        left.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for cg in left {
            let _ = std::fs::remove_dir(cg);
        }
    }
}

/// `<hierarchy>/<parent>` (in cgroup v2's root or any v1 hierarchy) and every cgroup in it.
fn cgroups_under(parent: &str) -> BTreeSet<PathBuf> {
    fn walk(p: &Path, out: &mut BTreeSet<PathBuf>) {
        out.insert(p.to_path_buf());
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), out);
            }
        }
    }
    let root = Path::new("/sys/fs/cgroup");
    let mut parents = vec![root.join(parent)];
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        parents.push(e.path().join(parent));
    }
    let mut out = BTreeSet::new();
    for p in parents.into_iter().filter(|p| p.is_dir()) {
        walk(&p, &mut out);
    }
    out
}
