//! [`PatchRouter`]: the patch as a petgraph DAG, edited by validated operations.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::fmt;

use petgraph::Direction;
use petgraph::acyclic::{Acyclic, AcyclicEdgeError};
use petgraph::data::{Build, DataMapMut};
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, IntoEdgeReferences, NodeIndexable};

use crate::error::{PatchError, Side};
use crate::name::{INPUT, NodeKind, OUTPUT, SlotName};
use crate::schedule::Schedule;

/// The most channels one side of a node may have.
pub const MAX_CHANNELS: u16 = 64;

/// The graph type behind the router: the acyclicity invariant is kept by petgraph.
pub(crate) type Graph = Acyclic<StableDiGraph<Node, Route, u32>>;

/// A node's identity in the router and in every [`Schedule`] compiled from it.
///
/// Ids are dense (every id is below [`Schedule::node_bound`]) so an executor can
/// index a table of its own with [`NodeId::index`] instead of hashing names on the
/// audio thread. An id stays the same while its node exists; after the node is
/// removed its id may be given to a node added later, so a table indexed by id
/// belongs to the schedule it was built for (hand both over together, see
/// [`handover`](crate::handover)). `input` is always [`NodeId::INPUT`] and `output`
/// always [`NodeId::OUTPUT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u32);

impl NodeId {
    /// The device input node, `input`.
    pub const INPUT: Self = Self(0);
    /// The device output node, `output`.
    pub const OUTPUT: Self = Self(1);

    /// The id as a table index.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    pub(crate) fn from_graph(index: NodeIndex<u32>) -> Self {
        Self(index.index() as u32)
    }

    fn to_graph(self) -> NodeIndex<u32> {
        NodeIndex::new(self.index())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Which output channels of a route's source feed which input channels of its
/// destination.
///
/// # The automatic map (the mono ↔ stereo rule)
/// [`ChannelMap::Auto`] joins a source with `n` output channels to a destination
/// with `m` input channels as follows, and refuses every other combination
/// ([`PatchError::ChannelMismatch`]: give explicit pairs instead):
///
/// | counts | links | weight |
/// |---|---|---|
/// | `n == m` | channel `i` → channel `i` | 1 |
/// | `n == 1`, `m > 1` (mono to stereo) | channel 0 → every channel | 1 (copied to both sides) |
/// | `n > 1`, `m == 1` (stereo to mono) | every channel → channel 0 | `1/n` (the average; 0.5 each for stereo) |
///
/// Explicit [`ChannelMap::Pairs`] links each listed `(output, input)` pair with
/// weight 1; pairs that meet on one input channel are summed, like any fan-in.
/// The sample added to the destination channel is `source × weight × gain`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ChannelMap {
    /// The automatic map described above.
    #[default]
    Auto,
    /// Explicit `(output channel of from, input channel of to)` pairs, counted from 0.
    Pairs(Vec<(u16, u16)>),
}

/// One channel-to-channel connection inside a route.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    /// The output channel of the route's source.
    pub from: u16,
    /// The input channel of the route's destination.
    pub to: u16,
    /// The factor of the channel map (1, or `1/n` when averaging), before the gain.
    pub weight: f32,
}

/// A node of the patch.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    kind: NodeKind,
    inputs: u16,
    outputs: u16,
}

impl Node {
    /// What the node is; its name is `kind().name()`.
    pub fn kind(&self) -> &NodeKind {
        &self.kind
    }

    /// The node's name: `input`, `output` or `<program>:<index>`.
    pub fn name(&self) -> &str {
        self.kind.name()
    }

    /// The number of input channels.
    pub fn inputs(&self) -> u16 {
        self.inputs
    }

    /// The number of output channels.
    pub fn outputs(&self) -> u16 {
        self.outputs
    }
}

/// A route: the edge between two nodes, with its channel map and gain.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    map: ChannelMap,
    links: Vec<Link>,
    gain: f32,
}

impl Route {
    /// The channel map as it was given.
    pub fn map(&self) -> &ChannelMap {
        &self.map
    }

    /// The channel links the map resolved to.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// The route's gain (linear), applied on top of each link's weight.
    pub fn gain(&self) -> f32 {
        self.gain
    }
}

