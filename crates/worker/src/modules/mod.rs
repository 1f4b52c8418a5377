//! The built-in DSP modules and their registry.
//!
//! Every module is a plain library object implementing [`Processor`]; the `slotpool-worker`
//! binary runs one of them in a worker process, and the host's in-process reference renderer
//! builds the very same objects through this registry:
//!
//! ```
//! use slotpool_worker::modules::ModuleSpec;
//!
//! // what `slotpool-worker --module biquad --param mode=highpass --param freq=200` builds
//! let spec = ModuleSpec::parse("biquad", [("mode", "highpass"), ("freq", "200")])?;
//! let processor = spec.build()?;          // Box<dyn Processor>, parameters applied
//! assert_eq!(processor.params()[1].name, "freq");
//! // the arguments that make a worker build the same thing
//! assert_eq!(
//!     spec.to_cli_args(),
//!     ["--module", "biquad", "--param", "mode=1", "--param", "freq=200"]
//! );
//! # Ok::<(), slotpool_worker::modules::ModuleError>(())
//! ```
//!
//! Parameter ids: a module's parameters are numbered 0, 1, 2… in the order of its table
//! ([`ModuleInfo::params`]); that is the `id` of `Command::SetParam` and `Event::Param`.

pub mod biquad;
pub mod delay;
pub mod gain;
pub mod noise;
pub mod passthrough;
pub mod sine;
pub mod wavplay;

use std::path::Path;

use crate::processor::{ParamSpec, Processor};

/// A construction-time setting that is not a numeric parameter (a file path, say). It is
/// given once, as `--param name=value`, and cannot change by command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettingSpec {
    /// Name on the command line and in configs.
    pub name: &'static str,
    /// Whether the module refuses to build without it.
    pub required: bool,
    /// One line for `--help` and error messages.
    pub help: &'static str,
}

/// One entry of the registry.
#[derive(Clone, Copy)]
pub struct ModuleInfo {
    /// Name given to `--module`.
    pub name: &'static str,
    /// One line for `--list-modules`.
    pub summary: &'static str,
    /// Numeric parameters; entry `i` has id `i`.
    pub params: &'static [ParamSpec],
    /// Construction-time settings.
    pub settings: &'static [SettingSpec],
    build: fn(&ModuleSpec) -> Result<Box<dyn Processor>, ModuleError>,
}

impl std::fmt::Debug for ModuleInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleInfo")
            .field("name", &self.name)
            .field("params", &self.params)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ModuleInfo {
    /// The parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&'static ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }
}

const WAV_SETTINGS: &[SettingSpec] = &[SettingSpec {
    name: "file",
    required: true,
    help: "path of the WAV file to play",
}];

static MODULES: &[ModuleInfo] = &[
    ModuleInfo {
        name: "sine",
        summary: "sine oscillator (ignores its input)",
        params: sine::PARAMS,
        settings: &[],
        build: |_| Ok(Box::new(sine::Sine::new())),
    },
    ModuleInfo {
        name: "noise",
        summary: "deterministic white noise, one seeded stream per channel (ignores its input)",
        params: noise::PARAMS,
        settings: &[],
        build: |_| Ok(Box::new(noise::Noise::new())),
    },
    ModuleInfo {
        name: "gain",
        summary: "gain in dB",
        params: gain::PARAMS,
        settings: &[],
        build: |_| Ok(Box::new(gain::Gain::new())),
    },
    ModuleInfo {
        name: "biquad",
        summary: "RBJ biquad filter: lowpass, highpass, bandpass, peak",
        params: biquad::PARAMS,
        settings: &[],
        build: |_| Ok(Box::new(biquad::Biquad::new())),
    },
    ModuleInfo {
        name: "delay",
        summary: "feedback delay with dry/wet mix (up to 2 s)",
        params: delay::PARAMS,
        settings: &[],
        build: |_| Ok(Box::new(delay::Delay::new())),
    },
    ModuleInfo {
        name: "passthrough",
        summary: "output = input",
        params: passthrough::PARAMS,
        settings: &[],
        build: |_| Ok(Box::new(passthrough::Passthrough)),
    },
    ModuleInfo {
        name: "wavplay",
        summary: "plays a WAV file, looped or once (ignores its input)",
        params: wavplay::PARAMS,
        settings: WAV_SETTINGS,
        build: |spec| {
            let file = spec.setting("file").ok_or(ModuleError::MissingSetting {
                module: "wavplay",
                key: "file",
            })?;
            let player =
                wavplay::WavPlay::open(Path::new(file)).map_err(|e| ModuleError::Load {
                    module: "wavplay",
                    reason: e.to_string(),
                })?;
            Ok(Box::new(player))
        },
    },
];

/// Every built-in module.
pub fn modules() -> &'static [ModuleInfo] {
    MODULES
}

/// The built-in module called `name`.
pub fn find(name: &str) -> Option<&'static ModuleInfo> {
    MODULES.iter().find(|m| m.name == name)
}

