//! Turns the manifest as written ([`crate::raw`]) into the validated model,
//! collecting every semantic error with its location.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
use toml::{Spanned, Table, Value};

use crate::error::SourceMap;
use crate::files::{check_destination, check_file_pattern};
use crate::id::{check_component_id, check_label, check_variable_name};
use crate::raw::{
    ByTriggerType, Entries, RawApplication, RawBuild, RawComponent, RawComponentSpec, RawExecutor,
    RawFileMount, RawHttpAppConfig, RawHttpTrigger, RawManifest, RawRoute, RawSource, RawVariable,
};
use crate::{
    Application, BuildDef, ComponentDef, FileMount, HttpTrigger, Manifest, ManifestError,
    RouteSpec, Template, TemplateError, VariableDef,
};

/// Validates `raw` and builds the [`Manifest`].
pub(crate) fn build(
    raw: RawManifest,
    map: &SourceMap<'_>,
    path: &Path,
    app_root: PathBuf,
) -> Result<Manifest, ManifestError> {
    let mut checker = Checker {
        map,
        app_root: &app_root,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let RawManifest {
        application,
        variables,
        trigger,
        component,
        ..
    } = raw;
    let application = checker.application(application);
    let variables = checker.variables(variables);
    let components = checker.components(component, &variables);
    let http_triggers = checker.triggers(trigger, &components);
    if let Some(error) = ManifestError::combine(checker.errors) {
        return Err(error);
    }
    Ok(Manifest {
        path: path.to_path_buf(),
        app_root: app_root.clone(),
        application,
        variables,
        http_triggers,
        components,
        warnings: checker.warnings,
    })
}

struct Checker<'a> {
    map: &'a SourceMap<'a>,
    app_root: &'a Path,
    errors: Vec<ManifestError>,
    warnings: Vec<String>,
}

