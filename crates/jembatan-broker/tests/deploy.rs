//! The example broker config under `deploy/` stays loadable, and the
//! schema files its registry section names exist and parse.

use std::path::Path;

use jembatan_broker::BrokerConfig;

#[test]
fn the_example_broker_config_loads_and_its_schemas_parse() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/broker.toml");
    let config = BrokerConfig::load(&path).unwrap();
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
