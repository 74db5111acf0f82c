//! `--build`: runs a component's build command when its `.wasm` is missing or
//! older than the files its `build.watch` names (as `spin build` would).

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context as _, bail};
use kiosk_manifest::{ComponentDef, Manifest};

/// Builds every component that has a build command and needs it.
pub fn build_components(manifest: &Manifest) -> anyhow::Result<()> {
    for component in manifest.components.values() {
        let Some(build) = &component.build else {
            continue;
        };
        if !needs_build(manifest, component)? {
            tracing::info!(component = %component.id, "up to date; not building");
            continue;
        }
        let workdir = build.workdir.as_deref().unwrap_or(&manifest.app_root);
        for command in &build.command {
            tracing::info!(component = %component.id, command = %command, "building");
            let status = Command::new("sh")
                .arg("-c")
                .arg(command)
                .current_dir(workdir)
                .status()
                .with_context(|| format!("component `{}`: running `{command}`", component.id))?;
            if !status.success() {
                bail!(
                    "component `{}`: build command `{command}` failed ({status})",
                    component.id
                );
            }
        }
    }
    Ok(())
}

/// Whether the source is missing, or older than any watched file. With no
/// watch list the build always runs (the build tool decides what is stale).
fn needs_build(manifest: &Manifest, component: &ComponentDef) -> anyhow::Result<bool> {
    let Some(build) = &component.build else {
        return Ok(false);
    };
    let Some(built) = modified(&component.source) else {
        return Ok(true);
    };
    if build.watch.is_empty() {
        return Ok(true);
    }
    let base = build.workdir.as_deref().unwrap_or(&manifest.app_root);
    for pattern in &build.watch {
        let full = base.join(pattern);
        let paths = glob::glob(&full.to_string_lossy()).with_context(|| {
            format!(
                "component `{}`: bad watch pattern `{pattern}`",
                component.id
            )
        })?;
        for path in paths.flatten() {
            if modified(&path).is_some_and(|m| m > built) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).ok()?.modified().ok()
}
