//! netfence-netns: named network namespaces (the `ip netns` kind, a file under
//! `/var/run/netns`), the one place the sandbox, the kernel tests, the fake API server and the
//! benchmarks make, enter and remove them.
//!
//! Network namespaces belong to threads, so code runs "in" a namespace on a thread of its own
//! that entered it ([`in_netns`]); commands run in one through `ip netns exec` or `ip -n`.

#![forbid(unsafe_code)]

use std::process::Command;

/// What went wrong with a namespace or a command.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("cannot enter network namespace {name}: {reason}")]
    Enter { name: String, reason: String },
    #[error("the thread that entered network namespace {0} panicked")]
    Panicked(String),
}

/// Runs a command in the caller's namespace; its stdout, or its stderr as the error.
pub fn run(args: &[&str]) -> Result<String, NetnsError> {
    let command = || args.join(" ");
    let (program, rest) = args.split_first().ok_or_else(|| NetnsError::Command {
        command: String::new(),
        stderr: "no program".to_string(),
    })?;
    let out = Command::new(program)
        .args(rest)
        .output()
        .map_err(|e| NetnsError::Command {
            command: command(),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(NetnsError::Command {
            command: command(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a closure on a thread that has entered the named namespace, and returns its result.
pub fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetnsError> {
    let path = format!("/var/run/netns/{name}");
    let enter_error = |reason: String| NetnsError::Enter {
        name: name.to_string(),
        reason,
    };
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())?;
        Ok(f())
    })
    .join()
    .map_err(|_| NetnsError::Panicked(name.to_string()))?
    .map_err(enter_error)
}

/// Creates an empty namespace (loopback up).
pub fn add(name: &str) -> Result<(), NetnsError> {
    run(&["ip", "netns", "add", name])?;
    run(&["ip", "-n", name, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Removes a namespace; one that is already gone is no error.
pub fn delete(name: &str) {
    let _ = Command::new("ip").args(["netns", "del", name]).output();
}

/// The names of every named namespace on the machine.
pub fn list() -> Vec<String> {
    run(&["ip", "netns", "list"])
        .map(|out| {
            out.lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// A namespace that is removed when dropped, so a failing run leaves nothing behind.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `name` afresh (removing a leftover of that name first).
    pub fn create(name: &str) -> Result<Netns, NetnsError> {
        delete(name);
        add(name)?;
        Ok(Netns {
            name: name.to_string(),
        })
    }

    /// [`in_netns`] in this namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, NetnsError> {
        in_netns(&self.name, f)
    }

    /// Runs a command inside the namespace; its stdout.
    pub fn exec(&self, args: &[&str]) -> Result<String, NetnsError> {
        let mut full = vec!["ip", "netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run(&full)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete(&self.name);
    }
}

/// Whether a process with this id is running (its `/proc` entry exists).
pub fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
