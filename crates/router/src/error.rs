//! The errors of patch editing. Every refused operation leaves the patch unchanged.

use std::error::Error;
use std::fmt;

/// Which side of a node a channel belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The node's output channels (what it produces; a route starts here).
    Output,
    /// The node's input channels (what it consumes; a route ends here).
    Input,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Output => "output",
            Self::Input => "input",
        })
    }
}

/// Why the [`PatchRouter`](crate::PatchRouter) refused an operation.
///
/// Node names are as the user writes them (`input`, `output`, `osc:0`); a route is
/// written `from → to`. Every message says what was wrong, where, and what to do.
#[derive(Clone, Debug, PartialEq)]
pub enum PatchError {
    /// A slot name is not of the form `<program>:<index>`.
    InvalidName {
        /// The text given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A node of this name exists already.
    DuplicateNode {
        /// The name.
        name: String,
    },
    /// No node of this name exists.
    UnknownNode {
        /// The name.
        name: String,
    },
    /// `input` and `output` are the device; they cannot be added or removed.
    DeviceNode {
        /// `input` or `output`.
        name: String,
    },
    /// A node was declared with more channels than [`MAX_CHANNELS`](crate::MAX_CHANNELS).
    TooManyChannels {
        /// The node.
        name: String,
        /// Which side.
        side: Side,
        /// The count asked for.
        channels: u16,
    },
    /// A channel map names a channel the node does not have.
    ChannelOutOfRange {
        /// The route's source.
        from: String,
        /// The route's destination.
        to: String,
        /// The node whose channel is missing (`from` for output channels, `to` for inputs).
        node: String,
        /// Which side of `node`.
        side: Side,
        /// The channel asked for (counted from 0).
        channel: u16,
        /// How many channels that side has.
        channels: u16,
    },
    /// The automatic channel map cannot join these channel counts.
    ChannelMismatch {
        /// The route's source.
        from: String,
        /// The route's destination.
        to: String,
        /// Output channels of `from`.
        from_channels: u16,
        /// Input channels of `to`.
        to_channels: u16,
    },
    /// An explicit channel map with no pairs.
    EmptyChannelMap {
        /// The route's source.
        from: String,
        /// The route's destination.
        to: String,
    },
    /// An explicit channel map lists the same pair twice.
    DuplicateChannelPair {
        /// The route's source.
        from: String,
        /// The route's destination.
        to: String,
        /// The pair, `(output channel of from, input channel of to)`.
        pair: (u16, u16),
    },
    /// A route between these two nodes exists already.
    DuplicateRoute {
        /// The route's source.
        from: String,
        /// The route's destination.
        to: String,
    },
    /// A route from a node to itself.
    SelfLoop {
        /// The node.
        node: String,
    },
    /// The route would close a cycle. `cycle` lists the nodes on it, starting and
    /// ending at `to`: the existing path `to → … → from` plus the new route.
    Cycle {
        /// The route's source.
        from: String,
        /// The route's destination.
        to: String,
        /// The nodes on the cycle, first and last equal to `to`.
        cycle: Vec<String>,
    },
    /// No route between these two nodes exists.
    UnknownRoute {
        /// The route's source.
        from: String,
        /// The route's destination.
        to: String,
    },
    /// A gain that is NaN or infinite.
    InvalidGain {
        /// The route's source.
        from: String,
        /// The route's destination.
        to: String,
        /// The value given.
        gain: f32,
    },
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidName { name, reason } => {
                write!(f, "invalid slot name {name:?}: {reason}")
            }
            Self::DuplicateNode { name } => write!(
                f,
                "slot {name} exists already; remove it first or pick another index"
            ),
            Self::UnknownNode { name } => write!(
                f,
                "there is no node {name:?}; nodes are input, output and the slots added \
                 as <program>:<index>"
            ),
            Self::DeviceNode { name } => write!(
                f,
                "{name} is the audio device, not a slot: it is always in the patch and \
                 cannot be added or removed"
            ),
            Self::TooManyChannels {
                name,
                side,
                channels,
            } => write!(
                f,
                "slot {name} asks for {channels} {side} channels; at most {} are supported",
                crate::MAX_CHANNELS
            ),
            Self::ChannelOutOfRange {
                from,
                to,
                node,
                side,
                channel,
                channels,
            } => {
                write!(
                    f,
                    "route {from} → {to}: {node} has no {side} channel {channel} "
                )?;
                match channels {
                    0 => write!(f, "(it has no {side} channels)"),
                    1 => write!(f, "(it has one {side} channel, 0)"),
                    n => write!(f, "(its {side} channels are 0 to {})", n - 1),
                }
            }
            Self::ChannelMismatch {
                from,
                to,
                from_channels,
                to_channels,
            } => {
                write!(f, "route {from} → {to}: ")?;
                if *from_channels == 0 {
                    write!(f, "{from} has no output channels")
                } else if *to_channels == 0 {
                    write!(f, "{to} has no input channels")
                } else {
                    write!(
                        f,
                        "{from} has {from_channels} output channels and {to} has \
                         {to_channels} input channels; the automatic map only joins equal \
                         counts, mono to many (copied) and many to mono (averaged), so give \
                         an explicit channel map"
                    )
                }
            }
            Self::EmptyChannelMap { from, to } => write!(
                f,
                "route {from} → {to}: the channel map is empty; list at least one \
                 (output, input) pair or use the automatic map"
            ),
            Self::DuplicateChannelPair { from, to, pair } => write!(
                f,
                "route {from} → {to}: the channel map lists {} → {} twice",
                pair.0, pair.1
            ),
            Self::DuplicateRoute { from, to } => write!(
                f,
                "a route {from} → {to} exists already; change its gain, or disconnect it \
                 before connecting it with another channel map"
            ),
            Self::SelfLoop { node } => write!(
                f,
                "route {node} → {node} would feed {node} into itself; a patch has no loops"
            ),
            Self::Cycle { from, to, cycle } => {
                write!(f, "route {from} → {to} would close the cycle ")?;
                for (i, node) in cycle.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" → ")?;
                    }
                    f.write_str(node)?;
                }
                f.write_str("; a patch has no loops, so remove one of these routes first")
            }
            Self::UnknownRoute { from, to } => write!(f, "there is no route {from} → {to}"),
            Self::InvalidGain { from, to, gain } => {
                write!(f, "route {from} → {to}: gain {gain} is not a finite number")
            }
        }
    }
}

impl Error for PatchError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycle_message_lists_the_nodes_in_order() {
        let err = PatchError::Cycle {
            from: "fx:0".into(),
            to: "osc:0".into(),
            cycle: vec!["osc:0".into(), "fx:0".into(), "osc:0".into()],
        };
        assert_eq!(
            err.to_string(),
            "route fx:0 → osc:0 would close the cycle osc:0 → fx:0 → osc:0; a patch has no \
             loops, so remove one of these routes first"
        );
    }

    #[test]
    fn channel_out_of_range_says_which_channels_exist() {
        let err = PatchError::ChannelOutOfRange {
            from: "osc:0".into(),
            to: "output".into(),
            node: "osc:0".into(),
            side: Side::Output,
            channel: 3,
            channels: 2,
        };
        assert_eq!(
            err.to_string(),
            "route osc:0 → output: osc:0 has no output channel 3 (its output channels are 0 to 1)"
        );
    }
}
