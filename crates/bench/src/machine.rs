//! Facts about the machine and the tree the numbers came from, and an
//! account of who used the CPUs while measuring (the machine is shared).

use std::process::Command;

use serde_json::{Value, json};

use crate::procs::{cpu_ticks, ticks_per_second};

fn first_line(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .next()
        .map(str::to_owned)
}

fn run(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn cpu_model() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
}

fn mem_total_mib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// nproc, CPU model, kernel, memory, date, git commit (and whether the tree
/// had uncommitted changes, which the measured binaries were built with).
pub fn facts() -> Value {
    let dirty = run("git", &["status", "--porcelain", "--untracked-files=no"]);
    json!({
        "nproc": std::thread::available_parallelism().map_or(0, usize::from),
        "cpu_model": cpu_model(),
        "kernel": first_line("/proc/sys/kernel/osrelease"),
        "mem_total_mib": mem_total_mib(),
        "clock_ticks_per_second": ticks_per_second(),
        "date_utc": run("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        "git_commit": run("git", &["rev-parse", "HEAD"]),
        "git_uncommitted_changes": dirty.map(|dirty| dirty.lines().map(str::trim).map(str::to_owned).collect::<Vec<_>>()),
        "rustc": run("rustc", &["--version"]),
        "loadavg_at_start": first_line("/proc/loadavg"),
    })
}

/// Busy ticks of the whole machine, from the first line of `/proc/stat`:
/// user, nice, system, irq, softirq, steal.
fn machine_busy_ticks() -> u64 {
    let Some(line) = first_line("/proc/stat") else {
        return 0;
    };
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().unwrap_or(0))
        .collect();
    [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|index| fields.get(*index))
        .sum()
}

/// Ticks the hypervisor ran something else while this machine's CPUs
/// wanted to run (the `steal` column of `/proc/stat`): a stall the
/// benchmark cannot avoid, reported beside the figures it may have hurt.
pub fn steal_ticks() -> u64 {
    first_line("/proc/stat")
        .and_then(|line| {
            line.split_whitespace()
                .nth(8)
                .and_then(|field| field.parse().ok())
        })
        .unwrap_or(0)
}

/// Machine-wide TCP counters that tell a connection the kernel dropped or
/// retried from one the process under test refused: the listen queue's
/// overflows and drops, failed connection attempts, retransmitted segments.
pub const TCP_COUNTERS: [(&str, &str); 5] = [
    ("TcpExt", "ListenOverflows"),
    ("TcpExt", "ListenDrops"),
    ("TcpExt", "TCPTimeWaitOverflow"),
    ("Tcp", "AttemptFails"),
    ("Tcp", "RetransSegs"),
];

/// [`TCP_COUNTERS`] now, from `/proc/net/netstat` and `/proc/net/snmp`;
/// `None` for one the kernel does not have.
pub fn tcp_counters() -> [Option<u64>; TCP_COUNTERS.len()] {
    let tables = [
        std::fs::read_to_string("/proc/net/netstat").unwrap_or_default(),
        std::fs::read_to_string("/proc/net/snmp").unwrap_or_default(),
    ]
    .join("\n");
    TCP_COUNTERS.map(|(section, name)| proc_net_counter(&tables, section, name))
}

/// One counter of a `/proc/net/{netstat,snmp}` table: a line of names
/// after `Section:`, then a line of their values after the same.
fn proc_net_counter(tables: &str, section: &str, name: &str) -> Option<u64> {
    let prefix = format!("{section}:");
    let mut lines = tables.lines().filter(|line| line.starts_with(&prefix));
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let at = names.split_whitespace().position(|each| each == name);
        if let Some(at) = at {
            return values.split_whitespace().nth(at)?.parse().ok();
        }
    }
    None
}

/// CPU time of the machine against that of the benchmark's own processes,
/// over some span: what is left was used by someone else.
#[derive(Debug)]
pub struct Account {
    pids: Vec<u32>,
    machine: u64,
    ours: u64,
    steal: u64,
    started: std::time::Instant,
}

impl Account {
    pub fn start(pids: Vec<u32>) -> Self {
        let ours = pids.iter().map(|pid| cpu_ticks(*pid).unwrap_or(0)).sum();
        Self {
            pids,
            machine: machine_busy_ticks(),
            ours,
            steal: steal_ticks(),
            started: std::time::Instant::now(),
        }
    }

    pub fn finish(&self) -> Value {
        let ticks = ticks_per_second() as f64;
        let ours: u64 = self.pids.iter().map(|pid| cpu_ticks(*pid).unwrap_or(0)).sum();
        let machine = machine_busy_ticks().saturating_sub(self.machine) as f64 / ticks;
        let ours = ours.saturating_sub(self.ours) as f64 / ticks;
        let steal = steal_ticks().saturating_sub(self.steal) as f64 / ticks;
        json!({
            "wall_s": crate::stats::round(self.started.elapsed().as_secs_f64()),
            "machine_busy_cpu_s": crate::stats::round(machine),
            "benchmark_processes_cpu_s": crate::stats::round(ours),
            "other_processes_cpu_s": crate::stats::round((machine - ours - steal).max(0.0)),
            "stolen_by_the_hypervisor_s": crate::stats::round(steal),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLES: &str = "\
TcpExt: SyncookiesSent ListenOverflows ListenDrops
TcpExt: 6 539 540
IpExt: InNoRoutes
IpExt: 0
Tcp: RtoAlgorithm ActiveOpens AttemptFails
Tcp: 1 364909 1021
";

    #[test]
    fn reads_a_counter_by_section_and_name_from_the_proc_net_tables() {
        assert_eq!(proc_net_counter(TABLES, "TcpExt", "ListenDrops"), Some(540));
        assert_eq!(proc_net_counter(TABLES, "Tcp", "AttemptFails"), Some(1021));
        assert_eq!(proc_net_counter(TABLES, "Tcp", "ListenDrops"), None);
        assert_eq!(proc_net_counter(TABLES, "Udp", "InErrors"), None);
    }
}
