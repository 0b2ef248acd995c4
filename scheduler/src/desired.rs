//! What the deployed applications want, as the planner's input: one [`Wanted`] per component
//! and provider, and the start request that makes each. Pure.

use std::collections::BTreeMap;

use crate::apps::AppRecord;
use crate::manifest::{ComponentSpec, Manifest, ProviderSpec, Scale, Source, SpreadSpec};
use sha2::{Digest, Sha256};
use trellis_proto as pb;

use crate::plan::{Spread, Wanted};

/// How to start one workload.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// A component.
    Component(pb::StartComponentRequest),
    /// A provider.
    Provider(pb::StartProviderRequest),
}

/// One workload of an application's current version.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The planner's view.
    pub wanted: Wanted,
    /// How to start it.
    pub start: Start,
    /// Hosts switched to a new version at a time.
    pub batch: u32,
    /// For a component that scales to zero: how many replicas it runs while awake, and how
    /// long it stays awake without a call (`wanted.replicas` is its `min` here; the scheduler
    /// raises it while the workload is awake).
    pub scale_to_zero: Option<(u32, std::time::Duration)>,
    /// For a component with a range of replicas above its awake count: how the scheduler
    /// scales it by load (`wanted.replicas` is set between the floor and `max`).
    pub autoscale: Option<crate::replicas::Autoscale>,
}

impl Workload {
    /// `component` or `provider`.
    pub fn kind(&self) -> &'static str {
        match self.start {
            Start::Component(_) => "component",
            Start::Provider(_) => "provider",
        }
    }
}

/// Every workload the records want running, by id. Records whose current manifest is missing
/// or still names a local file are skipped (the deploy command resolves sources first).
pub fn workloads(records: &[AppRecord]) -> BTreeMap<String, Workload> {
    let mut out = BTreeMap::new();
    for record in records {
        let Some(manifest) = record.current_manifest() else { continue };
        for c in &manifest.components {
            if let Some(w) = component(manifest, c) {
                out.insert(w.wanted.id.clone(), w);
            }
        }
        for p in &manifest.providers {
            let w = provider(manifest, p);
            out.insert(w.wanted.id.clone(), w);
        }
    }
    out
}

fn fingerprint(parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    hash.finalize()[..12].iter().map(|b| format!("{b:02x}")).collect()
}

fn spread(spread: &[SpreadSpec]) -> Vec<Spread> {
    spread
        .iter()
        .map(|s| Spread {
            name: s.name.clone(),
            requirements: s.requirements.clone(),
            weight: s.weight.get(),
        })
        .collect()
}

/// Where a workload's replicas go: replicas, scale, requirements, spread.
type Placing<'a> = (u32, Scale, &'a BTreeMap<String, String>, &'a [SpreadSpec]);

/// The planner's view of workload `id` of `manifest`, and the owner its replicas carry.
fn wanted(
    manifest: &Manifest,
    id: &str,
    fingerprint: String,
    (replicas, scale, requirements, spreads): Placing<'_>,
) -> (Wanted, pb::Owner) {
    let app = manifest.name.to_string();
    let owner = pb::Owner { app: app.clone(), fingerprint: fingerprint.clone() };
    let wanted = Wanted {
        app,
        id: id.to_owned(),
        fingerprint,
        replicas,
        scale,
        requirements: requirements.clone(),
        spread: spread(spreads),
    };
    (wanted, owner)
}

fn component(manifest: &Manifest, c: &ComponentSpec) -> Option<Workload> {
    let Source::Digest(digest) = &c.source else { return None };
    let limits = pb::ComponentLimits {
        max_memory_bytes: c.limits.max_memory_bytes,
        timeout_ms: c.limits.timeout_ms,
        max_concurrent: c.limits.max_concurrent,
        max_request_bytes: c.limits.max_request_bytes,
        reuse: c.reuse.map(|r| pb::Reuse { max_calls: r.max_calls, idle_ms: r.idle_ms }),
    };
    let config: Vec<String> = c.config.iter().map(|n| n.to_string()).collect();
    let secrets: Vec<String> = c.secrets.iter().map(|n| n.to_string()).collect();
    let limits_text = format!("{limits:?}");
    // Grants join the fingerprint only when there are any, so the replicas of manifests
    // without secrets keep theirs.
    let grants = (!secrets.is_empty()).then(|| format!("secrets:{}", secrets.join(",")));
    let config_text = config.join(",");
    let mut parts: Vec<&[u8]> =
        vec![b"component", digest.as_bytes(), config_text.as_bytes(), limits_text.as_bytes()];
    parts.extend(grants.as_ref().map(|g| g.as_bytes()));
    let fingerprint = fingerprint(&parts);
    let placement = (c.replicas.min, c.scale, &c.requirements, &c.spread[..]);
    let (wanted, owner) = wanted(manifest, c.name.as_str(), fingerprint, placement);
    Some(Workload {
        wanted,
        start: Start::Component(pb::StartComponentRequest {
            component_id: c.name.to_string(),
            digest: digest.clone(),
            limits: Some(limits),
            config,
            owner: Some(owner),
            replace: true,
            secrets,
        }),
        batch: manifest.rollout.batch.get(),
        scale_to_zero: c.replicas.scales_to_zero().map(|idle| (c.replicas.awake(), idle)),
        autoscale: c.replicas.autoscale(),
    })
}

