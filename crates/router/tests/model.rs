//! Property tests of the router against a simple model.
//!
//! The model is a map of nodes and a map of routes with a reachability search for
//! cycles; it predicts the outcome of every edit. After each edit the router must
//! agree with the model, a refused edit must have changed nothing, and the
//! compiled schedule must be sound: producers run in earlier levels, a level's
//! steps are independent, no two live buffers share a lane, and running the
//! schedule computes what a naive recursive evaluation of the model computes.

use std::collections::{BTreeMap, BTreeSet};
use std::mem::discriminant;

use proptest::prelude::*;
use slotpool_router::{
    ChannelMap, Lanes, MAX_CHANNELS, PatchError, PatchRouter, Schedule, Step, Workspace, execute,
};

const FRAMES: usize = 3;
const IN_CH: u16 = 2;
const OUT_CH: u16 = 2;

/// The names edits pick from: the device nodes and eight possible slots.
fn name(i: usize) -> String {
    match i {
        0 => "input".into(),
        1 => "output".into(),
        i => format!("p{}:{}", (i - 2) / 4, (i - 2) % 4),
    }
}
const NAMES: usize = 10;

#[derive(Clone, Debug)]
enum Op {
    Add {
        node: usize,
        ins: u16,
        outs: u16,
    },
    Remove {
        node: usize,
    },
    Connect {
        from: usize,
        to: usize,
        map: ChannelMap,
        gain: f32,
    },
    Disconnect {
        from: usize,
        to: usize,
    },
    SetGain {
        from: usize,
        to: usize,
        gain: f32,
    },
}

fn channels() -> impl Strategy<Value = u16> {
    prop_oneof![8 => 0u16..=3, 1 => Just(MAX_CHANNELS + 1)]
}

fn gain() -> impl Strategy<Value = f32> {
    prop_oneof![
        10 => prop::sample::select(vec![1.0f32, 0.5, -1.0, 0.25, 2.0, 0.0]),
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
    ]
}

