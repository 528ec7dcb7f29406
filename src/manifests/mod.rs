//! Reading manifests: the same `StrapiInstance`, `StrapiWebhook` and `Secret` YAML that goes to
//! a cluster, from files and folders, with every problem tied to a file, a line and a field. The
//! receiver's file source, local mode and `validate`/`render` all read through here, so they
//! agree on what a file means.
//!
//! Each file is cut into its `---`-separated documents and each document is deserialized straight
//! into its Rust type from text padded to its position in the file, so the YAML parser's own line
//! and column point into the file the user edits. Documents of the operator's kinds pass the
//! API server's admission first ([`admission`]: the CRD schema, its CEL rules, and unknown fields
//! refused as strict field validation does). Other Kubernetes objects (a GitOps folder's
//! Deployments, ConfigMaps, Kustomizations) are skipped. Objects without a namespace are put in
//! `default`, as `kubectl apply` does, here and nowhere else. Problems are collected across all
//! files rather than stopping at the first, so one run shows everything that is wrong.

pub mod admission;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use serde::de::DeserializeOwned;

use crate::{
    api::{StrapiInstance, StrapiWebhook},
    config::InMemorySecrets,
    key::{ObjectKey, namespace_or_default},
};

/// The API group of the operator's kinds; a document in it with another kind is a typo.
const API_GROUP: &str = "webhooks.strapi-operator.dev/";

/// One thing wrong with the configuration, where it is: `file:line: field: reason`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when the problem has a position.
    pub line: Option<usize>,
    /// The field, as a path such as `spec.routes[2].filter`, when the problem is in one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, "{line}:")?;
        }
        if let Some(field) = &self.field {
            write!(f, " {field}:")?;
        }
        write!(f, " {}", self.reason)
    }
}

/// Every problem found in one load, one per line. Never empty.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct Problems(pub Vec<Problem>);

/// An object and the place it was read from.
#[derive(Clone, Debug)]
pub struct Located<T> {
    /// The file.
    pub file: PathBuf,
    /// 1-based line where the object's document starts.
    pub line: usize,
    /// Where each field of the document is.
    pub lines: Arc<Lines>,
    /// The object.
    pub object: T,
}

impl<T> Located<T> {
    /// A problem with this object as a whole, at the start of its document.
    pub fn problem(&self, reason: impl Into<String>) -> Problem {
        Problem {
            file: self.file.clone(),
            line: Some(self.line),
            field: None,
            reason: reason.into(),
        }
    }

    /// A problem with one field (`spec.routes[2].filter`), at that field's line.
    pub fn problem_at(&self, field: &str, reason: impl Into<String>) -> Problem {
        Problem {
            line: Some(self.lines.find(field).unwrap_or(self.line)),
            field: Some(field.to_owned()),
            ..self.problem(reason)
        }
    }
}

/// Everything read from the files, before compiling.
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    /// The instances.
    pub instances: Vec<Located<StrapiInstance>>,
    /// The webhooks.
    pub webhooks: Vec<Located<StrapiWebhook>>,
    /// Values of every `Secret` found, `stringData` and (base64) `data` alike.
    pub secrets: InMemorySecrets,
    /// `(namespace, name)` of every `Secret` in the files, even one without keys.
    pub secret_names: BTreeSet<(String, String)>,
}

/// The files `paths` stand for: a file as given, a folder as its `*.yaml` and `*.yml` files
/// (not recursive), sorted so that loads are reproducible.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Problems> {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        match std::fs::read_dir(path) {
            Ok(entries) => {
                let mut found: Vec<PathBuf> = entries
                    .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                    .filter(|file| is_yaml(file) && file.is_file())
                    .collect();
                found.sort();
                files.extend(found);
            }
            Err(error) => problems.push(Problem {
                file: path.clone(),
                line: None,
                field: None,
                reason: format!("cannot list the folder: {error}"),
            }),
        }
    }
    if problems.is_empty() {
        Ok(files)
    } else {
        Err(Problems(problems))
    }
}

/// Whether a file name ends in `.yaml` or `.yml`.
pub fn is_yaml(path: &Path) -> bool {
    path.extension()
        .is_some_and(|extension| extension == "yaml" || extension == "yml")
}

impl Manifests {
    /// Reads every file of `paths` (see [`expand`]). Any problem in any file fails the whole
    /// load, so a half-edited folder never becomes a half-applied configuration.
    pub fn read(paths: &[PathBuf]) -> Result<Self, Problems> {
        let (manifests, problems) = Self::load(paths);
        if problems.is_empty() {
            Ok(manifests)
        } else {
            Err(Problems(problems))
        }
    }

