//! Progress of long work on stores (loading a store at start, writing or restoring a snapshot,
//! rewriting a store under a new key, the first sync of a remote cache): objects and bytes done
//! out of a total when known, the rate, and an estimate of the time left. The work counts into a
//! shared [`Progress`]; it logs a line every [`LOG_EVERY`] by itself, and anyone holding it —
//! `/readyz` while a role starts, a terminal progress bar in the command line — reads the same
//! figures with [`Progress::describe`] and [`Progress::snapshot`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often a long piece of work logs where it is.
pub const LOG_EVERY: Duration = Duration::from_secs(3);

/// Shared counters of one long piece of work.
#[derive(Debug)]
pub struct Progress {
    what: parking_lot::Mutex<String>,
    objects: AtomicU64,
    bytes: AtomicU64,
    /// Objects expected in all (0: unknown).
    total: AtomicU64,
    started: parking_lot::Mutex<Instant>,
    last_log: parking_lot::Mutex<Instant>,
    /// No log lines (a progress bar shows the same).
    quiet: AtomicBool,
}

/// The figures of a [`Progress`] at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// What is being done.
    pub what: String,
    /// Objects done.
    pub objects: u64,
    /// Bytes done.
    pub bytes: u64,
    /// Objects expected in all, when known.
    pub total: Option<u64>,
    /// Objects per second so far.
    pub per_second: f64,
    /// Estimated time left, when the total is known.
    pub left: Option<Duration>,
}

impl Progress {
    /// Progress of `what` (e.g. `loading cache.db`), nothing done yet.
    pub fn new(what: impl Into<String>) -> Self {
        let now = Instant::now();
        Progress {
            what: parking_lot::Mutex::new(what.into()),
            objects: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            total: AtomicU64::new(0),
            started: parking_lot::Mutex::new(now),
            last_log: parking_lot::Mutex::new(now),
            quiet: AtomicBool::new(false),
        }
    }

    /// Start a new stage: another description and total, counters from zero.
    pub fn stage(&self, what: impl Into<String>, total: Option<u64>) {
        *self.what.lock() = what.into();
        self.objects.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        self.total.store(total.unwrap_or(0), Ordering::Relaxed);
        let now = Instant::now();
        *self.started.lock() = now;
        *self.last_log.lock() = now;
    }

    /// Stop logging lines (a progress bar shows the figures instead).
    pub fn quiet(&self) {
        self.quiet.store(true, Ordering::Relaxed);
    }

    /// Count `objects` and `bytes` more done; log a line when [`LOG_EVERY`] has passed.
    pub fn add(&self, objects: u64, bytes: u64) {
        self.objects.fetch_add(objects, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if self.quiet.load(Ordering::Relaxed) {
            return;
        }
        let due = {
            let mut last = self.last_log.lock();
            if last.elapsed() >= LOG_EVERY {
                *last = Instant::now();
                true
            } else {
                false
            }
        };
        if due {
            let f = self.snapshot();
            tracing::info!(
                objects = f.objects,
                total = f.total,
                bytes = f.bytes,
                per_second = f.per_second as u64,
                seconds_left = f.left.map(|d| d.as_secs()),
                "{}",
                capitalized(&f.what)
            );
        }
    }

    /// The figures now.
    pub fn snapshot(&self) -> Figures {
        let objects = self.objects.load(Ordering::Relaxed);
        let total = match self.total.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        };
        let elapsed = self.started.lock().elapsed().as_secs_f64().max(1e-3);
        let per_second = objects as f64 / elapsed;
        let left = total.map(|t| {
            let rest = t.saturating_sub(objects) as f64;
            Duration::from_secs_f64(if per_second > 0.0 {
                rest / per_second
            } else {
                0.0
            })
        });
        Figures {
            what: self.what.lock().clone(),
            objects,
            bytes: self.bytes.load(Ordering::Relaxed),
            total,
            per_second,
            left,
        }
    }

    /// One line for `/readyz?verbose` and logs: `loading cache.db: 120000/1000000 objects,
    /// 310 MiB, 60000/s, about 15s left`.
    pub fn describe(&self) -> String {
        let f = self.snapshot();
        let count = match f.total {
            Some(t) => format!("{}/{t} objects", f.objects),
            None => format!("{} objects", f.objects),
        };
        let left = f
            .left
            .map(|d| format!(", about {}s left", d.as_secs()))
            .unwrap_or_default();
        format!(
            "{}: {count}, {} MiB, {}/s{left}",
            f.what,
            f.bytes >> 20,
            f.per_second as u64
        )
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect::<String>() + ".",
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_says_what_is_done_out_of_the_total() {
        let p = Progress::new("loading cache.db");
        p.stage("loading cache.db", Some(1000));
        p.add(250, 3 << 20);
        let f = p.snapshot();
        assert_eq!((f.objects, f.bytes, f.total), (250, 3 << 20, Some(1000)));
        assert!(f.left.is_some());
        let line = p.describe();
        assert!(
            line.starts_with("loading cache.db: 250/1000 objects, 3 MiB, "),
            "{line}"
        );
        assert!(line.contains("s left"), "{line}");
    }

    #[test]
    fn without_a_total_there_is_no_estimate() {
        let p = Progress::new("listing the cache");
        p.add(10, 100);
        assert_eq!(p.snapshot().left, None);
        assert!(
            p.describe()
                .starts_with("listing the cache: 10 objects, 0 MiB")
        );
    }
}