fn map() -> impl Strategy<Value = ChannelMap> {
    prop_oneof![
        3 => Just(ChannelMap::Auto),
        2 => prop::collection::vec((0u16..3, 0u16..3), 0..4).prop_map(ChannelMap::Pairs),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let node = 0..NAMES;
    prop_oneof![
        3 => (node.clone(), channels(), channels())
            .prop_map(|(node, ins, outs)| Op::Add { node, ins, outs }),
        1 => node.clone().prop_map(|node| Op::Remove { node }),
        6 => (node.clone(), node.clone(), map(), gain())
            .prop_map(|(from, to, map, gain)| Op::Connect { from, to, map, gain }),
        1 => (node.clone(), node.clone()).prop_map(|(from, to)| Op::Disconnect { from, to }),
        1 => (node.clone(), node, gain())
            .prop_map(|(from, to, gain)| Op::SetGain { from, to, gain }),
    ]
}

/// The model: plain maps, no petgraph.
#[derive(Clone, Debug, PartialEq)]
struct Model {
    /// name → (inputs, outputs)
    nodes: BTreeMap<String, (u16, u16)>,
    /// (from, to) → (map, gain)
    routes: BTreeMap<(String, String), (ChannelMap, f32)>,
}

/// A model error: the variant the router must return.
type Expect = Result<(), PatchError>;

fn err_unknown(name: &str) -> Expect {
    Err(PatchError::UnknownNode { name: name.into() })
}

impl Model {
    fn new() -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert("input".into(), (0, IN_CH));
        nodes.insert("output".into(), (OUT_CH, 0));
        Self {
            nodes,
            routes: BTreeMap::new(),
        }
    }

    fn reaches(&self, from: &str, to: &str) -> bool {
        let mut stack = vec![from.to_owned()];
        let mut seen = BTreeSet::new();
        while let Some(n) = stack.pop() {
            if n == to {
                return true;
            }
            if seen.insert(n.clone()) {
                for (a, b) in self.routes.keys() {
                    if *a == n {
                        stack.push(b.clone());
                    }
                }
            }
        }
        false
    }

    /// (from channel, to channel, weight) of a route, by the documented rule.
    fn links(&self, from: &str, to: &str, map: &ChannelMap) -> Result<Vec<(u16, u16, f32)>, ()> {
        let (n, m) = (self.nodes[from].1, self.nodes[to].0);
        match map {
            ChannelMap::Auto if n == 0 || m == 0 => Err(()),
            ChannelMap::Auto if n == m => Ok((0..n).map(|c| (c, c, 1.0)).collect()),
            ChannelMap::Auto if n == 1 => Ok((0..m).map(|c| (0, c, 1.0)).collect()),
            ChannelMap::Auto if m == 1 => Ok((0..n).map(|c| (c, 0, 1.0 / f32::from(n))).collect()),
            ChannelMap::Auto => Err(()),
            ChannelMap::Pairs(pairs) => Ok(pairs.iter().map(|&(a, b)| (a, b, 1.0)).collect()),
        }
    }

    /// Applies `op` if the router must accept it; returns the expected outcome.
    fn apply(&mut self, op: &Op) -> Expect {
        match op {
            Op::Add { node, ins, outs } => {
                let n = name(*node);
                if *node < 2 {
                    return Err(PatchError::DeviceNode { name: n });
                }
                if self.nodes.contains_key(&n) {
                    return Err(PatchError::DuplicateNode { name: n });
                }
                if *ins > MAX_CHANNELS || *outs > MAX_CHANNELS {
                    return Err(PatchError::TooManyChannels {
                        name: n,
                        side: slotpool_router::Side::Input,
                        channels: 0,
                    });
                }
                self.nodes.insert(n, (*ins, *outs));
                Ok(())
            }
            Op::Remove { node } => {
                let n = name(*node);
                if *node < 2 {
                    return Err(PatchError::DeviceNode { name: n });
                }
                if self.nodes.remove(&n).is_none() {
                    return err_unknown(&n);
                }
                self.routes.retain(|(a, b), _| *a != n && *b != n);
                Ok(())
            }
            Op::Connect {
                from,
                to,
                map,
                gain,
            } => {
                let (a, b) = (name(*from), name(*to));
                for n in [&a, &b] {
                    if !self.nodes.contains_key(n) {
                        return err_unknown(n);
                    }
                }
                let route = |a: &str, b: &str| (a.to_owned(), b.to_owned());
                let (from_s, to_s) = route(&a, &b);
                if !gain.is_finite() {
                    return Err(PatchError::InvalidGain {
                        from: from_s,
                        to: to_s,
                        gain: *gain,
                    });
                }
                if a == b {
                    return Err(PatchError::SelfLoop { node: a });
                }
                if self.routes.contains_key(&route(&a, &b)) {
                    return Err(PatchError::DuplicateRoute {
                        from: from_s,
                        to: to_s,
                    });
                }
                if self.reaches(&b, &a) {
                    return Err(PatchError::Cycle {
                        from: from_s,
                        to: to_s,
                        cycle: vec![],
                    });
                }
                let (n, m) = (self.nodes[&a].1, self.nodes[&b].0);
                match map {
                    ChannelMap::Auto => {
                        if self.links(&a, &b, map).is_err() {
                            return Err(PatchError::ChannelMismatch {
                                from: from_s,
                                to: to_s,
                                from_channels: n,
                                to_channels: m,
                            });
                        }
                    }
                    ChannelMap::Pairs(pairs) => {
                        if pairs.is_empty() {
                            return Err(PatchError::EmptyChannelMap {
                                from: from_s,
                                to: to_s,
                            });
                        }
                        for (i, &(x, y)) in pairs.iter().enumerate() {
                            if x >= n || y >= m {
                                return Err(PatchError::ChannelOutOfRange {
                                    from: from_s,
                                    to: to_s,
                                    node: String::new(),
                                    side: slotpool_router::Side::Input,
                                    channel: 0,
                                    channels: 0,
                                });
                            }
                            if pairs[..i].contains(&(x, y)) {
                                return Err(PatchError::DuplicateChannelPair {
                                    from: from_s,
                                    to: to_s,
                                    pair: (x, y),
                                });
                            }
                        }
                    }
                }
                self.routes.insert(route(&a, &b), (map.clone(), *gain));
                Ok(())
            }
            Op::Disconnect { from, to } | Op::SetGain { from, to, .. } => {
                let (a, b) = (name(*from), name(*to));
                for n in [&a, &b] {
                    if !self.nodes.contains_key(n) {
                        return err_unknown(n);
                    }
                }
                let key = (a.clone(), b.clone());
                if !self.routes.contains_key(&key) {
                    return Err(PatchError::UnknownRoute { from: a, to: b });
                }
                match op {
                    Op::Disconnect { .. } => {
                        self.routes.remove(&key);
                    }
                    Op::SetGain { gain, .. } if !gain.is_finite() => {
                        return Err(PatchError::InvalidGain {
                            from: a,
                            to: b,
                            gain: *gain,
                        });
                    }
                    Op::SetGain { gain, .. } => {
                        self.routes.get_mut(&key).unwrap().1 = *gain;
                    }
                    _ => unreachable!(),
                }
                Ok(())
            }
        }
    }

    /// Naive evaluation: each node's output, recursively, for one block.
    fn render(&self, device_in: &[f32]) -> Vec<f32> {
        let mut memo = BTreeMap::new();
        let input = self.mix_into("output", device_in, &mut memo);
        input.concat()
    }

    /// The planar input of node `dst` (channel-major), summed over its routes.
    fn mix_into(
        &self,
        dst: &str,
        device_in: &[f32],
        memo: &mut BTreeMap<String, Vec<Vec<f32>>>,
    ) -> Vec<Vec<f32>> {
        let mut input = vec![vec![0.0f32; FRAMES]; usize::from(self.nodes[dst].0)];
        for ((a, b), (map, gain)) in &self.routes {
            if b != dst {
                continue;
            }
            let src = self.output_of(a, device_in, memo);
            for (x, y, w) in self.links(a, b, map).unwrap() {
                for f in 0..FRAMES {
                    input[usize::from(y)][f] += gain * w * src[usize::from(x)][f];
                }
            }
        }
        input
    }

    fn output_of(
        &self,
        node: &str,
        device_in: &[f32],
        memo: &mut BTreeMap<String, Vec<Vec<f32>>>,
    ) -> Vec<Vec<f32>> {
        if let Some(out) = memo.get(node) {
            return out.clone();
        }
        let out: Vec<Vec<f32>> = if node == "input" {
            device_in.chunks(FRAMES).map(<[f32]>::to_vec).collect()
        } else {
            let input = self.mix_into(node, device_in, memo);
            let outs = usize::from(self.nodes[node].1);
            let flat = input.concat();
            let mut out = vec![0.0; outs * FRAMES];
            module(node, &flat, &mut out);
            out.chunks(FRAMES).map(<[f32]>::to_vec).collect()
        };
        memo.insert(node.to_owned(), out.clone());
        out
    }
}

