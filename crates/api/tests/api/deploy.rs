//! The manifests in `deploy/` cannot drift from the code: every variable
//! they set is one the gateway reads, their ports are the ones it binds,
//! their probe paths answer, their files are where it looks, and the Redis
//! of `GATEWAYZ_REDIS_URL` is where it points and open to it.
//!
//! Overlays are read as kustomize renders them, as far as these checks need:
//! the base's objects, the overlay's own, and its patches of the gateway's
//! `env`, merged by name.

use std::net::SocketAddr;
use std::path::Path;

use gatewayz_api::Settings;
use gatewayz_api::auth::GatewayKeys;
use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::peers::workspace;

fn yaml_documents(relative: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(workspace().join(relative)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| serde::Deserialize::deserialize(document).unwrap())
        .collect()
}

/// The base (`None`) and each overlay.
const RENDERINGS: [Option<&str>; 3] = [None, Some("dev"), Some("prod")];

/// Where Redis listens unless told otherwise, and a URL's port without one.
const REDIS_DEFAULT_PORT: u64 = 6379;

fn directory(overlay: Option<&str>) -> String {
    overlay.map_or("deploy/k8s/base".to_owned(), |overlay| {
        format!("deploy/k8s/overlays/{overlay}")
    })
}

fn kustomization(overlay: Option<&str>) -> Value {
    yaml_documents(&format!("{}/kustomization.yaml", directory(overlay))).remove(0)
}

/// The objects of the resource files an overlay (or the base) lists itself.
fn objects(overlay: Option<&str>) -> Vec<Value> {
    let directory = directory(overlay);
    kustomization(overlay)["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|resource| resource.ends_with(".yaml"))
        .flat_map(|file| yaml_documents(&format!("{directory}/{file}")))
        .collect()
}

/// Every object `overlay` renders that comes from a file (not a generator).
fn rendered(overlay: &str) -> Vec<Value> {
    [objects(None), objects(Some(overlay))].concat()
}

fn of_kind<'a>(objects: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    objects.iter().filter(move |object| object["kind"] == kind)
}

