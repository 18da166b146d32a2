//! Progress of a stage's long loops: a bar with the rate and an ETA when stderr is a
//! terminal (indicatif), and a plain `tracing` line every [`LOG_EVERY`] otherwise, so a
//! pipeline's or a Slurm job's log shows where a stage is and when it will end.
//!
//! ```
//! use circuitry_core::progress::Progress;
//! let mut p = Progress::new("node effects", "batches", 3);
//! for _ in 0..3 {
//!     // ... one batch ...
//!     p.inc(1);
//! }
//! p.finish();
//! ```
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a log line is written when stderr is not a terminal.
pub const LOG_EVERY: Duration = Duration::from_secs(30);

/// The progress of one loop of `len` units.
#[derive(Debug)]
pub struct Progress {
    what: String,
    unit: &'static str,
    len: u64,
    pos: u64,
    /// Position and time the rate is measured from (a resumed loop starts past 0).
    first: (u64, Instant),
    last_line: Instant,
    every: Duration,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// A bar on a terminal, log lines every [`LOG_EVERY`] otherwise.
    pub fn new(what: impl Into<String>, unit: &'static str, len: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = indicatif::ProgressStyle::with_template(&format!(
                "{{msg}} {{bar:40}} {{pos}}/{{len}} {unit} {{per_sec}} eta {{eta}}"
            ))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            indicatif::ProgressBar::new(len)
                .with_style(style)
                .with_message(String::new())
        });
        let mut p = Progress::logging(what, unit, len, LOG_EVERY, Instant::now());
        if let Some(bar) = &bar {
            bar.set_message(p.what.clone());
        }
        p.bar = bar;
        p
    }

    /// Log lines only, at most one per `every`, the clock starting at `now`.
    pub fn logging(
        what: impl Into<String>,
        unit: &'static str,
        len: u64,
        every: Duration,
        now: Instant,
    ) -> Progress {
        Progress {
            what: what.into(),
            unit,
            len,
            pos: 0,
            first: (0, now),
            last_line: now,
            every,
            bar: None,
        }
    }

    /// Start at `pos` (work done before, e.g. by an interrupted run): the rate and the
    /// ETA count only what this run does.
    pub fn resume_at(&mut self, pos: u64) {
        self.pos = pos.min(self.len);
        self.first.0 = self.pos;
        if let Some(bar) = &self.bar {
            bar.set_position(self.pos);
            bar.reset_eta();
        }
    }

    /// `n` more units done.
    pub fn inc(&mut self, n: u64) {
        self.set_position(self.pos + n);
    }

    /// `pos` units done.
    pub fn set_position(&mut self, pos: u64) {
        let now = Instant::now();
        if let Some(line) = self.advance(pos, now) {
            tracing::info!("{line}");
        }
    }

    /// Move to `pos` at `now`; the log line due, if any (never with a bar).
    pub fn advance(&mut self, pos: u64, now: Instant) -> Option<String> {
        self.pos = pos.min(self.len);
        if let Some(bar) = &self.bar {
            bar.set_position(self.pos);
            return None;
        }
        if now.duration_since(self.last_line) < self.every {
            return None;
        }
        self.last_line = now;
        Some(self.line(now))
    }

    /// `what: pos/len unit (p%), r unit/s, eta d` as of `now`.
    pub fn line(&self, now: Instant) -> String {
        let secs = now.duration_since(self.first.1).as_secs_f64();
        let done = self.pos.saturating_sub(self.first.0);
        let pct = 100.0 * self.pos as f64 / self.len.max(1) as f64;
        let mut s = format!(
            "{}: {}/{} {} ({pct:.0}%)",
            self.what, self.pos, self.len, self.unit
        );
        if done > 0 && secs > 0.0 {
            let rate = done as f64 / secs;
            let left = (self.len - self.pos) as f64 / rate;
            s.push_str(&format!(
                ", {} {}/s, eta {}",
                rate_text(rate),
                self.unit,
                duration_text(left)
            ));
        }
        s
    }

    /// The loop is over: clear the bar, or log how long it took.
    pub fn finish(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let secs = self.first.1.elapsed().as_secs_f64();
        if secs >= self.every.as_secs_f64() {
            tracing::info!(
                "{}: {} {} in {}",
                self.what,
                self.pos,
                self.unit,
                duration_text(secs)
            );
        }
    }
}

fn rate_text(rate: f64) -> String {
    if rate >= 100.0 {
        format!("{rate:.0}")
    } else if rate >= 1.0 {
        format!("{rate:.1}")
    } else {
        format!("{rate:.3}")
    }
}

/// `42s`, `3m 05s`, `2h 07m`.
pub fn duration_text(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_come_at_most_once_per_interval_with_rate_and_eta() {
        let t0 = Instant::now();
        let mut p = Progress::logging("node effects", "batches", 100, Duration::from_secs(30), t0);
        assert_eq!(p.advance(5, t0 + Duration::from_secs(10)), None);
        let line = p.advance(20, t0 + Duration::from_secs(40)).unwrap();
        // 20 batches in 40 s: 0.5/s, 80 left: 160 s.
        assert_eq!(
            line,
            "node effects: 20/100 batches (20%), 0.500 batches/s, eta 2m 40s"
        );
        assert_eq!(p.advance(21, t0 + Duration::from_secs(50)), None);
        assert!(p.advance(30, t0 + Duration::from_secs(71)).is_some());
    }

    #[test]
    fn a_resumed_loop_measures_only_what_it_does() {
        let t0 = Instant::now();
        let mut p = Progress::logging("dump", "tokens", 1000, Duration::ZERO, t0);
        p.resume_at(900);
        assert_eq!(p.line(t0), "dump: 900/1000 tokens (90%)");
        let line = p.advance(950, t0 + Duration::from_secs(5)).unwrap();
        assert_eq!(line, "dump: 950/1000 tokens (95%), 10.0 tokens/s, eta 5s");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_text(42.4), "42s");
        assert_eq!(duration_text(185.0), "3m 05s");
        assert_eq!(duration_text(7620.0), "2h 07m");
    }
}
