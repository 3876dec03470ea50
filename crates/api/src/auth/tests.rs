//! The key set: keys from the environment and from either kind of file,
//! each identified with its policy, reloads, and the request extractor.

use super::*;

fn loopback() -> SocketAddr {
    "127.0.0.1:8080".parse().unwrap()
}

fn sha256_hex(key: &str) -> String {
    digest(key).iter().map(|byte| format!("{byte:02x}")).collect()
}

#[test]
fn every_configured_key_verifies_and_nothing_else_does() {
    let keys = GatewayKeys::from_config(Some(&" alpha , beta,,".into()), None, loopback()).unwrap();
    assert!(keys.verify("alpha").is_some());
    assert!(keys.verify("beta").is_some());
    assert!(keys.verify("alph").is_none());
    assert!(keys.verify("").is_none());
    assert!(keys.verify(LOCAL_DEV_KEY).is_none());
    assert!(!keys.is_local_dev());
}

#[test]
fn a_sha256_entry_accepts_the_key_it_hashes() {
    let entry = format!("sha256:{}", sha256_hex("hashed-secret").to_uppercase());
    let keys = GatewayKeys::from_config(Some(&entry.into()), None, loopback()).unwrap();
    assert_eq!(
        keys.verify("hashed-secret"),
        Some(KeyId(sha256_hex("hashed-secret")[..8].to_owned()))
    );
    assert!(
        keys.verify(&format!("sha256:{}", sha256_hex("hashed-secret")))
            .is_none()
    );
}

#[test]
fn a_malformed_digest_is_refused_naming_its_entry() {
    let err = GatewayKeys::from_config(Some(&"ok, sha256:abc".into()), None, loopback()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "GATEWAYZ_API_KEYS: entry 2: `sha256:` must be followed by 64 hex digits"
    );
}

#[test]
fn without_keys_a_loopback_listener_accepts_only_the_local_dev_key() {
    let keys = GatewayKeys::from_config(Some(&" , ".into()), None, loopback()).unwrap();
    assert!(keys.is_local_dev());
    assert!(keys.verify(LOCAL_DEV_KEY).is_some());
    assert!(keys.verify("anything").is_none());
}

#[test]
fn without_keys_a_public_listener_refuses_to_start() {
    for bind in ["0.0.0.0:8080", "10.1.2.3:80", "[::]:8080"] {
        let err = GatewayKeys::from_config(None, None, bind.parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("GATEWAYZ_API_KEYS"), "{err}");
    }
}