/// The test's DSP: a different linear map per slot and channel plus a bias, so a
/// wrong channel, wrong source or wrong gain shows in the output.
fn module(name: &str, input: &[f32], output: &mut [f32]) {
    let seed = name.bytes().map(f32::from).sum::<f32>();
    for (c, out) in output.chunks_exact_mut(FRAMES).enumerate() {
        for f in 0..FRAMES {
            let mut acc = 0.01 * (seed + c as f32);
            for (j, inp) in input.chunks_exact(FRAMES).enumerate() {
                acc += inp[f] * (0.25 * (j + 2 * c + 1) as f32);
            }
            out[f] = acc;
        }
    }
}

fn snapshot(p: &PatchRouter) -> Model {
    let nodes = p
        .nodes()
        .map(|(_, n)| (n.name().to_owned(), (n.inputs(), n.outputs())))
        .collect();
    let routes = p
        .routes()
        .map(|(a, b, r)| {
            (
                (a.name().to_owned(), b.name().to_owned()),
                (r.map().clone(), r.gain()),
            )
        })
        .collect();
    Model { nodes, routes }
}

fn apply(p: &mut PatchRouter, op: &Op) -> Result<(), PatchError> {
    match op {
        Op::Add { node, ins, outs } => p.add_slot(&name(*node), *ins, *outs).map(drop),
        Op::Remove { node } => p.remove_slot(&name(*node)),
        Op::Connect {
            from,
            to,
            map,
            gain,
        } => p.connect(&name(*from), &name(*to), map.clone(), *gain),
        Op::Disconnect { from, to } => p.disconnect(&name(*from), &name(*to)),
        Op::SetGain { from, to, gain } => p.set_gain(&name(*from), &name(*to), *gain),
    }
}

