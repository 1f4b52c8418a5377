//! Node names: `input`, `output` and slot instances `<program>:<index>`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::PatchError;

/// The name of a slot instance, `<program>:<index>` (for example `osc:0`).
///
/// This is the one name a slot has in the config, the router, the control
/// interface and the logs (DESIGN.md §2). The program part is non-empty and holds
/// no `:`, whitespace or control characters; the index is a decimal `u32` written
/// without sign or leading zeros, so every slot has exactly one spelling.
///
/// Cloning is cheap (the text is shared), so schedules carry names without copying
/// strings.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotName {
    /// The whole name; `text[..colon]` is the program, `text[colon + 1..]` the index.
    text: Arc<str>,
    /// Byte offset of the `:` in `text`.
    colon: usize,
    /// The index, parsed once.
    index: u32,
}

impl SlotName {
    /// Parses and validates a slot name.
    ///
    /// # Errors
    /// [`PatchError::InvalidName`] naming what is wrong with `text`.
    pub fn new(text: &str) -> Result<Self, PatchError> {
        let invalid = |reason: &'static str| PatchError::InvalidName {
            name: text.to_owned(),
            reason,
        };
        let Some((program, index)) = text.split_once(':') else {
            return Err(invalid(
                "a slot is named <program>:<index>, for example osc:0",
            ));
        };
        if program.is_empty() {
            return Err(invalid("the program part before ':' is empty"));
        }
        if program.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                "the program part holds whitespace or a control character",
            ));
        }
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("the index after ':' is not a decimal number"));
        }
        if index.len() > 1 && index.starts_with('0') {
            return Err(invalid(
                "the index has a leading zero (write osc:1, not osc:01)",
            ));
        }
        let Ok(parsed) = index.parse::<u32>() else {
            return Err(invalid("the index does not fit in 32 bits"));
        };
        Ok(Self {
            text: Arc::from(text),
            colon: program.len(),
            index: parsed,
        })
    }

    /// The program part, before the `:`.
    pub fn program(&self) -> &str {
        &self.text[..self.colon]
    }

    /// The instance index, after the `:`.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The whole name, `<program>:<index>`.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for SlotName {
    type Err = PatchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for SlotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for SlotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SlotName({:?})", &*self.text)
    }
}

/// What a node of the patch is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NodeKind {
    /// The device input, named `input`: it has output channels only (the device's
    /// capture channels).
    Input,
    /// The device output, named `output`: it has input channels only (the device's
    /// playback channels).
    Output,
    /// A slot instance, named `<program>:<index>`.
    Slot(SlotName),
}

impl NodeKind {
    /// The node's name as the user writes it: `input`, `output` or `<program>:<index>`.
    pub fn name(&self) -> &str {
        match self {
            Self::Input => INPUT,
            Self::Output => OUTPUT,
            Self::Slot(name) => name.as_str(),
        }
    }
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name of the device input node.
pub const INPUT: &str = "input";
/// The name of the device output node.
pub const OUTPUT: &str = "output";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_name_splits_program_and_index() {
        let name = SlotName::new("reverb-2:17").unwrap();
        assert_eq!(name.program(), "reverb-2");
        assert_eq!(name.index(), 17);
        assert_eq!(name.as_str(), "reverb-2:17");
        assert_eq!(name.to_string(), "reverb-2:17");
    }

    #[test]
    fn slot_name_rejects_malformed_text() {
        for bad in [
            "osc",
            ":0",
            "osc:",
            "osc:-1",
            "osc:+1",
            "osc:01",
            "osc:1:2",
            "os c:1",
            "osc:4294967296",
            "input",
            "output",
        ] {
            let err = SlotName::new(bad).unwrap_err();
            assert!(
                matches!(&err, PatchError::InvalidName { name, .. } if name == bad),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn slot_name_accepts_zero_and_max_index() {
        assert_eq!(SlotName::new("a:0").unwrap().index(), 0);
        assert_eq!(SlotName::new("a:4294967295").unwrap().index(), u32::MAX);
    }
}
