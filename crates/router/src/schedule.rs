//! [`Schedule`]: the immutable, flat plan compiled from the patch, and the compiler.
//!
//! # The plan
//! All audio of one cycle lives in a workspace of `lanes()` *lanes*, each lane one
//! channel of `block_frames` `f32` samples. A multi-channel buffer is a run of
//! adjacent lanes ([`Lanes`]), so a step's input and output are planar
//! (`channels × frames`) slices of the workspace.
//!
//! - The device input is copied into [`Schedule::device_input`] lanes first.
//! - Steps come in *levels*. Level `k` reads only lanes written before level `k`
//!   (device input and outputs of earlier levels), so the steps of one level are
//!   independent: an executor assembles and hands off all of them before it waits
//!   for any.
//! - A step's input is assembled channel by channel from its *mix*: for input
//!   channel `c`, the sum of `gain × lane` over its [`MixTerm`]s (no terms:
//!   silence). The slot then writes the step's output lanes.
//! - Finally the device output is mixed the same way from [`Schedule::output_mix`].
//!
//! # The buffer plan
//! Lanes are reused when lifetimes do not overlap. Time is counted in levels:
//! device input is written at time 0, the steps of level `k` run at time `k + 1`,
//! the device output is mixed after the last level. A step's input lanes live at
//! its own time only; its output lanes from its own time to the time of the last
//! step (or the device output) that reads them; device input lanes from 0 to their
//! last reader. Two buffers whose (closed) lifetimes overlap never share a lane.
//! Because a whole level is one time unit, the order in which an executor works
//! through the steps of a level (assemble, run, receive) does not matter: no lane
//! read or written at level `k` is written by anything else at level `k`.
//! Placement is greedy first-fit in order of start time (interval colouring, with
//! a buffer needing a contiguous run of lanes).

use std::fmt;
use std::iter::FusedIterator;
use std::ops::Range;

use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::{EdgeRef, IntoEdgeReferences, NodeIndexable};

use crate::name::{NodeKind, SlotName};
use crate::patch::{Graph, NodeId};

/// A run of adjacent lanes of the workspace: one planar multi-channel buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Lanes {
    start: u32,
    count: u32,
}

impl Lanes {
    /// The first lane.
    pub fn start(self) -> u32 {
        self.start
    }

    /// The number of lanes (channels).
    pub fn count(self) -> u32 {
        self.count
    }

    /// The lanes as an index range.
    pub fn range(self) -> Range<usize> {
        self.start as usize..(self.start + self.count) as usize
    }
}

/// One term of a channel's mix: add `gain × lane src`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MixTerm {
    src: u32,
    gain: f32,
}

impl MixTerm {
    /// The lane read.
    pub fn src(self) -> u32 {
        self.src
    }

    /// The factor: the route's gain times the channel map's weight.
    pub fn gain(self) -> f32 {
        self.gain
    }
}

/// A half-open range into one of the schedule's flat tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// One slot instance to run in a cycle.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    index: u32,
    level: u32,
    node: NodeId,
    name: SlotName,
    input: Lanes,
    output: Lanes,
    /// Into `Schedule::channel_mixes`, one entry per input channel.
    mix: Span,
}

impl Step {
    /// The step's position in [`Schedule::steps`] (dense; for per-step tables).
    pub fn index(&self) -> usize {
        self.index as usize
    }

    /// The level the step belongs to.
    pub fn level(&self) -> usize {
        self.level as usize
    }

    /// The slot's node id (dense; for the executor's slot table).
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The slot's name, `<program>:<index>`.
    pub fn name(&self) -> &SlotName {
        &self.name
    }

    /// The lanes of the step's planar input (one per input channel).
    pub fn input(&self) -> Lanes {
        self.input
    }

    /// The lanes of the step's planar output (one per output channel).
    pub fn output(&self) -> Lanes {
        self.output
    }
}