    /// Reads every file of `paths` and returns what read cleanly with every problem found, for
    /// callers that report rather than refuse (`validate`). A document with a problem is left
    /// out.
    pub fn load(paths: &[PathBuf]) -> (Self, Vec<Problem>) {
        let mut manifests = Manifests::default();
        let files = match expand(paths) {
            Ok(files) => files,
            Err(problems) => return (manifests, problems.0),
        };
        let mut problems = Vec::new();
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => manifests.add_file(&file, &text, &mut problems),
                Err(error) => problems.push(Problem {
                    file,
                    line: None,
                    field: None,
                    reason: format!("cannot read the file: {error}"),
                }),
            }
        }
        problems.extend(manifests.duplicates());
        (manifests, problems)
    }

    /// Whether the files hold the Secret `namespace/name` (with or without keys).
    pub fn has_secret(&self, namespace: &str, name: &str) -> bool {
        self.secret_names
            .contains(&(namespace.to_owned(), name.to_owned()))
    }

    /// The instance with this `namespace/name`.
    pub fn instance(&self, key: &ObjectKey) -> Option<&Located<StrapiInstance>> {
        self.instances
            .iter()
            .find(|instance| ObjectKey::of(&instance.object) == *key)
    }

    fn add_file(&mut self, file: &Path, text: &str, problems: &mut Vec<Problem>) {
        for (line, document) in documents(text) {
            let problem = |reason: String| Problem {
                file: file.to_owned(),
                line: Some(line),
                field: None,
                reason,
            };
            let header: serde_json::Value = match serde_saphyr::from_str(&document) {
                Ok(header) => header,
                Err(error) => {
                    problems.push(yaml_problem(file, line, &error));
                    continue;
                }
            };
            if header.is_null() {
                continue;
            }
            let text_of = |key: &str| header.get(key).and_then(|value| value.as_str());
            let kind = text_of("kind").unwrap_or_default();
            let api_version = text_of("apiVersion").unwrap_or_default();
            match kind {
                "StrapiInstance" => {
                    let located = admitted(file, line, &document, &header, problems);
                    self.instances.extend(located);
                }
                "StrapiWebhook" => {
                    let located = admitted(file, line, &document, &header, problems);
                    self.webhooks.extend(located);
                }
                "Secret" => {
                    if let Some(secret) = typed::<Secret>(file, line, &document, problems) {
                        self.add_secret(&secret);
                    }
                }
                "" => problems.push(problem("the document has no kind".to_owned())),
                other if other.starts_with("Strapi") || api_version.starts_with(API_GROUP) => {
                    problems.push(problem(format!(
                        "unknown kind {other:?}: expected StrapiInstance or StrapiWebhook"
                    )))
                }
                // Other Kubernetes objects (a Namespace, a Deployment) may share the folder.
                other => tracing::debug!(file = %file.display(), line, kind = other, "skipped"),
            }
        }
    }

    fn add_secret(&mut self, secret: &Secret) {
        let ObjectKey { namespace, name } = ObjectKey::of(secret);
        self.secret_names.insert((namespace.clone(), name.clone()));
        for (key, value) in secret.data.iter().flatten() {
            if let Ok(value) = String::from_utf8(value.0.clone()) {
                self.secrets.insert(&namespace, &name, key, value);
            }
        }
        // Kubernetes merges `stringData` over `data` the same way.
        for (key, value) in secret.string_data.iter().flatten() {
            self.secrets.insert(&namespace, &name, key, value.clone());
        }
    }

    /// Objects of the same kind and `namespace/name` defined twice.
    fn duplicates(&self) -> Vec<Problem> {
        fn twice<T>(
            kind: &str,
            objects: &[Located<T>],
            meta: impl Fn(&T) -> &ObjectMeta,
        ) -> Vec<Problem> {
            let mut seen = BTreeMap::new();
            let mut problems = Vec::new();
            for located in objects {
                let key = ObjectKey::of_meta(meta(&located.object));
                if let Some(first) = seen.insert(key.clone(), located) {
                    problems.push(located.problem(format!(
                        "{kind} {key} is also defined at {}:{}",
                        first.file.display(),
                        first.line
                    )));
                }
            }
            problems
        }
        let mut problems = twice("StrapiInstance", &self.instances, |object| &object.metadata);
        problems.extend(twice("StrapiWebhook", &self.webhooks, |object| {
            &object.metadata
        }));
        problems
    }
}

