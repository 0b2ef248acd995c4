//! The scheduler's decision: what to start and stop so that what runs matches what is wanted.
//!
//! Pure: plain data in, commands out, no I/O, so it is tested exhaustively without NATS. The
//! loop around it (issue #6) observes hosts, calls [`plan`], and carries the commands out;
//! running it again on the new observation yields nothing (level-triggered and stable).

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};

pub use crate::manifest::Scale;

/// Labels a host must carry: every `key=value` must match.
pub type Requirements = BTreeMap<String, String>;

/// One spread rule: a share of the replicas on hosts matching `requirements`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spread {
    /// Name, for status and errors.
    pub name: String,
    /// Labels the hosts of this share must carry.
    pub requirements: Requirements,
    /// Relative weight of this share.
    pub weight: u32,
}

/// What should run: `replicas` replicas of workload (component or provider) `id`, as spec
/// `fingerprint` of application `app` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// The application it belongs to.
    pub app: String,
    /// Component or provider id.
    pub id: String,
    /// Digest of its spec: a replica started from another one is out of date.
    pub fingerprint: String,
    /// How many hosts should run it (at most one replica per host).
    pub replicas: u32,
    /// How `replicas` is read: exactly, up to, or every eligible host.
    pub scale: Scale,
    /// Labels every host running it must carry.
    pub requirements: Requirements,
    /// How replicas are shared out; empty: one share over every eligible host.
    pub spread: Vec<Spread>,
}

/// A workload running on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The application that placed it; empty when started by hand.
    pub app: String,
    /// The spec it was started from (empty when started by hand).
    pub fingerprint: String,
}

/// A host as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Host id.
    pub id: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// How busy it is: new replicas go to the least busy hosts first (the scheduler counts
    /// its workloads; `trellis start` the components a host reports).
    pub load: usize,
    /// Components and providers it runs, by id.
    pub workloads: BTreeMap<String, Workload>,
    /// Draining before maintenance: nothing new goes there, and what runs there is placed
    /// elsewhere (the core stops it here once the replacements run).
    pub draining: bool,
}

/// One action.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Command {
    /// Stop workload `id` on `host`.
    Stop { host: String, id: String },
    /// Replace the out-of-date `id` on `host` with the wanted spec.
    Replace { host: String, id: String },
    /// Start `id` on `host`.
    Start { host: String, id: String },
}

/// Up to `replicas` distinct hosts of `hosts` carrying every `requirements` label, least
/// loaded first by `load` (ties by id): the planner's choice for one new workload, as `trellis
/// start` makes it by hand.
pub fn choose_hosts(
    hosts: &[trellis_proto::HostInfo],
    requirements: &Requirements,
    replicas: u32,
    load: impl Fn(&trellis_proto::HostInfo) -> usize,
) -> Vec<String> {
    let observed: Vec<Observed> = hosts
        .iter()
        .map(|h| Observed {
            id: h.id.clone(),
            labels: h.labels.clone().into_iter().collect(),
            load: load(h),
            workloads: BTreeMap::new(),
            draining: h.draining,
        })
        .collect();
    let wanted = Wanted {
        app: String::new(),
        id: String::new(),
        fingerprint: String::new(),
        replicas,
        scale: Scale::Exact,
        requirements: requirements.clone(),
        spread: Vec::new(),
    };
    let (commands, _) = plan(std::slice::from_ref(&wanted), &observed);
    let mut chosen: Vec<(usize, String)> = commands
        .into_iter()
        .filter_map(|c| match c {
            Command::Start { host, .. } => {
                let load = observed.iter().find(|o| o.id == host).map_or(0, |o| o.load);
                Some((load, host))
            }
            _ => None,
        })
        .collect();
    chosen.sort();
    chosen.into_iter().map(|(_, host)| host).collect()
}

impl Command {
    /// The host it is for.
    pub fn host(&self) -> &str {
        let (Command::Stop { host, .. }
        | Command::Replace { host, .. }
        | Command::Start { host, .. }) = self;
        host
    }

    /// The workload it concerns.
    pub fn id(&self) -> &str {
        let (Command::Stop { id, .. } | Command::Replace { id, .. } | Command::Start { id, .. }) =
            self;
        id
    }
}

