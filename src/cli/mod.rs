//! The command-line tool: what `azure-vnet` does when a person runs it with arguments and no
//! CNI_COMMAND (a runtime always sets CNI_COMMAND and passes no arguments, so the CNI protocol
//! never reaches this). Output for people on stdout, errors on stderr naming the path and the
//! cause; exit status 0 on success, 1 on failure, 2 on a usage error.

mod install;
mod metrics;
mod node;
mod reconcile;
mod status;

use std::ffi::OsString;
use std::path::PathBuf;

const USAGE: &str = "\
usage: azure-vnet <command> [options]

Azure CNI (transparent mode). Run by a container runtime, azure-vnet is a CNI plugin (it reads
CNI_COMMAND); run by a person with a command, it is this tool.

commands:
  install     put the plugin (azure-vnet, azure-vnet-ipam) and its conflist on a node
  uninstall   remove them (the conflist first); state files and logs stay
  status      endpoints and their health, pools, problems (exit 1 if any)
  reconcile   what no live pod holds; --apply releases it
  metrics     Prometheus metrics: printed once, or served with --listen ADDR
  -v, --version
  -h, --help  this text; `azure-vnet <command> --help` for a command's options
";

/// A usage error: what to say, exit status 2.
pub(crate) struct Usage(String);

impl From<lexopt::Error> for Usage {
    fn from(e: lexopt::Error) -> Self {
        Usage(e.to_string())
    }
}

/// Run the tool with `args` (without the program name); the exit status.
pub fn run(args: Vec<OsString>) -> i32 {
    let mut p = lexopt::Parser::from_args(args);
    let outcome = match p.next() {
        Ok(Some(lexopt::Arg::Value(cmd))) => match cmd.to_string_lossy().as_ref() {
            "install" => install::install_cmd(&mut p),
            "uninstall" => install::uninstall_cmd(&mut p),
            "status" => status::status_cmd(&mut p),
            "reconcile" => reconcile::reconcile_cmd(&mut p),
            "metrics" => metrics::metrics_cmd(&mut p),
            other => Err(Usage(format!("unknown command {other:?}"))),
        },
        Ok(Some(lexopt::Arg::Short('h') | lexopt::Arg::Long("help"))) => {
            print!("{USAGE}");
            return 0;
        }
        Ok(Some(other)) => Err(Usage(format!("unexpected {}", describe(&other)))),
        Ok(None) => Err(Usage("a command is needed".into())),
        Err(e) => Err(e.into()),
    };
    match outcome {
        Ok(code) => code,
        Err(Usage(msg)) => {
            eprintln!("azure-vnet: {msg}\n\n{USAGE}");
            2
        }
    }
}

fn describe(arg: &lexopt::Arg) -> String {
    match arg {
        lexopt::Arg::Short(c) => format!("option -{c}"),
        lexopt::Arg::Long(l) => format!("option --{l}"),
        lexopt::Arg::Value(v) => format!("argument {v:?}"),
    }
}

/// A command's options: `--name VALUE` (paths, addresses) and `--flag`.
pub(crate) struct Options {
    values: Vec<(&'static str, PathBuf)>,
    flags: Vec<&'static str>,
    pub help: bool,
}

impl Options {
    /// Parse the rest of the command line: `--<name> VALUE` for each of `names`, `--<flag>`
    /// for each of `flags`, and `--help`.
    pub fn parse(
        p: &mut lexopt::Parser,
        names: &[&'static str],
        flags: &[&'static str],
    ) -> Result<Options, Usage> {
        let mut o = Options {
            values: Vec::new(),
            flags: Vec::new(),
            help: false,
        };
        while let Some(arg) = p.next()? {
            match arg {
                lexopt::Arg::Short('h') | lexopt::Arg::Long("help") => o.help = true,
                lexopt::Arg::Long(l) => {
                    if let Some(name) = names.iter().find(|n| **n == l) {
                        o.values.push((name, PathBuf::from(p.value()?)));
                    } else if let Some(flag) = flags.iter().find(|f| **f == l) {
                        o.flags.push(flag);
                    } else {
                        return Err(Usage(format!("unknown option --{l}")));
                    }
                }
                other => return Err(Usage(format!("unexpected {}", describe(&other)))),
            }
        }
        Ok(o)
    }

    pub fn path(&self, name: &str) -> Option<&PathBuf> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    pub fn flag(&self, name: &str) -> bool {
        self.flags.contains(&name)
    }
}
