//! Key limits shared through a real Redis by real gateway processes: each
//! test starts its own `redis-server` on a free loopback port (skipped when
//! it is not installed, unless `GATEWAYZ_REQUIRE_REDIS` is set) and two
//! `gatewayz` binaries counting in it. They show what one gateway alone
//! cannot: a key's requests per minute and budget hold across replicas, a
//! stream left midway is charged once, a Redis that dies is survived in
//! either mode and rejoined without a restart, and a gateway restarted finds
//! its counts where it left them.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::join_all;
use serde_json::{Value, json};

use crate::binary::{self, Gateway};
use crate::helpers::{PRICED_CATALOG, PolicyFile, entry, eventually, sample, slow_stream_upstream};
use crate::redis_server::RedisServer;

/// What a token costs on both catalog models, in µ$.
const MICROS_PER_TOKEN: u64 = 1000;

/// The demo answer's output limit: a reservation is the prompt's estimate
/// and this, priced.
const MAX_TOKENS: u64 = 8;

/// The files the gateways of one test read, removed when it ends.
struct Files {
    policies: PolicyFile,
    catalog: PolicyFile,
}

impl Files {
    fn new(test: &str, policies: &str) -> Self {
        Self {
            policies: PolicyFile::new(&format!("redis-{test}"), policies),
            catalog: PolicyFile::new(&format!("redis-catalog-{test}"), PRICED_CATALOG),
        }
    }
}

/// A `gatewayz` process counting its keys' limits in `redis`, with `extra`
/// variables besides.
fn gateway(files: &Files, redis: &RedisServer, extra: &[(&str, &str)]) -> Gateway {
    let url = redis.url();
    let mut vars = vec![
        ("GATEWAYZ_BIND", "127.0.0.1:0"),
        ("GATEWAYZ_API_KEYS_FILE", files.policies.path()),
        ("GATEWAYZ_CATALOG", files.catalog.path()),
        ("GATEWAYZ_REDIS_URL", url.as_str()),
        ("PORTKEY_API_KEY", "pk-limits-redis-test"),
        ("PROVIDER_OPENAI_API_KEY", "sk-limits-redis-test"),
    ];
    vars.extend_from_slice(extra);
    binary::start(&vars)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn demo() -> Value {
    json!({"model": "priced-demo", "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": "Hello there"}]})
}

/// What `demo()` reserves at admission, in µ$: the prompt's estimate (a
/// token per four bytes of `messages` as sent) and the output limit.
fn demo_reservation_micros() -> u64 {
    let messages = serde_json::to_string(&demo()["messages"]).unwrap();
    (messages.len().div_ceil(4) as u64 + MAX_TOKENS) * MICROS_PER_TOKEN
}

/// One answer, read whole.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }

    fn degraded(&self) -> bool {
        self.header("x-gatewayz-limits") == Some("degraded")
    }

    /// The error's `(type, code)`.
    fn error_kind(&self) -> (&str, &str) {
        let error = &self.body["error"];
        (
            error["type"].as_str().unwrap_or_default(),
            error["code"].as_str().unwrap_or_default(),
        )
    }

    fn retry_after(&self) -> u64 {
        self.header("retry-after")
            .unwrap_or_else(|| panic!("no Retry-After on a {}: {}", self.status, self.body))
            .parse()
            .unwrap()
    }
}

async fn ask(client: &reqwest::Client, gateway: &Gateway, key: &str, body: &Value) -> Answer {
    let response = client
        .post(format!("{}/v1/chat/completions", gateway.address))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap();
    Answer {
        status,
        headers,
        body,
    }
}