fn named<'a>(objects: &'a [Value], kind: &'a str, name: &str) -> &'a Value {
    of_kind(objects, kind)
        .find(|object| object["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn deployment() -> Value {
    yaml_documents("deploy/k8s/base/deployment.yaml").remove(0)
}

/// The gateway's Deployment as `overlay` renders it (`None`: the base's),
/// its container's `env` patched as kustomize merges it: by name.
fn gateway_deployment(overlay: Option<&str>) -> Value {
    let mut deployment = deployment();
    let Some(name) = overlay else {
        return deployment;
    };
    for patch in kustomization(overlay)["patches"].as_array().into_iter().flatten() {
        let text = match (patch["patch"].as_str(), patch["path"].as_str()) {
            (Some(text), _) => text.to_owned(),
            (None, Some(path)) => {
                std::fs::read_to_string(workspace().join(directory(Some(name))).join(path)).unwrap()
            }
            (None, None) => continue,
        };
        let patch: Value = serde_yaml_ng::from_str(&text).unwrap();
        if patch["kind"] != "Deployment" || patch["metadata"]["name"] != "gatewayz" {
            continue;
        }
        let patched = container(&patch);
        assert_eq!(patched["name"], container(&deployment)["name"], "{name}'s patch");
        let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array_mut()
            .unwrap();
        for var in patched["env"].as_array().into_iter().flatten() {
            env.retain(|set| set["name"] != var["name"]);
            env.push(var.clone());
        }
    }
    deployment
}

/// The labels of the gateway's pods: the template's and the base's own.
fn gateway_pod_labels() -> Value {
    let mut labels = deployment()["spec"]["template"]["metadata"]["labels"].clone();
    for added in kustomization(None)["labels"].as_array().into_iter().flatten() {
        for (label, value) in added["pairs"].as_object().unwrap() {
            labels[label] = value.clone();
        }
    }
    labels
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

/// Each variable with its value, `None` when it comes from elsewhere (a
/// Secret's key).
fn env(container: &Value) -> Vec<(String, Option<String>)> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|var| {
            (
                var["name"].as_str().unwrap().to_owned(),
                var["value"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn env_var<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|var| var["name"] == name)
        .unwrap_or_else(|| panic!("the Deployment sets no {name}"))
}

fn env_value(container: &Value, name: &str) -> String {
    env_var(container, name)["value"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no value of its own"))
        .to_owned()
}

fn container_port(container: &Value, name: &str) -> u64 {
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|port| port["name"] == name)
        .unwrap_or_else(|| panic!("no port named {name}"))["containerPort"]
        .as_u64()
        .unwrap()
}

fn mount_path(deployment: &Value, volume: &str) -> String {
    container(deployment)["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|mount| mount["name"] == volume)
        .unwrap_or_else(|| panic!("no mount of {volume}"))["mountPath"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn every_variable_the_manifests_set_is_one_the_gateway_reads() {
    let read = Settings::variables();
    for overlay in RENDERINGS {
        let deployment = gateway_deployment(overlay);
        let set = env(container(&deployment));
        for (name, _) in &set {
            assert!(
                read.contains(name),
                "the Deployment ({overlay:?}) sets {name}, which the gateway never reads"
            );
        }
        let values = set.into_iter().filter_map(|(name, value)| Some((name, value?)));
        if let Err(error) = Settings::from_vars(values) {
            panic!("the Deployment ({overlay:?}): {error}");
        }
    }
    let secrets = yaml_documents("deploy/k8s/overlays/dev/secret.example.yaml");
    let upstream = secrets
        .iter()
        .find(|secret| secret["metadata"]["name"] == "gatewayz-upstream-keys")
        .unwrap();
    for name in upstream["stringData"].as_object().unwrap().keys() {
        assert!(
            read.contains(name),
            "the Secret example sets {name}, which the gateway never reads"
        );
    }
}

#[test]
fn the_container_ports_are_the_ones_the_gateway_binds() {
    let deployment = deployment();
    let container = container(&deployment);
    for (port, variable) in [("http", "GATEWAYZ_BIND"), ("admin", "GATEWAYZ_ADMIN_BIND")] {
        let bound: SocketAddr = env_value(container, variable).parse().unwrap();
        assert_eq!(
            container_port(container, port),
            u64::from(bound.port()),
            "{port} vs {variable}"
        );
    }
    let dockerfile = std::fs::read_to_string(workspace().join("deploy/Dockerfile")).unwrap();
    assert!(dockerfile.contains("EXPOSE 8080 9090"));
    assert!(
        dockerfile.contains("GATEWAYZ_BIND=0.0.0.0:8080")
            && dockerfile.contains("GATEWAYZ_ADMIN_BIND=0.0.0.0:9090")
    );
}

#[tokio::test]
async fn the_probes_point_at_paths_the_admin_listener_answers() {
    let deployment = deployment();
    let container = container(&deployment);
    let app = TestApp::production(&[]).await;

    for probe in ["livenessProbe", "readinessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["port"], "admin", "{probe} goes to the admin port");
        let path = get["path"].as_str().unwrap();
        let status = app
            .client
            .get(format!("{}{path}", app.admin))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{probe} {path}");
    }
}

#[test]
fn the_pod_outlives_its_drain() {
    let deployment = deployment();
    let spec = &deployment["spec"]["template"]["spec"];
    let container = container(&deployment);
    let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap();
    let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap();
    let shutdown: u64 = env_value(container, "GATEWAYZ_SHUTDOWN_TIMEOUT").parse().unwrap();
    assert!(
        grace > pre_stop + shutdown,
        "{grace} s is not above {pre_stop} + {shutdown} s"
    );
}

#[test]
fn the_catalog_and_keys_files_are_where_the_gateway_looks() {
    let deployment = deployment();

    let catalog = env_value(container(&deployment), "GATEWAYZ_CATALOG");
    let catalog = Path::new(&catalog);
    assert_eq!(
        catalog.parent().unwrap(),
        Path::new(&mount_path(&deployment, "catalog"))
    );
    let kustomization = kustomization(None);
    let files = &kustomization["configMapGenerator"][0]["files"];
    assert_eq!(files[0].as_str(), catalog.file_name().unwrap().to_str());
    let shipped = workspace()
        .join("deploy/k8s/base")
        .join(files[0].as_str().unwrap());
    gatewayz_adapters::catalog::load(Some(&shipped), |_| None).expect("the shipped catalog loads");

    for overlay in RENDERINGS {
        let deployment = gateway_deployment(overlay);
        let keys = env_value(container(&deployment), "GATEWAYZ_API_KEYS_FILE");
        assert_eq!(
            Path::new(&keys).parent().unwrap(),
            Path::new(&mount_path(&deployment, "gateway-keys")),
            "{overlay:?}"
        );
    }
}

#[test]
fn the_dev_keys_secret_holds_key_policies_the_gateway_takes() {
    let deployment = gateway_deployment(Some("dev"));
    let keys = env_value(container(&deployment), "GATEWAYZ_API_KEYS_FILE");
    let file_name = Path::new(&keys).file_name().unwrap().to_str().unwrap();
    let secrets = objects(Some("dev"));
    let text = named(&secrets, "Secret", "gatewayz-gateway-keys")["stringData"][file_name]
        .as_str()
        .unwrap_or_else(|| panic!("the keys Secret holds no {file_name}"));
    let bind: SocketAddr = env_value(container(&deployment), "GATEWAYZ_BIND")
        .parse()
        .unwrap();

    // Under its own name: the name says whether it is a policy file.
    let directory = std::env::temp_dir().join(format!("gatewayz-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    std::fs::write(directory.join(file_name), text).unwrap();
    let taken = GatewayKeys::from_config(None, Some(&directory.join(file_name)), bind);
    std::fs::remove_dir_all(&directory).unwrap();

    let policies = taken.expect("the gateway takes the dev keys file").policies();
    assert!(
        policies.iter().any(|policy| policy.rpm.is_some()),
        "the dev keys file gives the overlay's Redis limits to count"
    );
    let catalog = workspace().join("deploy/k8s/base/catalog.toml");
    let catalog = gatewayz_adapters::catalog::load(Some(&catalog), |_| None)
        .unwrap()
        .catalog;
    for policy in &policies {
        for pattern in policy.models.iter().flatten() {
            assert!(
                catalog.models().iter().any(|model| pattern.matches(&model.id)),
                "{} may call {}, which the catalog lacks",
                policy.id,
                pattern.as_str()
            );
        }
    }
}

/// Whether `selector` (a Service's, or a `matchLabels`) picks pods labelled
/// `labels`; an absent or empty one picks every pod.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_none_or(|selector| selector.iter().all(|(label, value)| labels[label] == *value))
}

/// Whether `rule` lets TCP connections to `port` through.
fn opens(rule: &Value, port: u64) -> bool {
    rule["ports"].as_array().is_none_or(|ports| {
        ports
            .iter()
            .any(|open| open["port"] == port && open["protocol"] != "UDP")
    })
}

/// Whether `peers` (a rule's `to` or `from`) hold pods labelled `labels`
/// in the policy's own namespace, or (`None`) an address outside the
/// cluster. An absent list is every peer.
fn holds(peers: &Value, labels: Option<&Value>) -> bool {
    let Some(peers) = peers.as_array() else {
        return true;
    };
    peers.iter().any(|peer| match labels {
        Some(labels) => {
            peer.get("namespaceSelector").is_none()
                && peer
                    .get("podSelector")
                    .is_some_and(|pods| selects(&pods["matchLabels"], labels))
        }
        None => peer.get("ipBlock").is_some(),
    })
}

/// The rules of `direction` (`Ingress` or `Egress`) of every policy
/// selecting pods labelled `pod`.
fn rules<'a>(objects: &'a [Value], pod: &'a Value, direction: &'a str) -> Vec<&'a Value> {
    of_kind(objects, "NetworkPolicy")
        .filter(|policy| selects(&policy["spec"]["podSelector"]["matchLabels"], pod))
        .filter(|policy| {
            policy["spec"]["policyTypes"]
                .as_array()
                .unwrap()
                .contains(&json!(direction))
        })
        .flat_map(|policy| {
            policy["spec"][direction.to_lowercase()]
                .as_array()
                .into_iter()
                .flatten()
        })
        .collect()
}

/// The host and port of a `redis://` or `rediss://` URL.
fn redis_address(url: &str) -> (String, u64) {
    let url = reqwest::Url::parse(url).unwrap();
    assert!(["redis", "rediss"].contains(&url.scheme()), "{url}");
    let port = url.port().map_or(REDIS_DEFAULT_PORT, u64::from);
    (url.host_str().unwrap().to_owned(), port)
}

#[test]
fn the_dev_redis_url_names_the_redis_service_its_port_and_a_server_without_persistence() {
    let url = env_value(container(&gateway_deployment(Some("dev"))), "GATEWAYZ_REDIS_URL");
    let (host, port) = redis_address(&url);
    let objects = rendered("dev");

    let service = named(&objects, "Service", &host);
    let selector = &service["spec"]["selector"];
    assert!(selector.as_object().is_some_and(|labels| !labels.is_empty()));
    let service_port = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|open| open["port"] == port)
        .unwrap_or_else(|| panic!("the Service {host} has no port {port}"));
    let redis = of_kind(&objects, "Deployment")
        .find(|deployment| selects(selector, &deployment["spec"]["template"]["metadata"]["labels"]))
        .unwrap_or_else(|| panic!("the Service {host} selects no Deployment's pods"));
    let server = container(redis);
    let target = container_port(server, service_port["targetPort"].as_str().unwrap());

    let args: Vec<&str> = server["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| arg.as_str().unwrap())
        .collect();
    let listens = args
        .windows(2)
        .find(|pair| pair[0] == "--port")
        .map_or(REDIS_DEFAULT_PORT, |pair| pair[1].parse().unwrap());
    assert_eq!(target, listens, "the Service sends to the port Redis listens on");
    for setting in [["--save", ""], ["--appendonly", "no"]] {
        assert!(
            args.windows(2).any(|pair| pair == setting),
            "Redis runs with {setting:?}: {args:?}"
        );
    }
}

#[test]
fn the_network_policies_let_the_gateway_reach_its_redis_and_nothing_else_reach_redis() {
    let gateway = gateway_pod_labels();
    let objects = rendered("dev");
    let redis = named(&objects, "Deployment", "gatewayz-redis");
    let redis_pods = &redis["spec"]["template"]["metadata"]["labels"];
    let port = container_port(container(redis), "redis");

    assert!(
        rules(&objects, &gateway, "Egress")
            .iter()
            .any(|rule| opens(rule, port) && holds(&rule["to"], Some(redis_pods))),
        "the gateway may connect to Redis's pods on {port}"
    );
    let ingress = rules(&objects, redis_pods, "Ingress");
    assert!(
        ingress
            .iter()
            .any(|rule| opens(rule, port) && holds(&rule["from"], Some(&gateway))),
        "Redis admits the gateway on {port}"
    );
    for rule in ingress {
        let peers = rule["from"].as_array().expect("a rule names who it admits");
        for peer in peers {
            let pods = &peer["podSelector"]["matchLabels"];
            assert!(
                pods.as_object().is_some_and(|labels| !labels.is_empty())
                    && selects(pods, &gateway)
                    && !selects(pods, redis_pods),
                "Redis admits only the gateway's pods: {peer}"
            );
        }
        let ports = rule["ports"].as_array().expect("a rule names its ports");
        assert_eq!(ports, &[json!({"port": port, "protocol": "TCP"})]);
    }
    assert!(
        rules(&objects, redis_pods, "Egress").is_empty(),
        "Redis opens no connection"
    );

    // Prod's Redis is the Secret's, outside the cluster: plain or TLS.
    let objects = rendered("prod");
    for port in [REDIS_DEFAULT_PORT, 6380] {
        assert!(
            rules(&objects, &gateway, "Egress")
                .iter()
                .any(|rule| opens(rule, port) && holds(&rule["to"], None)),
            "the gateway may connect out to {port}"
        );
    }
}

/// `text` with comment markers, line continuations and line breaks gone.
fn one_line(text: &str) -> String {
    text.lines()
        .map(|line| {
            line.trim()
                .trim_start_matches('#')
                .trim()
                .trim_end_matches('\\')
                .trim()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn prod_reads_the_redis_url_from_an_optional_secret_that_the_docs_create() {
    let deployment = gateway_deployment(Some("prod"));
    let secret = &env_var(container(&deployment), "GATEWAYZ_REDIS_URL")["valueFrom"]["secretKeyRef"];
    assert_eq!(
        secret["optional"], true,
        "without the Secret prod still starts, each replica counting alone"
    );
    let command = format!(
        "create secret generic {} --from-literal={}=",
        secret["name"].as_str().unwrap(),
        secret["key"].as_str().unwrap()
    );
    for file in [
        "docs/deployment.md",
        "docs/limits.md",
        "deploy/k8s/overlays/prod/kustomization.yaml",
    ] {
        let text = std::fs::read_to_string(workspace().join(file)).unwrap();
        assert!(one_line(&text).contains(&command), "{file} shows `{command}`");
    }
}

#[test]
fn every_pod_runs_unprivileged_on_a_read_only_root() {
    for overlay in ["dev", "prod"] {
        let objects = rendered(overlay);
        for deployment in of_kind(&objects, "Deployment") {
            let name = &deployment["metadata"]["name"];
            let pod = &deployment["spec"]["template"]["spec"];
            assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
                "{name}"
            );
            for container in pod["containers"].as_array().unwrap() {
                let security = &container["securityContext"];
                assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
                assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
                assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{name}");
                assert!(container["resources"]["limits"]["memory"].is_string(), "{name}");
                assert!(container["readinessProbe"].is_object(), "{name}");
            }
        }
    }
}