/// The documents of a multi-document YAML text with the 1-based line each starts on. Each
/// document's text is padded with the lines before it, so parser positions are file positions.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut documents = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (index, line) in text.lines().enumerate() {
        let separator = line == "---" || line.starts_with("--- ") || line == "...";
        if separator {
            documents.push((start, std::mem::take(&mut current)));
            start = index + 2;
            current = "\n".repeat(index + 1);
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    documents.push((start, current));
    // The first line with content is where a reader looks for the document.
    documents
        .into_iter()
        .map(|(start, document)| {
            let first = document
                .lines()
                .enumerate()
                .skip(start - 1)
                .find(|(_, line)| {
                    let line = line.trim();
                    !line.is_empty() && !line.starts_with('#')
                })
                .map_or(start, |(index, _)| index + 1);
            (first, document)
        })
        .collect()
}

/// A document of one of the operator's kinds, if the API server would admit it: every
/// admission error becomes a problem at its field's line, and the typed object is read only
/// from an admitted document (so one mistake is not reported twice), in its namespace.
fn admitted<K>(
    file: &Path,
    line: usize,
    document: &str,
    raw: &serde_json::Value,
    problems: &mut Vec<Problem>,
) -> Option<Located<K>>
where
    K: kube::Resource<DynamicType = ()> + DeserializeOwned,
{
    let located = Located {
        file: file.to_owned(),
        line,
        lines: Arc::new(Lines::of(document)),
        object: (),
    };
    let errors = admission::admission_errors(&K::kind(&()), raw);
    if !errors.is_empty() {
        problems.extend(
            errors
                .into_iter()
                .map(|error| located.problem_at(&error.field, error.message)),
        );
        return None;
    }
    let mut object: K = typed(file, line, document, problems)?;
    let meta = object.meta_mut();
    meta.namespace = Some(namespace_or_default(meta.namespace.as_deref()));
    Some(Located {
        file: located.file,
        line,
        lines: located.lines,
        object,
    })
}

fn typed<T: DeserializeOwned>(
    file: &Path,
    line: usize,
    document: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    serde_saphyr::from_str(document)
        .map_err(|error| problems.push(yaml_problem(file, line, &error)))
        .ok()
}

fn yaml_problem(file: &Path, document_line: usize, error: &serde_saphyr::Error) -> Problem {
    use serde_saphyr::MessageFormatter;
    // The message alone: the parser's own rendering adds a snippet of the padded document and
    // names the source `<input>`, while the problem already says file and line.
    let message = serde_saphyr::DefaultMessageFormatter.format_message(error);
    let location = error.location();
    Problem {
        file: file.to_owned(),
        line: Some(location.map_or(document_line, |location| location.line() as usize)),
        field: None,
        reason: match location {
            Some(location) => format!("column {}: {message}", location.column()),
            None => message.into_owned(),
        },
    }
}

/// Where each key of a YAML document is, so that a compile error's field path
/// (`spec.routes[2].filter`) can be reported at the line of that field.
#[derive(Debug, Default)]
pub struct Lines {
    children: Vec<(Segment, usize, Lines)>,
}

#[derive(Debug, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl Lines {
    /// The key lines of a (padded) document; empty when it does not parse.
    pub fn of(document: &str) -> Self {
        serde_saphyr::from_str(document).unwrap_or_default()
    }

    /// The line of the deepest part of `path` that exists in the document.
    pub fn find(&self, path: &str) -> Option<usize> {
        let mut node = self;
        let mut line = None;
        for segment in parse_path(path) {
            let Some((_, at, child)) = node.children.iter().find(|(s, _, _)| *s == segment) else {
                break;
            };
            line = Some(*at);
            node = child;
        }
        line
    }
}

/// `spec.routes[2].filter` → `spec`, `routes`, `2`, `filter`.
fn parse_path(path: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    for part in path.split('.') {
        let mut pieces = part.split('[');
        if let Some(key) = pieces.next().filter(|key| !key.is_empty()) {
            segments.push(Segment::Key(key.to_owned()));
        }
        for index in pieces {
            match index.trim_end_matches(']').parse() {
                Ok(index) => segments.push(Segment::Index(index)),
                Err(_) => return segments,
            }
        }
    }
    segments
}

