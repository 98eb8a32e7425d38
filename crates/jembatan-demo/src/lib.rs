//! Jembatan demo: synthetic but realistic agency data for Kabupaten Tanjung Jabung Timur (Jambi).
//!
//! [`wilayah`] holds the regency's official districts and villages (Kemendagri codes);
//! [`data`] generates one seeded, deterministic SQLite database per agency.

pub mod data;
mod follow;
pub mod scenario;
pub mod wilayah;
