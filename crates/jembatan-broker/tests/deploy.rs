//! The configs under `deploy/` stay loadable: the example broker and
//! adapter configs and the compose deployment's, and the schema files the
//! example broker's registry section names exist and parse.

use std::path::{Path, PathBuf};

use jembatan_adapter::AdapterConfig;
use jembatan_broker::BrokerConfig;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

#[test]
fn the_example_broker_config_loads_and_its_schemas_parse() {
    let config = BrokerConfig::load(&deploy().join("broker.toml")).unwrap();
    assert!(!config.registry.schemas.is_empty());
    for s in &config.registry.schemas {
        let text = std::fs::read_to_string(&s.file)
            .unwrap_or_else(|e| panic!("{}: {e}", s.file.display()));
        jembatan_schema::Schema::parse(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", s.file.display()));
    }
    for m in &config.registry.mappings {
        assert!(m.is_file(), "{} is missing", m.display());
    }
}

/// Every `broker*.toml` and `adapter*.toml` under `deploy/`, however deep.
fn configs(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            configs(&path, found);
        } else if path.extension().is_some_and(|e| e == "toml") {
            found.push(path);
        }
    }
}

#[test]
fn every_config_under_deploy_loads() {
    let mut found = Vec::new();
    configs(&deploy(), &mut found);
    found.sort();
    let (mut brokers, mut adapters) = (0, 0);
    for path in &found {
        let name = path.file_name().unwrap().to_string_lossy();
        if name.starts_with("broker") {
            BrokerConfig::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            brokers += 1;
        } else if name.starts_with("adapter") {
            AdapterConfig::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            adapters += 1;
        } else {
            panic!("{}: neither a broker nor an adapter config", path.display());
        }
    }
    // deploy/ and deploy/compose/
    assert!(brokers >= 2 && adapters >= 3, "{found:?}");
}

/// The compose deployment's brokers reach each adapter by the name its
/// certificate is issued for in `setup.sh`, and every certificate and key
/// the configs name is one `setup.sh` writes.
#[test]
fn the_compose_configs_name_what_the_setup_creates() {
    let dir = deploy().join("compose");
    let setup = std::fs::read_to_string(dir.join("setup.sh")).unwrap();
    let broker = BrokerConfig::load(&dir.join("broker.toml")).unwrap();
    for agency in &broker.agencies {
        for url in agency.adapter.iter().flat_map(|a| a.urls()) {
            let host = format!("adapter-{}", agency.id);
            assert!(url.contains(&format!("//{host}:")), "{url}");
            assert!(setup.contains("--host \"adapter-$agency\""), "{host}");
            let config = AdapterConfig::load(&dir.join(format!("adapter-{}.toml", agency.id)))
                .unwrap_or_else(|e| panic!("adapter-{}.toml: {e}", agency.id));
            assert_eq!(config.agency, agency.id);
        }
    }
    for f in [&broker.tls.ca, &broker.tls.cert, &broker.tls.key] {
        assert!(
            f.starts_with("/var/lib/jembatan/certs"),
            "{}: outside the volume setup.sh fills",
            f.display()
        );
    }
    assert!(setup.contains("--host broker-1 --host broker-2"));
}