#[test]
fn the_keys_file_is_read_reloaded_and_a_bad_version_is_ignored() {
    let path = std::env::temp_dir().join(format!("gatewayz-keys-unit-{}", std::process::id()));
    std::fs::write(&path, "# team a\nfirst-key\n\n").unwrap();
    let keys = GatewayKeys::from_config(Some(&"env-key".into()), Some(&path), loopback()).unwrap();
    assert!(keys.verify("first-key").is_some() && keys.verify("env-key").is_some());
    assert!(!keys.is_local_dev());

    std::fs::write(
        &path,
        format!("second-key # rotated\nsha256:{}\n", sha256_hex("third-key")),
    )
    .unwrap();
    assert_eq!(keys.reload().unwrap(), 2);
    assert!(keys.verify("first-key").is_none());
    assert!(keys.verify("second-key").is_some() && keys.verify("third-key").is_some());
    assert!(keys.verify("env-key").is_some(), "environment keys stay");

    std::fs::write(&path, "sha256:not-hex\n").unwrap();
    assert!(keys.reload().is_err());
    std::fs::write(&path, "# emptied\n").unwrap();
    assert!(keys.reload().is_err(), "a file with no key is refused");
    assert!(
        keys.verify("second-key").is_some(),
        "a bad file keeps the previous keys"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn debug_output_shows_no_key_material() {
    let keys = GatewayKeys::from_config(Some(&"alpha".into()), None, loopback()).unwrap();
    assert_eq!(
        format!("{keys:?}"),
        "GatewayKeys { count: 1, file: None, local_dev: false }"
    );
}

/// A policy file of its own for one test, written whole.
struct PolicyFile(PathBuf);

impl PolicyFile {
    fn new(test: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("gatewayz-policies-{}-{test}.toml", std::process::id()));
        let file = Self(path);
        file.write(text);
        file
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }
}

impl Drop for PolicyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn policy_entry(id: &str, key: &str, fields: &str) -> String {
    format!(
        "[[keys]]\nid = \"{id}\"\nkey_sha256 = \"{}\"\n{fields}\n",
        sha256_hex(key)
    )
}

#[test]
fn a_policy_file_key_is_served_under_its_policy_and_named_by_its_id() {
    let file = PolicyFile::new(
        "served",
        &[
            policy_entry("team-a", "key-a", "rpm = 60"),
            policy_entry("team-b", "key-b", "models = [\"demo-*\"]"),
            policy_entry("team-c", "key-c", "max_parallel = 2"),
        ]
        .concat(),
    );

    let keys = GatewayKeys::from_config(Some(&"env-key".into()), Some(&file.0), loopback()).unwrap();

    for (key, id) in [("key-a", "team-a"), ("key-b", "team-b"), ("key-c", "team-c")] {
        assert_eq!(keys.identify(key).unwrap().id, id);
        assert_eq!(keys.verify(key), Some(KeyId(id.to_owned())));
    }
    assert_eq!(keys.identify("key-a").unwrap().rpm, Some(60));
    assert!(!keys.identify("key-b").unwrap().allows_model("gpt-4o"));
    let env_id = sha256_hex("env-key")[..8].to_owned();
    assert_eq!(*keys.identify("env-key").unwrap(), KeyPolicy::unlimited(&env_id));
    assert!(keys.identify("key-d").is_none());
    let ids: Vec<String> = keys.policies().iter().map(|policy| policy.id.clone()).collect();
    assert_eq!(ids, [env_id.as_str(), "team-a", "team-b", "team-c"]);
    assert_eq!(keys.policy("team-c").unwrap().max_parallel, Some(2));
    assert!(keys.policy("team-d").is_none());
}

#[test]
fn an_expired_key_is_still_identified() {
    let file = PolicyFile::new(
        "expired",
        &policy_entry("old-team", "old-key", "expires_at = \"2001-01-01T00:00:00Z\""),
    );

    let keys = GatewayKeys::from_config(None, Some(&file.0), loopback()).unwrap();

    let policy = keys.identify("old-key").expect("an expired key is still known");
    assert_eq!(policy.id, "old-team");
    assert!(policy.expired(978_307_200));
    assert!(!policy.expired(978_307_199));
}

#[test]
fn a_key_in_the_environment_and_the_policy_file_is_served_under_the_file_policy() {
    let file = PolicyFile::new("both", &policy_entry("limited", "shared-key", "rpm = 5"));

    let keys = GatewayKeys::from_config(Some(&"shared-key,other".into()), Some(&file.0), loopback()).unwrap();

    assert_eq!(keys.identify("shared-key").unwrap().id, "limited");
    assert_eq!(keys.policies().len(), 2, "{:?}", keys.policies());
    assert!(keys.identify("other").is_some());
}

#[test]
fn a_bad_policy_file_stops_the_start_and_on_reload_the_last_good_policies_stay() {
    let file = PolicyFile::new("reload", &policy_entry("team-a", "key-a", "rpm = 0"));
    let refused = GatewayKeys::from_config(None, Some(&file.0), loopback()).unwrap_err();
    assert_eq!(
        refused.to_string(),
        format!(
            "{}:4: keys[0].rpm: must be a positive integer, got 0",
            file.0.display()
        )
    );

    file.write(
        &[
            policy_entry("team-a", "key-a", "rpm = 10"),
            policy_entry("team-b", "key-b", ""),
        ]
        .concat(),
    );
    let keys = GatewayKeys::from_config(None, Some(&file.0), loopback()).unwrap();
    file.write(&policy_entry("team-a", "key-a", "rpm = 20"));
    assert_eq!(keys.reload().unwrap(), 1);
    assert_eq!(
        keys.identify("key-a").unwrap().rpm,
        Some(20),
        "a changed limit is taken"
    );
    assert!(keys.identify("key-b").is_none(), "a removed key is gone");
    assert!(keys.policy("team-b").is_none());

    file.write(&policy_entry("team-a", "key-a", "rpm = 30\nburst = 2"));
    let error = keys.reload().unwrap_err().to_string();
    assert!(error.ends_with(":5: keys[0].burst: unknown field `burst`, expected one of `id`, `key_sha256`, `models`, `rpm`, `tpm`, `max_parallel`, `budget_usd`, `budget_period`, `expires_at`, `labels`, `cache_ttl_s`"), "{error}");
    assert_eq!(
        keys.identify("key-a").unwrap().rpm,
        Some(20),
        "the last good policy stays"
    );
}

#[test]
fn authentication_leaves_the_key_id_and_policy_in_the_request() {
    let file = PolicyFile::new("extensions", &policy_entry("team-a", "key-a", "tpm = 1000"));
    let keys = GatewayKeys::from_config(None, Some(&file.0), loopback()).unwrap();
    let request = actix_web::test::TestRequest::default()
        .app_data(web::Data::new(keys))
        .insert_header((header::AUTHORIZATION, "Bearer key-a"))
        .to_http_request();

    authenticate(&request).unwrap();

    assert_eq!(
        request.extensions().get::<KeyId>(),
        Some(&KeyId("team-a".to_owned()))
    );
    let policy = policy_of(&request).expect("the policy is in the extensions");
    assert_eq!((policy.id.as_str(), policy.tpm), ("team-a", Some(1000)));
}
