//! The validated manifest model.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::{Location, Template};

/// A loaded and validated Spin application manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The manifest file, as given to [`crate::load`] or [`crate::parse`].
    pub path: PathBuf,
    /// The directory containing the manifest, made absolute: relative paths
    /// in the manifest (sources, files, build workdirs) are relative to it.
    pub app_root: PathBuf,
    /// `[application]`.
    pub application: Application,
    /// Application variables (`[variables.NAME]`), by name.
    pub variables: BTreeMap<String, VariableDef>,
    /// `[[trigger.http]]` entries, in file order.
    pub http_triggers: Vec<HttpTrigger>,
    /// Components (`[component.ID]`), by ID.
    pub components: BTreeMap<String, ComponentDef>,
    /// Non-fatal remarks (deprecated settings that are accepted), each
    /// starting with `file:line:column: `.
    pub warnings: Vec<String>,
}

/// `[application]` metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    /// `name`.
    pub name: String,
    /// `version`, if given.
    pub version: Option<String>,
    /// `description`, if given.
    pub description: Option<String>,
    /// `authors`.
    pub authors: Vec<String>,
}

/// An application variable. Exactly one of `required` and `default` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariableDef {
    /// `description`, if given.
    pub description: Option<String>,
    /// Whether a value must be supplied at runtime.
    pub required: bool,
    /// The value used when none is supplied at runtime.
    pub default: Option<String>,
    /// Whether the value is sensitive (should not be logged).
    pub secret: bool,
}

/// A `[[trigger.http]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTrigger {
    /// `id`, or a generated `<component>-http-trigger` (as Spin generates it).
    pub id: String,
    /// The ID of the component handling the route; it exists in
    /// [`Manifest::components`].
    pub component: String,
    /// `route`.
    pub route: RouteSpec,
    /// Where the `[[trigger.http]]` header is.
    pub location: Location,
}

/// An HTTP trigger's `route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteSpec {
    /// A route pattern such as `/api/...`, as written.
    Path(String),
    /// `{ private = true }`: reachable only through service chaining.
    Private,
}

/// A `[component.ID]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentDef {
    /// The component ID.
    pub id: String,
    /// The Wasm file: `source` joined to the app root (absolute if `source` was).
    pub source: PathBuf,
    /// `description`, if given.
    pub description: Option<String>,
    /// Component variables: name -> template over application variables.
    pub variables: BTreeMap<String, Template>,
    /// `environment`.
    pub environment: BTreeMap<String, String>,
    /// `files`, as written; see [`crate::resolve_files`].
    pub files: Vec<FileMount>,
    /// `exclude_files` globs, relative to the app root.
    pub exclude_files: Vec<String>,
    /// `allowed_outbound_hosts`, as written (entries may contain `{{ var }}` templates,
    /// all naming application variables).
    pub allowed_outbound_hosts: Vec<String>,
    /// `key_value_stores` labels.
    pub key_value_stores: Vec<String>,
    /// `build`, if given.
    pub build: Option<BuildDef>,
    /// Where the component table starts (its `[component.ID]` header).
    pub location: Location,
}

/// A `files` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileMount {
    /// A glob pattern or a file/directory path, relative to the app root.
    Pattern(String),
    /// `{ source, destination }`: a file or directory (source, relative to the
    /// app root as written) placed at `destination` in the guest.
    Mapping {
        /// The host file or directory, as written (relative to the app root).
        source: PathBuf,
        /// The guest path.
        destination: String,
    },
}

impl fmt::Display for FileMount {
    /// Shows the entry as written in the manifest.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pattern(pattern) => write!(f, "{pattern:?}"),
            Self::Mapping {
                source,
                destination,
            } => write!(
                f,
                "{{ source = {:?}, destination = {destination:?} }}",
                source.display().to_string()
            ),
        }
    }
}

/// A component's `build` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildDef {
    /// The shell command(s), run in order.
    pub command: Vec<String>,
    /// `workdir` joined to the app root, if given (else the app root is used).
    pub workdir: Option<PathBuf>,
    /// `watch` globs, relative to the build working directory.
    pub watch: Vec<String>,
}
