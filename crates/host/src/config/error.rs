//! Configuration errors: every one names the file, the line, the key and what was expected.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line of the offending key or value (0 when the file could not be read).
    pub line: usize,
    /// Dotted key path, e.g. `program.synth.startsecs` (empty for a syntax error).
    pub key: String,
    /// What was wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
        }
    }
}

/// All problems found in one configuration file (never empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Maps byte offsets of one file's text to 1-based line numbers and collects errors.
#[derive(Debug)]
pub(crate) struct Reporter<'a> {
    file: &'a Path,
    text: &'a str,
    pub(crate) errors: Vec<ConfigError>,
}

impl<'a> Reporter<'a> {
    pub(crate) fn new(file: &'a Path, text: &'a str) -> Self {
        Reporter {
            file,
            text,
            errors: Vec::new(),
        }
    }

    pub(crate) fn file(&self) -> &Path {
        self.file
    }

    pub(crate) fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// Records an error at the byte span `at` for `key`.
    pub(crate) fn error(
        &mut self,
        at: std::ops::Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        let line = self.line_of(at.start);
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    pub(crate) fn finish<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(self.errors))
        }
    }
}
