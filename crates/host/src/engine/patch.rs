//! From a [`Config`] to what the engine runs: the [`PatchRouter`] (device channels,
//! one node per slot instance, the routes) and a [`SlotSpec`] per slot instance.

use slotpool_router::{ChannelMap, PatchError, PatchRouter};
use slotpool_worker::modules::{ModuleError, ModuleSpec};

use super::slot::SlotSpec;
use crate::config::{Config, Launch, ProgramConfig};

/// Why a config could not be turned into a patch.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The router refused a slot or route.
    #[error("{place}: {error}")]
    Patch {
        /// What the router said.
        error: PatchError,
        /// Which part of the config.
        place: String,
    },
    /// A module or its parameters are unknown to the registry.
    #[error("program {program}: {error}")]
    Module {
        /// The program.
        program: String,
        /// What is wrong.
        error: ModuleError,
    },
}

/// The text a parameter value is handed to a worker as (`--param k=TEXT`); the
/// reference renderer parses the very same text, so both get the same `f32`.
pub fn param_text(v: f64) -> String {
    format!("{v}")
}

/// The module spec of a built-in-module program (`None` for custom workers and plain
/// programs), parameters applied from their text form exactly as the worker does.
///
/// # Errors
/// Unknown module or parameter.
pub fn module_spec(p: &ProgramConfig) -> Result<Option<ModuleSpec>, BuildError> {
    let (Launch::Module(module), Some(slot)) = (&p.launch, &p.slot) else {
        return Ok(None);
    };
    ModuleSpec::parse(
        module,
        slot.params
            .iter()
            .map(|(k, v)| (k.as_str(), param_text(*v))),
    )
    .map(Some)
    .map_err(|error| BuildError::Module {
        program: p.name.clone(),
        error,
    })
}

/// The specs of every slot instance, in config order.
///
/// # Errors
/// See [`module_spec`].
pub fn slot_specs(config: &Config) -> Result<Vec<SlotSpec>, BuildError> {
    let mut specs = Vec::new();
    for p in &config.programs {
        let Some(slot) = &p.slot else { continue };
        let params: Vec<(u32, f32)> = match module_spec(p)? {
            Some(spec) => spec
                .values()
                .iter()
                .enumerate()
                .map(|(id, &v)| (id as u32, v))
                .collect(),
            None => Vec::new(),
        };
        for name in p.instance_names() {
            specs.push(SlotSpec {
                name,
                mode: slot.mode,
                fallback: slot.fallback,
                channels_in: config.engine.channels,
                channels_out: config.engine.channels,
                params: params.clone(),
            });
        }
    }
    Ok(specs)
}

/// The patch of `config`: device `channels` in and out, every slot instance with
/// `channels` in and out, every route.
///
/// # Errors
/// What the router refuses (a cycle, a channel out of range), naming the route.
pub fn build_patch(config: &Config) -> Result<PatchRouter, BuildError> {
    let ch = u16::try_from(config.engine.channels).unwrap_or(u16::MAX);
    let mut patch = PatchRouter::new(ch, ch).map_err(|e| BuildError::Patch {
        error: e,
        place: "[engine]".into(),
    })?;
    for spec in slot_specs(config)? {
        patch
            .add_slot(&spec.name, ch, ch)
            .map_err(|e| BuildError::Patch {
                error: e,
                place: format!("slot {}", spec.name),
            })?;
    }
    for r in &config.routes {
        let map = if r.channels.is_empty() {
            ChannelMap::Auto
        } else {
            ChannelMap::Pairs(
                r.channels
                    .iter()
                    .map(|&(a, b)| (a as u16, b as u16))
                    .collect(),
            )
        };
        let (from, to) = (r.from.to_string(), r.to.to_string());
        patch
            .connect(&from, &to, map, r.gain as f32)
            .map_err(|e| BuildError::Patch {
                error: e,
                place: format!("route {from} -> {to}"),
            })?;
    }
    Ok(patch)
}
