//! Where log lines go: each is formatted by the thread that made it into
//! that thread's own buffer, and one writer thread per destination writes
//! the buffers out in batches. A request never waits for the disk, and a
//! worker never contends with another for a lock.
//!
//! The writer wakes every [`FLUSH_EVERY`], or sooner when a buffer holds
//! [`WAKE_AT`] bytes. [`Guard`] (kept by `main`) writes everything out at a
//! clean exit, drain included. A crash loses at most the lines of the last
//! [`FLUSH_EVERY`]. A destination that cannot keep up (a full disk, a
//! stalled pipe) costs memory up to [`MAX_PENDING`] per worker thread; past
//! that, lines are dropped and counted (`egressd_log_lines_dropped_total`),
//! never waited for.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use crate::shard::{lock, Sharded};

/// Longest time a line waits in a buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A buffer this full wakes its writer before the interval is up.
pub const WAKE_AT: usize = 64 * 1024;
/// Most bytes one thread's buffer holds while its writer is stuck.
pub const MAX_PENDING: usize = 8 << 20;

/// Lines dropped because their destination could not keep up or failed.
pub fn dropped() -> &'static Counter {
    static DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);
    &DROPPED
}

/// A log destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    Stdout,
    /// Appended to; reopened by [`reopen`] (after logrotate moves it).
    File(PathBuf),
}

impl Dest {
    /// `-` is standard output.
    pub fn parse(s: &str) -> Dest {
        if s == "-" {
            Dest::Stdout
        } else {
            Dest::File(PathBuf::from(s))
        }
    }

    fn open(&self) -> std::io::Result<File> {
        match self {
            // Standard output's own descriptor, unbuffered: batches are
            // already whole lines.
            Dest::Stdout => {
                use std::os::fd::AsFd;
                Ok(File::from(std::io::stdout().as_fd().try_clone_to_owned()?))
            }
            Dest::File(p) => OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display()))),
        }
    }
}

/// One destination's lines.
pub struct Sink {
    how: How,
}

enum How {
    /// Per-thread buffers and a writer thread.
    Batched(Arc<Batched>),
    /// Written as they come, under a lock (tests, embedding).
    Direct(Mutex<Box<dyn Write + Send>>),
}

struct Batched {
    dest: Dest,
    bufs: Sharded<Vec<u8>>,
    wake: Mutex<Wake>,
    cv: Condvar,
    /// A write failed and was reported; cleared by the next that succeeds.
    failing: AtomicBool,
}

#[derive(Default)]
struct Wake {
    pending: bool,
    reopen: bool,
    stop: bool,
}

impl Sink {
    /// Lines written by a writer thread to `dest`, opened now so that a
    /// bad path is an error at start.
    pub fn batched(dest: Dest) -> std::io::Result<(Arc<Sink>, Guard)> {
        let out = dest.open()?;
        let b = Arc::new(Batched {
            dest,
            bufs: Sharded::default(),
            wake: Mutex::default(),
            cv: Condvar::new(),
            failing: AtomicBool::new(false),
        });
        let w = b.clone();
        let thread = std::thread::Builder::new()
            .name("egressd-log".into())
            .spawn(move || w.run(out))?;
        let sink = Arc::new(Sink {
            how: How::Batched(b.clone()),
        });
        Ok((
            sink,
            Guard {
                writers: vec![(b, thread)],
            },
        ))
    }

    /// Lines written at once to `w`.
    pub fn direct(w: Box<dyn Write + Send>) -> Arc<Sink> {
        Arc::new(Sink {
            how: How::Direct(Mutex::new(w)),
        })
    }

    /// Appends one line (`f` writes it, newline included).
    pub fn line(&self, f: impl FnOnce(&mut Vec<u8>)) {
        match &self.how {
            How::Batched(b) => {
                let wake = b.bufs.with(|buf| {
                    let before = buf.len();
                    if before >= MAX_PENDING {
                        dropped().inc();
                        return false;
                    }
                    f(buf);
                    before < WAKE_AT && buf.len() >= WAKE_AT
                });
                if wake {
                    lock(&b.wake).pending = true;
                    b.cv.notify_one();
                }
            }
            How::Direct(w) => {
                let mut line = Vec::with_capacity(512);
                f(&mut line);
                let _ = lock(w).write_all(&line);
            }
        }
    }
}