fn provider(manifest: &Manifest, p: &ProviderSpec) -> Workload {
    let builtin: &[u8] = if p.builtin { b"builtin" } else { b"process" };
    let fingerprint = fingerprint(&[b"provider", p.kind.as_str().as_bytes(), builtin]);
    let placement = (p.replicas, p.scale, &p.requirements, &p.spread[..]);
    let (wanted, owner) = wanted(manifest, p.name.as_str(), fingerprint, placement);
    Workload {
        wanted,
        start: Start::Provider(pb::StartProviderRequest {
            provider_id: p.name.to_string(),
            kind: p.kind.to_string(),
            builtin: p.builtin,
            owner: Some(owner),
        }),
        batch: manifest.rollout.batch.get(),
        scale_to_zero: None,
        autoscale: None,
    }
}

/// The workloads of app `a`: component `web` with `replicas` as written, and `api` with 2.
#[cfg(test)]
pub(crate) fn web_and_api(replicas: &str) -> BTreeMap<String, Workload> {
    const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let yaml = format!(
        "name: a\nversion: '1'\ncomponents:\n  - name: web\n    source: {DIGEST}\n    replicas: {replicas}\n  - name: api\n    source: {DIGEST}\n    replicas: 2\n"
    );
    let m = crate::manifest::Manifest::from_yaml(&yaml).expect("a valid manifest");
    let record = AppRecord {
        name: "a".into(),
        current: Some(m.version.clone()),
        stable: None,
        versions: vec![m],
        history: vec![],
    };
    workloads(&[record])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(yaml: &str) -> AppRecord {
        let m = Manifest::from_yaml(yaml).unwrap();
        AppRecord {
            name: m.name.to_string(),
            current: Some(m.version.clone()),
            stable: None,
            versions: vec![m],
            history: vec![],
        }
    }

    const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn fingerprints_change_with_what_a_replica_is_started_from_only() {
        let base = format!(
            "name: a\nversion: '1'\ncomponents:\n  - name: web\n    source: {DIGEST}\n    replicas: 2\n"
        );
        let one = workloads(&[record(&base)]);
        let fp = |w: &BTreeMap<String, Workload>| w["web"].wanted.fingerprint.clone();
        // A new version name or replica count does not make replicas out of date...
        let renamed =
            base.replace("version: '1'", "version: '2'").replace("replicas: 2", "replicas: 5");
        assert_eq!(fp(&one), fp(&workloads(&[record(&renamed)])));
        // ...another artifact, config list or limit does.
        let other = base.replace(
            DIGEST,
            &DIGEST.replace("00000000000000000000000000000000", "11111111111111111111111111111111"),
        );
        assert_ne!(fp(&one), fp(&workloads(&[record(&other)])));
        let configured = format!("{base}    config: [c]\n");
        assert_ne!(fp(&one), fp(&workloads(&[record(&configured)])));
        let limited = format!("{base}    limits: {{timeout_ms: 5}}\n");
        assert_ne!(fp(&one), fp(&workloads(&[record(&limited)])));
        let granted = format!("{base}    secrets: [db]\n");
        let granted = workloads(&[record(&granted)]);
        assert_ne!(fp(&one), fp(&granted));
        let Start::Component(start) = &granted["web"].start else { panic!("a component") };
        assert_eq!(start.secrets, ["db"]);
        let none = format!("{base}    secrets: []\n");
        assert_eq!(fp(&one), fp(&workloads(&[record(&none)])), "no grants: as before");
    }

    #[test]
    fn local_sources_and_undeployed_apps_want_nothing() {
        let local =
            record("name: a\nversion: '1'\ncomponents:\n  - name: web\n    source: ./x.wasm\n");
        assert!(workloads(&[local]).is_empty());
        let mut gone = record(&format!(
            "name: a\nversion: '1'\ncomponents:\n  - name: web\n    source: {DIGEST}\n"
        ));
        gone.current = None;
        assert!(workloads(&[gone]).is_empty());
    }
}
