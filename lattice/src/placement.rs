//! Choosing hosts for replicas: pure decisions over plain data, no I/O.

use std::collections::BTreeMap;

use trellis_proto::HostInfo;

/// Picks up to `replicas` distinct hosts carrying every `labels` pair, fewest components first
/// (ties by id, so the choice is stable).
pub fn pick_hosts(
    hosts: &[HostInfo],
    labels: &BTreeMap<String, String>,
    replicas: usize,
) -> Vec<String> {
    let mut fit: Vec<&HostInfo> =
        hosts.iter().filter(|h| labels.iter().all(|(k, v)| h.labels.get(k) == Some(v))).collect();
    fit.sort_by(|a, b| a.components.cmp(&b.components).then_with(|| a.id.cmp(&b.id)));
    fit.into_iter().take(replicas).map(|h| h.id.clone()).collect()
}

/// The host with the fewest providers, for a provider without a placement.
pub fn least_providers(hosts: &[HostInfo]) -> Option<&HostInfo> {
    hosts.iter().min_by(|a, b| a.providers.cmp(&b.providers).then_with(|| a.id.cmp(&b.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str, components: u32, labels: &[(&str, &str)]) -> HostInfo {
        HostInfo {
            id: id.into(),
            components,
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn places_on_distinct_matching_hosts_least_loaded_first() {
        let hosts =
            [host("a", 3, &[("zone", "x")]), host("b", 0, &[("zone", "x")]), host("c", 0, &[])];
        let zone: BTreeMap<_, _> = [("zone".to_string(), "x".to_string())].into();
        assert_eq!(pick_hosts(&hosts, &zone, 1), vec!["b"]);
        assert_eq!(pick_hosts(&hosts, &zone, 5), vec!["b", "a"]);
        assert_eq!(pick_hosts(&hosts, &BTreeMap::new(), 2), vec!["b", "c"]);
        let mars: BTreeMap<_, _> = [("zone".to_string(), "mars".to_string())].into();
        assert!(pick_hosts(&hosts, &mars, 1).is_empty());
        assert!(pick_hosts(&[], &zone, 1).is_empty());
    }

    #[test]
    fn least_providers_breaks_ties_by_id() {
        let mut a = host("b", 0, &[]);
        a.providers = 1;
        let hosts = [a, host("c", 0, &[]), host("a", 5, &[])];
        assert_eq!(least_providers(&hosts).map(|h| h.id.as_str()), Some("a"));
    }
}