impl Checker<'_> {
    fn invalid(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.errors.push(self.map.invalid(span, message));
    }

    fn unsupported(&mut self, span: Range<usize>, what: impl Into<String>, help: &str) {
        self.errors.push(self.map.unsupported(span, what, help));
    }

    fn application(&mut self, raw: RawApplication) -> Application {
        self.app_trigger_configs(&raw.trigger);
        Application {
            name: raw.name,
            version: raw.version,
            description: raw.description,
            authors: raw.authors,
        }
    }

    /// `[application.trigger.http]`: only `base = "/"` is tolerated (with a warning),
    /// as Spin's HTTP trigger does. Settings for other trigger types are ignored.
    fn app_trigger_configs(&mut self, configs: &ByTriggerType<Spanned<RawHttpAppConfig>, Table>) {
        let Some(base) = configs
            .http
            .as_ref()
            .and_then(|c| c.get_ref().base.as_ref())
        else {
            return;
        };
        if base.get_ref() == "/" {
            let location = self.map.locate(base.span());
            self.warnings.push(format!(
                "{location}: the deprecated trigger 'base' field is set to the default \"/\"; \
                 it is ignored (this may be an error in the future)"
            ));
        } else {
            self.invalid(
                base.span(),
                format!(
                    "the deprecated trigger 'base' field is not supported (base = {:?}); \
                     prepend the base to each [[trigger.http]] route instead",
                    base.get_ref()
                ),
            );
        }
    }

    fn variables(&mut self, raw: Entries<RawVariable>) -> BTreeMap<String, VariableDef> {
        let mut variables = BTreeMap::new();
        for (name, var) in raw.0 {
            if let Err(reason) = check_variable_name(name.get_ref()) {
                let message = format!("invalid variable name `{}`: {reason}", name.get_ref());
                self.invalid(name.span(), message);
            }
            if var.required == var.default.is_some() {
                let message = format!(
                    "variable `{}` must be `required` OR have a `default`",
                    name.get_ref()
                );
                self.invalid(name.span(), message);
            }
            let def = VariableDef {
                description: var.description,
                required: var.required,
                default: var.default,
                secret: var.secret,
            };
            variables.insert(name.into_inner(), def);
        }
        variables
    }

    fn components(
        &mut self,
        raw: Entries<Spanned<RawComponent>>,
        variables: &BTreeMap<String, VariableDef>,
    ) -> BTreeMap<String, ComponentDef> {
        let mut components = BTreeMap::new();
        for (id, component) in raw.0 {
            if let Err(reason) = check_component_id(id.get_ref()) {
                let message = format!("invalid component ID `{}`: {reason}", id.get_ref());
                self.invalid(id.span(), message);
            }
            let def = self.component(id.get_ref(), component, variables);
            components.insert(id.into_inner(), def);
        }
        components
    }

    fn component(
        &mut self,
        id: &str,
        raw: Spanned<RawComponent>,
        variables: &BTreeMap<String, VariableDef>,
    ) -> ComponentDef {
        let location = self.map.locate(raw.span());
        let raw = raw.into_inner();
        let ctx = format!("component `{id}`");
        self.unsupported_component_fields(&ctx, &raw);
        ComponentDef {
            id: id.to_owned(),
            source: self.source(&ctx, &raw.source),
            description: raw.description,
            variables: self.component_variables(&ctx, raw.variables, variables),
            environment: raw.environment,
            files: self.files(&ctx, raw.files),
            exclude_files: self.exclude_files(&ctx, raw.exclude_files),
            allowed_outbound_hosts: self.outbound_hosts(
                &ctx,
                raw.allowed_outbound_hosts,
                variables,
            ),
            key_value_stores: self.labels(&ctx, "key_value_stores", raw.key_value_stores),
            build: raw.build.map(|build| self.build_def(build)),
            location,
        }
    }

    /// Fields that parse (Spin accepts them) but that kiosk-host does not implement.
    fn unsupported_component_fields(&mut self, ctx: &str, raw: &RawComponent) {
        if let Some(hosts) = raw
            .allowed_http_hosts
            .as_ref()
            .filter(|h| !h.get_ref().is_empty())
        {
            self.unsupported(
                hosts.span(),
                format!("{ctx}: the deprecated field `allowed_http_hosts`"),
                "; use `allowed_outbound_hosts` instead (e.g. \"https://example.com\")",
            );
        }
        let checks = [
            (
                "sqlite_databases",
                non_empty_span(&raw.sqlite_databases, Vec::is_empty),
            ),
            ("ai_models", non_empty_span(&raw.ai_models, Vec::is_empty)),
            (
                "dependencies",
                non_empty_span(&raw.dependencies, Table::is_empty),
            ),
            ("profile", raw.profile.as_ref().map(Spanned::span)),
        ];
        for (field, span) in checks {
            if let Some(span) = span {
                self.unsupported(span, format!("{ctx}: field `{field}`"), "");
            }
        }
    }

    fn source(&mut self, ctx: &str, source: &Spanned<RawSource>) -> PathBuf {
        let form = match source.get_ref() {
            RawSource::Local(path) => return self.app_root.join(path),
            RawSource::Remote => "a URL (`{ url, digest }`)",
            RawSource::Registry => "a registry package (`{ registry, package, version }`)",
        };
        self.unsupported(
            source.span(),
            format!("{ctx}: field `source` with {form}"),
            "; download the Wasm file and give its path",
        );
        PathBuf::new()
    }

    fn component_variables(
        &mut self,
        ctx: &str,
        raw: Entries<Spanned<String>>,
        variables: &BTreeMap<String, VariableDef>,
    ) -> BTreeMap<String, Template> {
        let mut out = BTreeMap::new();
        for (name, value) in raw.0 {
            if let Err(reason) = check_variable_name(name.get_ref()) {
                let message = format!(
                    "{ctx}: invalid variable name `{}`: {reason}",
                    name.get_ref()
                );
                self.invalid(name.span(), message);
            }
            let what = format!("{ctx}: variable `{}`", name.get_ref());
            if let Some(template) = self.template(&what, &value, variables) {
                out.insert(name.into_inner(), template);
            }
        }
        out
    }

    fn outbound_hosts(
        &mut self,
        ctx: &str,
        raw: Vec<Spanned<String>>,
        variables: &BTreeMap<String, VariableDef>,
    ) -> Vec<String> {
        raw.into_iter()
            .map(|host| {
                let what = format!("{ctx}: allowed_outbound_hosts entry {:?}", host.get_ref());
                self.template(&what, &host, variables);
                host.into_inner()
            })
            .collect()
    }

    /// Parses a template and checks that it only names application variables.
    fn template(
        &mut self,
        what: &str,
        text: &Spanned<String>,
        variables: &BTreeMap<String, VariableDef>,
    ) -> Option<Template> {
        let template = match Template::parse(text.get_ref()) {
            Ok(template) => template,
            Err(error) => {
                self.invalid(text.span(), format!("{what}: {error}"));
                return None;
            }
        };
        let unknown: BTreeSet<&str> = template
            .variables()
            .filter(|name| !variables.contains_key(*name))
            .collect();
        for name in unknown {
            let error = TemplateError::UnknownVariable(name.to_owned());
            self.invalid(text.span(), format!("{what}: {error}"));
        }
        Some(template)
    }

    fn files(&mut self, ctx: &str, raw: Vec<Spanned<Value>>) -> Vec<FileMount> {
        let mut mounts = Vec::new();
        for entry in raw {
            let span = entry.span();
            match RawFileMount::try_from(entry.into_inner()) {
                Ok(mount) => mounts.push(self.file_mount(ctx, span, mount)),
                Err(message) => self.invalid(span, format!("{ctx}: {message}")),
            }
        }
        mounts
    }

    fn file_mount(&mut self, ctx: &str, span: Range<usize>, raw: RawFileMount) -> FileMount {
        let (mount, check) = match raw {
            RawFileMount::Pattern(pattern) => {
                let check = check_file_pattern(&pattern);
                (FileMount::Pattern(pattern), check)
            }
            RawFileMount::Placement {
                source,
                destination,
            } => {
                let check = check_destination(&destination);
                let source = PathBuf::from(source);
                (
                    FileMount::Mapping {
                        source,
                        destination,
                    },
                    check,
                )
            }
        };
        if let Err(reason) = check {
            self.invalid(span, format!("{ctx}: `files` entry {mount}: {reason}"));
        }
        mount
    }

    fn exclude_files(&mut self, ctx: &str, raw: Vec<Spanned<String>>) -> Vec<String> {
        raw.into_iter()
            .map(|pattern| {
                if let Err(error) = glob::Pattern::new(pattern.get_ref()) {
                    let message = format!(
                        "{ctx}: invalid `exclude_files` pattern {:?}: {error}",
                        pattern.get_ref()
                    );
                    self.invalid(pattern.span(), message);
                }
                pattern.into_inner()
            })
            .collect()
    }

    fn labels(&mut self, ctx: &str, field: &str, raw: Vec<Spanned<String>>) -> Vec<String> {
        raw.into_iter()
            .map(|label| {
                if let Err(reason) = check_label(label.get_ref()) {
                    let message = format!(
                        "{ctx}: invalid {field} label {:?}: {reason}",
                        label.get_ref()
                    );
                    self.invalid(label.span(), message);
                }
                label.into_inner()
            })
            .collect()
    }

    fn build_def(&self, raw: RawBuild) -> BuildDef {
        BuildDef {
            command: raw.command.0,
            workdir: raw.workdir.map(|dir| self.app_root.join(dir)),
            watch: raw.watch,
        }
    }

    fn triggers(
        &mut self,
        raw: ByTriggerType<Vec<Spanned<RawHttpTrigger>>, IgnoredAny>,
        components: &BTreeMap<String, ComponentDef>,
    ) -> Vec<HttpTrigger> {
        for (trigger_type, _) in &raw.others {
            let what = format!("trigger type `{}`", trigger_type.get_ref());
            self.unsupported(trigger_type.span(), what, "");
        }
        let mut triggers = Vec::new();
        for (index, trigger) in raw.http.unwrap_or_default().into_iter().enumerate() {
            if let Some(checked) = self.http_trigger(index, trigger, components) {
                triggers.push(checked);
            }
        }
        self.assign_trigger_ids(triggers)
    }

    fn http_trigger(
        &mut self,
        index: usize,
        raw: Spanned<RawHttpTrigger>,
        components: &BTreeMap<String, ComponentDef>,
    ) -> Option<(Option<Spanned<String>>, HttpTrigger)> {
        let location = self.map.locate(raw.span());
        let span = raw.span();
        let raw = raw.into_inner();
        let id = raw.id.filter(|id| !id.get_ref().is_empty());
        let label = match &id {
            Some(id) => format!("trigger `{}`", id.get_ref()),
            None => format!("[[trigger.http]] #{}", index + 1),
        };
        if let Some(response) = &raw.static_response {
            let help = "; route to a component instead";
            self.unsupported(
                response.span(),
                format!("{label}: field `static_response`"),
                help,
            );
        }
        if let Some(executor) = raw
            .executor
            .as_ref()
            .filter(|e| matches!(e.get_ref(), RawExecutor::Wagi))
        {
            self.unsupported(executor.span(), format!("{label}: the `wagi` executor"), "");
        }
        let route = self.route(&label, raw.route);
        let component = match raw.component {
            Some(component) => self.component_ref(&label, component, components),
            None if raw.static_response.is_none() => {
                self.invalid(span, format!("{label}: missing field `component`"));
                None
            }
            None => None,
        };
        let trigger = HttpTrigger {
            id: String::new(),
            component: component?,
            route: route?,
            location,
        };
        Some((id, trigger))
    }

    fn route(&mut self, label: &str, route: Spanned<RawRoute>) -> Option<RouteSpec> {
        match route.get_ref() {
            RawRoute::Path(path) => Some(RouteSpec::Path(path.clone())),
            RawRoute::Private(true) => Some(RouteSpec::Private),
            RawRoute::Private(false) => {
                let message = format!(
                    "{label}: route must be a string pattern or '{{ private = true }}', \
                     not '{{ private = false }}'"
                );
                self.invalid(route.span(), message);
                None
            }
        }
    }

    fn component_ref(
        &mut self,
        label: &str,
        spec: Spanned<RawComponentSpec>,
        components: &BTreeMap<String, ComponentDef>,
    ) -> Option<String> {
        let RawComponentSpec::Reference(id) = spec.get_ref() else {
            let help = "; declare it as [component.<id>] and give its ID";
            self.unsupported(
                spec.span(),
                format!("{label}: an inline component table"),
                help,
            );
            return None;
        };
        if let Err(reason) = check_component_id(id) {
            self.invalid(
                spec.span(),
                format!("{label}: invalid component ID `{id}`: {reason}"),
            );
            return None;
        }
        if !components.contains_key(id) {
            let message =
                format!("{label}: component `{id}` does not exist (there is no [component.{id}])");
            self.invalid(spec.span(), message);
            return None;
        }
        Some(id.clone())
    }

    /// Gives every trigger an ID as Spin does: explicit IDs are kept (and must be
    /// unique); others get `<component>-http-trigger`, or `http-trigger<N>` if taken.
    fn assign_trigger_ids(
        &mut self,
        triggers: Vec<(Option<Spanned<String>>, HttpTrigger)>,
    ) -> Vec<HttpTrigger> {
        let mut taken = HashSet::new();
        for id in triggers.iter().filter_map(|(id, _)| id.as_ref()) {
            if !taken.insert(id.get_ref().clone()) {
                self.invalid(
                    id.span(),
                    format!("duplicate trigger id `{}`", id.get_ref()),
                );
            }
        }
        let mut counter = 1;
        triggers
            .into_iter()
            .map(|(id, mut trigger)| {
                trigger.id = match id {
                    Some(id) => id.into_inner(),
                    None => generated_id(&trigger.component, &mut taken, &mut counter),
                };
                trigger
            })
            .collect()
    }
}

/// The span of a field that is present and not empty.
fn non_empty_span<T>(
    field: &Option<Spanned<T>>,
    is_empty: impl Fn(&T) -> bool,
) -> Option<Range<usize>> {
    field
        .as_ref()
        .filter(|value| !is_empty(value.get_ref()))
        .map(Spanned::span)
}

fn generated_id(component: &str, taken: &mut HashSet<String>, counter: &mut usize) -> String {
    let natural = format!("{component}-http-trigger");
    if taken.insert(natural.clone()) {
        return natural;
    }
    loop {
        let id = format!("http-trigger{counter}");
        *counter += 1;
        if taken.insert(id.clone()) {
            return id;
        }
    }
}
