//! Errors and source locations.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A place in a manifest file: 1-based line and column (columns count characters).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// The manifest file, as given to [`crate::load`] or [`crate::parse`].
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// 1-based column number, in characters.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// Everything that can go wrong reading, validating or resolving a manifest.
///
/// Every variant but [`ManifestError::Io`] points at a place in the manifest;
/// the `Display` form starts with `file:line:column: `.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest file could not be read.
    #[error("{}: cannot read manifest: {source}", path.display())]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML, or does not have the shape of a Spin v2 manifest
    /// (unknown key, wrong type, missing field...).
    #[error("{location}: {message}")]
    Parse {
        /// Where the problem is.
        location: Location,
        /// What is wrong.
        message: String,
    },
    /// The manifest is well-formed but breaks a rule (bad identifier, unknown
    /// component or variable, bad template...), or a file mount cannot be resolved.
    #[error("{location}: {message}")]
    Invalid {
        /// Where the problem is.
        location: Location,
        /// What is wrong.
        message: String,
    },
    /// The manifest uses a Spin feature that kiosk-host does not implement.
    #[error("{location}: {what} is not supported by kiosk-host{help}")]
    Unsupported {
        /// Where the feature is used.
        location: Location,
        /// The feature, e.g. "component `cart`: field `sqlite_databases`".
        what: String,
        /// Extra advice, empty or starting with "; ".
        help: String,
    },
    /// Several problems, sorted by location; displayed one per line.
    #[error("{}", display_all(.0))]
    Multiple(Vec<ManifestError>),
}

impl ManifestError {
    /// Where in the manifest the error is, if it points at a place
    /// (for [`ManifestError::Multiple`], the first error's place).
    pub fn location(&self) -> Option<&Location> {
        match self {
            Self::Io { .. } => None,
            Self::Parse { location, .. }
            | Self::Invalid { location, .. }
            | Self::Unsupported { location, .. } => Some(location),
            Self::Multiple(errors) => errors.iter().find_map(Self::location),
        }
    }

    /// Combines collected errors: `None` if empty, the error itself if single,
    /// else [`ManifestError::Multiple`] sorted by location.
    pub(crate) fn combine(mut errors: Vec<ManifestError>) -> Option<ManifestError> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => {
                errors.sort_by(|a, b| a.location().cmp(&b.location()));
                Some(Self::Multiple(errors))
            }
        }
    }
}

fn display_all(errors: &[ManifestError]) -> String {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// The manifest text and its file name: turns byte spans into [`Location`]s.
pub(crate) struct SourceMap<'a> {
    file: &'a Path,
    text: &'a str,
}

impl<'a> SourceMap<'a> {
    pub(crate) fn new(file: &'a Path, text: &'a str) -> Self {
        Self { file, text }
    }

    /// The location of the start of a byte span.
    pub(crate) fn locate(&self, span: Range<usize>) -> Location {
        let mut offset = span.start.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            file: self.file.to_path_buf(),
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }

    /// Converts a toml/serde error, keeping its message and span.
    pub(crate) fn parse_error(&self, error: &toml::de::Error) -> ManifestError {
        ManifestError::Parse {
            location: self.locate(error.span().unwrap_or(0..0)),
            message: error.message().trim_end().to_owned(),
        }
    }

    pub(crate) fn invalid(&self, span: Range<usize>, message: impl Into<String>) -> ManifestError {
        ManifestError::Invalid {
            location: self.locate(span),
            message: message.into(),
        }
    }

    pub(crate) fn unsupported(
        &self,
        span: Range<usize>,
        what: impl Into<String>,
        help: &str,
    ) -> ManifestError {
        ManifestError::Unsupported {
            location: self.locate(span),
            what: what.into(),
            help: help.to_owned(),
        }
    }
}
