//! ADD's rollback guard: each completed step registers its undo; success disarms the guard;
//! on any failure (or panic) the undos run in reverse order when the guard drops, so a failed
//! ADD leaves no veth, route, record or IP behind (upstream leaks host veths, spec B.6.4).

use serde_json::Value;

use crate::error::Result;
use crate::logging::Logger;

type Undo<'a> = Box<dyn FnOnce() -> Result<()> + 'a>;

pub struct Rollback<'a> {
    steps: Vec<(&'static str, Undo<'a>)>,
    log: &'a Logger,
}

impl<'a> Rollback<'a> {
    pub fn new(log: &'a Logger) -> Rollback<'a> {
        Rollback {
            steps: Vec::new(),
            log,
        }
    }

    pub fn push(&mut self, what: &'static str, undo: impl FnOnce() -> Result<()> + 'a) {
        self.steps.push((what, Box::new(undo)));
    }

    /// The operation succeeded: keep everything.
    pub fn disarm(mut self) {
        self.steps.clear();
    }
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        while let Some((what, undo)) = self.steps.pop() {
            match undo() {
                Ok(()) => self.log.info("rolled back", &[("step", Value::from(what))]),
                Err(e) => self.log.error(
                    "rollback step failed",
                    &[("step", Value::from(what)), ("error", Value::from(e.msg()))],
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn undoes_in_reverse_unless_disarmed() {
        let log = Logger::discard();
        let done = RefCell::new(Vec::new());
        {
            let mut rb = Rollback::new(&log);
            rb.push("one", || {
                done.borrow_mut().push(1);
                Ok(())
            });
            rb.push("two", || {
                done.borrow_mut().push(2);
                Err(crate::error::internal("undo failed"))
            });
            rb.push("three", || {
                done.borrow_mut().push(3);
                Ok(())
            });
        }
        assert_eq!(
            *done.borrow(),
            vec![3, 2, 1],
            "all steps run, even after one fails"
        );
        done.borrow_mut().clear();
        let mut rb = Rollback::new(&log);
        rb.push("kept", || {
            done.borrow_mut().push(9);
            Ok(())
        });
        rb.disarm();
        assert!(done.borrow().is_empty());
    }
}