/// The immutable plan of one patch: steps in levels, a buffer plan, mixes.
///
/// Compiled by [`PatchRouter::compile`](crate::PatchRouter::compile) on the control
/// thread; read-only afterwards, so the audio thread only ever reads it. See the
/// [module documentation](self) for the execution contract and
/// [`execute`](crate::execute) for the reference executor.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    input_channels: u16,
    output_channels: u16,
    lanes: u32,
    node_bound: u32,
    device_input: Lanes,
    steps: Vec<Step>,
    /// `steps[level_ends[k - 1]..level_ends[k]]` is level `k`.
    level_ends: Vec<u32>,
    /// One entry per destination channel: a span of `terms`.
    channel_mixes: Vec<Span>,
    terms: Vec<MixTerm>,
    /// Into `channel_mixes`, one entry per device output channel.
    output_mix: Span,
    /// Node index → step index, `u32::MAX` for nodes without a step.
    step_of_node: Vec<u32>,
}

impl Schedule {
    /// The device's capture channel count (lanes of [`Schedule::device_input`]
    /// when it is read at all).
    pub fn input_channels(&self) -> u16 {
        self.input_channels
    }

    /// The device's playback channel count.
    pub fn output_channels(&self) -> u16 {
        self.output_channels
    }

    /// The number of lanes a workspace needs.
    pub fn lanes(&self) -> u32 {
        self.lanes
    }

    /// Every node id of the patch is below this (size of an id-indexed table).
    pub fn node_bound(&self) -> usize {
        self.node_bound as usize
    }

    /// Where the device input is copied at the start of a cycle: `input_channels()`
    /// lanes, or none when no route reads the device input.
    pub fn device_input(&self) -> Lanes {
        self.device_input
    }

    /// All steps in a topological order, level by level.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The number of levels.
    pub fn level_count(&self) -> usize {
        self.level_ends.len()
    }

    /// The steps of level `k` (mutually independent).
    ///
    /// # Panics
    /// If `k >= level_count()`.
    pub fn level(&self, k: usize) -> &[Step] {
        let start = if k == 0 { 0 } else { self.level_ends[k - 1] };
        &self.steps[start as usize..self.level_ends[k] as usize]
    }

    /// The levels in order, each a slice of mutually independent steps.
    pub fn levels(&self) -> Levels<'_> {
        Levels {
            steps: &self.steps,
            ends: &self.level_ends,
            start: 0,
        }
    }

    /// The mix of `step`'s input, one item per input channel (channel `c` is lane
    /// `step.input().start() + c`). `step` must come from this schedule.
    pub fn input_mix(&self, step: &Step) -> Mix<'_> {
        self.mix(step.mix)
    }

    /// The mix of the device output, one item per output channel.
    pub fn output_mix(&self) -> Mix<'_> {
        self.mix(self.output_mix)
    }

    /// The step that runs node `node`, if it is a slot of this schedule.
    pub fn step_of(&self, node: NodeId) -> Option<&Step> {
        let index = *self.step_of_node.get(node.index())?;
        self.steps.get(index as usize)
    }

    fn mix(&self, span: Span) -> Mix<'_> {
        Mix {
            channels: self.channel_mixes[span.range()].iter(),
            terms: &self.terms,
        }
    }
}

/// The levels of a schedule, in order. Yields `&[Step]`.
#[derive(Clone, Debug)]
pub struct Levels<'a> {
    steps: &'a [Step],
    ends: &'a [u32],
    start: u32,
}

impl<'a> Iterator for Levels<'a> {
    type Item = &'a [Step];

    fn next(&mut self) -> Option<Self::Item> {
        let (&end, rest) = self.ends.split_first()?;
        let level = &self.steps[self.start as usize..end as usize];
        self.ends = rest;
        self.start = end;
        Some(level)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.ends.len(), Some(self.ends.len()))
    }
}

impl ExactSizeIterator for Levels<'_> {}
impl FusedIterator for Levels<'_> {}

/// The mix of a planar destination, channel by channel. Yields the terms of each
/// channel as `&[MixTerm]` (empty: the channel is silent).
#[derive(Clone, Debug)]
pub struct Mix<'a> {
    channels: std::slice::Iter<'a, Span>,
    terms: &'a [MixTerm],
}

impl<'a> Iterator for Mix<'a> {
    type Item = &'a [MixTerm];

    fn next(&mut self) -> Option<Self::Item> {
        let span = self.channels.next()?;
        Some(&self.terms[span.range()])
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.channels.size_hint()
    }
}

