//! Server-side apply that only writes when something changed.
//!
//! ```text
//! desired ─▶ + spec-hash annotation ─▶ GET live ─▶ same hash and desired ⊆ live ─▶ no write
//!                                              └▶ otherwise ─▶ apply (field manager
//!                                                 adpipe-operator, force) ─▶ live
//! ```
//!
//! The hash notices changes of our own intent (including removed fields); the subset check
//! notices someone else's edit of a field we own. A steady pipeline costs reads only, which
//! is what keeps a cluster with hundreds of pipelines quiet.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::Digest;

use crate::MANAGER;
use crate::metrics::OperatorMetrics;

/// The annotation holding the hash of what the operator last applied.
pub const SPEC_HASH_ANNOTATION: &str = "adpipe.io/spec-hash";

/// Writes children, counting every write.
#[derive(Clone)]
pub struct Applier {
    client: Client,
    metrics: OperatorMetrics,
}

impl Applier {
    /// An applier writing through `client`.
    pub fn new(client: Client, metrics: OperatorMetrics) -> Self {
        Self { client, metrics }
    }

    /// Makes the object `desired` describes exist as described and returns it as the API
    /// server has it.
    pub async fn ensure<K>(&self, mut desired: K) -> Result<K, kube::Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned,
    {
        let namespace = desired.namespace().unwrap_or_default();
        let name = desired.name_any();
        let api: Api<K> = Api::namespaced(self.client.clone(), &namespace);
        let hash = spec_hash(&desired)?;
        desired
            .annotations_mut()
            .insert(SPEC_HASH_ANNOTATION.to_owned(), hash.clone());
        let drift = match api.get_opt(&name).await? {
            None => "absent".to_owned(),
            Some(live) if live.annotations().get(SPEC_HASH_ANNOTATION) != Some(&hash) => {
                "spec changed".to_owned()
            }
            Some(live) => match difference(&to_value(&desired)?, &to_value(&live)?) {
                None => return Ok(live),
                Some(path) => format!("{path} edited"),
            },
        };
        tracing::info!(kind = %K::kind(&()), %namespace, %name, %drift, "applying");
        self.metrics.write(&K::kind(&()));
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
    }

    /// Deletes an object the pipeline no longer wants (e.g. its Ingress), if it is there.
    pub async fn remove<K>(&self, namespace: &str, name: &str) -> Result<(), kube::Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + Debug
            + DeserializeOwned,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let Some(live) = api.get_opt(name).await? else {
            return Ok(());
        };
        let ours = live
            .labels()
            .get("app.kubernetes.io/managed-by")
            .is_some_and(|m| m == MANAGER);
        if ours {
            self.metrics.write(&K::kind(&()));
            api.delete(name, &DeleteParams::default()).await?;
        }
        Ok(())
    }
}

fn to_value<K: Serialize>(object: &K) -> Result<Value, kube::Error> {
    serde_json::to_value(object).map_err(kube::Error::SerdeError)
}

/// SHA-256 of the object as the operator wants it, before the hash is added.
fn spec_hash<K: Serialize>(desired: &K) -> Result<String, kube::Error> {
    let bytes = serde_json::to_vec(desired).map_err(kube::Error::SerdeError)?;
    Ok(hex::encode(sha2::Sha256::digest(&bytes)))
}

/// The first field of `desired` whose value differs in `live`, as a dotted path, or `None`
/// when `desired` is a subset of `live`. Lists must match element by element; fields the API
/// server defaulted in `live` are ignored.
pub fn difference(desired: &Value, live: &Value) -> Option<String> {
    match (desired, live) {
        (Value::Object(want), Value::Object(have)) => want.iter().find_map(|(key, value)| {
            if value.is_null() {
                return None;
            }
            match have.get(key) {
                None => Some(key.clone()),
                Some(h) => difference(value, h).map(|rest| join(key, &rest)),
            }
        }),
        (Value::Array(want), Value::Array(have)) if want.len() == have.len() => want
            .iter()
            .zip(have)
            .enumerate()
            .find_map(|(i, (w, h))| difference(w, h).map(|rest| join(&i.to_string(), &rest))),
        _ if desired == live => None,
        _ => Some(String::new()),
    }
}

fn join(head: &str, rest: &str) -> String {
    if rest.is_empty() {
        head.to_owned()
    } else {
        format!("{head}.{rest}")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn defaults_added_by_the_api_server_are_not_a_change() {
        let desired = json!({"spec": {"replicas": 2, "ports": [{"port": 80}]}});
        let live = json!({"spec": {"replicas": 2, "revisionHistoryLimit": 10,
            "ports": [{"port": 80, "protocol": "TCP"}]}, "status": {"ready": 1}});
        assert_eq!(difference(&desired, &live), None);
    }

    #[test]
    fn an_edited_or_removed_field_is_a_change() {
        let desired = json!({"spec": {"replicas": 2, "ports": [{"port": 80}]}});
        let edited = json!({"spec": {"replicas": 3, "ports": [{"port": 80}]}});
        assert_eq!(
            difference(&desired, &edited).as_deref(),
            Some("spec.replicas")
        );
        let removed = json!({"spec": {"replicas": 2}});
        assert_eq!(
            difference(&desired, &removed).as_deref(),
            Some("spec.ports")
        );
        let added = json!({"spec": {"replicas": 2, "ports": [{"port": 80}, {"port": 81}]}});
        assert_eq!(difference(&desired, &added).as_deref(), Some("spec.ports"));
        let deep = json!({"spec": {"replicas": 2, "ports": [{"port": 8080}]}});
        assert_eq!(
            difference(&desired, &deep).as_deref(),
            Some("spec.ports.0.port")
        );
    }
}
