//! The one error type of the crate, and the one place where failures become CNI error codes.
//!
//! Every layer adds context as the error travels up (`"create veth pair: netlink: File exists
//! (os error 17)"`); the [`Code`] chosen where the error is born decides what the runtime sees.

use std::fmt;

/// What kind of failure this is. Mapped to a CNI error code by [`Code::cni_code`] only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// CNI 1: the config's cniVersion is not one we speak, or the command needs a newer one.
    IncompatibleVersion,
    /// CNI 2: a config field we recognise but do not support.
    UnsupportedField,
    /// CNI 3: the container (or its attachment) is unknown; the runtime need not clean up.
    UnknownContainer,
    /// CNI 4: a CNI_* environment variable is missing or invalid.
    InvalidEnv,
    /// CNI 5: reading or writing our files failed (disk full, read-only, permissions).
    Io,
    /// CNI 6: stdin or a plugin's output could not be decoded.
    Decode,
    /// CNI 7: the network config is well-formed JSON but not a valid config.
    InvalidConfig,
    /// CNI 11: transient; the runtime should retry (lock timeout, unreadable state, as upstream).
    TryAgainLater,
    /// CNI 50: the plugin cannot service ADD right now (STATUS).
    NotAvailable,
    /// CNI 51: not available, and existing containers may have limited connectivity (STATUS).
    LimitedConnectivity,
    /// CNI 100: upstream's `ErrRuntime`: IPAM failures, exhaustion, master interface not found.
    Runtime,
    /// CNI 999: upstream's `ErrInternal`: kernel (netlink, sysctl, netns) failures.
    Internal,
}

impl Code {
    /// The single mapping from failure kinds to CNI codes (CNI spec "Error" section, and the
    /// codes upstream Azure CNI produces for the same situations, spec B.6.1).
    pub fn cni_code(self) -> u32 {
        match self {
            Code::IncompatibleVersion => 1,
            Code::UnsupportedField => 2,
            Code::UnknownContainer => 3,
            Code::InvalidEnv => 4,
            Code::Io => 5,
            Code::Decode => 6,
            Code::InvalidConfig => 7,
            Code::TryAgainLater => 11,
            Code::NotAvailable => 50,
            Code::LimitedConnectivity => 51,
            Code::Runtime => 100,
            Code::Internal => 999,
        }
    }

    /// Back from a CNI code (a delegate's error keeps its kind); unknown codes are runtime
    /// failures.
    pub fn from_cni(code: u32) -> Code {
        use Code::*;
        #[rustfmt::skip]
        let all = [IncompatibleVersion, UnsupportedField, UnknownContainer, InvalidEnv, Io, Decode,
            InvalidConfig, TryAgainLater, NotAvailable, LimitedConnectivity, Runtime, Internal];
        all.into_iter()
            .find(|c| c.cni_code() == code)
            .unwrap_or(Runtime)
    }
}

/// A failure with its CNI code, a message that carries the chain of context, optional details,
/// and the OS errno when one is known (so callers can tell `EEXIST` from the rest).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{msg}")]
pub struct Error {
    code: Code,
    msg: String,
    details: Option<String>,
    errno: Option<i32>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        Error {
            code,
            msg: msg.into(),
            details: None,
            errno: None,
        }
    }

    /// An OS-level failure (`io::Error`, errno) with the given code; keeps the errno.
    pub fn os(code: Code, err: &std::io::Error) -> Self {
        Error {
            code,
            msg: err.to_string(),
            details: None,
            errno: err.raw_os_error(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    pub fn with_code(mut self, code: Code) -> Self {
        self.code = code;
        self
    }

    /// Prefix the message with what was being done: `"<context>: <msg>"`.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.msg = format!("{context}: {}", self.msg);
        self
    }

    pub fn code(&self) -> Code {
        self.code
    }

    pub fn msg(&self) -> &str {
        &self.msg
    }

    pub fn details(&self) -> Option<&str> {
        self.details.as_deref()
    }

    pub fn is_errno(&self, errno: i32) -> bool {
        self.errno == Some(errno)
    }
}

/// The failures of a best-effort sequence (a teardown that carries on past a failed step), as
/// one error: the first failure's code, every message. Ok when nothing failed.
pub fn all(errors: Vec<Error>) -> Result<()> {
    let mut errors = errors.into_iter();
    let Some(first) = errors.next() else {
        return Ok(());
    };
    let rest: Vec<Error> = errors.collect();
    if rest.is_empty() {
        return Err(first);
    }
    let msgs: Vec<&str> = std::iter::once(&first)
        .chain(&rest)
        .map(|e| e.msg())
        .collect();
    Err(Error::new(
        first.code,
        format!("{} steps failed: {}", msgs.len(), msgs.join("; ")),
    ))
}

/// `.context(..)` on any result whose error converts into [`Error`].
pub trait Context<T> {
    fn context(self, context: impl fmt::Display) -> Result<T>;
    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }

    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.into().context(f()))
    }
}

/// Plain `io::Error`s that reach us without a more specific code are I/O failures (CNI 5).
impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::os(Code::Io, &err)
    }
}

/// Shorthand constructors, so call sites read `err::invalid_config(..)`.
pub fn invalid_config(msg: impl Into<String>) -> Error {
    Error::new(Code::InvalidConfig, msg)
}

pub fn invalid_env(msg: impl Into<String>) -> Error {
    Error::new(Code::InvalidEnv, msg)
}

pub fn runtime(msg: impl Into<String>) -> Error {
    Error::new(Code::Runtime, msg)
}

pub fn internal(msg: impl Into<String>) -> Error {
    Error::new(Code::Internal, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_cni_spec_and_upstream() {
        let table = [
            (Code::IncompatibleVersion, 1),
            (Code::UnsupportedField, 2),
            (Code::UnknownContainer, 3),
            (Code::InvalidEnv, 4),
            (Code::Io, 5),
            (Code::Decode, 6),
            (Code::InvalidConfig, 7),
            (Code::TryAgainLater, 11),
            (Code::NotAvailable, 50),
            (Code::LimitedConnectivity, 51),
            (Code::Runtime, 100),
            (Code::Internal, 999),
        ];
        for (code, want) in table {
            assert_eq!(code.cni_code(), want, "{code:?}");
            assert_eq!(Code::from_cni(want), code);
        }
        assert_eq!(Code::from_cni(42), Code::Runtime);
    }

    #[test]
    fn all_reports_every_failure_with_the_first_code() {
        assert!(all(vec![]).is_ok());
        let one = all(vec![runtime("a")]).unwrap_err();
        assert_eq!((one.code(), one.msg()), (Code::Runtime, "a"));
        let two = all(vec![invalid_env("a"), internal("b")]).unwrap_err();
        assert_eq!(two.code(), Code::InvalidEnv);
        assert_eq!(two.msg(), "2 steps failed: a; b");
    }

    #[test]
    fn context_chains_outermost_first_and_keeps_errno() {
        let io = std::io::Error::from_raw_os_error(17);
        let e: Result<()> = Err(Error::os(Code::Internal, &io).context("netlink"));
        let e = e.context("create veth pair").unwrap_err();
        assert_eq!(
            e.msg(),
            "create veth pair: netlink: File exists (os error 17)"
        );
        assert!(e.is_errno(17));
        assert_eq!(e.code(), Code::Internal);
    }
}