impl<'de> serde::Deserialize<'de> for Lines {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Lines;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Lines, A::Error> {
                let mut children = Vec::new();
                while let Some(key) = map.next_key::<serde_saphyr::Spanned<String>>()? {
                    let value: Lines = map.next_value()?;
                    children.push((
                        Segment::Key(key.value),
                        key.referenced.line() as usize,
                        value,
                    ));
                }
                Ok(Lines { children })
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Lines, A::Error> {
                let mut children = Vec::new();
                while let Some(item) = seq.next_element::<serde_saphyr::Spanned<Lines>>()? {
                    let index = children.len();
                    children.push((
                        Segment::Index(index),
                        item.referenced.line() as usize,
                        item.value,
                    ));
                }
                Ok(Lines { children })
            }

            fn visit_bool<E>(self, _: bool) -> Result<Lines, E> {
                Ok(Lines::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Lines, E> {
                Ok(Lines::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Lines, E> {
                Ok(Lines::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Lines, E> {
                Ok(Lines::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<Lines, E> {
                Ok(Lines::default())
            }
            fn visit_unit<E>(self) -> Result<Lines, E> {
                Ok(Lines::default())
            }
            fn visit_none<E>(self) -> Result<Lines, E> {
                Ok(Lines::default())
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{api::SecretKeyRef, config::SecretResolver};

    fn read(text: &str) -> Result<Manifests, Problems> {
        let mut manifests = Manifests::default();
        let mut problems = Vec::new();
        manifests.add_file(Path::new("web.yaml"), text, &mut problems);
        if problems.is_empty() {
            Ok(manifests)
        } else {
            Err(Problems(problems))
        }
    }

    const INSTANCE: &str = "apiVersion: webhooks.strapi-operator.dev/v1alpha1
kind: StrapiInstance
metadata: {name: cms, namespace: web}
spec:
  url: http://127.0.0.1:1337
  auth: {credentials: {secretName: strapi-admin}}
";

    #[test]
    fn documents_keep_their_file_lines() {
        let text = format!("# comment\n{INSTANCE}---\n\n{INSTANCE}");
        let manifests = read(&text).unwrap();
        let lines: Vec<usize> = manifests.instances.iter().map(|i| i.line).collect();
        assert_eq!(lines, [2, 10]);
    }

    #[test]
    fn a_type_error_points_at_its_line_in_the_file() {
        let broken = INSTANCE.replace("url: http://127.0.0.1:1337", "url: [not, a, string]");
        let text = format!("{INSTANCE}---\n{broken}");
        let problems = read(&text).unwrap_err().0;
        assert_eq!(problems.len(), 1, "{problems:?}");
        // The broken document starts on line 8; `url` is its fifth line.
        assert_eq!(problems[0].line, Some(12), "{}", problems[0]);
    }

    #[test]
    fn unknown_kinds_of_the_operator_are_errors_and_others_are_skipped() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: web}\n---\n\
                    apiVersion: webhooks.strapi-operator.dev/v1alpha1\nkind: StrapiHook\n";
        let problems = read(text).unwrap_err().0;
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, Some(5));
        assert!(problems[0].reason.contains("StrapiHook"), "{}", problems[0]);
    }

    #[test]
    fn field_paths_resolve_to_the_line_of_the_field() {
        let document = "\n\nspec:\n  routes:\n    - name: a\n    - name: b\n      filter: x ==\n";
        let lines = Lines::of(document);
        assert_eq!(lines.find("spec.routes[1].filter"), Some(7));
        assert_eq!(lines.find("spec.routes[0]"), Some(5));
        // A field that is not there: the deepest part that is.
        assert_eq!(lines.find("spec.routes[1].http.body"), Some(6));
        assert_eq!(lines.find("status"), None);
    }

    #[test]
    fn secrets_merge_string_data_over_data() {
        let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: crm, namespace: web}\n\
                    data: {token: b2xk, other: YQ==}\nstringData: {token: new}\n";
        let manifests = read(text).unwrap();
        let get = |key: &str| {
            manifests.secrets.resolve(
                "web",
                &SecretKeyRef {
                    name: "crm".into(),
                    key: key.into(),
                },
            )
        };
        assert_eq!(get("token").unwrap(), "new");
        assert_eq!(get("other").unwrap(), "a");
    }

    #[test]
    fn an_object_defined_twice_is_reported_at_the_second_place() {
        let text = format!("{INSTANCE}---\n{INSTANCE}");
        let manifests = read(&text).unwrap();
        let problems = manifests.duplicates();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, Some(8));
        assert!(problems[0].reason.contains("web.yaml:1"), "{}", problems[0]);
    }
}
