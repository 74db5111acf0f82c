//! Expanding a component's `files` into (host path, guest path) pairs, following
//! Spin 4.0.2's local loader (`spin-loader`, `local.rs`).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::{ComponentDef, FileMount, Manifest, ManifestError};

/// Checks a `files` glob/path entry as Spin's loader does, plus glob syntax.
pub(crate) fn check_file_pattern(pattern: &str) -> Result<(), String> {
    const ADVICE: &str = "to include a directory, use the `{ source, destination }` form \
                          or a glob pattern ending in **/*";
    if pattern.is_empty() {
        return Err("the pattern is empty".to_owned());
    }
    if pattern == ".." || pattern.ends_with("/..") {
        return Err(format!(
            "a file pattern can't end in a parent directory path (..); {ADVICE}"
        ));
    }
    if pattern == "." || pattern.ends_with("/.") {
        return Err(format!(
            "a file pattern can't end in a current directory path (.); {ADVICE}"
        ));
    }
    if Path::new(pattern).is_absolute() {
        return Err("file patterns must be relative to the application directory".to_owned());
    }
    if looks_like_glob(pattern) {
        glob::Pattern::new(pattern).map_err(|e| format!("invalid glob pattern: {e}"))?;
    }
    Ok(())
}

/// Checks a `{ source, destination }` guest path.
pub(crate) fn check_destination(destination: &str) -> Result<(), String> {
    if Path::new(destination)
        .components()
        .any(|c| c == Component::ParentDir)
    {
        return Err("the destination must not contain `..`".to_owned());
    }
    Ok(())
}

fn looks_like_glob(text: &str) -> bool {
    glob::Pattern::escape(text) != text
}

/// Expands a component's `files` into (host path, guest path) pairs, as Spin's loader does:
/// glob patterns keep their path relative to app_root (guest path = "/" + relative path),
/// `{ source = dir, destination = "/x" }` puts the directory's contents (recursively) under /x,
/// `{ source = file, destination = "/x/y.json" }` puts the file at exactly that path.
/// Sources outside app_root (after canonicalising) are rejected; exclude_files globs (app-root-relative) are removed.
/// Only regular files are returned (directories are walked). Errors name the component and the pattern.
///
/// Host paths are returned canonicalised; guest paths are absolute. A plain
/// directory path in `files` (not a glob) includes the directory's files
/// recursively, each at `/` + its app-root-relative path. Pairs are returned in
/// `files` order, each directory walked in name order; `exclude_files` apply to
/// every entry. A glob that matches nothing yields nothing, as in Spin.
pub fn resolve_files(
    manifest: &Manifest,
    component: &ComponentDef,
) -> Result<Vec<(PathBuf, PathBuf)>, ManifestError> {
    let mut resolver = Resolver::new(manifest, component)?;
    for mount in &component.files {
        resolver
            .mount(mount)
            .map_err(|message| ManifestError::Invalid {
                location: component.location.clone(),
                message: format!(
                    "component `{}`: `files` entry {mount}: {message}",
                    component.id
                ),
            })?;
    }
    Ok(resolver.out)
}

struct Resolver<'a> {
    app_root: &'a Path,
    canonical_root: PathBuf,
    excludes: Vec<glob::Pattern>,
    visited_dirs: HashSet<PathBuf>,
    out: Vec<(PathBuf, PathBuf)>,
}

