//! Reads a Spin application manifest (`spin.toml`, `spin_manifest_version = 2`,
//! as Spin 4.0.2 defines it) into a typed [`Manifest`] and validates it.
//!
//! Errors carry the file, line and column they are about
//! (`spin.toml:12:1: component `ticket`: field `sqlite_databases` is not
//! supported by kiosk-host`). Features that Spin accepts but kiosk-host does not
//! implement (non-HTTP triggers, remote sources, SQLite, AI models, component
//! dependencies, profiles, static responses, the Wagi executor...) are rejected
//! with [`ManifestError::Unsupported`].
//!
//! This crate only reads files: it does no HTTP and no Wasm.

#![deny(missing_docs)]

mod error;
mod files;
mod id;
mod model;
mod raw;
mod template;
mod validate;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use toml::Value;

pub use error::{Location, ManifestError};
pub use files::resolve_files;
pub use model::{
    Application, BuildDef, ComponentDef, FileMount, HttpTrigger, Manifest, RouteSpec, VariableDef,
};
pub use template::{Template, TemplateError};

use error::SourceMap;
use raw::{RawManifest, VersionProbe};

/// Reads, parses and validates the manifest at `path`.
pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Parses and validates manifest text. `path` is only used in error messages
/// and to find the application directory (its parent); it is not read.
pub fn parse(source: &str, path: &Path) -> Result<Manifest, ManifestError> {
    let map = SourceMap::new(path, source);
    check_version(&map, source)?;
    let raw: RawManifest = toml::from_str(source).map_err(|e| map.parse_error(&e))?;
    validate::build(raw, &map, path, app_root_of(path))
}

/// Accepts only `spin_manifest_version = 2`; also reports TOML syntax errors.
fn check_version(map: &SourceMap<'_>, source: &str) -> Result<(), ManifestError> {
    let probe: VersionProbe = toml::from_str(source).map_err(|e| map.parse_error(&e))?;
    let Some(version) = probe.spin_manifest_version else {
        return Err(map.invalid(
            0..0,
            "missing field `spin_manifest_version` (expected `spin_manifest_version = 2`)",
        ));
    };
    match version.get_ref() {
        Value::Integer(2) => Ok(()),
        Value::String(v1) if v1 == "1" => Err(map.invalid(
            version.span(),
            "unsupported spin_manifest_version \"1\": version 1 manifests are not supported \
             by kiosk-host; convert the manifest to `spin_manifest_version = 2`",
        )),
        other => Err(map.invalid(
            version.span(),
            format!(
                "unsupported spin_manifest_version {other}: expected `spin_manifest_version = 2`"
            ),
        )),
    }
}

/// The manifest's directory, made absolute (without resolving symlinks).
fn app_root_of(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}
