//! The runtime configuration file (`--runtime-config-file`), in Spin's
//! syntax. This version knows no sections yet; like Spin, it refuses keys it
//! would not use instead of ignoring them.

use std::path::Path;

use anyhow::{Context as _, bail};

/// Reads and validates the runtime config file.
pub fn load(path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading runtime config {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))?;
    let unused: Vec<&str> = table.keys().map(String::as_str).collect();
    if !unused.is_empty() {
        bail!(
            "{}: unused runtime config key(s): {}",
            path.display(),
            unused.join(", ")
        );
    }
    Ok(())
}
