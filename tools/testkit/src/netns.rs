//! Hosts simulated by Linux network namespaces, for multi-host tests on one machine.
//!
//! [`Hosts::create`] makes one namespace per host and one more holding a bridge (the
//! "switch"); each host is joined to the bridge by a veth pair and gets a private address
//! (`10.77.0.N/24`) that exists only inside these namespaces: nothing is added to the
//! machine's own network, and nothing outside the namespaces is ever reached. A process
//! runs on a host through [`Hosts::command`] (`ip netns exec`); the test's own thread
//! joins a host with [`Hosts::enter`]. [`Hosts::cut`] takes a host's link down on the
//! switch (the host is cut off, its processes keep running) and [`Hosts::heal`] brings it
//! back. Dropping the [`Hosts`] kills every process in the namespaces and deletes them,
//! also when the test fails; namespaces an earlier, killed test run left behind are
//! deleted by the next [`Hosts::create`].
//!
//! Needs root (`CAP_SYS_ADMIN` and `CAP_NET_ADMIN`) and `ip` (iproute2): see
//! [`Hosts::unavailable`].

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The prefix of every namespace this module makes (`svkPID-N-NAME`).
const PREFIX: &str = "svk";

/// A set of simulated hosts on one bridge.
#[derive(Debug)]
pub struct Hosts {
    /// Namespace names, per host, in order.
    namespaces: Vec<String>,
    /// The hosts' names as the test gave them.
    names: Vec<String>,
    /// The namespace holding the bridge.
    switch: String,
}

/// Runs `ip ARGS`, panicking with its output when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespaces whose names start with [`PREFIX`].
fn ours() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_string)
        .collect()
}

/// Kills every process in namespace `ns` and deletes it.
fn remove(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "delete", ns])
        .stderr(Stdio::null())
        .status();
}

impl Hosts {
    /// Why hosts cannot be simulated here (not root, or no `ip`), if they cannot.
    pub fn unavailable() -> Option<String> {
        if !rustix::process::geteuid().is_root() {
            return Some("network namespaces need root (ip netns)".to_string());
        }
        match Command::new("ip").arg("-V").output() {
            Ok(out) if out.status.success() => None,
            _ => Some("`ip` (iproute2) is not installed".to_string()),
        }
    }

    /// Makes a host per name (`10.77.0.1` for the first, `.2` for the next, …), each
    /// joined to one bridge. Panics when namespaces cannot be made.
    pub fn create(names: &[&str]) -> Hosts {
        assert!(
            !names.is_empty() && names.len() < 200,
            "1 to 199 hosts: {names:?}"
        );
        // What killed runs of earlier tests left behind (their process is gone).
        for stale in ours() {
            let pid = stale[PREFIX.len()..]
                .split('-')
                .next()
                .and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
                remove(&stale);
            }
        }
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let set = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut hosts = Hosts {
            namespaces: Vec::new(),
            names: names.iter().map(|n| n.to_string()).collect(),
            switch: format!("{set}-sw"),
        };
        ip(&["netns", "add", &hosts.switch]);
        ip(&["-n", &hosts.switch, "link", "set", "lo", "up"]);
        ip(&["-n", &hosts.switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hosts.switch, "link", "set", "br0", "up"]);
        for (i, _) in names.iter().enumerate() {
            let ns = format!("{set}-h{i}");
            ip(&["netns", "add", &ns]);
            hosts.namespaces.push(ns.clone());
            let (inner, outer) = ("eth0".to_string(), format!("port{i}"));
            // The pair is made in the switch, then one end moves into the host.
            ip(&[
                "-n",
                &hosts.switch,
                "link",
                "add",
                &outer,
                "type",
                "veth",
                "peer",
                "name",
                &inner,
                "netns",
                &ns,
            ]);
            ip(&["-n", &hosts.switch, "link", "set", &outer, "master", "br0"]);
            ip(&["-n", &hosts.switch, "link", "set", &outer, "up"]);
            let address = format!("{}/24", hosts.address(i));
            ip(&["-n", &ns, "addr", "add", &address, "dev", &inner]);
            ip(&["-n", &ns, "link", "set", &inner, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        hosts
    }

    /// The index of host `name`.
    fn index(&self, name: &str) -> usize {
        self.names
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("no host {name:?} among {:?}", self.names))
    }

    /// Host `i`'s address (`10.77.0.{i+1}`).
    pub fn address(&self, i: usize) -> IpAddr {
        let last = u8::try_from(i + 1).expect("fewer than 200 hosts");
        IpAddr::V4(Ipv4Addr::new(10, 77, 0, last))
    }

    /// The address of the host named `name`.
    pub fn address_of(&self, name: &str) -> IpAddr {
        self.address(self.index(name))
    }

    /// The namespace of the host named `name` (for `ip netns exec`).
    pub fn namespace(&self, name: &str) -> &str {
        &self.namespaces[self.index(name)]
    }

    /// A command that runs `program` on host `name`.
    pub fn command(&self, name: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", self.namespace(name)])
            .arg(program);
        command
    }

    /// Moves the calling thread onto host `name`: the sockets it opens from now on are
    /// that host's. Threads it starts afterwards are on that host too; other threads are
    /// not affected.
    pub fn enter(&self, name: &str) {
        let path = format!("/run/netns/{}", self.namespace(name));
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&file),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap_or_else(|e| panic!("entering {path}: {e}"));
    }

    /// Cuts host `name` off: its link to the switch goes down (nothing reaches it and
    /// nothing leaves it; its processes keep running).
    pub fn cut(&self, name: &str) {
        let port = format!("port{}", self.index(name));
        ip(&["-n", &self.switch, "link", "set", &port, "down"]);
    }

    /// Brings host `name`'s link back up.
    pub fn heal(&self, name: &str) {
        let port = format!("port{}", self.index(name));
        ip(&["-n", &self.switch, "link", "set", &port, "up"]);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            remove(ns);
        }
        remove(&self.switch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two hosts reach each other on their private addresses, not once one is cut off,
    /// and again once healed; the namespaces are gone after the drop.
    #[test]
    fn hosts_reach_each_other_until_cut_off() {
        if let Some(why) = Hosts::unavailable() {
            assert!(
                std::env::var_os("CI").is_none(),
                "network namespaces are required under CI: {why}"
            );
            eprintln!("skipped: {why}");
            return;
        }
        let hosts = Hosts::create(&["a", "b"]);
        let b = hosts.address_of("b");
        let listener = std::thread::scope(|s| {
            s.spawn(|| {
                hosts.enter("b");
                std::net::TcpListener::bind((b, 0)).expect("bind on b")
            })
            .join()
            .expect("thread")
        });
        let port = listener.local_addr().expect("addr").port();
        let reach = |timeout_ms: u64| {
            let hosts = &hosts;
            std::thread::scope(|s| {
                s.spawn(move || {
                    hosts.enter("a");
                    std::net::TcpStream::connect_timeout(
                        &(b, port).into(),
                        std::time::Duration::from_millis(timeout_ms),
                    )
                    .is_ok()
                })
                .join()
                .expect("thread")
            })
        };
        assert!(reach(5_000), "a reaches b");
        hosts.cut("b");
        assert!(!reach(300), "a cannot reach b once b is cut off");
        hosts.heal("b");
        assert!(reach(5_000), "a reaches b again");
        let names: Vec<String> = hosts.namespaces.clone();
        drop(listener);
        drop(hosts);
        let left = ours();
        assert!(names.iter().all(|n| !left.contains(n)), "{left:?}");
    }
}