/// How a wanted component stands after the plan is carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Component id.
    pub id: String,
    /// Replicas wanted this pass: `replicas`, or what the eligible hosts allow when the scale
    /// is `up-to` or `every-host`.
    pub wanted: u32,
    /// Replicas that will run.
    pub placed: u32,
    /// Why fewer than wanted, if so.
    pub shortfall: Option<String>,
}

/// Shares `total` over `weights` in proportion (largest remainder; ties to the earlier share).
pub(crate) fn apportion(total: u32, weights: &[u32]) -> Vec<u32> {
    let sum: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<(u64, u64)> = weights
        .iter()
        .map(|&w| {
            let scaled = u64::from(total) * u64::from(w);
            (scaled / sum, scaled % sum)
        })
        .collect();
    let mut shares: Vec<u32> = exact.iter().map(|&(q, _)| q as u32).collect();
    let mut left = total - shares.iter().sum::<u32>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| exact[b].1.cmp(&exact[a].1).then(a.cmp(&b)));
    for i in order {
        if left == 0 {
            break;
        }
        shares[i] += 1;
        left -= 1;
    }
    shares
}

/// Hosts carrying a set of labels (and not draining), found once per set and pass.
struct Eligible {
    /// Ranks (positions in id order) of the hosts that match, ascending.
    ranks: Vec<usize>,
    /// By rank: whether it matches.
    member: Vec<bool>,
}

/// The eligible hosts of every label set a pass asks about: most workloads share a handful of
/// sets, so each is found once instead of once per workload.
struct EligibleCache<'a> {
    hosts: &'a [&'a Observed],
    sets: HashMap<Vec<(&'a str, &'a str)>, Eligible>,
}

impl<'a> EligibleCache<'a> {
    fn get(&mut self, required: &'a Requirements, share: &'a Requirements) -> &Eligible {
        let key: Vec<(&str, &str)> =
            required.iter().chain(share).map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let hosts = self.hosts;
        self.sets.entry(key).or_insert_with_key(|key| {
            let member: Vec<bool> = hosts
                .iter()
                .map(|h| {
                    !h.draining
                        && key.iter().all(|(k, v)| h.labels.get(*k).map(String::as_str) == Some(v))
                })
                .collect();
            let ranks = member.iter().enumerate().filter(|(_, m)| **m).map(|(r, _)| r).collect();
            Eligible { ranks, member }
        })
    }
}

/// What a host does for the workload being planned: marks are tagged with the workload's
/// number in the pass, so they need no clearing between workloads.
#[derive(Clone, Copy, Default)]
struct Mark {
    /// The workload runs there (in the wanted spec, or an outdated one).
    runs: u32,
    /// Of that, outdated.
    outdated: bool,
    /// Some share of the workload would take it.
    fits: u32,
    /// The plan keeps it there.
    kept: u32,
}

