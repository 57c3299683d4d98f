//! dnsmasq (Debian's dnsmasq-base) as the real DNS server a test starts:
//! it answers names from a hosts file the test writes and only those
//! (other names under `.test` are NXDOMAIN; nothing is forwarded), and logs
//! every question it gets, so the questions that reached it are counted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::WAIT;

/// A dnsmasq answering from `hosts` (TTL `ttl` seconds) and only that:
/// other names under `.test` are NXDOMAIN; nothing is forwarded.
pub struct Dnsmasq {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
    hosts: PathBuf,
}

impl Dnsmasq {
    /// On 127.0.0.1, on a port free for UDP and TCP (dnsmasq binds both); a
    /// start that lost the port to another socket meanwhile is retried.
    pub fn start(dir: &Path, hosts: &str, ttl: u32) -> Dnsmasq {
        for _ in 0..5 {
            let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = tcp.local_addr().unwrap().port();
            let Ok(udp) = std::net::UdpSocket::bind(("127.0.0.1", port)) else {
                continue;
            };
            drop((tcp, udp));
            if let Some(d) = Dnsmasq::spawn(dir, hosts, ttl, &[], SocketAddr::from(([127, 0, 0, 1], port))) {
                return d;
            }
        }
        panic!(
            "dnsmasq did not start on a free port in 5 tries: {}",
            std::fs::read_to_string(dir.join("dnsmasq.err")).unwrap_or_default()
        )
    }

    /// On `addr`, under `wrapper` (e.g. `ip netns exec NS`).
    pub fn start_in(dir: &Path, hosts: &str, ttl: u32, wrapper: &[&str], addr: SocketAddr) -> Dnsmasq {
        Dnsmasq::spawn(dir, hosts, ttl, wrapper, addr).unwrap_or_else(|| {
            panic!(
                "dnsmasq did not start on {addr}: {}",
                std::fs::read_to_string(dir.join("dnsmasq.err")).unwrap_or_default()
            )
        })
    }

    /// Starts it and waits for it to read its hosts file; `None` if it
    /// exited first.
    // The child is killed and waited for in `Drop`.
    #[allow(clippy::zombie_processes)]
    fn spawn(dir: &Path, hosts: &str, ttl: u32, wrapper: &[&str], addr: SocketAddr) -> Option<Dnsmasq> {
        let hosts_file = dir.join("hosts");
        std::fs::write(&hosts_file, hosts).unwrap();
        let log = dir.join("dnsmasq.log");
        let _ = std::fs::remove_file(&log);
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg("dnsmasq");
                c
            }
            None => Command::new("dnsmasq"),
        };
        let mut child = cmd
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--bind-interfaces",
                "--pid-file=",
                "--user=root",
                "--group=root",
                "--local=/test/",
                "--log-queries",
            ])
            .arg(format!("--listen-address={}", addr.ip()))
            .arg(format!("--port={}", addr.port()))
            .arg(format!("--addn-hosts={}", hosts_file.display()))
            .arg(format!("--local-ttl={ttl}"))
            .arg(format!("--log-facility={}", log.display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("dnsmasq.err")).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run dnsmasq ({e}): install dnsmasq-base (the test command does)")
            });
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("read ")
            {
                return Some(Dnsmasq {
                    child,
                    addr,
                    log,
                    hosts: hosts_file,
                });
            }
            if child.try_wait().ok().flatten().is_some() {
                return None;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "dnsmasq did not start: {}",
                std::fs::read_to_string(dir.join("dnsmasq.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Questions for `name` of type `kind` (`A`, `AAAA`) it got so far.
    pub fn questions(&self, kind: &str, name: &str) -> usize {
        let needle = format!("query[{kind}] {name} from");
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    }

    /// New answers: the hosts file rewritten and reread.
    pub fn answer(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).unwrap();
        self.signal("HUP");
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
