//! CPU time and memory of a process, read from `/proc/{pid}/stat` and `/proc/{pid}/status`:
//! what the benchmarks charge a process under test with.

use std::io;

/// Clock ticks per second of the times in `/proc/{pid}/stat` (`USER_HZ`, 100 in Linux's user
/// ABI on every architecture).
pub const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// Fields of `/proc/{pid}/stat` after the command name: `utime` and `stime` are the 14th and
/// 15th fields of the line, the 12th and 13th after the `)` that ends the name.
const UTIME_AFTER_NAME: usize = 11;

/// User plus system CPU seconds `pid` has used (its threads included).
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_seconds(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("failed to parse /proc/{pid}/stat"),
        )
    })
}

fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    // The name may hold spaces and parentheses; the last `)` ends it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(UTIME_AFTER_NAME);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / CLOCK_TICKS_PER_SEC)
}

/// Resident memory of a process, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the most it was ever resident.
    pub peak_kib: u64,
}

/// The resident memory of `pid`.
pub fn memory(pid: u32) -> io::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(parse_memory(&status))
}

fn parse_memory(status: &str) -> Memory {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kib: field("VmRSS:"),
        peak_kib: field("VmHWM:"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_are_found_after_a_name_with_spaces() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1";
        assert_eq!(parse_cpu_seconds(stat), Some(3.25));
        assert_eq!(parse_cpu_seconds("garbage"), None);
    }

    #[test]
    fn status_memory_fields_are_read() {
        let status = "Name:\tx\nVmHWM:\t  20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(
            parse_memory(status),
            Memory {
                rss_kib: 10240,
                peak_kib: 20480
            }
        );
    }

    #[test]
    fn this_process_uses_cpu_and_memory() {
        let me = std::process::id();
        assert!(cpu_seconds(me).unwrap() >= 0.0);
        let memory = memory(me).unwrap();
        assert!(memory.rss_kib > 0 && memory.peak_kib >= memory.rss_kib);
    }
}