/// The commands that make `hosts` run `wanted`, and how each wanted workload will stand.
/// `hosts` are the live ones; replicas on hosts that are gone are simply not there. Workloads an
/// application placed that no entry of `wanted` names any more stop; workloads started by hand
/// are left alone unless `wanted` names their id.
///
/// Ties go to the lowest host ids, so a plan is stable. A pass costs about one look at every
/// replica, plus one look at every eligible host for each workload that needs new replicas.
pub fn plan<H: Borrow<Observed>>(wanted: &[Wanted], hosts: &[H]) -> (Vec<Command>, Vec<Placement>) {
    let mut hosts: Vec<&Observed> = hosts.iter().map(Borrow::borrow).collect();
    hosts.sort_by(|a, b| a.id.cmp(&b.id));
    let hosts = &hosts[..];
    let mut commands = Vec::new();
    // By wanted workload id, the ranks of the hosts running it (ascending), with what runs.
    let mut running_on: HashMap<&str, Vec<(usize, &Workload)>> =
        wanted.iter().map(|w| (w.id.as_str(), Vec::new())).collect();
    for (rank, h) in hosts.iter().enumerate() {
        for (id, workload) in &h.workloads {
            if let Some(on) = running_on.get_mut(id.as_str()) {
                on.push((rank, workload));
            } else if !workload.app.is_empty() {
                commands.push(Command::Stop { host: h.id.clone(), id: id.clone() });
            }
        }
    }
    // Load as the plan goes: spread new replicas over the least busy hosts.
    let mut load: Vec<usize> = hosts.iter().map(|h| h.load).collect();
    let mut marks = vec![Mark::default(); hosts.len()];
    let mut eligible = EligibleCache { hosts, sets: HashMap::new() };
    let default_share =
        [Spread { name: "all".into(), requirements: Requirements::new(), weight: 1 }];
    let mut placements = Vec::with_capacity(wanted.len());
    for (n, w) in wanted.iter().enumerate() {
        let tag = n as u32 + 1;
        let on = running_on.get(w.id.as_str()).map_or(&[][..], Vec::as_slice);
        for &(rank, r) in on {
            let outdated = r.app != w.app || r.fingerprint != w.fingerprint;
            marks[rank] = Mark { runs: tag, outdated, ..marks[rank] };
        }
        let shares: &[Spread] = if w.spread.is_empty() { &default_share } else { &w.spread };
        let mut targets =
            apportion(w.replicas, &shares.iter().map(|s| s.weight).collect::<Vec<_>>());
        let mut short = Vec::new();
        if w.scale != Scale::Exact {
            for (share, target) in shares.iter().zip(&mut targets) {
                let up = eligible.get(&w.requirements, &share.requirements).ranks.len() as u32;
                // Fewer hosts than wanted is fine at this scale; none at all is not.
                if up == 0 && (*target > 0 || w.scale == Scale::EveryHost) {
                    short.push(format!("spread `{}` has no matching host up", share.name));
                }
                *target = if w.scale == Scale::EveryHost { up } else { (*target).min(up) };
            }
        }
        let mut placed = 0u32;
        for (share, &target) in shares.iter().zip(&targets) {
            let target = target as usize;
            let fits = eligible.get(&w.requirements, &share.requirements);
            let free = |rank: usize, marks: &[Mark]| fits.member[rank] && marks[rank].kept != tag;
            for &(rank, _) in on {
                if fits.member[rank] {
                    marks[rank].fits = tag;
                }
            }
            let mut chosen = 0;
            // Replicas already where they belong stay (lowest host ids first, for stability).
            for &(rank, _) in on {
                if chosen < target && !marks[rank].outdated && free(rank, &marks) {
                    marks[rank].kept = tag;
                    chosen += 1;
                }
            }
            // Then out-of-date replicas are replaced in place (no new host, no gap).
            for &(rank, _) in on {
                if chosen < target && marks[rank].outdated && free(rank, &marks) {
                    commands
                        .push(Command::Replace { host: hosts[rank].id.clone(), id: w.id.clone() });
                    marks[rank].kept = tag;
                    chosen += 1;
                }
            }
            // Then the least loaded eligible hosts that do not run it.
            if chosen < target {
                let mut candidates: Vec<(usize, usize)> = fits
                    .ranks
                    .iter()
                    .filter(|&&rank| marks[rank].runs != tag && free(rank, &marks))
                    .map(|&rank| (load[rank], rank))
                    .collect();
                let need = target - chosen;
                if candidates.len() > need {
                    candidates.select_nth_unstable(need);
                    candidates.truncate(need);
                }
                candidates.sort_unstable();
                for (_, rank) in candidates {
                    commands
                        .push(Command::Start { host: hosts[rank].id.clone(), id: w.id.clone() });
                    load[rank] += 1;
                    marks[rank].kept = tag;
                    chosen += 1;
                }
            }
            // Shares that overlap can leave one short without a host missing: only an exact
            // count is a shortfall.
            if chosen < target && w.scale == Scale::Exact {
                short.push(format!(
                    "spread `{}` wants {target} but only {chosen} matching hosts are up",
                    share.name,
                ));
            }
            placed += chosen as u32;
        }
        // While a share is short, replicas beyond another share's count stay, up to the wanted
        // total (the wanted spec first, then outdated ones replaced in place): a spread that
        // cannot be met is no reason to run fewer. They stop once the short share is placed.
        // (An exact count only: `up-to` and `every-host` take what each share's hosts allow.)
        let exact = w.scale == Scale::Exact;
        for outdated in [false, true] {
            for &(rank, _) in on {
                let m = marks[rank];
                let spare = exact && placed < w.replicas;
                if spare && m.kept != tag && m.fits == tag && m.outdated == outdated {
                    if outdated {
                        let (host, id) = (hosts[rank].id.clone(), w.id.clone());
                        commands.push(Command::Replace { host, id });
                    }
                    marks[rank].kept = tag;
                    placed += 1;
                }
            }
        }
        // Replicas beyond the spec, or on hosts no share wants any more, stop.
        for &(rank, _) in on {
            if marks[rank].kept != tag {
                commands.push(Command::Stop { host: hosts[rank].id.clone(), id: w.id.clone() });
                load[rank] = load[rank].saturating_sub(1);
            }
        }
        let shortfall = (!short.is_empty()).then(|| short.join("; "));
        let wanted = if w.scale == Scale::Exact { w.replicas } else { placed };
        placements.push(Placement { id: w.id.clone(), wanted, placed, shortfall });
    }
    commands.sort();
    commands.dedup();
    (commands, placements)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn host(id: &str, zone: &str) -> Observed {
        Observed {
            id: id.into(),
            labels: labels(&[("zone", zone)]),
            load: 0,
            workloads: BTreeMap::new(),
            draining: false,
        }
    }

    fn workload(fingerprint: &str) -> Workload {
        Workload { app: "shop".into(), fingerprint: fingerprint.into() }
    }

    fn wanted(replicas: u32, spread: &[(&str, u32)]) -> Wanted {
        Wanted {
            app: "shop".into(),
            id: "web".into(),
            fingerprint: "f1".into(),
            replicas,
            scale: Scale::Exact,
            requirements: Requirements::new(),
            spread: spread
                .iter()
                .map(|(zone, weight)| Spread {
                    name: (*zone).into(),
                    requirements: labels(&[("zone", zone)]),
                    weight: *weight,
                })
                .collect(),
        }
    }

    /// What the hosts run after the commands for `w` are carried out.
    fn apply(hosts: &[Observed], commands: &[Command], w: &Wanted) -> Vec<Observed> {
        let mut hosts = hosts.to_vec();
        for c in commands {
            match c {
                Command::Stop { host, id } => {
                    let h = hosts.iter_mut().find(|h| h.id == *host).unwrap();
                    assert!(h.workloads.remove(id).is_some());
                }
                Command::Replace { host, id } => {
                    let h = hosts.iter_mut().find(|h| h.id == *host).unwrap();
                    assert!(h.workloads.insert(id.clone(), workload(&w.fingerprint)).is_some());
                }
                Command::Start { host, id } => {
                    let h = hosts.iter_mut().find(|h| h.id == *host).unwrap();
                    assert!(h.workloads.insert(id.clone(), workload(&w.fingerprint)).is_none());
                }
            }
        }
        hosts
    }

    fn running_in(hosts: &[Observed], zone: &str) -> usize {
        hosts.iter().filter(|h| h.labels["zone"] == zone && h.workloads.contains_key("web")).count()
    }

    #[test]
    fn weights_share_replicas_and_the_plan_is_stable() {
        let hosts: Vec<Observed> =
            ["a1", "a2", "a3", "b1", "b2", "b3"].iter().map(|id| host(id, &id[..1])).collect();
        let w = wanted(4, &[("a", 3), ("b", 1)]);
        let (commands, placements) = plan(std::slice::from_ref(&w), &hosts);
        let after = apply(&hosts, &commands, &w);
        assert_eq!((running_in(&after, "a"), running_in(&after, "b")), (3, 1));
        assert_eq!(placements[0].placed, 4);
        assert_eq!(plan(&[w], &after).0, vec![], "nothing to do once placed");
    }

    #[test]
    fn up_to_places_what_fits_and_every_host_follows_the_hosts() {
        let mut hosts: Vec<Observed> = ["a1", "b1"].iter().map(|id| host(id, &id[..1])).collect();
        // Up to four over zones a and b, one host each: two placed, no shortfall.
        let w = Wanted { scale: Scale::UpTo, ..wanted(4, &[("a", 1), ("b", 1)]) };
        let (commands, placements) = plan(std::slice::from_ref(&w), &hosts);
        let after = apply(&hosts, &commands, &w);
        assert_eq!((running_in(&after, "a"), running_in(&after, "b")), (1, 1));
        let p = &placements[0];
        assert_eq!((p.wanted, p.placed, p.shortfall.as_deref()), (2, 2, None));
        // The same wanted exactly is short.
        let exact = Wanted { scale: Scale::Exact, ..w.clone() };
        let (_, placements) = plan(std::slice::from_ref(&exact), &hosts);
        assert!(placements[0].shortfall.is_some());
        assert_eq!(placements[0].wanted, 4);

        // No matching host at all is a shortfall at any scale.
        let nowhere = Wanted { scale: Scale::UpTo, ..wanted(4, &[("c", 1)]) };
        let (_, placements) = plan(std::slice::from_ref(&nowhere), &hosts);
        assert_eq!(placements[0].shortfall.as_deref(), Some("spread `c` has no matching host up"));
        let nowhere = Wanted { scale: Scale::EveryHost, ..nowhere };
        assert!(plan(std::slice::from_ref(&nowhere), &hosts).1[0].shortfall.is_some());

        // Every host of zone a, whatever `replicas` says; a host that joins gets one.
        let every = Wanted { scale: Scale::EveryHost, ..wanted(1, &[("a", 1)]) };
        hosts.extend(["a2", "a3"].iter().map(|id| host(id, "a")));
        let (commands, placements) = plan(std::slice::from_ref(&every), &hosts);
        let after = apply(&hosts, &commands, &every);
        assert_eq!((running_in(&after, "a"), running_in(&after, "b")), (3, 0));
        assert_eq!((placements[0].wanted, placements[0].shortfall.as_deref()), (3, None));
        let mut joined = after.clone();
        joined.push(host("a4", "a"));
        let (commands, _) = plan(std::slice::from_ref(&every), &joined);
        assert_eq!(commands, vec![Command::Start { host: "a4".into(), id: "web".into() }]);
        // A draining host is not one of them.
        joined[0].draining = true;
        let (_, placements) = plan(std::slice::from_ref(&every), &joined);
        assert_eq!(placements[0].wanted, 3);
    }

    #[test]
    fn a_lost_host_is_replaced_and_surplus_is_scaled_back() {
        let hosts: Vec<Observed> = ["a1", "a2", "a3"].iter().map(|id| host(id, "a")).collect();
        let w = wanted(2, &[]);
        let after = apply(&hosts, &plan(std::slice::from_ref(&w), &hosts).0, &w);
        // The host with a replica dies: the survivors get it back to two.
        let dead = after.iter().find(|h| h.workloads.contains_key("web")).unwrap().id.clone();
        let survivors: Vec<Observed> = after.iter().filter(|h| h.id != dead).cloned().collect();
        let healed = apply(&survivors, &plan(std::slice::from_ref(&w), &survivors).0, &w);
        assert_eq!(running_in(&healed, "a"), 2);
        // It comes back still running its replica: one too many, one stops.
        let mut back = healed.clone();
        back.push(after.iter().find(|h| h.id == dead).unwrap().clone());
        let (commands, _) = plan(std::slice::from_ref(&w), &back);
        assert_eq!(commands.iter().filter(|c| matches!(c, Command::Stop { .. })).count(), 1);
        assert_eq!(running_in(&apply(&back, &commands, &w), "a"), 2);
    }

    #[test]
    fn while_a_share_is_short_the_others_keep_their_surplus_up_to_the_wanted_count() {
        // Two replicas in zone a; the spread now wants one in a and one in b, but b has no
        // host up: the second stays in a rather than the workload running one.
        let mut hosts = vec![host("a1", "a"), host("a2", "a"), host("a3", "a")];
        let w = wanted(2, &[("a", 1), ("b", 1)]);
        hosts[0].workloads.insert(w.id.clone(), workload(&w.fingerprint));
        hosts[1].workloads.insert(w.id.clone(), workload("f0"));
        let (commands, placements) = plan(std::slice::from_ref(&w), &hosts);
        assert_eq!(commands, vec![Command::Replace { host: "a2".into(), id: w.id.clone() }]);
        assert_eq!(placements[0].placed, 2);
        assert!(placements[0].shortfall.as_deref().is_some_and(|s| s.contains("`b`")));
        let after = apply(&hosts, &commands, &w);
        assert!(plan(std::slice::from_ref(&w), &after).0.is_empty(), "stable while b is down");
        // A host in b comes up: the replica is placed there, then the surplus in a stops.
        let mut after = after;
        after.push(host("b1", "b"));
        let (commands, placements) = plan(std::slice::from_ref(&w), &after);
        assert_eq!(
            commands,
            vec![
                Command::Stop { host: "a2".into(), id: w.id.clone() },
                Command::Start { host: "b1".into(), id: w.id.clone() },
            ]
        );
        assert_eq!((placements[0].placed, placements[0].shortfall.as_deref()), (2, None));
    }

    #[test]
    fn a_draining_hosts_replicas_are_placed_elsewhere_and_stopped_there() {
        let mut hosts = vec![host("a", "z1"), host("b", "z1"), host("c", "z1")];
        let w = wanted(2, &[]);
        hosts[0].workloads.insert(w.id.clone(), workload(&w.fingerprint));
        hosts[1].workloads.insert(w.id.clone(), workload(&w.fingerprint));
        hosts[0].draining = true;
        let (commands, placements) = plan(std::slice::from_ref(&w), &hosts);
        assert_eq!(
            commands,
            vec![
                Command::Stop { host: "a".into(), id: w.id.clone() },
                Command::Start { host: "c".into(), id: w.id.clone() },
            ]
        );
        assert_eq!(placements[0].placed, 2);
        let moved = apply(&hosts, &commands, &w);
        assert!(plan(std::slice::from_ref(&w), &moved).0.is_empty(), "stable once moved");
        hosts[0].workloads.clear();
        hosts[1].draining = true;
        hosts[2].draining = true;
        let (_, placements) = plan(std::slice::from_ref(&w), &hosts);
        assert!(placements[0].shortfall.is_some(), "draining hosts take nothing new");
    }

    #[test]
    fn not_enough_hosts_is_a_shortfall_not_an_error() {
        let hosts = vec![host("a1", "a")];
        let (commands, placements) = plan(&[wanted(3, &[("a", 1), ("b", 1)])], &hosts);
        assert_eq!(commands.len(), 1);
        assert_eq!(placements[0].placed, 1);
        let why = placements[0].shortfall.as_deref().unwrap();
        assert!(why.contains("spread `a` wants 2") && why.contains("spread `b` wants 1"), "{why}");
    }

    #[test]
    fn a_new_spec_replaces_the_old_one_in_place() {
        let mut hosts = vec![host("a1", "a"), host("a2", "a")];
        hosts[0].workloads.insert("web".into(), workload("f0"));
        let (commands, _) = plan(&[wanted(1, &[])], &hosts);
        assert_eq!(commands, vec![Command::Replace { host: "a1".into(), id: "web".into() }]);
        // Started by hand under the same id: adopted by replacing it too.
        hosts[0]
            .workloads
            .insert("web".into(), Workload { app: "".into(), fingerprint: "".into() });
        let (commands, _) = plan(&[wanted(1, &[])], &hosts);
        assert_eq!(commands, vec![Command::Replace { host: "a1".into(), id: "web".into() }]);
    }

    #[test]
    fn what_an_app_no_longer_wants_stops_and_hand_started_work_stays() {
        let mut hosts = vec![host("a1", "a")];
        hosts[0].workloads.insert("old".into(), workload("f0"));
        hosts[0]
            .workloads
            .insert("manual".into(), Workload { app: "".into(), fingerprint: "".into() });
        let (commands, _) = plan(&[], &hosts);
        assert_eq!(commands, vec![Command::Stop { host: "a1".into(), id: "old".into() }]);
    }

    fn info(id: &str, components: u32, zone: Option<&str>) -> trellis_proto::HostInfo {
        trellis_proto::HostInfo {
            id: id.into(),
            components,
            labels: zone.map(|z| ("zone".to_owned(), z.to_owned())).into_iter().collect(),
            ..Default::default()
        }
    }

    #[test]
    fn choose_hosts_takes_distinct_matching_hosts_least_loaded_first() {
        let hosts = [info("a", 3, Some("x")), info("b", 0, Some("x")), info("c", 0, None)];
        let load = |h: &trellis_proto::HostInfo| h.components as usize;
        let zone = labels(&[("zone", "x")]);
        assert_eq!(choose_hosts(&hosts, &zone, 1, load), vec!["b"]);
        assert_eq!(choose_hosts(&hosts, &zone, 5, load), vec!["b", "a"]);
        assert_eq!(choose_hosts(&hosts, &Requirements::new(), 2, load), vec!["b", "c"]);
        assert!(choose_hosts(&hosts, &labels(&[("zone", "mars")]), 1, load).is_empty());
        assert!(choose_hosts(&[], &zone, 1, load).is_empty());
        // Ties by id.
        let providers = |h: &trellis_proto::HostInfo| h.providers as usize;
        assert_eq!(choose_hosts(&hosts, &Requirements::new(), 1, providers), vec!["a"]);
    }

    #[test]
    fn apportion_is_exact_and_fair() {
        assert_eq!(apportion(4, &[3, 1]), vec![3, 1]);
        assert_eq!(apportion(5, &[1, 1]), vec![3, 2]);
        assert_eq!(apportion(0, &[1, 2]), vec![0, 0]);
        assert_eq!(apportion(3, &[0, 0]), vec![0, 0]);
    }

    const ZONES: [&str; 3] = ["a", "b", "c"];

    /// Up to seven hosts in zones a to c, a third of them already running some version of
    /// `web`.
    fn lattice() -> impl Strategy<Value = Vec<Observed>> {
        let one = (0..ZONES.len(), prop::option::weighted(1.0 / 3.0, any::<bool>()));
        prop::collection::vec(one, 0..8).prop_map(|hosts| {
            let hosts = hosts.into_iter().enumerate();
            hosts
                .map(|(i, (zone, running))| {
                    let mut h = host(&format!("h{i}"), ZONES[zone]);
                    if let Some(newer) = running {
                        let fingerprint = if newer { "f1" } else { "f0" };
                        h.workloads.insert("web".into(), workload(fingerprint));
                    }
                    h
                })
                .collect()
        })
    }

    /// Weights 1 to 4 for some of the zones (none: any host will do).
    fn spread() -> impl Strategy<Value = Vec<(&'static str, u32)>> {
        prop::collection::vec(prop::option::of(1u32..=4), ZONES.len()).prop_map(|weights| {
            ZONES.iter().zip(weights).filter_map(|(z, w)| w.map(|w| (*z, w))).collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn converges_in_one_step_never_overshoots_honours_labels_and_is_stable(
            hosts in lattice(),
            spread in spread(),
            replicas in 0u32..6,
        ) {
            let w = wanted(replicas, &spread);
            let (commands, placements) = plan(std::slice::from_ref(&w), &hosts);
            let after = apply(&hosts, &commands, &w);
            let running: Vec<&Observed> =
                after.iter().filter(|h| h.workloads.contains_key("web")).collect();
            assert!(running.len() as u32 <= w.replicas, "never more than wanted");
            assert_eq!(running.len() as u32, placements[0].placed);
            assert!(
                running.iter().all(|h| h.workloads["web"].fingerprint == w.fingerprint),
                "only the wanted spec"
            );
            if !spread.is_empty() {
                let zones: BTreeSet<&str> = spread.iter().map(|(z, _)| *z).collect();
                assert!(
                    running.iter().all(|h| zones.contains(h.labels["zone"].as_str())),
                    "labels"
                );
            }
            if placements[0].shortfall.is_none() {
                assert_eq!(running.len() as u32, w.replicas, "placed in full when it says so");
            }
            assert_eq!(plan(&[w], &after).0, vec![], "stable once carried out");
        }
    }
}