impl ExactSizeIterator for Mix<'_> {}
impl FusedIterator for Mix<'_> {}

impl fmt::Display for Schedule {
    /// A readable dump of the plan, one step per line, for `slotpool check`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let term_list = |f: &mut fmt::Formatter<'_>, mix: Mix<'_>| -> fmt::Result {
            for (c, terms) in mix.enumerate() {
                write!(f, " [{c}:")?;
                if terms.is_empty() {
                    f.write_str(" silence")?;
                }
                for (i, t) in terms.iter().enumerate() {
                    let sep = if i == 0 { " " } else { " + " };
                    write!(f, "{sep}{}×L{}", t.gain, t.src)?;
                }
                f.write_str("]")?;
            }
            Ok(())
        };
        writeln!(
            f,
            "schedule: {} steps in {} levels, {} lanes; device input → L{:?}",
            self.steps.len(),
            self.level_count(),
            self.lanes,
            self.device_input.range()
        )?;
        for (k, level) in self.levels().enumerate() {
            writeln!(f, "level {k}:")?;
            for step in level {
                write!(
                    f,
                    "  {} in L{:?} out L{:?} mix",
                    step.name,
                    step.input.range(),
                    step.output.range()
                )?;
                term_list(f, self.input_mix(step))?;
                writeln!(f)?;
            }
        }
        f.write_str("output mix")?;
        term_list(f, self.output_mix())?;
        writeln!(f)
    }
}

/// Compiles the graph. Linear in nodes and links, plus the lane search (nodes ×
/// lanes in the worst case).
pub(crate) fn compile(graph: &Graph) -> Schedule {
    let inner = graph.inner();
    let bound = inner.node_bound();
    let input = NodeIndex::new(NodeId::INPUT.index());
    let output = NodeIndex::new(NodeId::OUTPUT.index());
    let input_channels = graph[input].outputs();
    let output_channels = graph[output].inputs();

    // Time of each producer: device input 0, a slot one after its latest producer.
    // `nodes_iter` walks petgraph's maintained topological order.
    let mut time = vec![0u32; bound];
    let mut slots: Vec<NodeIndex<u32>> = Vec::with_capacity(bound);
    for n in graph.nodes_iter() {
        if n == input || n == output {
            continue;
        }
        let t = inner
            .neighbors_directed(n, Direction::Incoming)
            .map(|p| time[p.index()] + 1)
            .max()
            .unwrap_or(1);
        time[n.index()] = t;
        slots.push(n);
    }
    // Stable: within a level, steps keep petgraph's topological order.
    slots.sort_by_key(|n| time[n.index()]);
    let end_time = slots.last().map_or(1, |n| time[n.index()] + 1);

    // Last time each producer's output is read.
    let mut last_read = vec![0u32; bound];
    let mut input_read = false;
    for e in inner.edge_references() {
        let (src, dst) = (e.source(), e.target());
        let t = if dst == output {
            end_time
        } else {
            time[dst.index()]
        };
        last_read[src.index()] = last_read[src.index()].max(t);
        input_read |= src == input;
    }

    // Buffer plan, in order of start time: device input, then level by level.
    let mut plan = LanePlan::default();
    let device_input = if input_read {
        plan.place(0, last_read[input.index()], u32::from(input_channels))
    } else {
        Lanes::default()
    };
    let mut step_of_node = vec![u32::MAX; bound];
    let mut steps = Vec::with_capacity(slots.len());
    let mut level_ends = Vec::new();
    for (i, &n) in slots.iter().enumerate() {
        let node = &graph[n];
        let NodeKind::Slot(name) = node.kind() else {
            unreachable!("only slots are scheduled")
        };
        let t = time[n.index()];
        let input = plan.place(t, t, u32::from(node.inputs()));
        let output = plan.place(t, last_read[n.index()].max(t), u32::from(node.outputs()));
        let level = t - 1;
        if level as usize == level_ends.len() {
            level_ends.push(i as u32);
        }
        level_ends[level as usize] = i as u32 + 1;
        step_of_node[n.index()] = i as u32;
        steps.push(Step {
            index: i as u32,
            level,
            node: NodeId::from_graph(n),
            name: name.clone(),
            input,
            output,
            mix: Span { start: 0, end: 0 },
        });
    }

    // Mixes, one per destination channel, terms in a canonical order (by source
    // step, then source channel) so the summation order does not depend on the
    // order the routes were made in.
    let mut mixer = Mixer {
        channel_mixes: Vec::new(),
        terms: Vec::new(),
        scratch: Vec::new(),
    };
    let source = |src: NodeIndex<u32>| -> (u32, Lanes) {
        if src == input {
            (0, device_input)
        } else {
            let i = step_of_node[src.index()];
            (i + 1, steps[i as usize].output)
        }
    };
    let mut mixes = Vec::with_capacity(steps.len());
    for step in &steps {
        let n = NodeIndex::new(step.node.index());
        mixes.push(mixer.mix(graph, n, graph[n].inputs(), source));
    }
    let output_mix = mixer.mix(graph, output, output_channels, source);
    for (step, mix) in steps.iter_mut().zip(mixes) {
        step.mix = mix;
    }

    Schedule {
        input_channels,
        output_channels,
        lanes: plan.lanes(),
        node_bound: bound as u32,
        device_input,
        steps,
        level_ends,
        channel_mixes: mixer.channel_mixes,
        terms: mixer.terms,
        output_mix,
        step_of_node,
    }
}

