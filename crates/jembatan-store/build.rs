//! Rebuilds the crate when a migration is added: `sqlx::migrate!` embeds
//! `migrations/` at compile time, and Cargo reruns the macro only when a
//! file it already knows changes. A new migration is a new file, so
//! without this a build would keep migrating to the schema of the last one.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
