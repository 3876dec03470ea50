//! `gatewayz-bench`: measures what Gatewayz adds on top of a direct call to
//! a fast local upstream, in one run, and writes `latest.md` and
//! `latest.json`, and draws `open-loop.svg` and `streams.svg` from that
//! JSON. `docs/benchmarks.md` explains each phase.
//!
//! The driver starts `gatewayz-upstream` twice (plain, and streaming 64
//! chunks 20 ms apart) and the real `gatewayz` binary in front of each, all
//! taken from the directory of this binary (`target/release`).
//!
//! `--reliability-soak SECONDS` is another mode: mixed traffic, injected
//! upstream failures, a pass/fail verdict (`docs/reliability.md`).
//! `--overload-soak SECONDS` is a third: twice the sustainable rate through
//! a gateway with an in-flight limit, a pass/fail verdict (same page).
//! `--charts-from FILE` only redraws the charts of an existing `latest.json`.

mod cache;
mod charts;
mod client;
mod key_limits;
mod load;
mod machine;
mod overload;
mod plan;
mod procs;
mod reliability;
mod report;
mod run;
mod soak_route;
mod sse;
mod stats;
mod streams;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::plan::Plan;
use crate::soak_route::SoakRoute;

const USAGE: &str = "\
gatewayz-bench: Gatewayz against a direct call to a local upstream

Usage: gatewayz-bench [--out DIR] [--quick] [--gateway-bin PATH] [--upstream-bin PATH] [--threads N]
       gatewayz-bench --soak SECONDS [--soak-streams N | --soak-rate R] [--soak-limits none|process|redis]
                      [--soak-route portkey|direct]
       gatewayz-bench --reliability-soak SECONDS [--reliability-rate R] [--report FILE]
       gatewayz-bench --overload-soak SECONDS [--report FILE]
       gatewayz-bench --charts-from FILE

  --out DIR            where latest.md, latest.json and the charts (open-loop.svg,
                       streams.svg) go [default: docs/benchmarks]
  --quick              a short smoke run of the driver (numbers not meaningful)
  --gateway-bin PATH   [default: gatewayz next to this binary]
  --upstream-bin PATH  [default: gatewayz-upstream next to this binary]
  --threads N          driver runtime threads; 1 is a single-threaded runtime [default: 1]
  --soak SECONDS       no report: start the upstream and the gateway, print the gateway's pid,
                       wait 3 s (time to attach `perf record -p PID`), then load the gateway
                       for SECONDS: a 64-connection closed loop, or with --soak-streams N,
                       N concurrent streams of 64 chunks 20 ms apart, one after the other,
                       or with --soak-rate R, an open loop of R requests a second
  --soak-limits WHERE  the soak's gateway serves the bench key under the key limits phase's
                       policy, counted in the process (`process`) or in a redis-server the
                       soak starts on loopback (`redis`) [default: none]
  --soak-route ROUTE   how the soak's gateway reaches the upstream: as Portkey (`portkey`: at
                       PORTKEY_BASE_URL, each body with `provider` and `portkey_provider`) or as
                       a direct upstream (`direct`: declared as `bench` in a catalog the soak
                       writes to a temp directory, each body's model `@bench/gpt-4o-mini` and
                       no routing fields) [default: portkey]
  --reliability-soak SECONDS
                       pass or fail: mixed traffic (whole answers, streams, clients that leave,
                       upstream 500s, 429s and cut streams) through the gateway at a fixed rate
                       for SECONDS (600 for `just soak`, 60 for a smoke run), every answer
                       judged, the gateway's RSS read every 30 s; exits non-zero on a failure
  --reliability-rate R requests a second of the reliability soak [default: 200]
  --overload-soak SECONDS
                       pass or fail: a gateway limited to 32 requests in flight before an upstream
                       answering in 50 ms, measured unloaded and up to its sustainable rate, then
                       loaded at twice that rate for SECONDS (120 for `just overload`); admitted
                       latency, refusals, RSS and the admin listener judged; exits non-zero on a failure
  --report FILE        write a soak's result between its markers of FILE
                       (docs/reliability.md), or as FILE when it does not exist
  --charts-from FILE   runs nothing: draws open-loop.svg and streams.svg from FILE (a
                       latest.json) into FILE's directory
";