fn module_names() -> String {
    MODULES
        .iter()
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a module could not be built. Messages say what was wrong and what is accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModuleError {
    /// No module has this name.
    #[error("unknown module `{name}`; built-in modules are: {known}")]
    UnknownModule {
        /// The name asked for.
        name: String,
        /// The names there are.
        known: String,
    },
    /// The module has no parameter or setting of this name.
    #[error("module `{module}` has no parameter `{key}`; it accepts: {known}")]
    UnknownKey {
        /// Module name.
        module: &'static str,
        /// The key given.
        key: String,
        /// Its parameters and settings.
        known: String,
    },
    /// A `--param` argument without `=`.
    #[error("`{0}` is not KEY=VALUE (e.g. --param freq=440)")]
    NotKeyValue(String),
    /// The value is not acceptable for the parameter.
    #[error("module `{module}`: {reason}")]
    BadValue {
        /// Module name.
        module: &'static str,
        /// What was wrong, naming key, value and accepted range.
        reason: String,
    },
    /// A required setting was not given.
    #[error("module `{module}` needs `--param {key}=...`")]
    MissingSetting {
        /// Module name.
        module: &'static str,
        /// The setting.
        key: &'static str,
    },
    /// Building the module failed (a file could not be read, say).
    #[error("module `{module}`: {reason}")]
    Load {
        /// Module name.
        module: &'static str,
        /// What failed, naming the file.
        reason: String,
    },
}

/// A validated description of one module instance: which module, every parameter's value
/// (defaults filled in) and its settings. Cheap to clone; [`ModuleSpec::build`] makes the
/// processor.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleSpec {
    info: &'static ModuleInfo,
    values: Vec<f32>,
    /// Parameters given explicitly, in the order given (for `to_cli_args`).
    explicit: Vec<u32>,
    settings: Vec<(&'static str, String)>,
}

impl PartialEq for ModuleInfo {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl ModuleSpec {
    /// The module `name` at its default parameters.
    pub fn new(name: &str) -> Result<Self, ModuleError> {
        let info = find(name).ok_or_else(|| ModuleError::UnknownModule {
            name: name.to_string(),
            known: module_names(),
        })?;
        Ok(Self {
            info,
            values: info.params.iter().map(|p| p.default).collect(),
            explicit: Vec::new(),
            settings: Vec::new(),
        })
    }

    /// The module `name` with `key=value` pairs applied in order (later ones win).
    pub fn parse<K, V>(
        name: &str,
        args: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ModuleError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut spec = Self::new(name)?;
        for (k, v) in args {
            spec.set(k.as_ref(), v.as_ref())?;
        }
        Ok(spec)
    }

    /// Like [`ModuleSpec::parse`] with `"key=value"` strings (as `--param` takes them).
    pub fn parse_assignments<S: AsRef<str>>(
        name: &str,
        assignments: impl IntoIterator<Item = S>,
    ) -> Result<Self, ModuleError> {
        let mut spec = Self::new(name)?;
        for a in assignments {
            let a = a.as_ref();
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| ModuleError::NotKeyValue(a.to_string()))?;
            spec.set(k.trim(), v)?;
        }
        Ok(spec)
    }

    /// Sets a parameter (from its text form) or a setting.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ModuleError> {
        if let Some(p) = self.info.param(key) {
            let v = p
                .parse_value(value)
                .map_err(|reason| ModuleError::BadValue {
                    module: self.info.name,
                    reason,
                })?;
            self.set_id(p.id, v);
            return Ok(());
        }
        if let Some(s) = self.info.settings.iter().find(|s| s.name == key) {
            self.settings.retain(|(k, _)| *k != s.name);
            self.settings.push((s.name, value.to_string()));
            return Ok(());
        }
        Err(ModuleError::UnknownKey {
            module: self.info.name,
            key: key.to_string(),
            known: self
                .info
                .params
                .iter()
                .map(|p| p.name)
                .chain(self.info.settings.iter().map(|s| s.name))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Sets a parameter by name to a number (clamped and rounded as on the wire).
    pub fn set_value(&mut self, key: &str, value: f32) -> Result<(), ModuleError> {
        let p = self
            .info
            .param(key)
            .ok_or_else(|| ModuleError::UnknownKey {
                module: self.info.name,
                key: key.to_string(),
                known: self
                    .info
                    .params
                    .iter()
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let v = p.sanitize(value).map_err(|e| ModuleError::BadValue {
            module: self.info.name,
            reason: format!("{}: {e}", p.name),
        })?;
        self.set_id(p.id, v);
        Ok(())
    }

    fn set_id(&mut self, id: u32, value: f32) {
        self.values[id as usize] = value;
        self.explicit.retain(|&i| i != id);
        self.explicit.push(id);
    }

    /// The registry entry.
    pub fn info(&self) -> &'static ModuleInfo {
        self.info
    }

    /// Module name.
    pub fn name(&self) -> &'static str {
        self.info.name
    }

    /// Every parameter's value, indexed by id.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// A setting's value, if given.
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Builds the processor with every parameter applied at once (no glide). Not yet
    /// prepared. Off the real-time path: may read files and allocate.
    pub fn build(&self) -> Result<Box<dyn Processor>, ModuleError> {
        for s in self.info.settings {
            if s.required && self.setting(s.name).is_none() {
                return Err(ModuleError::MissingSetting {
                    module: self.info.name,
                    key: s.name,
                });
            }
        }
        let mut processor = (self.info.build)(self)?;
        debug_assert_eq!(processor.params(), self.info.params);
        for (id, &v) in self.values.iter().enumerate() {
            processor.set_param(id as u32, v);
        }
        Ok(processor)
    }

    /// Command-line arguments for `slotpool-worker` that build the same module: every
    /// value round-trips exactly (Rust prints the shortest text that parses back to the
    /// same `f32`).
    pub fn to_cli_args(&self) -> Vec<String> {
        let mut args = vec!["--module".to_string(), self.info.name.to_string()];
        for &id in &self.explicit {
            let p = &self.info.params[id as usize];
            args.push("--param".to_string());
            args.push(format!("{}={}", p.name, self.values[id as usize]));
        }
        for (k, v) in &self.settings {
            args.push("--param".to_string());
            args.push(format!("{k}={v}"));
        }
        args
    }
}

#[cfg(test)]
mod tests;
