//! Network namespaces a test makes (`ip netns add`) and deletes: whatever
//! addresses a test puts in them exist only there, so nothing it sends
//! leaves the machine. Needs root and iproute2; a namespace that cannot be
//! made fails the test, saying why.

use std::os::fd::AsFd;
use std::process::Command;

/// A network namespace, deleted when dropped.
pub struct Netns {
    pub name: String,
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} cannot run ({e}); CI installs iproute2, nftables and curl"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Netns {
    /// A namespace with loopback up and the documentation addresses
    /// 198.51.100.10, .20 and 2001:db8::10 on it.
    pub fn create(tag: &str) -> Netns {
        let ns = Netns::bare(tag);
        for a in ["198.51.100.10/32", "198.51.100.20/32", "2001:db8::10/128"] {
            ns.ip(&["addr", "add", a, "dev", "lo"]);
        }
        ns
    }

    /// A namespace with loopback up and nothing else.
    pub fn bare(tag: &str) -> Netns {
        let name = format!("egressd-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let out = Command::new("ip").args(["netns", "add", &name]).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "cannot create a network namespace (ip netns add: {}); this test needs root and iproute2",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("cannot run ip ({e}): install iproute2 (CI does)"),
        }
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NS ARGS`.
    pub fn ip(&self, args: &[&str]) -> String {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    pub fn exec(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]);
        c
    }

    /// Runs `f` on a thread inside the namespace: sockets it makes live there.
    pub fn enter<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let file = std::fs::File::open(format!("/run/netns/{}", self.name)).unwrap();
        std::thread::spawn(move || {
            rustix::thread::move_into_link_name_space(
                file.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns into the test namespace");
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}