impl<'a> Resolver<'a> {
    fn new(manifest: &'a Manifest, component: &ComponentDef) -> Result<Self, ManifestError> {
        let canonical_root =
            fs::canonicalize(&manifest.app_root).map_err(|source| ManifestError::Io {
                path: manifest.app_root.clone(),
                source,
            })?;
        let excludes = component
            .exclude_files
            .iter()
            .map(|pattern| {
                glob::Pattern::new(pattern).map_err(|e| ManifestError::Invalid {
                    location: component.location.clone(),
                    message: format!(
                        "component `{}`: invalid `exclude_files` pattern {pattern:?}: {e}",
                        component.id
                    ),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            app_root: &manifest.app_root,
            canonical_root,
            excludes,
            visited_dirs: HashSet::new(),
            out: Vec::new(),
        })
    }

    fn mount(&mut self, mount: &FileMount) -> Result<(), String> {
        match mount {
            FileMount::Pattern(pattern) => self.pattern(pattern),
            FileMount::Mapping {
                source,
                destination,
            } => self.mapping(source, destination),
        }
    }

    /// `"dir"`, `"file.txt"` or `"glob/**/*.html"`: guest path = "/" + app-root-relative path.
    fn pattern(&mut self, pattern: &str) -> Result<(), String> {
        check_file_pattern(pattern)?;
        let path = self.app_root.join(pattern);
        match fs::metadata(&path) {
            Ok(meta) => {
                self.ensure_inside(&path)?;
                let guest = guest_path(pattern);
                if meta.is_dir() {
                    self.walk(&path, &guest)
                } else {
                    self.add(&path, guest)
                }
            }
            Err(_) if looks_like_glob(pattern) => self.glob(pattern),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err("it does not exist and doesn't appear to be a glob pattern".to_owned())
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    fn glob(&mut self, pattern: &str) -> Result<(), String> {
        let root = self
            .app_root
            .to_str()
            .ok_or("the application directory path is not UTF-8")?;
        let full = format!("{}/{pattern}", glob::Pattern::escape(root));
        let paths = glob::glob(&full).map_err(|e| format!("invalid glob pattern: {e}"))?;
        for entry in paths {
            let path = entry.map_err(|e| e.to_string())?;
            if !path.is_file() {
                continue;
            }
            let relative = path.strip_prefix(self.app_root).unwrap_or(&path);
            let guest = guest_path(&relative.to_string_lossy());
            self.add(&path, guest)?;
        }
        Ok(())
    }

    /// `{ source, destination }`: a directory's contents under `destination`,
    /// or a file at exactly `destination`.
    fn mapping(&mut self, source: &Path, destination: &str) -> Result<(), String> {
        check_destination(destination)?;
        let path = self.app_root.join(source);
        let meta =
            fs::metadata(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        self.ensure_inside(&path)?;
        let guest = guest_path(destination);
        if meta.is_dir() {
            return self.walk(&path, &guest);
        }
        if destination.ends_with('/') || guest.parent().is_none() {
            return Err(format!(
                "{destination:?} is not a valid destination file name for a file"
            ));
        }
        self.add(&path, guest)
    }

    /// Adds every regular file under `dir` (recursively, in name order), at
    /// `guest_dir` + its path relative to `dir`.
    fn walk(&mut self, dir: &Path, guest_dir: &Path) -> Result<(), String> {
        let canonical = self.canonicalize(dir)?;
        if !self.visited_dirs.insert(canonical) {
            return Ok(()); // a symlink loop, or a directory already walked
        }
        let read_error = |e: io::Error| format!("cannot read directory {}: {e}", dir.display());
        let mut names = fs::read_dir(dir)
            .map_err(read_error)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(read_error)?;
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let guest = guest_dir.join(&name);
            match fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => self.walk(&path, &guest)?,
                Ok(meta) if meta.is_file() => self.add(&path, guest)?,
                Ok(_) => {}
                Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
            }
        }
        Ok(())
    }

    /// Adds one file unless excluded; rejects it if it is outside the app root.
    fn add(&mut self, path: &Path, guest: PathBuf) -> Result<(), String> {
        let canonical = self.ensure_inside(path)?;
        if !self.is_excluded(path, &canonical) {
            self.out.push((canonical, guest));
        }
        Ok(())
    }

    /// Matches `exclude_files` against the app-root-relative path, both as
    /// reached and after resolving symlinks.
    fn is_excluded(&self, path: &Path, canonical: &Path) -> bool {
        let relatives = [
            path.strip_prefix(self.app_root).ok(),
            canonical.strip_prefix(&self.canonical_root).ok(),
        ];
        self.excludes.iter().any(|pattern| {
            relatives
                .iter()
                .flatten()
                .any(|relative| pattern.matches_path(relative))
        })
    }

    /// Canonicalises `path` and checks it is inside the app root.
    fn ensure_inside(&self, path: &Path) -> Result<PathBuf, String> {
        let canonical = self.canonicalize(path)?;
        if canonical.starts_with(&self.canonical_root) {
            Ok(canonical)
        } else {
            Err(format!(
                "{} is outside the application directory {}; files must be within the application directory",
                path.display(),
                self.canonical_root.display()
            ))
        }
    }

    fn canonicalize(&self, path: &Path) -> Result<PathBuf, String> {
        fs::canonicalize(path).map_err(|e| format!("cannot resolve {}: {e}", path.display()))
    }
}

/// An absolute guest path from a relative or absolute one (`.` dropped, `..` popped).
fn guest_path(path: &str) -> PathBuf {
    let mut guest = PathBuf::from("/");
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => guest.push(part),
            Component::ParentDir => {
                guest.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    guest
}