/// Builds the flat mix tables.
struct Mixer {
    channel_mixes: Vec<Span>,
    terms: Vec<MixTerm>,
    /// (destination channel, source order, source channel, term), reused.
    scratch: Vec<(u16, u32, u16, MixTerm)>,
}

impl Mixer {
    /// Appends the mixes of `dst`'s `channels` input channels; returns their span.
    fn mix(
        &mut self,
        graph: &Graph,
        dst: NodeIndex<u32>,
        channels: u16,
        source: impl Fn(NodeIndex<u32>) -> (u32, Lanes),
    ) -> Span {
        self.scratch.clear();
        for e in graph.inner().edges_directed(dst, Direction::Incoming) {
            let (order, lanes) = source(e.source());
            let route = e.weight();
            for link in route.links() {
                let term = MixTerm {
                    src: lanes.start + u32::from(link.from),
                    gain: route.gain() * link.weight,
                };
                self.scratch.push((link.to, order, link.from, term));
            }
        }
        self.scratch
            .sort_unstable_by_key(|&(to, order, from, _)| (to, order, from));
        let start = self.channel_mixes.len() as u32;
        let mut scratch = self.scratch.iter().peekable();
        for c in 0..channels {
            let first = self.terms.len() as u32;
            while let Some(&(_, _, _, term)) = scratch.next_if(|entry| entry.0 == c) {
                self.terms.push(term);
            }
            self.channel_mixes.push(Span {
                start: first,
                end: self.terms.len() as u32,
            });
        }
        debug_assert!(scratch.next().is_none(), "a link names a missing channel");
        Span {
            start,
            end: self.channel_mixes.len() as u32,
        }
    }
}

/// Greedy first-fit lane placement in order of start time.
#[derive(Default)]
struct LanePlan {
    /// For each lane, the first time at which it is free again.
    free_from: Vec<u32>,
}

impl LanePlan {
    /// Places a buffer of `width` lanes living over the closed interval
    /// `[start, end]`. Calls must come in non-decreasing `start` order.
    fn place(&mut self, start: u32, end: u32, width: u32) -> Lanes {
        debug_assert!(start <= end);
        if width == 0 {
            return Lanes::default();
        }
        let width = width as usize;
        // Lowest run of `width` lanes all free at `start`; lanes past the end are free.
        let mut run = 0;
        let mut at = self.free_from.len();
        for (lane, &free) in self.free_from.iter().enumerate() {
            if free <= start {
                run += 1;
                if run == width {
                    at = lane + 1 - width;
                    break;
                }
            } else {
                run = 0;
            }
        }
        if run < width {
            at = self.free_from.len() - run;
        }
        if self.free_from.len() < at + width {
            self.free_from.resize(at + width, 0);
        }
        self.free_from[at..at + width].fill(end + 1);
        Lanes {
            start: at as u32,
            count: width as u32,
        }
    }

    fn lanes(&self) -> u32 {
        self.free_from.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChannelMap, PatchRouter};

