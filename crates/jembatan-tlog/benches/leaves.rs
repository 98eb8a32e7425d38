//! Hot paths of the audit log's tree: hashing an entry into its leaf and
//! pushing leaves into the compact range that recomputes the root (what
//! the appender's checkpointer and `audit verify` do for every entry).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use jembatan_tlog::merkle::{CompactRange, leaf_hash};

/// An entry's canonical bytes are about this long (a lookup's decision).
const ENTRY_BYTES: usize = 620;
const LEAVES: usize = 10_000;

fn entries() -> Vec<Vec<u8>> {
    (0..LEAVES)
        .map(|i| {
            let mut e =
                format!("{{\"v\":1,\"kind\":\"decision\",\"exchange_id\":\"{i:036}\"").into_bytes();
            e.resize(ENTRY_BYTES, b'x');
            e
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let entries = entries();
    let mut group = c.benchmark_group("tlog");
    group.throughput(Throughput::Elements(LEAVES as u64));
    group.bench_function("leaf_hash_10k_entries", |b| {
        b.iter(|| {
            for e in &entries {
                black_box(leaf_hash(black_box(e)));
            }
        })
    });
    let leaves: Vec<_> = entries.iter().map(|e| leaf_hash(e)).collect();
    group.bench_function("compact_range_push_10k_leaves", |b| {
        b.iter_batched(
            CompactRange::new,
            |mut range| {
                for l in &leaves {
                    range.push(*l).unwrap();
                }
                black_box(range.root())
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