/// The command line.
#[derive(Debug)]
pub struct Args {
    pub out: PathBuf,
    pub plan: Plan,
    pub quick: bool,
    pub gateway_bin: PathBuf,
    pub upstream_bin: PathBuf,
    pub threads: usize,
    pub soak: Option<std::time::Duration>,
    pub soak_streams: Option<usize>,
    pub soak_rate: Option<f64>,
    pub soak_limits: key_limits::Limits,
    pub soak_route: SoakRoute,
    pub reliability_soak: Option<std::time::Duration>,
    pub reliability_rate: f64,
    pub overload_soak: Option<std::time::Duration>,
    pub report: Option<PathBuf>,
    pub charts_from: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Option<Args>> {
    let here = std::env::current_exe()?
        .parent()
        .context("this binary has no directory")?
        .to_path_buf();
    parse(&here, std::env::args().skip(1))
}

/// `given`, the arguments after the program's name, read as [`Args`]; the
/// binaries default to those in `here`. `None` asks for the usage.
fn parse(here: &std::path::Path, given: impl IntoIterator<Item = String>) -> anyhow::Result<Option<Args>> {
    let mut args = Args {
        out: PathBuf::from("docs/benchmarks"),
        plan: Plan::full(),
        quick: false,
        gateway_bin: here.join("gatewayz"),
        upstream_bin: here.join("gatewayz-upstream"),
        threads: 1,
        soak: None,
        soak_streams: None,
        soak_rate: None,
        soak_limits: key_limits::Limits::None,
        soak_route: SoakRoute::Portkey,
        reliability_soak: None,
        reliability_rate: reliability::DEFAULT_RATE,
        overload_soak: None,
        report: None,
        charts_from: None,
    };
    let mut given = given.into_iter();
    while let Some(arg) = given.next() {
        let mut value = || given.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--quick" => {
                args.quick = true;
                args.plan = Plan::quick();
            }
            "--out" => args.out = value()?.into(),
            "--gateway-bin" => args.gateway_bin = value()?.into(),
            "--upstream-bin" => args.upstream_bin = value()?.into(),
            "--threads" => args.threads = value()?.parse::<usize>()?.max(1),
            "--soak" => args.soak = Some(std::time::Duration::from_secs_f64(value()?.parse()?)),
            "--soak-streams" => args.soak_streams = Some(value()?.parse()?),
            "--soak-rate" => args.soak_rate = Some(value()?.parse()?),
            "--soak-limits" => args.soak_limits = key_limits::Limits::parse(&value()?)?,
            "--soak-route" => args.soak_route = SoakRoute::parse(&value()?)?,
            "--reliability-soak" => {
                args.reliability_soak = Some(std::time::Duration::from_secs_f64(value()?.parse()?));
            }
            "--reliability-rate" => args.reliability_rate = value()?.parse()?,
            "--overload-soak" => {
                args.overload_soak = Some(std::time::Duration::from_secs_f64(value()?.parse()?));
            }
            "--report" => args.report = Some(value()?.into()),
            "--charts-from" => args.charts_from = Some(value()?.into()),
            other => bail!("unknown option {other}; see --help"),
        }
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    match main_inner() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("gatewayz-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn main_inner() -> anyhow::Result<()> {
    let Some(args) = parse_args()? else {
        eprint!("{USAGE}");
        return Ok(());
    };
    if let Some(json_path) = &args.charts_from {
        for path in charts::redraw(json_path)? {
            eprintln!("gatewayz-bench: wrote {}", path.display());
        }
        return Ok(());
    }
    for bin in [&args.gateway_bin, &args.upstream_bin] {
        if !bin.is_file() {
            bail!(
                "{} is missing: build first with `cargo build --release --bin gatewayz --bin gatewayz-upstream --bin gatewayz-bench`",
                bin.display()
            );
        }
    }
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    if let Some(duration) = args.soak {
        return runtime.block_on(run::soak(&args, duration));
    }
    if let Some(duration) = args.reliability_soak {
        return reliability_soak(&args, &runtime, duration);
    }
    if let Some(duration) = args.overload_soak {
        return overload_soak(&args, &runtime, duration);
    }
    let results = runtime.block_on(run::run(&args))?;
    std::fs::create_dir_all(&args.out)?;
    let (markdown, json) = report::render(&results);
    let md_path = args.out.join("latest.md");
    let json_path = args.out.join("latest.json");
    std::fs::write(&md_path, &markdown)?;
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)? + "\n")?;
    print_report(&markdown);
    eprintln!(
        "gatewayz-bench: wrote {} and {}",
        md_path.display(),
        json_path.display()
    );
    let written = charts::write(&json, &args.out).with_context(|| {
        format!(
            "the report is written, but not its charts (redraw them with --charts-from {})",
            json_path.display()
        )
    })?;
    for path in written {
        eprintln!("gatewayz-bench: wrote {}", path.display());
    }
    Ok(())
}

