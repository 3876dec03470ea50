//! The policy file format: what each entry becomes, and each fault named
//! by its line and field.

use super::super::entry::digest;
use super::*;

fn hex(key: &str) -> String {
    digest(key).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A file of one key, `team-a` (key `key-a`), with `fields` added.
fn one_key(fields: &str) -> String {
    format!(
        "[[keys]]\nid = \"team-a\"\nkey_sha256 = \"{}\"\n{fields}\n",
        hex("key-a")
    )
}

fn refusal(text: &str) -> String {
    match parse("keys.toml", text) {
        Ok(entries) => panic!("taken: {entries:?}\n{text}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn every_field_of_an_entry_makes_its_policy() {
    let text = format!(
        r#"# the search team
[[keys]]
id = "team-a"
key_sha256 = "{}"
models = ["gpt-4o-mini", "demo-*", "@openai/*"]
rpm = 60
tpm = 100000
max_parallel = 4
budget_usd = 10.0
budget_period = "day"
expires_at = "2027-01-01T00:00:00Z"
labels = {{ team = "search" }}

[[keys]]
id = "batch.jobs_2"
key_sha256 = "{}"
budget_usd = 3
budget_period = "total"
expires_at = 2027-01-01T02:00:00+02:00
"#,
        hex("key-a").to_uppercase(),
        hex("key-b"),
    );

    let entries = parse("keys.toml", &text).unwrap();

    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].digest, digest("key-a"));
    let policy = &entries[0].policy;
    assert_eq!(policy.id, "team-a");
    let models: Vec<&str> = policy.models.iter().flatten().map(ModelPattern::as_str).collect();
    assert_eq!(models, ["gpt-4o-mini", "demo-*", "@openai/*"]);
    assert_eq!(
        (policy.rpm, policy.tpm, policy.max_parallel),
        (Some(60), Some(100_000), Some(4))
    );
    assert_eq!(
        policy.budget,
        Some(SpendLimit {
            usd: 10.0,
            period: BudgetPeriod::Day
        })
    );
    assert_eq!(policy.expires_at, Some(1_798_761_600));
    assert_eq!(
        policy.labels,
        BTreeMap::from([("team".to_owned(), "search".to_owned())])
    );

    let batch = &entries[1].policy;
    assert_eq!(entries[1].digest, digest("key-b"));
    assert_eq!(batch.id, "batch.jobs_2");
    assert_eq!(
        batch.budget,
        Some(SpendLimit {
            usd: 3.0,
            period: BudgetPeriod::Total
        })
    );
    assert_eq!(
        batch.expires_at,
        Some(1_798_761_600),
        "a TOML date-time with its offset"
    );
    assert_eq!(
        (batch.models.as_ref(), batch.rpm, batch.tpm, batch.max_parallel),
        (None, None, None, None)
    );
    assert!(batch.labels.is_empty());
}

#[test]
fn an_entry_needs_only_an_id_and_a_digest() {
    let entries = parse("keys.toml", &one_key("")).unwrap();

    assert_eq!(*entries[0].policy, KeyPolicy::unlimited("team-a"));
}

#[test]
fn a_bad_limit_is_refused_with_its_line_and_field() {
    let cases = [
        (
            "rpm = 0",
            "keys.toml:4: keys[0].rpm: must be a positive integer, got 0",
        ),
        (
            "tpm = -5",
            "keys.toml:4: keys[0].tpm: must be a positive integer, got -5",
        ),
        (
            "max_parallel = 1.5",
            "keys.toml:4: keys[0].max_parallel: invalid type: floating point `1.5`, expected a positive integer",
        ),
        (
            "rpm = \"60\"",
            "keys.toml:4: keys[0].rpm: invalid type: string \"60\", expected a positive integer",
        ),
        (
            "budget_usd = 0\nbudget_period = \"day\"",
            "keys.toml:4: keys[0].budget_usd: must be a positive number of US dollars, got 0",
        ),
        (
            "budget_period = \"day\"\nbudget_usd = -2.5",
            "keys.toml:5: keys[0].budget_usd: must be a positive number of US dollars, got -2.5",
        ),
        (
            "budget_usd = nan\nbudget_period = \"day\"",
            "keys.toml:4: keys[0].budget_usd: must be a positive number of US dollars, got NaN",
        ),
    ];
    for (fields, expected) in cases {
        assert_eq!(refusal(&one_key(fields)), expected, "{fields}");
    }
}

#[test]
fn a_budget_needs_its_period_and_a_period_its_budget() {
    let cases = [
        (
            "budget_usd = 10.0",
            "keys.toml:4: keys[0].budget_period: required with budget_usd: hour, day, week, month or total",
        ),
        (
            "budget_period = \"day\"",
            "keys.toml:4: keys[0].budget_period: applies only with budget_usd",
        ),
        (
            "budget_usd = 1\nbudget_period = \"fortnight\"",
            "keys.toml:5: keys[0].budget_period: must be hour, day, week, month or total, got `fortnight`",
        ),
    ];
    for (fields, expected) in cases {
        assert_eq!(refusal(&one_key(fields)), expected, "{fields}");
    }
}

#[test]
fn an_expiry_must_be_an_rfc_3339_time_with_its_offset() {
    let hint = "keys.toml:4: keys[0].expires_at: must be an RFC 3339 time";
    let cases = [
        (
            "expires_at = \"tomorrow\"",
            "with its offset, such as \"2027-01-01T00:00:00Z\", got `tomorrow`",
        ),
        (
            "expires_at = 2027-01-01",
            "with its offset, such as \"2027-01-01T00:00:00Z\", got `2027-01-01`",
        ),
        (
            "expires_at = 2027-01-01T00:00:00",
            "with its offset, such as \"2027-01-01T00:00:00Z\", got `2027-01-01T00:00:00`",
        ),
        (
            "expires_at = 1798761600",
            "such as \"2027-01-01T00:00:00Z\", got integer",
        ),
    ];
    for (fields, expected) in cases {
        assert_eq!(
            refusal(&one_key(fields)),
            format!("{hint} {expected}"),
            "{fields}"
        );
    }
}

#[test]
fn a_key_may_set_how_long_its_answers_are_cached_or_turn_the_cache_off() {
    let ttl = |fields: &str| parse("keys.toml", &one_key(fields)).unwrap()[0].policy.cache_ttl;
    assert_eq!(ttl(""), None);
    assert_eq!(
        ttl("cache_ttl_s = 600"),
        Some(std::time::Duration::from_secs(600))
    );
    assert_eq!(ttl("cache_ttl_s = 0"), Some(std::time::Duration::ZERO));
    for (value, expected) in [
        ("-1", "got -1"),
        ("31536001", "got 31536001"),
        ("\"1h\"", "invalid type: string"),
    ] {
        let message = refusal(&one_key(&format!("cache_ttl_s = {value}")));
        assert!(
            message.starts_with("keys.toml:4: keys[0].cache_ttl_s:") && message.contains(expected),
            "{value}: {message}"
        );
    }
}

#[test]
fn labels_must_be_strings() {
    assert_eq!(
        refusal(&one_key("labels = { team = \"search\", tier = 3 }")),
        "keys.toml:4: keys[0].labels.tier: invalid type: integer `3`, expected a string"
    );
    assert_eq!(
        refusal(&one_key("\n[keys.labels]\nteam = true")),
        "keys.toml:6: keys[0].labels.team: invalid type: boolean `true`, expected a string"
    );
}

#[test]
fn ids_and_digests_are_required_well_formed_and_unique() {
    let second = |id: &str, key: &str| {
        format!(
            "{}\n[[keys]]\nid = \"{id}\"\nkey_sha256 = \"{}\"\n",
            one_key(""),
            hex(key)
        )
    };
    let cases = [
        (
            second("team-a", "key-b"),
            "keys.toml:7: keys[1].id: `team-a` is already the id of keys[0]",
        ),
        (
            second("team-b", "key-a"),
            "keys.toml:8: keys[1].key_sha256: the same key as keys[0]",
        ),
        (
            second("team b", "key-b"),
            "keys.toml:7: keys[1].id: must be 1 to 64 letters, digits, `.`, `_` or `-`, got `team b`",
        ),
        (
            second("", "key-b"),
            "keys.toml:7: keys[1].id: must be 1 to 64 letters, digits, `.`, `_` or `-`, got ``",
        ),
        (
            format!("[[keys]]\nkey_sha256 = \"{}\"\n", hex("key-a")),
            "keys.toml:1: keys[0].id: required",
        ),
        (
            "[[keys]]\nid = \"team-a\"\n".to_owned(),
            "keys.toml:1: keys[0].key_sha256: required",
        ),
        (
            "[[keys]]\nid = \"team-a\"\nkey_sha256 = \"sha256:abc\"\n".to_owned(),
            "keys.toml:3: keys[0].key_sha256: must be 64 hex digits, the SHA-256 of the key \
             (`printf %s \"$KEY\" | sha256sum`)",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(refusal(&text), expected, "{text}");
    }
}

#[test]
fn a_key_written_where_its_digest_belongs_is_not_echoed() {
    let text = "[[keys]]\nid = \"team-a\"\nkey_sha256 = \"sk-live-secret-key\"\n";

    let message = refusal(text);

    assert!(message.contains("keys[0].key_sha256"), "{message}");
    assert!(!message.contains("sk-live-secret-key"), "{message}");
}

#[test]
fn a_model_list_names_at_least_one_model_and_no_empty_one() {
    assert_eq!(
        refusal(&one_key("models = []")),
        "keys.toml:4: keys[0].models: lists no model; leave it out to allow every model"
    );
    assert_eq!(
        refusal(&one_key("models = [\n  \"demo-*\",\n  \" \",\n]")),
        "keys.toml:6: keys[0].models[1]: must not be empty"
    );
}

#[test]
fn unknown_fields_are_refused() {
    assert_eq!(
        refusal(&one_key("rmp = 60")),
        "keys.toml:4: keys[0].rmp: unknown field `rmp`, expected one of `id`, `key_sha256`, `models`, \
         `rpm`, `tpm`, `max_parallel`, `budget_usd`, `budget_period`, `expires_at`, `labels`, `cache_ttl_s`"
    );
    let message = refusal(&format!("[settings]\nstrict = true\n\n{}", one_key("")));
    assert!(
        message.starts_with("keys.toml:1: settings: unknown field `settings`"),
        "{message}"
    );
}

#[test]
fn a_file_that_is_not_toml_or_holds_no_key_is_refused() {
    let message = refusal(&one_key("rpm = "));
    assert!(message.starts_with("keys.toml:4: "), "{message}");
    assert_eq!(
        refusal(&one_key("rpm = 1\nrpm = 2")),
        "keys.toml:5: duplicate key"
    );
    assert_eq!(
        refusal("# nothing yet\n"),
        "keys.toml holds no key (or is not UTF-8)"
    );
    assert_eq!(refusal("keys = []\n"), "keys.toml holds no key (or is not UTF-8)");
    assert_eq!(
        refusal("keys = 3\n"),
        "keys.toml:1: keys: invalid type: integer `3`, expected a sequence"
    );
}