/// The patch: device input and output, slot instances, and the routes between
/// them, kept acyclic.
///
/// Every operation is validated and a refused operation changes nothing. Nodes
/// are addressed by name (`input`, `output`, `<program>:<index>`), the one
/// namespace of the config, the control interface and the logs. Fan-in sums,
/// fan-out copies. Call [`PatchRouter::compile`] to get the [`Schedule`] the audio
/// thread runs; the router itself belongs to the control thread.
///
/// To apply a batch of edits all-or-nothing (a config reload), edit a clone and
/// keep it only if every edit succeeded.
#[derive(Clone, Debug)]
pub struct PatchRouter {
    graph: Graph,
    /// Slot name → node. `input` and `output` are not in here.
    slots: HashMap<String, NodeIndex<u32>>,
}

impl PatchRouter {
    /// A patch with the device's channel counts and no slots.
    ///
    /// # Errors
    /// [`PatchError::TooManyChannels`] if a count exceeds [`MAX_CHANNELS`].
    pub fn new(input_channels: u16, output_channels: u16) -> Result<Self, PatchError> {
        check_channels(INPUT, Side::Output, input_channels)?;
        check_channels(OUTPUT, Side::Input, output_channels)?;
        let mut graph = Graph::new();
        let input = graph.add_node(Node {
            kind: NodeKind::Input,
            inputs: 0,
            outputs: input_channels,
        });
        let output = graph.add_node(Node {
            kind: NodeKind::Output,
            inputs: output_channels,
            outputs: 0,
        });
        debug_assert_eq!(NodeId::from_graph(input), NodeId::INPUT);
        debug_assert_eq!(NodeId::from_graph(output), NodeId::OUTPUT);
        Ok(Self {
            graph,
            slots: HashMap::new(),
        })
    }

    /// Adds the slot instance `name` (`<program>:<index>`) with its channel counts.
    ///
    /// # Errors
    /// [`PatchError::DeviceNode`] for `input`/`output`, [`PatchError::InvalidName`],
    /// [`PatchError::DuplicateNode`], [`PatchError::TooManyChannels`].
    pub fn add_slot(
        &mut self,
        name: &str,
        inputs: u16,
        outputs: u16,
    ) -> Result<NodeId, PatchError> {
        if name == INPUT || name == OUTPUT {
            return Err(PatchError::DeviceNode { name: name.into() });
        }
        let slot = SlotName::new(name)?;
        if self.slots.contains_key(name) {
            return Err(PatchError::DuplicateNode { name: name.into() });
        }
        check_channels(name, Side::Input, inputs)?;
        check_channels(name, Side::Output, outputs)?;
        let index = self.graph.add_node(Node {
            kind: NodeKind::Slot(slot),
            inputs,
            outputs,
        });
        self.slots.insert(name.to_owned(), index);
        Ok(NodeId::from_graph(index))
    }

    /// Removes the slot `name` and every route into or out of it.
    ///
    /// # Errors
    /// [`PatchError::DeviceNode`] for `input`/`output`, [`PatchError::UnknownNode`].
    pub fn remove_slot(&mut self, name: &str) -> Result<(), PatchError> {
        if name == INPUT || name == OUTPUT {
            return Err(PatchError::DeviceNode { name: name.into() });
        }
        let Some(index) = self.slots.remove(name) else {
            return Err(PatchError::UnknownNode { name: name.into() });
        };
        // Removing a node from a StableGraph removes its edges with it.
        let removed = self.graph.remove_node(index);
        debug_assert!(removed.is_some(), "slot table and graph disagree on {name}");
        Ok(())
    }