/// Runs the reliability soak, prints and writes its result, and fails when
/// its verdict does.
fn reliability_soak(
    args: &Args,
    runtime: &tokio::runtime::Runtime,
    duration: std::time::Duration,
) -> anyhow::Result<()> {
    let soak = runtime.block_on(reliability::run(args, duration, args.reliability_rate))?;
    let mut command = format!(
        "gatewayz-bench --reliability-soak {} --reliability-rate {}",
        duration.as_secs_f64(),
        args.reliability_rate
    );
    if let Some(report) = &args.report {
        command.push_str(&format!(" --report {}", report.display()));
    }
    let markdown = reliability::render(&soak, &command);
    print_report(&markdown);
    if let Some(report) = &args.report {
        reliability::write_into(report, &markdown)?;
        eprintln!("gatewayz-bench: wrote the result into {}", report.display());
    }
    if !soak.verdict.passed() {
        bail!(
            "the reliability soak failed: {}",
            soak.verdict.failures.join("; ")
        );
    }
    eprintln!("gatewayz-bench: the reliability soak passed");
    Ok(())
}

/// Runs the overload soak, prints and writes its result, and fails when its
/// verdict does.
fn overload_soak(
    args: &Args,
    runtime: &tokio::runtime::Runtime,
    duration: std::time::Duration,
) -> anyhow::Result<()> {
    let soak = runtime.block_on(overload::run(args, duration))?;
    let mut command = format!("gatewayz-bench --overload-soak {}", duration.as_secs_f64());
    if let Some(report) = &args.report {
        command.push_str(&format!(" --report {}", report.display()));
    }
    let markdown = overload::render(&soak, &command);
    print_report(&markdown);
    if let Some(report) = &args.report {
        reliability::write_between(report, overload::BEGIN, overload::END, &markdown)?;
        eprintln!("gatewayz-bench: wrote the result into {}", report.display());
    }
    if !soak.verdict.passed() {
        bail!("the overload soak failed: {}", soak.verdict.failures.join("; "));
    }
    eprintln!("gatewayz-bench: the overload soak passed");
    Ok(())
}

/// The report is this binary's output.
#[allow(clippy::print_stdout)]
fn print_report(markdown: &str) {
    println!("{markdown}");
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parsed(given: &[&str]) -> anyhow::Result<Args> {
        let args = parse(Path::new("/bin"), given.iter().map(|arg| (*arg).to_owned()))?;
        args.context("the usage was asked for")
    }

    #[test]
    fn the_soak_goes_by_portkey_unless_told_otherwise() {
        let args = parsed(&["--soak", "8"]).expect("the arguments are read");
        assert_eq!(args.soak, Some(std::time::Duration::from_secs(8)));
        assert_eq!(args.soak_route, SoakRoute::Portkey);
    }

    #[test]
    fn soak_route_direct_is_read_beside_the_other_soak_options() {
        let args = parsed(&["--soak", "8", "--soak-route", "direct", "--soak-streams", "200"])
            .expect("the arguments are read");
        assert_eq!(args.soak_route, SoakRoute::Direct);
        assert_eq!(args.soak_streams, Some(200));
        let args = parsed(&["--soak-route", "portkey"]).expect("the arguments are read");
        assert_eq!(args.soak_route, SoakRoute::Portkey);
    }

    #[test]
    fn soak_route_refuses_an_unknown_route_or_a_missing_value() {
        let unknown = parsed(&["--soak", "8", "--soak-route", "openai"]).expect_err("refused");
        assert!(unknown.to_string().contains("portkey or direct"), "{unknown}");
        let missing = parsed(&["--soak", "8", "--soak-route"]).expect_err("refused");
        assert!(
            missing.to_string().contains("--soak-route needs a value"),
            "{missing}"
        );
    }

    #[test]
    fn the_usage_names_the_soak_route_and_its_default() {
        assert!(
            parse(Path::new("/bin"), ["--help".to_owned()])
                .expect("read")
                .is_none()
        );
        assert!(USAGE.contains("--soak-route portkey|direct"));
        assert!(USAGE.contains("[default: portkey]"));
    }
}