/// Every buffer of the plan with the lifetime of the signal in it, taken from the
/// model's routes (not from the compiler): (lanes, first time, last time). Device
/// input is written at 0, level k runs at k + 1, the device output is mixed at
/// level_count + 1.
fn lifetimes(s: &Schedule, model: &Model) -> Vec<(Lanes, usize, usize)> {
    let end = s.level_count() + 1;
    let time = |node: &str| match node {
        "input" => 0,
        "output" => end,
        slot => {
            let step = s.steps().iter().find(|st| st.name().as_str() == slot);
            step.expect("every slot has a step").level() + 1
        }
    };
    let last_read = |node: &str| {
        let readers = model.routes.keys().filter(|(a, _)| a == node);
        readers.map(|(_, b)| time(b)).fold(time(node), usize::max)
    };
    let mut buffers = vec![(s.device_input(), 0, last_read("input"))];
    for step in s.steps() {
        let t = step.level() + 1;
        buffers.push((step.input(), t, t));
        buffers.push((step.output(), t, last_read(step.name().as_str())));
    }
    buffers.retain(|(lanes, ..)| lanes.count() > 0);
    buffers
}

fn check_schedule(p: &PatchRouter, model: &Model) -> Result<(), TestCaseError> {
    let s = p.compile();
    let slots = model.nodes.len() - 2;
    prop_assert_eq!(s.steps().len(), slots);
    let step = |name: &str| s.steps().iter().find(|st| st.name().as_str() == name);

    // Levels: contiguous, numbered in order, covering every step once.
    let mut seen = 0;
    for (k, level) in s.levels().enumerate() {
        prop_assert!(!level.is_empty());
        for st in level {
            prop_assert_eq!(st.level(), k);
            prop_assert_eq!(st.index(), seen);
            prop_assert_eq!(s.step_of(st.node()), Some(st));
            prop_assert_eq!(p.node_id(st.name().as_str()), Some(st.node()));
            prop_assert!(st.node().index() < s.node_bound());
            seen += 1;
        }
    }
    prop_assert_eq!(seen, slots);

    // Every step runs after all its producers, in a strictly earlier level (so a
    // level's steps never feed each other).
    for (a, b) in model.routes.keys() {
        if let (Some(sa), Some(sb)) = (step(a), step(b)) {
            prop_assert!(
                sa.index() < sb.index(),
                "{} runs before its producer {}",
                b,
                a
            );
            prop_assert!(sa.level() < sb.level(), "{} shares a level with {}", b, a);
        }
    }

    // A mix reads only lanes written in an earlier level (or the device input).
    for st in s.steps() {
        for term in s.input_mix(st).flatten() {
            let ok = s.device_input().range().contains(&(term.src() as usize))
                || s.steps().iter().any(|p| {
                    p.level() < st.level() && p.output().range().contains(&(term.src() as usize))
                });
            prop_assert!(
                ok,
                "{} reads lane {} nobody wrote before",
                st.name(),
                term.src()
            );
        }
    }

    // No two buffers alive at the same time share a lane.
    let input_read = model.routes.keys().any(|(a, _)| a == "input");
    prop_assert_eq!(s.device_input().count() > 0, input_read);
    let buffers = lifetimes(&s, model);
    for (i, &(x, x0, x1)) in buffers.iter().enumerate() {
        prop_assert!(x.range().end <= s.lanes() as usize);
        for &(y, y0, y1) in &buffers[i + 1..] {
            let live_together = x0 <= y1 && y0 <= x1;
            let share = x.range().start < y.range().end && y.range().start < x.range().end;
            prop_assert!(
                !(live_together && share),
                "lanes {:?} [{x0},{x1}] and {:?} [{y0},{y1}] collide",
                x.range(),
                y.range()
            );
        }
    }

    // Running the schedule equals the naive evaluation.
    let device_in: Vec<f32> = (0..usize::from(IN_CH) * FRAMES)
        .map(|i| 0.1 * (i as f32 + 1.0))
        .collect();
    let mut ws = Workspace::for_schedule(&s, FRAMES);
    let mut out = vec![f32::NAN; usize::from(OUT_CH) * FRAMES];
    let mut runner = |st: &Step, i: &[f32], o: &mut [f32]| module(st.name().as_str(), i, o);
    execute(&s, &mut ws, &mut runner, &device_in, &mut out).unwrap();
    let want = model.render(&device_in);
    for (g, w) in out.iter().zip(&want) {
        prop_assert!(
            (g - w).abs() <= 1e-4 * w.abs().max(1.0),
            "output {:?} differs from the model {:?}\n{}",
            out,
            want,
            s
        );
    }
    Ok(())
}