async fn metrics(client: &reqwest::Client, gateway: &Gateway) -> String {
    client
        .get(format!("{}/metrics", gateway.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The `gatewayz_limits_degraded` gauge of `gateway`.
async fn degraded_gauge(client: &reqwest::Client, gateway: &Gateway) -> Option<f64> {
    sample(&metrics(client, gateway).await, "gatewayz_limits_degraded ")
}

/// What `gateway` says it charged key `id`, in dollars: usage the upstream
/// reported and estimates together.
async fn charged_usd(client: &reqwest::Client, gateway: &Gateway, id: &str) -> f64 {
    let metrics = metrics(client, gateway).await;
    ["false", "true"]
        .iter()
        .filter_map(|estimated| {
            sample(
                &metrics,
                &format!("gatewayz_key_spend_usd_total{{estimated=\"{estimated}\",key=\"{id}\"}}"),
            )
        })
        .sum()
}

async fn admin_key(client: &reqwest::Client, gateway: &Gateway, id: &str) -> Value {
    client
        .get(format!("{}/admin/keys/{id}", gateway.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Sends twice `rpm` requests of `key`, one after the other, to each gateway
/// in turn, and asserts that exactly `rpm` are admitted across both, each
/// counted in Redis (none degraded).
async fn assert_rpm_shared(client: &reqwest::Client, gateways: &[Gateway], key: &str, rpm: usize) {
    let mut admitted = 0;
    for turn in 0..2 * rpm {
        let answer = ask(client, &gateways[turn % gateways.len()], key, &demo()).await;
        assert!(!answer.degraded(), "request {turn} counted locally");
        match answer.status {
            200 => admitted += 1,
            429 => assert_eq!(answer.error_kind(), ("requests", "rate_limit_exceeded")),
            other => panic!("request {turn}: {other} {}", answer.body),
        }
    }
    assert_eq!(
        admitted, rpm,
        "the rpm of {rpm} is counted once across the gateways"
    );
}

/// The two gateways' logs hold the warning of a failing store in `mode`.
fn assert_warned(gateways: &[Gateway], mode: &str) {
    for gateway in gateways {
        let warning = gateway.wait_for_event(10, "the limits store warning", |event| {
            event["level"] == "WARN"
                && event["fields"]["message"]
                    .as_str()
                    .is_some_and(|message| message.starts_with("limits store failing"))
        });
        assert_eq!(warning["fields"]["mode"], mode, "{warning}");
    }
}

/// The two gateways' logs say the store answers again.
fn assert_recovery_logged(gateways: &[Gateway]) {
    for gateway in gateways {
        gateway.wait_for_event(10, "the limits store recovery", |event| {
            event["level"] == "INFO"
                && event["fields"]["message"]
                    .as_str()
                    .is_some_and(|message| message.starts_with("limits store answers again"))
        });
    }
}

/// What Redis answered, of the kinds these tests read.
#[derive(Debug, PartialEq)]
enum Reply {
    Nil,
    Integer(i64),
    Text(String),
    Array(Vec<Reply>),
}

/// Asks the test's Redis directly (RESP over a fresh connection), to read
/// what the gateways stored there.
fn redis_call(redis: &RedisServer, args: &[&str]) -> Reply {
    let mut stream = TcpStream::connect(("127.0.0.1", redis.port())).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut command = format!("*{}\r\n", args.len());
    for arg in args {
        command += &format!("${}\r\n{arg}\r\n", arg.len());
    }
    stream.write_all(command.as_bytes()).unwrap();
    read_reply(&mut BufReader::new(stream))
}

fn read_reply(reader: &mut impl BufRead) -> Reply {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let line = line.trim_end();
    let (kind, rest) = line.split_at(1);
    let length = || rest.parse::<i64>().unwrap();
    match kind {
        "+" => Reply::Text(rest.to_owned()),
        ":" => Reply::Integer(length()),
        "$" if length() < 0 => Reply::Nil,
        "$" => {
            let mut data = vec![0; usize::try_from(length()).unwrap() + 2];
            reader.read_exact(&mut data).unwrap();
            data.truncate(data.len() - 2);
            Reply::Text(String::from_utf8(data).unwrap())
        }
        "*" if length() < 0 => Reply::Nil,
        "*" => Reply::Array((0..length()).map(|_| read_reply(reader)).collect()),
        _ => panic!("Redis answered {line:?}"),
    }
}

/// Key `id`'s spend of its `total` budget period (which starts at 0), as
/// Redis holds it, in µ$.
fn redis_spend(redis: &RedisServer, id: &str) -> u64 {
    match redis_call(redis, &["GET", &format!("{{gatewayz:{id}}}:spend:0")]) {
        Reply::Nil => 0,
        Reply::Text(micros) => micros.parse().unwrap(),
        other => panic!("spend of {id}: {other:?}"),
    }
}

/// How many parallel leases key `id` holds in Redis.
fn redis_leases(redis: &RedisServer, id: &str) -> i64 {
    match redis_call(redis, &["ZCARD", &format!("{{gatewayz:{id}}}:leases")]) {
        Reply::Integer(count) => count,
        other => panic!("leases of {id}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_sharing_redis_admit_exactly_a_keys_rpm_of_100_concurrent_requests() {
    let Some(redis) = RedisServer::start("limits_redis rpm") else {
        return;
    };
    let files = Files::new(
        "rpm",
        &[
            entry("team-a", "key-a", "rpm = 30"),
            entry("warm", "key-warm", "rpm = 100000"),
        ]
        .concat(),
    );
    let gateways = [gateway(&files, &redis, &[]), gateway(&files, &redis, &[])];
    let client = client();
    // Each gateway's Redis connection made and used before the burst.
    for gateway in &gateways {
        assert_eq!(ask(&client, gateway, "key-warm", &demo()).await.status, 200);
    }

    let body = demo();
    let started = Instant::now();
    let answers = join_all((0..100).map(|turn| ask(&client, &gateways[turn % 2], "key-a", &body))).await;
    let burst = started.elapsed();

    // All within one emission interval (60 s / 30): none is earned back.
    assert!(burst < Duration::from_secs(2), "the burst took {burst:?}");
    let (admitted, refused): (Vec<&Answer>, Vec<&Answer>) =
        answers.iter().partition(|answer| answer.status == 200);
    assert_eq!(
        (admitted.len(), refused.len()),
        (30, 70),
        "statuses: {:?}",
        answers.iter().map(|answer| answer.status).collect::<Vec<_>>()
    );
    // Each admission counted after the one before it, whichever gateway
    // made either: the remaining counts are 29 down to 0, each once.
    let mut remaining: Vec<u64> = admitted
        .iter()
        .map(|answer| {
            answer
                .header("x-ratelimit-remaining-requests")
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..30).collect::<Vec<u64>>());
    for refusal in refused {
        assert_eq!(refusal.status, 429);
        assert_eq!(refusal.error_kind(), ("requests", "rate_limit_exceeded"));
        let retry = refusal.retry_after();
        assert!((1..=2).contains(&retry), "one interval at most: {retry}");
        assert_eq!(refusal.header("x-ratelimit-remaining-requests"), Some("0"));
    }
    // Counted as each access line is written, which may follow the answer.
    let refusals = "gatewayz_key_refusals_total{key=\"team-a\",reason=\"requests\"}";
    eventually(10, "the gateways count 70 refusals between them", || async {
        let mut counted = 0.0;
        for gateway in &gateways {
            counted += sample(&metrics(&client, gateway).await, refusals).unwrap_or(0.0);
        }
        counted == 70.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_sharing_redis_never_pass_a_budget_by_more_than_one_reservation() {
    let Some(redis) = RedisServer::start("limits_redis budget") else {
        return;
    };
    let files = Files::new(
        "budget",
        &entry("team-a", "key-a", "budget_usd = 0.05\nbudget_period = \"total\""),
    );
    let gateways = [gateway(&files, &redis, &[]), gateway(&files, &redis, &[])];
    let client = client();
    let budget_micros = 50_000;
    let reservation = demo_reservation_micros();

    let body = demo();
    let answers = join_all((0..40).map(|turn| ask(&client, &gateways[turn % 2], "key-a", &body))).await;

    let (admitted, refused): (Vec<&Answer>, Vec<&Answer>) =
        answers.iter().partition(|answer| answer.status == 200);
    assert!(
        !admitted.is_empty() && !refused.is_empty(),
        "{} admitted",
        admitted.len()
    );
    for refusal in &refused {
        assert_eq!(refusal.status, 429, "{}", refusal.body);
        assert_eq!(refusal.error_kind(), ("insufficient_quota", "budget_exceeded"));
        assert!(refusal.retry_after() > 0);
    }
    // Settlements reach Redis after the answers: wait for the last one.
    eventually(10, "every admitted request settled", || async {
        redis_leases(&redis, "team-a") == 0
    })
    .await;
    let spent = redis_spend(&redis, "team-a");
    assert!(
        spent <= budget_micros + reservation,
        "charged {spent} µ$, past {budget_micros} µ$ and a reservation of {reservation} µ$"
    );
    // What Redis holds is what the clients were told and the gateways counted.
    let told: f64 = admitted
        .iter()
        .map(|answer| answer.body["gateway_usage"]["cost_usd"].as_f64().unwrap())
        .sum();
    assert!(
        (spent as f64 / 1e6 - told).abs() < 1e-6 * admitted.len() as f64,
        "Redis {spent} µ$, answers ${told}"
    );
    eventually(10, "the gateways' metrics count what Redis charged", || async {
        let mut charged = 0.0;
        for gateway in &gateways {
            charged += charged_usd(&client, gateway, "team-a").await;
        }
        (spent as f64 / 1e6 - charged).abs() < 1e-9
    })
    .await;
    for gateway in &gateways {
        let key = admin_key(&client, gateway, "team-a").await;
        assert_eq!(
            key["standing"]["spent_usd"].as_f64(),
            Some(spent as f64 / 1e6),
            "{key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_cancelled_midway_is_charged_once_in_redis_and_its_parallel_slot_comes_back() {
    let Some(redis) = RedisServer::start("limits_redis stream") else {
        return;
    };
    let upstream = slow_stream_upstream().await;
    let files = Files::new(
        "stream",
        &entry(
            "team-a",
            "key-a",
            "max_parallel = 1\nbudget_usd = 100\nbudget_period = \"total\"",
        ),
    );
    let portkey = [("PORTKEY_BASE_URL", upstream.as_str())];
    let [a, b] = [
        gateway(&files, &redis, &portkey),
        gateway(&files, &redis, &portkey),
    ];
    let client = client();
    let stream_body = json!({"model": "priced-stream", "stream": true, "max_tokens": 500,
        "messages": [{"role": "user", "content": "Tell me a long story"}]});

    let response = client
        .post(format!("{}/v1/chat/completions", a.address))
        .bearer_auth("key-a")
        .json(&stream_body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut events = 0;
    while events < 3 {
        let bytes = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("a chunk within 5 s")
            .unwrap()
            .unwrap();
        events += bytes.windows(6).filter(|window| window == b"data: ").count();
    }
    // While it streams from A, its one slot is taken for B too.
    assert_eq!(redis_leases(&redis, "team-a"), 1);
    assert_eq!(admin_key(&client, &b, "team-a").await["standing"]["in_flight"], 1);
    let refused = ask(&client, &b, "key-a", &demo()).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.error_kind(), ("rate_limit_error", "rate_limit_exceeded"));
    drop(stream);

    eventually(10, "the cancelled stream settled", || async {
        redis_leases(&redis, "team-a") == 0
    })
    .await;
    let estimated = "gatewayz_key_spend_usd_total{estimated=\"true\",key=\"team-a\"}";
    eventually(10, "A counts the estimated charge", || async {
        sample(&metrics(&client, &a).await, estimated).is_some()
    })
    .await;
    let a_metrics = metrics(&client, &a).await;
    let charged = sample(&a_metrics, estimated).unwrap();
    let spent = redis_spend(&redis, "team-a");
    assert!(
        (spent as f64 / 1e6 - charged).abs() < 1e-9,
        "charged once: Redis {spent} µ$, metrics ${charged}"
    );
    // The prompt's estimate and a token a chunk relayed, not the 500
    // output tokens reserved.
    assert!(spent > 0 && spent < 100 * MICROS_PER_TOKEN, "{spent} µ$");
    assert_eq!(
        sample(
            &a_metrics,
            "gatewayz_key_spend_usd_total{estimated=\"false\",key=\"team-a\"}"
        ),
        None,
        "never charged again from a reported usage"
    );
    assert_eq!(charged_usd(&client, &b, "team-a").await, 0.0);
    let key = admin_key(&client, &b, "team-a").await;
    assert_eq!(key["standing"]["in_flight"], 0, "{key}");
    assert_eq!(key["standing"]["spent_usd"].as_f64(), Some(spent as f64 / 1e6));
    assert_eq!(
        ask(&client, &b, "key-a", &demo()).await.status,
        200,
        "the slot is free for B"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_killed_open_gateways_admit_as_degraded_and_share_counts_again_once_it_is_back() {
    let Some(mut redis) = RedisServer::start("limits_redis open") else {
        return;
    };
    let files = Files::new(
        "open",
        &[
            entry("probe", "key-probe", "rpm = 100000"),
            entry("team-b", "key-b", "rpm = 10"),
        ]
        .concat(),
    );
    // GATEWAYZ_LIMITS_ON_STORE_ERROR unset: `open` is the default.
    let gateways = [gateway(&files, &redis, &[]), gateway(&files, &redis, &[])];
    let client = client();
    for gateway in &gateways {
        let answer = ask(&client, gateway, "key-probe", &demo()).await;
        assert_eq!((answer.status, answer.degraded()), (200, false));
        assert_eq!(degraded_gauge(&client, gateway).await, Some(0.0));
    }

    redis.kill();

    for gateway in &gateways {
        let answer = ask(&client, gateway, "key-probe", &demo()).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(answer.degraded(), "{:?}", answer.headers);
        assert_eq!(degraded_gauge(&client, gateway).await, Some(1.0));
        let key = admin_key(&client, gateway, "probe").await;
        assert!(
            key["standing"].is_null() && key["standing_error"].is_string(),
            "{key}"
        );
    }
    assert_warned(&gateways, "open");

    redis.restart();

    for gateway in &gateways {
        eventually(15, "limits counted in Redis again", || async {
            let answer = ask(&client, gateway, "key-probe", &demo()).await;
            answer.status == 200 && !answer.degraded()
        })
        .await;
        assert_eq!(degraded_gauge(&client, gateway).await, Some(0.0));
    }
    assert_recovery_logged(&gateways);
    // Counted locally, each gateway would admit 10.
    assert_rpm_shared(&client, &gateways, "key-b", 10).await;
    assert_eq!(
        redis_call(&redis, &["EXISTS", "{gatewayz:team-b}:rq"]),
        Reply::Integer(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_killed_closed_gateways_refuse_with_503_and_share_counts_again_once_it_is_back() {
    let Some(mut redis) = RedisServer::start("limits_redis closed") else {
        return;
    };
    let files = Files::new(
        "closed",
        &[
            entry("probe", "key-probe", "rpm = 100000"),
            entry("team-b", "key-b", "rpm = 10"),
            entry("free", "key-free", ""),
        ]
        .concat(),
    );
    let closed = [("GATEWAYZ_LIMITS_ON_STORE_ERROR", "closed")];
    let gateways = [gateway(&files, &redis, &closed), gateway(&files, &redis, &closed)];
    let client = client();
    for gateway in &gateways {
        assert_eq!(ask(&client, gateway, "key-probe", &demo()).await.status, 200);
    }

    redis.kill();

    for gateway in &gateways {
        let answer = ask(&client, gateway, "key-probe", &demo()).await;
        assert_eq!(answer.status, 503, "{}", answer.body);
        assert_eq!(answer.error_kind(), ("server_error", "limits_unavailable"));
        assert_eq!(answer.retry_after(), 1);
        assert_eq!(degraded_gauge(&client, gateway).await, Some(1.0));
        assert_eq!(
            ask(&client, gateway, "key-free", &demo()).await.status,
            200,
            "a key without limits never asks the store"
        );
        eventually(10, "the refusal counted as limits_unavailable", || async {
            sample(
                &metrics(&client, gateway).await,
                "gatewayz_key_refusals_total{key=\"probe\",reason=\"limits_unavailable\"}",
            ) == Some(1.0)
        })
        .await;
    }
    assert_warned(&gateways, "closed");

    redis.restart();

    for gateway in &gateways {
        eventually(15, "limits counted in Redis again", || async {
            ask(&client, gateway, "key-probe", &demo()).await.status == 200
        })
        .await;
        assert_eq!(degraded_gauge(&client, gateway).await, Some(0.0));
    }
    assert_recovery_logged(&gateways);
    assert_rpm_shared(&client, &gateways, "key-b", 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_gateway_keeps_the_counts_it_left_in_redis() {
    let Some(redis) = RedisServer::start("limits_redis restart") else {
        return;
    };
    let files = Files::new("restart", &entry("team-a", "key-a", "rpm = 5"));
    let client = client();
    let first = gateway(&files, &redis, &[]);
    for _ in 0..5 {
        assert_eq!(ask(&client, &first, "key-a", &demo()).await.status, 200);
    }

    // SIGKILL: no goodbye, nothing flushed.
    drop(first);
    let second = gateway(&files, &redis, &[]);

    let key = admin_key(&client, &second, "team-a").await;
    assert_eq!(key["standing"]["requests"]["remaining"], 0, "{key}");
    let refused = ask(&client, &second, "key-a", &demo()).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.error_kind(), ("requests", "rate_limit_exceeded"));
    // The next request is earned back one interval (60 s / 5) after the first.
    let retry = refused.retry_after();
    assert!((1..=12).contains(&retry), "{retry}");
}

/// Admissions that timed out on a wedged Redis still run when it answers
/// again: each gateway cancels them, so they hold no slot and charge nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admissions_timed_out_on_a_wedged_redis_hold_nothing_once_it_answers_again() {
    let Some(redis) = RedisServer::start("limits_redis wedged") else {
        return;
    };
    let files = Files::new(
        "wedged",
        &entry(
            "team-a",
            "key-a",
            "max_parallel = 2\nbudget_usd = 100\nbudget_period = \"total\"",
        ),
    );
    let gateways = [gateway(&files, &redis, &[]), gateway(&files, &redis, &[])];
    let client = client();
    assert_eq!(ask(&client, &gateways[0], "key-a", &demo()).await.status, 200);
    eventually(10, "the first request settled", || async {
        redis_leases(&redis, "team-a") == 0
    })
    .await;
    let spent = redis_spend(&redis, "team-a");

    // Wedged longer than the store's deadline: each gateway's admissions
    // time out and are counted locally.
    redis.pause();
    for turn in 0..4 {
        let answer = ask(&client, &gateways[turn % 2], "key-a", &demo()).await;
        assert_eq!((answer.status, answer.degraded()), (200, true));
    }
    redis.resume();

    // Counted in Redis again; each answer's cost is what Redis must add.
    let mut costs = 0.0;
    for gateway in &gateways {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = ask(&client, gateway, "key-a", &demo()).await;
            if !answer.degraded() {
                assert_eq!(answer.status, 200, "a slot held by no request: {}", answer.body);
                costs += answer.body["gateway_usage"]["cost_usd"].as_f64().unwrap();
                break;
            }
            assert!(Instant::now() < deadline, "never counted in Redis again");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eventually(10, "no lease left once every request settled", || async {
        redis_leases(&redis, "team-a") == 0
    })
    .await;
    let now = redis_spend(&redis, "team-a");
    assert!(
        (now - spent) as f64 / 1e6 - costs < 1e-6,
        "Redis holds {} µ$ more than was charged since",
        (now - spent) as f64 - costs * 1e6
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_degraded_gauge_returns_to_0_by_itself_once_redis_is_back() {
    let Some(mut redis) = RedisServer::start("limits_redis gauge") else {
        return;
    };
    let files = Files::new("gauge", &entry("team-a", "key-a", "rpm = 100"));
    let gateway = gateway(&files, &redis, &[]);
    let client = client();
    let answer = ask(&client, &gateway, "key-a", &demo()).await;
    assert_eq!((answer.status, answer.degraded()), (200, false));
    redis.kill();
    let answer = ask(&client, &gateway, "key-a", &demo()).await;
    assert_eq!((answer.status, answer.degraded()), (200, true));
    assert_eq!(degraded_gauge(&client, &gateway).await, Some(1.0));

    redis.restart();
    let back = Instant::now();

    // No request meanwhile: only the gateway's own probe can find Redis back.
    eventually(5, "the degraded gauge back to 0 with no request", || async {
        degraded_gauge(&client, &gateway).await == Some(0.0)
    })
    .await;
    eprintln!(
        "the gauge went back to 0 {:?} after Redis came back",
        back.elapsed()
    );
    assert_recovery_logged(std::slice::from_ref(&gateway));
    let answer = ask(&client, &gateway, "key-a", &demo()).await;
    assert_eq!((answer.status, answer.degraded()), (200, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_when_the_shutdown_drain_runs_out_is_settled_before_the_gateway_exits() {
    let Some(redis) = RedisServer::start("limits_redis shutdown") else {
        return;
    };
    let files = Files::new(
        "shutdown",
        &entry(
            "team-a",
            "key-a",
            "max_parallel = 2\nbudget_usd = 100\nbudget_period = \"total\"",
        ),
    );
    let upstream = slow_stream_upstream().await;
    let mut gateway = gateway(
        &files,
        &redis,
        &[
            ("GATEWAYZ_SHUTDOWN_TIMEOUT", "1"),
            ("PORTKEY_BASE_URL", &upstream),
        ],
    );
    let body = json!({"model": "priced-stream", "stream": true, "max_tokens": 500,
        "messages": [{"role": "user", "content": "Tell me a long story"}]});
    let response = client()
        .post(format!("{}/v1/chat/completions", gateway.address))
        .bearer_auth("key-a")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    stream.next().await.unwrap().unwrap();
    assert_eq!(redis_leases(&redis, "team-a"), 1);

    // SIGTERM: the stream (10 s long) outlives the 1 s drain, and is cut.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &gateway.pid()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    while gateway.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the gateway did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(stream);

    assert_eq!(
        redis_leases(&redis, "team-a"),
        0,
        "its lease given back, not left to expire"
    );
    let spent = redis_spend(&redis, "team-a");
    let reserved = 500 * MICROS_PER_TOKEN;
    assert!(
        spent > 0 && spent < reserved,
        "settled with its estimate, not the reservation: {spent}"
    );
}
