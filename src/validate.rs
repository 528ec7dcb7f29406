//! `validate`: everything the API server and the controller would say about manifest files,
//! without a cluster or a Strapi. The files are read by the shared loader ([`crate::manifests`]:
//! YAML, the CRD schemas, CEL rules and unknown fields), then each `StrapiWebhook` is compiled
//! as the controller compiles it ([`compile_in_files`], which local mode uses too): its
//! instance and the namespaces that instance admits, the instance's egress policy, filters,
//! templates, sink references, static cost limits and the Secrets it reads.
//!
//! GitOps repositories often keep Secrets out (Sealed Secrets, External Secrets, a vault). So a
//! Secret that is in the files is checked key by key, and a route to a missing key is an error;
//! a Secret that is not in the files at all is a warning and a placeholder stands in for its
//! value ([`FileSecrets`]). Likewise a `StrapiWebhook` whose `StrapiInstance` lives elsewhere
//! is compiled without the instance's egress policy, with a warning.

use std::{cell::RefCell, collections::BTreeSet, path::PathBuf};

use serde::Serialize;

use crate::{
    api::{NamespacesFrom, SecretKeyRef, StrapiInstance, StrapiWebhook, StrapiWebhookSpec},
    config::{
        CompiledWebhook, SecretError, SecretResolver, allows_namespace, apply_egress,
        compile_webhook, egress_refused, egress_rules, referenced_instance,
    },
    key::ObjectKey,
    manifests::{Located, Manifests, Problem},
    sinks::{EgressBase, EgressPolicy},
};

/// A signing key standing in for a Secret that is not in the files (`whsec_` + base64 of 24
/// bytes), so the rest of the sink still compiles.
const PLACEHOLDER_SIGNING_KEY: &str = "whsec_cGxhY2Vob2xkZXItc2lnbmluZy1rZXkh";

/// What `validate` found: errors fail the check, warnings do not.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// What the API server or the controller would refuse.
    pub errors: Vec<Problem>,
    /// What could not be checked from the files, or compiles but is likely not meant.
    pub warnings: Vec<Problem>,
}

impl Report {
    /// One line per problem (`file:line: field: reason`), errors first; warnings say so.
    pub fn human(&self) -> String {
        let mut text = String::new();
        for error in &self.errors {
            text.push_str(&format!("{error}\n"));
        }
        for warning in &self.warnings {
            let mut warning = warning.clone();
            warning.reason = format!("warning: {}", warning.reason);
            text.push_str(&format!("{warning}\n"));
        }
        text
    }
}

/// Checks every manifest in `paths` (files, or folders of `*.yaml`/`*.yml`).
///
/// Whether loopback sinks are allowed is a flag of the receiver (`--allow-loopback-sinks`),
/// not part of the manifests, so a loopback sink is a warning here, not an error.
pub fn validate(paths: &[PathBuf]) -> Report {
    let egress = &EgressBase {
        allow_loopback: true,
        ..EgressBase::default()
    };
    let (manifests, errors) = Manifests::load(paths);
    let mut report = Report {
        errors,
        warnings: Vec::new(),
    };
    for webhook in &manifests.webhooks {
        let secrets = FileSecrets::new(&manifests, &webhook.object.spec);
        let instance = manifests.instance(&referenced_instance(&webhook.object));
        if instance.is_none() {
            report.warnings.push(webhook.problem_at(
                "spec.instanceRef",
                format!(
                    "StrapiInstance {} is not in the files; its namespaces and egress policy \
                     are not checked",
                    referenced_instance(&webhook.object)
                ),
            ));
        }
        match compile_in_files(webhook, instance, &secrets, egress) {
            Ok(compiled) => {
                report.warnings.extend(
                    compiled
                        .warnings
                        .iter()
                        .map(|warning| webhook.problem_at(&warning.field, &warning.message)),
                );
                report
                    .warnings
                    .extend(loopback_warnings(webhook, &compiled));
            }
            Err(problems) => report.errors.extend(problems),
        }
        report.warnings.extend(secrets.absent_warnings(webhook));
    }
    for instance in &manifests.instances {
        if let Err(error) = egress_rules(instance.object.spec.egress.as_ref()) {
            let target = ObjectKey::of(&instance.object);
            report.errors.push(
                instance.problem_at("spec.egress", format!("StrapiInstance {target}: {error}")),
            );
        }
    }
    // An instance's problem is found again through each webhook that uses it: say it once.
    let mut seen = Vec::new();
    report.errors.retain(|problem| {
        let first = !seen.contains(problem);
        seen.push(problem.clone());
        first
    });
    report
}

/// Sinks that a receiver in a cluster refuses unless started with `--allow-loopback-sinks`.
fn loopback_warnings(webhook: &Located<StrapiWebhook>, compiled: &CompiledWebhook) -> Vec<Problem> {
    let cluster = EgressPolicy::default();
    webhook
        .object
        .spec
        .sinks
        .iter()
        .enumerate()
        .filter_map(|(index, sink)| {
            let (config, _) = compiled.sink(&sink.name)?;
            let why = cluster.check_url(config.url()).err()?;
            let refused = egress_refused(index, sink, &why);
            Some(webhook.problem_at(
                &refused.field,
                format!(
                    "{}; the receiver allows it only with --allow-loopback-sinks (local mode \
                     does)",
                    refused.message
                ),
            ))
        })
        .collect()
}

