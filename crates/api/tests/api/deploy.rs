//! The manifests in `deploy/` cannot drift from the code: every variable
//! they set is one the gateway reads, their ports are the ones it binds,
//! their probe paths answer, and their files are where it looks.

use std::net::SocketAddr;
use std::path::Path;

use gatewayz_api::Settings;
use serde_json::Value;

use crate::helpers::TestApp;
use crate::peers::workspace;

fn yaml_documents(relative: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(workspace().join(relative)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| serde::Deserialize::deserialize(document).unwrap())
        .collect()
}

fn deployment() -> Value {
    yaml_documents("deploy/k8s/base/deployment.yaml").remove(0)
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

fn env(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|var| {
            (
                var["name"].as_str().unwrap().to_owned(),
                var["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn env_value(container: &Value, name: &str) -> String {
    env(container)
        .into_iter()
        .find(|(var, _)| var == name)
        .unwrap_or_else(|| panic!("the Deployment sets no {name}"))
        .1
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
    let deployment = deployment();
    for (name, _) in env(container(&deployment)) {
        assert!(
            read.contains(&name),
            "the Deployment sets {name}, which the gateway never reads"
        );
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
    let container = container(&deployment);

    let catalog = env_value(container, "GATEWAYZ_CATALOG");
    let catalog = Path::new(&catalog);
    assert_eq!(
        catalog.parent().unwrap(),
        Path::new(&mount_path(&deployment, "catalog"))
    );
    let kustomization = yaml_documents("deploy/k8s/base/kustomization.yaml").remove(0);
    let files = &kustomization["configMapGenerator"][0]["files"];
    assert_eq!(files[0].as_str(), catalog.file_name().unwrap().to_str());
    let shipped = workspace()
        .join("deploy/k8s/base")
        .join(files[0].as_str().unwrap());
    gatewayz_adapters::catalog::load(Some(&shipped), |_| None).expect("the shipped catalog loads");

    let keys = env_value(container, "GATEWAYZ_API_KEYS_FILE");
    let keys = Path::new(&keys);
    assert_eq!(
        keys.parent().unwrap(),
        Path::new(&mount_path(&deployment, "gateway-keys"))
    );
    let secrets = yaml_documents("deploy/k8s/overlays/dev/secret.example.yaml");
    let gateway_keys = secrets
        .iter()
        .find(|secret| secret["metadata"]["name"] == "gatewayz-gateway-keys")
        .unwrap();
    let file_name = keys.file_name().unwrap().to_str().unwrap();
    assert!(
        gateway_keys["stringData"].get(file_name).is_some(),
        "the keys Secret holds {file_name}"
    );
}
