//! Writes a signed audit log of N entries to a store, for timing and
//! profiling `jembatan audit verify` on it:
//!
//! ```text
//! cargo run --release -p jembatan-bench --example fill_log -- /tmp/log.db 1000000 /tmp/log.pub
//! time target/release/jembatan audit verify --store /tmp/log.db --public-key /tmp/log.pub
//! ```

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [store, entries, key] = args.as_slice() else {
        eprintln!("usage: fill_log STORE_URL ENTRIES PUBLIC_KEY_FILE");
        return ExitCode::from(2);
    };
    let Ok(entries) = entries.parse::<u64>() else {
        eprintln!("ENTRIES must be a number, not {entries:?}");
        return ExitCode::from(2);
    };
    let filled = async {
        let store = jembatan_store::Store::connect(store).await?;
        let filled = jembatan_bench::fill_log(&store, entries).await;
        store.close().await;
        filled
    };
    match filled.await {
        Ok((size, verifier)) => {
            if let Err(e) = std::fs::write(key, verifier.to_key_string() + "\n") {
                eprintln!("cannot write {key}: {e}");
                return ExitCode::FAILURE;
            }
            println!("{size} entries, checkpoint signed; public key in {key}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fill_log: {e}");
            ExitCode::FAILURE
        }
    }
}
