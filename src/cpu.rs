//! Where a helper runs. A thread or child process starts on its parent's CPU (on the VMs this
//! was measured on, the kernel does not place it on an idle one) and then waits there until the
//! parent blocks: work meant to run beside the parent would run after it. A helper that must
//! run at the same time is moved to the CPUs the caller may use other than its own.

use nix::libc;

pub(crate) enum Task {
    Thread(libc::pthread_t),
    Process(u32),
}

/// Best effort: with a single usable CPU, or if the kernel refuses, the task stays where it is
/// (it still runs, only not beside the caller).
pub(crate) fn move_elsewhere(task: Task) {
    let Some(set) = other_cpus() else {
        return;
    };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a valid cpu_set_t of `size` bytes; the thread handle is live (its
    // JoinHandle is held by the caller) and the pid is the caller's unwaited child.
    let _ = unsafe {
        match task {
            Task::Thread(t) => libc::pthread_setaffinity_np(t, size, &set),
            Task::Process(pid) => libc::sched_setaffinity(pid as libc::pid_t, size, &set),
        }
    };
}

/// The calling thread's allowed CPUs minus the one it runs on, if any are left.
fn other_cpus() -> Option<libc::cpu_set_t> {
    // SAFETY: plain C calls on a zeroed cpu_set_t of the size they are given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        let me = usize::try_from(libc::sched_getcpu()).ok()?;
        libc::CPU_CLR(me, &mut set);
        (libc::CPU_COUNT(&set) > 0).then_some(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_thread_runs_on_another_cpu_when_there_is_one() {
        let Some(others) = other_cpus() else {
            return; // one usable CPU: nothing to move to (CI machines have two)
        };
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || {
            wait.recv().unwrap(); // where it runs once moved, not where it may have started
            tx.send(unsafe { libc::sched_getcpu() }).unwrap();
        });
        use std::os::unix::thread::JoinHandleExt;
        move_elsewhere(Task::Thread(h.as_pthread_t()));
        go.send(()).unwrap();
        let ran_on = rx.recv().unwrap();
        h.join().unwrap();
        assert!(
            unsafe { libc::CPU_ISSET(ran_on as usize, &others) },
            "ran on {ran_on}"
        );
    }
}