    /// Adds the route `from → to` with the channel map `map` and a linear `gain`.
    ///
    /// # Errors
    /// [`PatchError::UnknownNode`], [`PatchError::InvalidGain`],
    /// [`PatchError::SelfLoop`], [`PatchError::ChannelMismatch`],
    /// [`PatchError::ChannelOutOfRange`], [`PatchError::EmptyChannelMap`],
    /// [`PatchError::DuplicateChannelPair`], [`PatchError::DuplicateRoute`], and
    /// [`PatchError::Cycle`] naming the nodes on the cycle the route would close.
    pub fn connect(
        &mut self,
        from: &str,
        to: &str,
        map: ChannelMap,
        gain: f32,
    ) -> Result<(), PatchError> {
        let a = self.lookup(from)?;
        let b = self.lookup(to)?;
        check_gain(from, to, gain)?;
        if a == b {
            return Err(PatchError::SelfLoop { node: from.into() });
        }
        if self.graph.inner().find_edge(a, b).is_some() {
            return Err(PatchError::DuplicateRoute {
                from: from.into(),
                to: to.into(),
            });
        }
        // The cycle is the deeper mistake: report it before any channel mismatch.
        if !self.graph.is_valid_edge(a, b) {
            return Err(self.cycle_error(from, to, a, b));
        }
        let links = resolve(from, to, &self.graph[a], &self.graph[b], &map)?;
        let route = Route { map, links, gain };
        // On error petgraph leaves the graph and its topological order untouched.
        match self.graph.try_add_edge(a, b, route) {
            Ok(_) => Ok(()),
            Err(AcyclicEdgeError::Cycle(_)) => Err(self.cycle_error(from, to, a, b)),
            Err(AcyclicEdgeError::SelfLoop) => Err(PatchError::SelfLoop { node: from.into() }),
            Err(AcyclicEdgeError::InvalidEdge) => {
                unreachable!("a StableDiGraph accepts every edge between existing nodes")
            }
        }
    }

    /// Removes the route `from → to`.
    ///
    /// # Errors
    /// [`PatchError::UnknownNode`], [`PatchError::UnknownRoute`].
    pub fn disconnect(&mut self, from: &str, to: &str) -> Result<(), PatchError> {
        let edge = self.find_route(from, to)?;
        self.graph.remove_edge(edge);
        Ok(())
    }

    /// Sets the gain of the route `from → to`.
    ///
    /// # Errors
    /// [`PatchError::UnknownNode`], [`PatchError::UnknownRoute`],
    /// [`PatchError::InvalidGain`].
    pub fn set_gain(&mut self, from: &str, to: &str, gain: f32) -> Result<(), PatchError> {
        let edge = self.find_route(from, to)?;
        check_gain(from, to, gain)?;
        let route = self
            .graph
            .edge_weight_mut(edge)
            .expect("find_route returned a live edge");
        route.gain = gain;
        Ok(())
    }

    /// Compiles the patch into the immutable plan the audio thread runs.
    ///
    /// Allocates; call it on the control thread and hand the result over with
    /// [`handover`](crate::handover).
    pub fn compile(&self) -> Schedule {
        crate::schedule::compile(&self.graph)
    }

    /// The id of the node `name`, if it exists.
    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        self.lookup(name).ok().map(NodeId::from_graph)
    }

    /// The node with id `id`, if it exists.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.graph.inner().node_weight(id.to_graph())
    }

    /// Every node (the device nodes first), with its id.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &Node)> + '_ {
        let graph = self.graph.inner();
        graph
            .node_indices()
            .map(move |i| (NodeId::from_graph(i), &graph[i]))
    }

    /// The route `from → to`, if both nodes and the route exist.
    pub fn route(&self, from: &str, to: &str) -> Option<&Route> {
        let edge = self.find_route(from, to).ok()?;
        self.graph.inner().edge_weight(edge)
    }

    /// Every route as `(from, to, route)`.
    pub fn routes(&self) -> impl Iterator<Item = (&Node, &Node, &Route)> + '_ {
        let graph = self.graph.inner();
        graph
            .edge_references()
            .map(move |e| (&graph[e.source()], &graph[e.target()], e.weight()))
    }

    /// The device's capture channel count (output channels of `input`).
    pub fn input_channels(&self) -> u16 {
        self.graph[NodeId::INPUT.to_graph()].outputs
    }

    /// The device's playback channel count (input channels of `output`).
    pub fn output_channels(&self) -> u16 {
        self.graph[NodeId::OUTPUT.to_graph()].inputs
    }

    /// The number of slot instances.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The number of routes.
    pub fn route_count(&self) -> usize {
        self.graph.inner().edge_count()
    }

    fn lookup(&self, name: &str) -> Result<NodeIndex<u32>, PatchError> {
        match name {
            INPUT => Ok(NodeId::INPUT.to_graph()),
            OUTPUT => Ok(NodeId::OUTPUT.to_graph()),
            _ => self
                .slots
                .get(name)
                .copied()
                .ok_or_else(|| PatchError::UnknownNode { name: name.into() }),
        }
    }

    fn find_route(
        &self,
        from: &str,
        to: &str,
    ) -> Result<petgraph::stable_graph::EdgeIndex<u32>, PatchError> {
        let a = self.lookup(from)?;
        let b = self.lookup(to)?;
        self.graph
            .inner()
            .find_edge(a, b)
            .ok_or_else(|| PatchError::UnknownRoute {
                from: from.into(),
                to: to.into(),
            })
    }

    fn cycle_error(
        &self,
        from: &str,
        to: &str,
        a: NodeIndex<u32>,
        b: NodeIndex<u32>,
    ) -> PatchError {
        PatchError::Cycle {
            from: from.into(),
            to: to.into(),
            cycle: self.cycle_through(a, b),
        }
    }

    /// The names on the cycle that a new edge `a → b` would close: a shortest
    /// existing path `b → … → a` (breadth-first), then `b` again.
    fn cycle_through(&self, a: NodeIndex<u32>, b: NodeIndex<u32>) -> Vec<String> {
        let graph = self.graph.inner();
        let mut parent: Vec<Option<NodeIndex<u32>>> = vec![None; graph.node_bound()];
        let mut queue = VecDeque::from([b]);
        'search: while let Some(n) = queue.pop_front() {
            for next in graph.neighbors_directed(n, Direction::Outgoing) {
                if next != b && parent[next.index()].is_none() {
                    parent[next.index()] = Some(n);
                    if next == a {
                        break 'search;
                    }
                    queue.push_back(next);
                }
            }
        }
        let mut path = vec![a];
        let mut at = a;
        while let Some(p) = parent[at.index()] {
            path.push(p);
            at = p;
        }
        debug_assert_eq!(at, b, "petgraph reported a cycle but no path b → a exists");
        path.reverse();
        path.push(b);
        path.into_iter()
            .map(|n| graph[n].name().to_owned())
            .collect()
    }
}