impl Batched {
    fn run(&self, mut out: File) {
        let mut spare: Vec<u8> = Vec::with_capacity(2 * WAKE_AT);
        loop {
            let (stop, reopen) = {
                let mut w = lock(&self.wake);
                if !(w.pending || w.stop || w.reopen) {
                    w = self
                        .cv
                        .wait_timeout(w, FLUSH_EVERY)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                let r = (w.stop, w.reopen);
                w.pending = false;
                w.reopen = false;
                r
            };
            if reopen {
                match self.dest.open() {
                    Ok(f) => out = f,
                    // The old file keeps receiving lines.
                    Err(e) => eprintln!("egressd: cannot reopen the log: {e}"),
                }
            }
            for shard in self.bufs.shards() {
                {
                    let mut g = lock(&shard);
                    if g.is_empty() {
                        continue;
                    }
                    std::mem::swap(&mut *g, &mut spare);
                }
                self.write(&mut out, &spare);
                spare.clear();
                // A burst's buffer is not kept at idle.
                if spare.capacity() > 16 * WAKE_AT {
                    spare = Vec::with_capacity(2 * WAKE_AT);
                }
            }
            if stop {
                let _ = out.flush();
                return;
            }
        }
    }

    fn write(&self, out: &mut File, batch: &[u8]) {
        match out.write_all(batch) {
            Ok(()) => self.failing.store(false, Ordering::Relaxed),
            Err(e) => {
                let lines = batch.iter().filter(|&&b| b == b'\n').count();
                dropped().inc_by(lines as u64);
                // Said once per failure, on stderr: the log itself may be
                // what is failing.
                if !self.failing.swap(true, Ordering::Relaxed) {
                    eprintln!("egressd: log write failed, {lines} lines lost: {e}");
                }
            }
        }
    }
}

/// Keep until exit: dropping it writes out every buffered line.
#[must_use]
pub struct Guard {
    writers: Vec<(Arc<Batched>, JoinHandle<()>)>,
}

impl Guard {
    pub fn join(&mut self, mut other: Guard) {
        self.writers.append(&mut other.writers);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for (b, _) in &self.writers {
            lock(&b.wake).stop = true;
            b.cv.notify_one();
        }
        for (_, t) in self.writers.drain(..) {
            let _ = t.join();
        }
    }
}

static ACCESS: OnceLock<(Arc<Sink>, bool)> = OnceLock::new();
static REOPEN: OnceLock<Vec<Arc<Sink>>> = OnceLock::new();

/// Where access events go (as JSON, or readable text), once per process;
/// without it they go nowhere.
pub fn set_access(sink: Arc<Sink>, json: bool) {
    let _ = ACCESS.set((sink, json));
}

/// The access events' sink, and whether they are JSON.
pub fn access() -> Option<(&'static Sink, bool)> {
    ACCESS.get().map(|(s, json)| (&**s, *json))
}

/// The file sinks that [`reopen`] reopens.
pub fn set_reopenable(sinks: Vec<Arc<Sink>>) {
    let _ = REOPEN.set(sinks);
}

/// Reopens every file destination at its path (SIGHUP, after rotation).
pub fn reopen() {
    for s in REOPEN.get().into_iter().flatten() {
        if let How::Batched(b) = &s.how {
            if matches!(b.dest, Dest::File(_)) {
                lock(&b.wake).reopen = true;
                b.cv.notify_one();
            }
        }
    }
}

/// A `tracing_subscriber` writer into a sink: the subscriber formats a
/// whole event and writes it in one call, which becomes one line here.
#[derive(Clone)]
pub struct MakeWriter(pub Arc<Sink>);

pub struct LineWriter<'a>(&'a Sink);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for MakeWriter {
    type Writer = LineWriter<'a>;
    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter(&self.0)
    }
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.line(|b| b.extend_from_slice(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_reaches_the_file_by_exit_in_order_per_thread() {
        let dir = std::env::temp_dir().join(format!("egressd-logsink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.log");
        let _ = std::fs::remove_file(&path);
        let (sink, guard) = Sink::batched(Dest::File(path.clone())).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        sink.line(|b| writeln!(b, "{t} {i}").unwrap());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut next = [0u32; 4];
        for l in text.lines() {
            let (t, i) = l.split_once(' ').unwrap();
            let (t, i): (usize, u32) = (t.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next[t], "thread {t}'s lines out of order");
            next[t] += 1;
        }
        assert_eq!(next, [20_000; 4]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_reopened_file_gets_the_lines_after_rotation() {
        let dir = std::env::temp_dir().join(format!("egressd-logsink-r{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.log");
        let (sink, guard) = Sink::batched(Dest::File(path.clone())).unwrap();
        sink.line(|b| b.extend_from_slice(b"before\n"));
        // Written out within the interval, then moved away as logrotate does.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&path).unwrap_or_default().is_empty() {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::rename(&path, dir.join("a.log.1")).unwrap();
        if let How::Batched(b) = &sink.how {
            lock(&b.wake).reopen = true;
            b.cv.notify_one();
        }
        while !path.exists() {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
        sink.line(|b| b.extend_from_slice(b"after\n"));
        drop(guard);
        assert_eq!(std::fs::read_to_string(dir.join("a.log.1")).unwrap(), "before\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
