//! Where a helper runs. A thread or child process starts on its parent's CPU (on the VMs this
//! was measured on, the kernel does not place it on an idle one) and then waits there until the
//! parent blocks: work meant to run beside the parent would run after it. A helper that must
//! run at the same time is moved to the CPUs the caller may use other than its own.

use nix::libc;

/// Start `f` on a new thread, on another CPU than the caller's when there is one.
pub(crate) fn spawn_elsewhere<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<T>> {
    use std::os::unix::thread::JoinHandleExt;
    // The thread waits until it has been moved: glibc applies pthread_setaffinity_np to the
    // thread's kernel id, which is 0 once the thread has exited, and 0 means the caller.
    let (moved, wait) = std::sync::mpsc::sync_channel::<()>(1);
    let handle = std::thread::Builder::new().spawn(move || {
        let _ = wait.recv();
        f()
    })?;
    if let Some(set) = other_cpus() {
        // SAFETY: the thread is alive (it waits for `moved`) and `set` is a valid cpu_set_t.
        let _ = unsafe {
            libc::pthread_setaffinity_np(
                handle.as_pthread_t(),
                std::mem::size_of::<libc::cpu_set_t>(),
                &set,
            )
        };
    }
    let _ = moved.send(());
    Ok(handle)
}

/// Move the caller's child `pid` (not yet waited for, so the pid is still its own) to another
/// CPU than the caller's, when there is one. Best effort: it still runs if this fails.
pub(crate) fn move_child_elsewhere(pid: u32) {
    let Some(set) = other_cpus() else {
        return;
    };
    // SAFETY: `set` is a valid cpu_set_t of the size given.
    let _ = unsafe {
        libc::sched_setaffinity(
            pid as libc::pid_t,
            std::mem::size_of::<libc::cpu_set_t>(),
            &set,
        )
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
    fn a_thread_started_elsewhere_runs_on_another_cpu_and_the_caller_stays_put() {
        let mine = |set: &mut libc::cpu_set_t| unsafe {
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set)
        };
        let mut before: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        assert_eq!(mine(&mut before), 0);
        let others = other_cpus();
        let h = spawn_elsewhere(|| unsafe { libc::sched_getcpu() }).unwrap();
        let ran_on = h.join().unwrap();
        if let Some(others) = others {
            assert!(
                unsafe { libc::CPU_ISSET(ran_on as usize, &others) },
                "ran on {ran_on}"
            );
        }
        // A thread that finishes at once must not leave its move on the caller.
        for _ in 0..50 {
            spawn_elsewhere(|| ()).unwrap().join().unwrap();
        }
        let mut after: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        assert_eq!(mine(&mut after), 0);
        assert!(
            unsafe { libc::CPU_EQUAL(&before, &after) },
            "the caller was moved"
        );
    }
}
