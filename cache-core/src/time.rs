//! Time as the library counts it: durations in whole milliseconds, as Redis and the
//! library's atomics take them, and a coarse monotonic clock in nanoseconds that near copies
//! expire by (cheap enough to read on every near hit).

use std::time::Duration;

/// A duration in whole milliseconds, as Redis takes them (saturating, never panicking).
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Now, in nanoseconds of a monotonic clock.
///
/// The clock near copies expire by, read on every near hit: `Instant::now()` was a fifth of
/// a near hit's own work (measured with `perf`). Where the kernel has a coarse monotonic
/// clock (Linux: a few nanoseconds, no hardware counter read, ticking every 1–4 ms) it is
/// used, and a copy's life is shortened by one tick ([`coarse_expiry`]) so that the clock's
/// lag never serves it past the entry's expiry in Redis.
#[cfg(target_os = "linux")]
pub(crate) fn coarse_now() -> u64 {
    read_clock(libc::CLOCK_MONOTONIC_COARSE)
}

#[cfg(target_os = "linux")]
fn read_clock(clock: libc::clockid_t) -> u64 {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is a valid, writable timespec; the clock id is a constant the
    // kernel knows (since Linux 2.6.32).
    let failed = unsafe { libc::clock_gettime(clock, &mut time) } != 0;
    if failed {
        return 0;
    }
    let seconds = u64::try_from(time.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(time.tv_nsec).unwrap_or(0);
    seconds.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// How far [`coarse_now`] may lag behind the true time.
#[cfg(target_os = "linux")]
fn coarse_lag() -> u64 {
    static LAG: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *LAG.get_or_init(|| {
        let mut resolution = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: as in `read_clock`.
        let failed =
            unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut resolution) } != 0;
        if failed {
            // Not knowing the tick, assume the coarsest kernel's (100 Hz).
            return 10_000_000;
        }
        let seconds = u64::try_from(resolution.tv_sec).unwrap_or(0);
        let nanos = u64::try_from(resolution.tv_nsec).unwrap_or(0);
        seconds.saturating_mul(1_000_000_000).saturating_add(nanos)
    })
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn coarse_now() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let elapsed = START.get_or_init(std::time::Instant::now).elapsed();
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(not(target_os = "linux"))]
fn coarse_lag() -> u64 {
    0
}

/// When a copy that may live `life` from now expires, on [`coarse_now`]'s scale.
pub(crate) fn coarse_expiry(life: Duration) -> u64 {
    let life = u64::try_from(life.as_nanos()).unwrap_or(u64::MAX);
    coarse_now().saturating_add(life.saturating_sub(coarse_lag()))
}
