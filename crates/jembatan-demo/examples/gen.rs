//! Generate the demo agency databases and print what was written, with timing.
//!
//! `cargo run --release -p jembatan-demo --example gen -- [DIR] [RESIDENTS] [SEED]`
//! (DIR defaults to a fresh temporary directory name under the system temp dir).

use std::path::PathBuf;
use std::time::Instant;

use jembatan_demo::data::{DataOptions, generate_with_examples};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().map(PathBuf::from).unwrap_or_else(|| {
        std::env::temp_dir().join(format!("jembatan-demo-{}", std::process::id()))
    });
    let mut options = DataOptions::default();
    if let Some(n) = args.next() {
        options.residents = n.parse()?;
    }
    if let Some(s) = args.next() {
        options.seed = s.parse()?;
    }
    let start = Instant::now();
    let generated = generate_with_examples(&dir, &options).await?;
    let elapsed = start.elapsed();
    for db in &generated.databases {
        println!("{:<12} {}  ({})", db.agency, db.url, db.name);
        for t in &db.tables {
            println!("    {:<18} {:>8} rows", t.name, t.rows);
        }
    }
    println!(
        "examples: {}",
        serde_json::to_string_pretty(&generated.examples)?
    );
    println!(
        "generated {} residents (seed {}) in {:.2?}",
        options.residents, options.seed, elapsed
    );
    Ok(())
}
