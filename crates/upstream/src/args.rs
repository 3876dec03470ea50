//! The command line: where to listen and how to answer.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::auth::ApiKey;

/// What the binary prints for `--help`.
pub const USAGE: &str = "\
gatewayz-upstream: a fast local OpenAI/Anthropic-compatible upstream for benchmarks and tests
(chat completions, embeddings, Anthropic messages, the Responses API), also on Azure
OpenAI's paths: /openai/deployments/{deployment}/chat/completions and .../embeddings
(answering with the deployment as the model) and /openai/responses..., each with an
api-version query parameter (any value; without one, Azure's 404)

Usage: gatewayz-upstream [OPTIONS]

Options:
  --bind ADDR       address to listen on [default: 127.0.0.1:0]; the bound
                    address is printed alone on stdout's first line
  --delay-ms N      wait N ms before answering each request [default: 0]
  --chunks N        content chunks in a streamed answer [default: 16]
  --gap-ms N        N ms between two content chunks of a stream [default: 0]
  --threads N       runtime worker threads; 1 is a single-threaded runtime [default: 1]
  --faults          honour a request body's \"upstream_fault\" field: \"500\", \"429\" or
                    any other 4xx/5xx status answers that status with an OpenAI error
                    body (Anthropic's on /v1/messages); \"cut\" closes a stream's
                    connection halfway through (after the first delta on
                    /v1/messages and /v1/responses); \"echo_key\" answers 401
                    \"Incorrect API key provided: <key>. You can find your API key
                    at ...\", <key> being the request's bearer token (api-key on
                    /openai/...) as received, or none
  --require-key KEY refuse with 401 invalid_api_key a request that does not carry
                    KEY: as \"Authorization: Bearer KEY\", or as \"api-key: KEY\" on
                    /openai/... (Azure's paths, where Authorization does not count)
                    [default: no key checked]
  -h, --help        print this help
";

/// How the upstream listens and answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub bind: SocketAddr,
    /// Waited before each answer (before the headers of a stream).
    pub delay: Duration,
    /// Content chunks of a streamed answer; the finish, usage and `[DONE]`
    /// events follow the last one at once.
    pub chunks: usize,
    /// Between two content chunks, measured from the first one, so the
    /// schedule does not drift when one write is late.
    pub gap: Duration,
    pub threads: usize,
    /// Whether a request may ask for a failure (see [`crate::Fault`]); off,
    /// the body is not even scanned for it.
    pub faults: bool,
    /// The key every request must carry, if any; unset, no header is read.
    pub require_key: Option<ApiKey>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            delay: Duration::ZERO,
            chunks: 16,
            gap: Duration::ZERO,
            threads: 1,
            faults: false,
            require_key: None,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Config),
    Help,
}

/// A command line that cannot be understood; the message names the option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgsError(String);

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArgsError {}

impl Command {
    /// Parses the arguments after the program name.
    ///
    /// # Errors
    /// An unknown option, a missing value or a value that does not parse.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, ArgsError> {
        let mut config = Config::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => (arg, None),
            };
            if matches!(name.as_str(), "-h" | "--help") {
                return Ok(Self::Help);
            }
            if name == "--faults" {
                if inline.is_some() {
                    return Err(ArgsError("--faults takes no value".to_owned()));
                }
                config.faults = true;
                continue;
            }
            let value = inline
                .or_else(|| args.next())
                .ok_or_else(|| ArgsError(format!("{name} needs a value")))?;
            match name.as_str() {
                "--bind" => config.bind = parse(&name, &value)?,
                "--delay-ms" => config.delay = Duration::from_millis(parse(&name, &value)?),
                "--chunks" => config.chunks = parse(&name, &value)?,
                "--gap-ms" => config.gap = Duration::from_millis(parse(&name, &value)?),
                "--threads" => config.threads = parse::<usize>(&name, &value)?.max(1),
                // The message does not repeat the key.
                "--require-key" => {
                    config.require_key = Some(value.parse().map_err(|_| {
                        ArgsError("--require-key needs a key of visible ASCII characters".to_owned())
                    })?);
                }
                _ => return Err(ArgsError(format!("unknown option {name}; see --help"))),
            }
        }
        Ok(Self::Run(config))
    }
}

fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ArgsError> {
    value
        .parse()
        .map_err(|_| ArgsError(format!("{name}: `{value}` is not a valid value")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Result<Command, ArgsError> {
        Command::parse(args.iter().map(|arg| (*arg).to_owned()))
    }

    #[test]
    fn no_arguments_listen_on_a_free_loopback_port_and_answer_at_once() {
        assert_eq!(parse_args(&[]), Ok(Command::Run(Config::default())));
    }

    #[test]
    fn every_knob_is_read_with_a_space_or_an_equals_sign() {
        let command = parse_args(&[
            "--bind",
            "127.0.0.1:9999",
            "--delay-ms=5",
            "--chunks",
            "64",
            "--gap-ms",
            "20",
            "--threads=2",
            "--faults",
            "--require-key",
            "sk-test",
        ]);
        assert_eq!(
            command,
            Ok(Command::Run(Config {
                bind: SocketAddr::from(([127, 0, 0, 1], 9999)),
                delay: Duration::from_millis(5),
                chunks: 64,
                gap: Duration::from_millis(20),
                threads: 2,
                faults: true,
                require_key: Some("sk-test".parse().unwrap()),
            }))
        );
    }

    #[test]
    fn an_unknown_option_or_a_bad_value_is_refused_by_name() {
        assert!(matches!(parse_args(&["--fast"]), Err(ArgsError(message)) if message.contains("--fast")));
        assert!(
            matches!(parse_args(&["--chunks", "x"]), Err(ArgsError(message)) if message.contains("--chunks"))
        );
        assert!(
            matches!(parse_args(&["--gap-ms"]), Err(ArgsError(message)) if message.contains("needs a value"))
        );
    }

    #[test]
    fn faults_is_a_switch_without_a_value() {
        let faults = |command| matches!(command, Ok(Command::Run(Config { faults, .. })) if faults);
        assert!(faults(parse_args(&["--faults"])));
        assert!(faults(parse_args(&["--faults", "--chunks", "2"])));
        assert!(!faults(parse_args(&["--chunks", "2"])));
        assert!(
            matches!(parse_args(&["--faults=yes"]), Err(ArgsError(message)) if message.contains("no value"))
        );
    }

    #[test]
    fn require_key_takes_a_key_with_a_space_or_an_equals_sign_and_refuses_an_unusable_one() {
        let key = |command| match command {
            Ok(Command::Run(Config { require_key, .. })) => require_key,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            key(parse_args(&["--require-key", "sk-1"])),
            Some("sk-1".parse().unwrap())
        );
        assert_eq!(
            key(parse_args(&["--require-key=sk=2"])),
            Some("sk=2".parse().unwrap())
        );
        assert_eq!(key(parse_args(&[])), None);
        for bad in [
            &["--require-key="][..],
            &["--require-key", "sk 1"],
            &["--require-key"],
        ] {
            assert!(
                matches!(parse_args(bad), Err(ArgsError(message)) if message.contains("--require-key")),
                "{bad:?}"
            );
        }
        assert!(
            matches!(parse_args(&["--require-key", "sk 1"]), Err(ArgsError(message)) if !message.contains("sk 1"))
        );
    }

    #[test]
    fn help_wins() {
        assert_eq!(parse_args(&["--chunks", "3", "--help"]), Ok(Command::Help));
    }
}