/// Compiles one `StrapiWebhook` of the files as the controller would: refused when its
/// `instance` does not admit its namespace, held to the instance's egress policy (none when the
/// instance is not given) on top of `egress`. Every problem is at its field's line.
pub fn compile_in_files(
    webhook: &Located<StrapiWebhook>,
    instance: Option<&Located<StrapiInstance>>,
    secrets: &dyn SecretResolver,
    egress: &EgressBase,
) -> Result<CompiledWebhook, Vec<Problem>> {
    let meta = &webhook.object.metadata;
    let namespace = ObjectKey::of_meta(meta).namespace;
    let mut rules = Default::default();
    if let Some(instance) = instance {
        let target = ObjectKey::of(&instance.object);
        let selector = instance.object.spec.allowed_namespaces.from == NamespacesFrom::Selector;
        // Namespace labels are not in the files, so a selector is checked only in a cluster.
        if !selector && !allows_namespace(&instance.object, &namespace, None) {
            return Err(vec![webhook.problem_at(
                "spec.instanceRef",
                format!(
                    "StrapiInstance {target} does not allow webhooks from namespace \
                     {namespace} (spec.allowedNamespaces)"
                ),
            )]);
        }
        rules = egress_rules(instance.object.spec.egress.as_ref()).map_err(|error| {
            vec![instance.problem_at("spec.egress", format!("StrapiInstance {target}: {error}"))]
        })?;
    }
    let policy = EgressPolicy {
        base: egress.clone(),
        rules,
    };
    let spec = &webhook.object.spec;
    let name = meta.name.as_deref().unwrap_or_default();
    let generation = meta.generation.unwrap_or_default();
    compile_webhook(&namespace, name, generation, spec, secrets)
        .and_then(|mut config| apply_egress(&mut config, spec, &policy).map(|()| config))
        .map_err(|errors| {
            errors
                .iter()
                .map(|error| webhook.problem_at(&error.field, &error.message))
                .collect()
        })
}

/// Secret values for `validate` and `render`: a Secret in the files is read as it is (a missing
/// key is an error); a Secret that is not in the files gets a placeholder, and is remembered so
/// the caller can say so. Every value handed out is remembered too, for redaction.
pub struct FileSecrets<'a> {
    manifests: &'a Manifests,
    signing: Vec<SecretKeyRef>,
    absent: RefCell<BTreeSet<(String, String)>>,
    handed_out: RefCell<Vec<(String, String)>>,
}

impl<'a> FileSecrets<'a> {
    /// Secrets of `manifests` for compiling `spec` (whose signing Secrets need a placeholder in
    /// signing-key form).
    pub fn new(manifests: &'a Manifests, spec: &StrapiWebhookSpec) -> Self {
        Self {
            manifests,
            signing: spec
                .sinks
                .iter()
                .filter_map(|sink| sink.http.as_ref()?.signing.as_ref())
                .map(|signing| signing.secret_ref.clone())
                .collect(),
            absent: RefCell::default(),
            handed_out: RefCell::default(),
        }
    }

    /// Every value handed out, with how to show it instead: `<Secret ns/name key k>`.
    pub fn redactions(&self) -> Vec<(String, String)> {
        self.handed_out.borrow().clone()
    }

    /// One warning per Secret `webhook` reads that is not in the files.
    pub fn absent_warnings(&self, webhook: &Located<StrapiWebhook>) -> Vec<Problem> {
        self.absent
            .borrow()
            .iter()
            .map(|(namespace, name)| {
                webhook.problem(format!(
                    "Secret {namespace}/{name} is not in the files; its keys and values are not \
                     checked"
                ))
            })
            .collect()
    }
}

impl SecretResolver for FileSecrets<'_> {
    fn resolve(&self, namespace: &str, reference: &SecretKeyRef) -> Result<String, SecretError> {
        let label = format!(
            "<Secret {namespace}/{} key {}>",
            reference.name, reference.key
        );
        let value = if self.manifests.has_secret(namespace, &reference.name) {
            self.manifests
                .secrets
                .resolve(namespace, reference)
                .map_err(|_| SecretError::KeyMissing {
                    namespace: namespace.to_owned(),
                    name: reference.name.clone(),
                    key: reference.key.clone(),
                })?
        } else {
            self.absent
                .borrow_mut()
                .insert((namespace.to_owned(), reference.name.clone()));
            if self.signing.contains(reference) {
                PLACEHOLDER_SIGNING_KEY.to_owned()
            } else {
                // Usable as a header value and as a Slack webhook URL alike.
                format!(
                    "https://placeholder.invalid/{namespace}/{}/{}",
                    reference.name, reference.key
                )
            }
        };
        self.handed_out.borrow_mut().push((value.clone(), label));
        Ok(value)
    }
}
