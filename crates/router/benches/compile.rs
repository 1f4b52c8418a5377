//! Compiling a patch into a Schedule: a 1,000-node random DAG (the target is
//! under 10 ms), beside a peer: petgraph's own `toposort` of the same graph,
//! which is the least any compiler of this graph has to do.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use petgraph::algo::toposort;
use petgraph::graph::DiGraph;
use slotpool_router::{ChannelMap, PatchRouter};

/// xorshift64*: a fixed, dependency-free random sequence.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// A random DAG of `n` slots (mono and stereo), each fed by 1–3 earlier slots or
/// the device input; about one in ten slots reaches the device output. Returns the
/// router and the same topology as a plain petgraph graph.
fn random_dag(n: usize, seed: u64) -> (PatchRouter, DiGraph<(), ()>) {
    let mut rng = Rng(seed);
    let mut router = PatchRouter::new(2, 2).unwrap();
    let mut plain = DiGraph::<(), ()>::new();
    let input = plain.add_node(());
    let output = plain.add_node(());
    let mut names: Vec<String> = Vec::with_capacity(n);
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let channels = if rng.below(4) == 0 { 1 } else { 2 };
        let name = format!("fx{}:{}", i % 7, i);
        router.add_slot(&name, channels, channels).unwrap();
        let node = plain.add_node(());
        for _ in 0..1 + rng.below(3) {
            let (from, from_node) = match i {
                0 => ("input", input),
                _ if rng.below(20) == 0 => ("input", input),
                _ => {
                    // Mostly recent nodes, so the DAG is deep as well as wide.
                    let j = i - 1 - rng.below(i.min(40));
                    (names[j].as_str(), nodes[j])
                }
            };
            if router.connect(from, &name, ChannelMap::Auto, 0.5).is_ok() {
                plain.add_edge(from_node, node, ());
            }
        }
        if rng.below(10) == 0 || i == n - 1 {
            router
                .connect(&name, "output", ChannelMap::Auto, 0.1)
                .unwrap();
            plain.add_edge(node, output, ());
        }
        names.push(name);
        nodes.push(node);
    }
    (router, plain)
}

fn compile(c: &mut Criterion) {
    let (router, plain) = random_dag(1000, 0x5107_9001);
    let schedule = router.compile();
    // Correctness first: every slot is scheduled, in more than one level.
    assert_eq!(schedule.steps().len(), 1000);
    assert!(schedule.level_count() > 10);
    assert_eq!(
        plain.edge_count(),
        router.route_count(),
        "the peer graph matches the patch"
    );
    eprintln!(
        "1000-node DAG: {} routes, {} levels, {} lanes",
        router.route_count(),
        schedule.level_count(),
        schedule.lanes()
    );

    let mut group = c.benchmark_group("compile_1000_node_dag");
    group.bench_function("PatchRouter::compile", |b| {
        b.iter(|| black_box(&router).compile())
    });
    group.bench_function("peer: petgraph::algo::toposort", |b| {
        b.iter(|| toposort(black_box(&plain), None).unwrap())
    });
    group.finish();
}

criterion_group!(benches, compile);
criterion_main!(benches);