/// The cycle a refused route names is real: it starts and ends at `to`, its last
/// hop is the new route, and every other hop is an existing route.
fn check_cycle(err: &PatchError, model: &Model) -> Result<(), TestCaseError> {
    if let PatchError::Cycle { from, to, cycle } = err {
        prop_assert!(cycle.len() >= 3);
        prop_assert_eq!(cycle.first(), Some(to));
        prop_assert_eq!(cycle.last(), Some(to));
        prop_assert_eq!(&cycle[cycle.len() - 2], from);
        for hop in cycle[..cycle.len() - 1].windows(2) {
            prop_assert!(
                model.routes.contains_key(&(hop[0].clone(), hop[1].clone())),
                "{} → {} is not a route",
                hop[0],
                hop[1]
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn router_agrees_with_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let mut router = PatchRouter::new(IN_CH, OUT_CH).unwrap();
        let mut model = Model::new();
        for op in &ops {
            let before = snapshot(&router);
            let want = model.apply(op);
            let got = apply(&mut router, op);
            match (&want, &got) {
                (Ok(()), Ok(())) => {}
                (Err(w), Err(g)) => {
                    prop_assert_eq!(discriminant(w), discriminant(g), "{:?}: {}", op, g);
                    prop_assert_eq!(&snapshot(&router), &before, "refused {:?} changed the patch", op);
                    check_cycle(g, &model)?;
                }
                _ => prop_assert!(false, "{:?}: model says {:?}, router {:?}", op, want, got),
            }
            prop_assert_eq!(&snapshot(&router), &model, "after {:?}", op);
            // The graph stays acyclic: no route's target reaches its source.
            for (a, b) in model.routes.keys() {
                prop_assert!(!model.reaches(b, a), "cycle through {} → {}", a, b);
            }
            if got.is_ok() {
                check_schedule(&router, &model)?;
            }
        }
    }
}

/// A random small graph built by edits that mostly succeed: `nodes` slots, then
/// routes between random nodes (device nodes included).
fn small_graph() -> impl Strategy<Value = Vec<Op>> {
    let slots = prop::collection::vec((1u16..=3, 1u16..=3), 1..=8);
    slots.prop_flat_map(|slots| {
        let n = slots.len() + 2;
        let adds: Vec<Op> = slots
            .iter()
            .enumerate()
            .map(|(i, &(ins, outs))| Op::Add {
                node: i + 2,
                ins,
                outs,
            })
            .collect();
        let route = (
            0..n,
            0..n,
            map(),
            prop::sample::select(vec![1.0f32, 0.5, -0.75, 2.0]),
        )
            .prop_map(|(from, to, map, gain)| Op::Connect {
                from,
                to,
                map,
                gain,
            });
        prop::collection::vec(route, 0..30).prop_map(move |routes| {
            let mut ops = adds.clone();
            ops.extend(routes);
            ops
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Executing the compiled schedule equals the naive evaluation of the model.
    #[test]
    fn execution_matches_naive_evaluation(ops in small_graph()) {
        let mut router = PatchRouter::new(IN_CH, OUT_CH).unwrap();
        let mut model = Model::new();
        for op in &ops {
            let want = model.apply(op);
            let got = apply(&mut router, op);
            prop_assert_eq!(want.is_ok(), got.is_ok(), "{:?}: {:?} vs {:?}", op, want, got);
        }
        prop_assert_eq!(&snapshot(&router), &model);
        check_schedule(&router, &model)?;
    }
}