    #[test]
    fn lane_plan_reuses_lanes_after_their_last_reader() {
        let mut plan = LanePlan::default();
        let a = plan.place(0, 1, 2);
        let b = plan.place(1, 1, 1);
        let c = plan.place(2, 3, 2);
        assert_eq!(a.range(), 0..2);
        assert_eq!(b.range(), 2..3, "overlaps a at time 1");
        assert_eq!(c.range(), 0..2, "a is dead at time 2");
        assert_eq!(plan.lanes(), 3);
    }

    #[test]
    fn lane_plan_needs_contiguous_runs() {
        let mut plan = LanePlan::default();
        let a = plan.place(0, 0, 1);
        let b = plan.place(0, 5, 1);
        let c = plan.place(0, 0, 1);
        let d = plan.place(1, 1, 2);
        assert_eq!((a.start, b.start, c.start), (0, 1, 2));
        // Lanes 0 and 2 are free at time 1 but not adjacent; the run starts at 2.
        assert_eq!(d.range(), 2..4);
    }

    fn chain() -> PatchRouter {
        let mut p = PatchRouter::new(2, 2).unwrap();
        p.add_slot("osc:0", 0, 1).unwrap();
        p.add_slot("fx:0", 2, 2).unwrap();
        p.add_slot("fx:1", 2, 2).unwrap();
        p.connect("osc:0", "fx:0", ChannelMap::Auto, 1.0).unwrap();
        p.connect("input", "fx:1", ChannelMap::Auto, 0.5).unwrap();
        p.connect("fx:0", "output", ChannelMap::Auto, 1.0).unwrap();
        p.connect("fx:1", "output", ChannelMap::Auto, 1.0).unwrap();
        p
    }

    #[test]
    fn levels_group_independent_steps() {
        let s = chain().compile();
        let names: Vec<Vec<&str>> = s
            .levels()
            .map(|l| l.iter().map(|st| st.name().as_str()).collect())
            .collect();
        assert_eq!(names.len(), 2);
        assert!(names[0].contains(&"osc:0") && names[0].contains(&"fx:1"));
        assert_eq!(names[1], ["fx:0"]);
        for (i, step) in s.steps().iter().enumerate() {
            assert_eq!(step.index(), i);
            assert_eq!(s.step_of(step.node()), Some(step));
        }
    }

    #[test]
    fn mono_feeds_both_sides_and_output_sums_fan_in() {
        let s = chain().compile();
        let osc = s.steps().iter().find(|st| st.name().as_str() == "osc:0");
        let fx0 = s.steps().iter().find(|st| st.name().as_str() == "fx:0");
        let (osc, fx0) = (osc.unwrap(), fx0.unwrap());
        let mix: Vec<_> = s.input_mix(fx0).collect();
        let osc_lane = osc.output().start();
        assert_eq!(
            mix,
            [[MixTerm {
                src: osc_lane,
                gain: 1.0
            }]; 2]
        );
        let out: Vec<usize> = s.output_mix().map(<[MixTerm]>::len).collect();
        assert_eq!(out, [2, 2], "fx:0 and fx:1 both reach each output channel");
    }

    #[test]
    fn stereo_to_mono_averages() {
        let mut p = PatchRouter::new(2, 1).unwrap();
        p.connect("input", "output", ChannelMap::Auto, 1.0).unwrap();
        let s = p.compile();
        let mix: Vec<Vec<f32>> = s
            .output_mix()
            .map(|terms| terms.iter().map(|t| t.gain()).collect())
            .collect();
        assert_eq!(mix, [[0.5, 0.5]]);
        assert_eq!(s.device_input().count(), 2);
    }

    #[test]
    fn unread_device_input_gets_no_lanes() {
        let s = PatchRouter::new(2, 2).unwrap().compile();
        assert_eq!(s.device_input(), Lanes::default());
        assert_eq!(s.lanes(), 0);
        assert_eq!(s.level_count(), 0);
        assert!(s.output_mix().all(<[MixTerm]>::is_empty));
    }

    #[test]
    fn display_lists_every_step() {
        let text = chain().compile().to_string();
        for needle in ["osc:0", "fx:0", "fx:1", "level 1:", "output mix"] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }
}