impl fmt::Display for PatchRouter {
    /// The patch as text, one node or route per line, for `slotpool check`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (_, node) in self.nodes() {
            writeln!(
                f,
                "node {}: {} in, {} out",
                node.name(),
                node.inputs(),
                node.outputs()
            )?;
        }
        for (from, to, route) in self.routes() {
            write!(
                f,
                "route {} → {}: gain {}, channels",
                from.name(),
                to.name(),
                route.gain
            )?;
            for link in &route.links {
                write!(f, " {}→{}", link.from, link.to)?;
                if link.weight != 1.0 {
                    write!(f, "×{}", link.weight)?;
                }
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

fn check_channels(name: &str, side: Side, channels: u16) -> Result<(), PatchError> {
    if channels > MAX_CHANNELS {
        return Err(PatchError::TooManyChannels {
            name: name.into(),
            side,
            channels,
        });
    }
    Ok(())
}

fn check_gain(from: &str, to: &str, gain: f32) -> Result<(), PatchError> {
    if !gain.is_finite() {
        return Err(PatchError::InvalidGain {
            from: from.into(),
            to: to.into(),
            gain,
        });
    }
    Ok(())
}

/// Resolves a channel map between `src`'s outputs and `dst`'s inputs into links.
fn resolve(
    from: &str,
    to: &str,
    src: &Node,
    dst: &Node,
    map: &ChannelMap,
) -> Result<Vec<Link>, PatchError> {
    let (n, m) = (src.outputs, dst.inputs);
    match map {
        ChannelMap::Auto => {
            let link = |from, to, weight| Link { from, to, weight };
            if n == 0 || m == 0 {
                Err(PatchError::ChannelMismatch {
                    from: from.into(),
                    to: to.into(),
                    from_channels: n,
                    to_channels: m,
                })
            } else if n == m {
                Ok((0..n).map(|c| link(c, c, 1.0)).collect())
            } else if n == 1 {
                Ok((0..m).map(|c| link(0, c, 1.0)).collect())
            } else if m == 1 {
                let weight = 1.0 / f32::from(n);
                Ok((0..n).map(|c| link(c, 0, weight)).collect())
            } else {
                Err(PatchError::ChannelMismatch {
                    from: from.into(),
                    to: to.into(),
                    from_channels: n,
                    to_channels: m,
                })
            }
        }
        ChannelMap::Pairs(pairs) => {
            if pairs.is_empty() {
                return Err(PatchError::EmptyChannelMap {
                    from: from.into(),
                    to: to.into(),
                });
            }
            let mut links = Vec::with_capacity(pairs.len());
            // One flag per (output, input) pair, to find a pair listed twice.
            let mut seen = vec![false; usize::from(n) * usize::from(m)];
            for &(out_ch, in_ch) in pairs {
                let out_of_range = |node: &str, side, channel, channels| {
                    Err(PatchError::ChannelOutOfRange {
                        from: from.into(),
                        to: to.into(),
                        node: node.into(),
                        side,
                        channel,
                        channels,
                    })
                };
                if out_ch >= n {
                    return out_of_range(from, Side::Output, out_ch, n);
                }
                if in_ch >= m {
                    return out_of_range(to, Side::Input, in_ch, m);
                }
                let pair = usize::from(out_ch) * usize::from(m) + usize::from(in_ch);
                if std::mem::replace(&mut seen[pair], true) {
                    return Err(PatchError::DuplicateChannelPair {
                        from: from.into(),
                        to: to.into(),
                        pair: (out_ch, in_ch),
                    });
                }
                links.push(Link {
                    from: out_ch,
                    to: in_ch,
                    weight: 1.0,
                });
            }
            Ok(links)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch() -> PatchRouter {
        let mut p = PatchRouter::new(2, 2).unwrap();
        p.add_slot("osc:0", 0, 1).unwrap();
        p.add_slot("fx:0", 2, 2).unwrap();
        p.add_slot("fx:1", 2, 2).unwrap();
        p
    }

    type Snapshot = (Vec<(NodeId, Node)>, Vec<(String, String, Route)>);

    /// Everything observable about a patch, to show a refused edit changed nothing.
    fn snapshot(p: &PatchRouter) -> Snapshot {
        let nodes = p.nodes().map(|(id, n)| (id, n.clone())).collect();
        let mut routes: Vec<_> = p
            .routes()
            .map(|(a, b, r)| (a.name().to_owned(), b.name().to_owned(), r.clone()))
            .collect();
        routes.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
        (nodes, routes)
    }

    #[test]
    fn router_and_plans_cross_threads() {
        fn send<T: Send>() {}
        fn sync<T: Sync>() {}
        send::<PatchRouter>();
        send::<Schedule>();
        sync::<Schedule>();
        send::<crate::Publisher>();
        send::<crate::Receiver>();
        send::<crate::Workspace>();
    }

    #[test]
    fn display_lists_nodes_and_routes() {
        let mut p = patch();
        p.connect("fx:0", "output", ChannelMap::Auto, 0.5).unwrap();
        p.add_slot("mono:0", 1, 1).unwrap();
        p.connect("fx:1", "mono:0", ChannelMap::Auto, 1.0).unwrap();
        let text = p.to_string();
        assert!(text.contains("node osc:0: 0 in, 1 out\n"), "{text}");
        assert!(text.contains("route fx:0 → output: gain 0.5, channels 0→0 1→1\n"));
        assert!(text.contains("route fx:1 → mono:0: gain 1, channels 0→0×0.5 1→0×0.5\n"));
    }

    #[test]
    fn a_clone_is_an_independent_patch() {
        let p = patch();
        let mut edited = p.clone();
        edited.remove_slot("fx:0").unwrap();
        edited
            .connect("osc:0", "fx:1", ChannelMap::Auto, 1.0)
            .unwrap();
        assert_eq!(p.slot_count(), 3);
        assert_eq!(p.route_count(), 0);
        assert_eq!(edited.slot_count(), 2);
    }

    #[test]
    fn device_nodes_have_fixed_ids_and_cannot_be_removed() {
        let mut p = patch();
        assert_eq!(p.node_id("input"), Some(NodeId::INPUT));
        assert_eq!(p.node_id("output"), Some(NodeId::OUTPUT));
        assert_eq!(
            p.remove_slot("input"),
            Err(PatchError::DeviceNode {
                name: "input".into()
            })
        );
        assert!(matches!(
            p.add_slot("output", 1, 1),
            Err(PatchError::DeviceNode { .. })
        ));
        assert_eq!((p.input_channels(), p.output_channels()), (2, 2));
    }

    #[test]
    fn add_slot_refuses_duplicates_and_oversized_nodes() {
        let mut p = patch();
        let before = snapshot(&p);
        assert_eq!(
            p.add_slot("osc:0", 0, 1),
            Err(PatchError::DuplicateNode {
                name: "osc:0".into()
            })
        );
        assert!(matches!(
            p.add_slot("big:0", MAX_CHANNELS + 1, 1),
            Err(PatchError::TooManyChannels {
                side: Side::Input,
                ..
            })
        ));
        assert!(matches!(
            p.add_slot("bad", 1, 1),
            Err(PatchError::InvalidName { .. })
        ));
        assert_eq!(snapshot(&p), before);
        assert!(PatchRouter::new(MAX_CHANNELS + 1, 2).is_err());
    }

    #[test]
    fn connect_validates_every_refusal_and_changes_nothing() {
        let mut p = patch();
        p.connect("osc:0", "fx:0", ChannelMap::Auto, 1.0).unwrap();
        p.connect("fx:0", "fx:1", ChannelMap::Auto, 1.0).unwrap();
        let before = snapshot(&p);
        let cases: Vec<(&str, &str, ChannelMap, f32, PatchError)> = vec![
            (
                "nope:0",
                "fx:0",
                ChannelMap::Auto,
                1.0,
                PatchError::UnknownNode {
                    name: "nope:0".into(),
                },
            ),
            (
                "fx:0",
                "fx:0",
                ChannelMap::Auto,
                1.0,
                PatchError::SelfLoop {
                    node: "fx:0".into(),
                },
            ),
            (
                "osc:0",
                "fx:0",
                ChannelMap::Auto,
                1.0,
                PatchError::DuplicateRoute {
                    from: "osc:0".into(),
                    to: "fx:0".into(),
                },
            ),
            (
                "osc:0",
                "fx:1",
                ChannelMap::Pairs(vec![(1, 0)]),
                1.0,
                PatchError::ChannelOutOfRange {
                    from: "osc:0".into(),
                    to: "fx:1".into(),
                    node: "osc:0".into(),
                    side: Side::Output,
                    channel: 1,
                    channels: 1,
                },
            ),
            (
                "osc:0",
                "fx:1",
                ChannelMap::Pairs(vec![(0, 2)]),
                1.0,
                PatchError::ChannelOutOfRange {
                    from: "osc:0".into(),
                    to: "fx:1".into(),
                    node: "fx:1".into(),
                    side: Side::Input,
                    channel: 2,
                    channels: 2,
                },
            ),
            (
                "osc:0",
                "fx:1",
                ChannelMap::Pairs(vec![(0, 1), (0, 1)]),
                1.0,
                PatchError::DuplicateChannelPair {
                    from: "osc:0".into(),
                    to: "fx:1".into(),
                    pair: (0, 1),
                },
            ),
            (
                "osc:0",
                "fx:1",
                ChannelMap::Pairs(vec![]),
                1.0,
                PatchError::EmptyChannelMap {
                    from: "osc:0".into(),
                    to: "fx:1".into(),
                },
            ),
            (
                "fx:1",
                "input",
                ChannelMap::Auto,
                1.0,
                PatchError::ChannelMismatch {
                    from: "fx:1".into(),
                    to: "input".into(),
                    from_channels: 2,
                    to_channels: 0,
                },
            ),
            (
                "input",
                "osc:0",
                ChannelMap::Pairs(vec![(0, 0)]),
                1.0,
                PatchError::ChannelOutOfRange {
                    from: "input".into(),
                    to: "osc:0".into(),
                    node: "osc:0".into(),
                    side: Side::Input,
                    channel: 0,
                    channels: 0,
                },
            ),
            (
                "osc:0",
                "fx:1",
                ChannelMap::Auto,
                f32::NAN,
                PatchError::InvalidGain {
                    from: "osc:0".into(),
                    to: "fx:1".into(),
                    gain: f32::NAN,
                },
            ),
        ];
        for (from, to, map, gain, want) in cases {
            let got = p.connect(from, to, map, gain).unwrap_err();
            // NaN != NaN: compare the messages, which carry every field.
            assert_eq!(got.to_string(), want.to_string());
            assert_eq!(snapshot(&p), before, "{from} → {to} changed the patch");
        }
    }

    #[test]
    fn cycle_error_names_the_whole_cycle() {
        let mut p = patch();
        p.add_slot("mix:0", 2, 2).unwrap();
        p.connect("fx:0", "fx:1", ChannelMap::Auto, 1.0).unwrap();
        p.connect("fx:1", "mix:0", ChannelMap::Auto, 1.0).unwrap();
        let before = snapshot(&p);
        let err = p
            .connect("mix:0", "fx:0", ChannelMap::Auto, 1.0)
            .unwrap_err();
        assert_eq!(
            err,
            PatchError::Cycle {
                from: "mix:0".into(),
                to: "fx:0".into(),
                cycle: ["fx:0", "fx:1", "mix:0", "fx:0"].map(String::from).to_vec(),
            }
        );
        assert_eq!(snapshot(&p), before);
        // The order petgraph keeps is intact: a legal edge still goes in.
        p.connect("fx:0", "mix:0", ChannelMap::Auto, 1.0).unwrap();
    }

    #[test]
    fn auto_map_follows_the_mono_stereo_rule() {
        let mut p = patch();
        p.add_slot("mono:0", 1, 1).unwrap();
        p.add_slot("quad:0", 4, 4).unwrap();
        p.connect("osc:0", "fx:0", ChannelMap::Auto, 1.0).unwrap();
        p.connect("fx:0", "mono:0", ChannelMap::Auto, 1.0).unwrap();
        p.connect("fx:0", "fx:1", ChannelMap::Auto, 1.0).unwrap();
        let link = |from, to, weight| Link { from, to, weight };
        let mono_to_stereo = p.route("osc:0", "fx:0").unwrap().links();
        assert_eq!(mono_to_stereo, [link(0, 0, 1.0), link(0, 1, 1.0)]);
        let stereo_to_mono = p.route("fx:0", "mono:0").unwrap().links();
        assert_eq!(stereo_to_mono, [link(0, 0, 0.5), link(1, 0, 0.5)]);
        let same = p.route("fx:0", "fx:1").unwrap().links();
        assert_eq!(same, [link(0, 0, 1.0), link(1, 1, 1.0)]);
        assert!(matches!(
            p.connect("fx:1", "quad:0", ChannelMap::Auto, 1.0),
            Err(PatchError::ChannelMismatch {
                from_channels: 2,
                to_channels: 4,
                ..
            })
        ));
    }

    #[test]
    fn remove_slot_removes_its_routes_and_frees_its_name() {
        let mut p = patch();
        p.connect("osc:0", "fx:0", ChannelMap::Auto, 1.0).unwrap();
        p.connect("fx:0", "output", ChannelMap::Auto, 1.0).unwrap();
        p.connect("input", "fx:1", ChannelMap::Auto, 1.0).unwrap();
        p.remove_slot("fx:0").unwrap();
        assert_eq!(p.route_count(), 1);
        assert!(p.route("osc:0", "fx:0").is_none());
        assert_eq!(
            p.remove_slot("fx:0"),
            Err(PatchError::UnknownNode {
                name: "fx:0".into()
            })
        );
        p.add_slot("fx:0", 1, 1).unwrap();
        assert_eq!(p.node(p.node_id("fx:0").unwrap()).unwrap().inputs(), 1);
        assert_eq!(p.slot_count(), 3);
    }

    #[test]
    fn disconnect_and_set_gain_need_an_existing_route() {
        let mut p = patch();
        p.connect("osc:0", "fx:0", ChannelMap::Auto, 1.0).unwrap();
        p.set_gain("osc:0", "fx:0", 0.25).unwrap();
        assert_eq!(p.route("osc:0", "fx:0").unwrap().gain(), 0.25);
        assert!(matches!(
            p.set_gain("osc:0", "fx:0", f32::INFINITY),
            Err(PatchError::InvalidGain { .. })
        ));
        assert_eq!(p.route("osc:0", "fx:0").unwrap().gain(), 0.25);
        assert_eq!(
            p.set_gain("fx:0", "osc:0", 1.0),
            Err(PatchError::UnknownRoute {
                from: "fx:0".into(),
                to: "osc:0".into()
            })
        );
        p.disconnect("osc:0", "fx:0").unwrap();
        assert!(matches!(
            p.disconnect("osc:0", "fx:0"),
            Err(PatchError::UnknownRoute { .. })
        ));
        assert!(matches!(
            p.disconnect("osc:0", "gone:1"),
            Err(PatchError::UnknownNode { .. })
        ));
        assert_eq!(p.route_count(), 0);
    }
}
