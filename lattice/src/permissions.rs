//! NATS subject permissions per role, from the subject scheme: what a server should let each
//! kind of user of a lattice's account publish and subscribe to (`trellis nats permissions`).
//! Least privilege at the transport, under the signatures: a viewer's user cannot even publish a
//! control request, and an operator's user cannot serve a component's calls.

use std::fmt::Write as _;

/// Who a NATS user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatsRole {
    /// A `trellis host` (and the providers it starts, unless it gives them their own user with
    /// `--provider-nats-creds` or `--provider-nats-nkey`).
    Host,
    /// The capability providers a host starts, when they have a user of their own: they watch
    /// links, publish events, answer the requests they receive, and use their own key-value
    /// bucket; they cannot serve or answer a component's calls, reach a host's inbox or change
    /// the lattice.
    Provider,
    /// An operator's CLI: changes the lattice and calls components; serves nothing.
    Operator,
    /// Reads: pings, inventories, events, the lattice's state.
    Viewer,
}

/// Subjects a user may publish and subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// Allowed publish subjects.
    pub publish: Vec<String>,
    /// Allowed subscribe subjects.
    pub subscribe: Vec<String>,
    /// Whether the user may answer the requests it receives (to their reply subjects only).
    pub allow_responses: bool,
}

/// Where replies to a provider's requests come (its JetStream API calls and watches):
/// `<prefix>.<provider id>`, outside the `_INBOX` of hosts and operators.
pub const PROVIDER_INBOX: &str = "_TRELLIS_PROVIDER";

/// The inbox prefix of provider `provider_id`.
pub fn provider_inbox(provider_id: &str) -> String {
    format!("{PROVIDER_INBOX}.{provider_id}")
}

/// Key-value buckets of a lattice.
/// Operators write the first four (the scheduler's lease and statuses are hosts').
const BUCKETS: [&str; 5] = ["LINKS", "CONFIG", "APPS", "SECRETS", "SCHEDULER"];

/// JetStream API calls that only read (info, get, and the consumers that watches and listings
/// use), in the local domain and any other (`$JS.<domain>.API`, from a leaf node).
const JS_READ: [&str; 9] = [
    "INFO",
    "STREAM.INFO.*",
    "STREAM.NAMES",
    "STREAM.LIST",
    "STREAM.MSG.GET.*",
    "DIRECT.GET.>",
    "CONSUMER.CREATE.>",
    "CONSUMER.INFO.>",
    "CONSUMER.DELETE.>",
];

/// The permissions of `role` in `lattice`. `app_subjects` are the application's own subjects
/// that a provider (messaging) may publish and subscribe to; other roles ignore them.
pub fn permissions(role: NatsRole, lattice: &str, app_subjects: &[String]) -> Permissions {
    let prefix = format!("trellis.{lattice}");
    // Replies, and the round trip that waits for the server (`connect::sync_with_server`).
    let own = ["_INBOX.>", "_TRELLIS_SYNC.>"].map(String::from);
    let js_all = ["$JS.API.>", "$JS.*.API.>", "$JS.ACK.>", "$JS.FC.>"].map(String::from);
    let js_read = JS_READ
        .iter()
        .flat_map(|api| [format!("$JS.API.{api}"), format!("$JS.*.API.{api}")])
        .chain(["$JS.ACK.>", "$JS.FC.>"].map(String::from));
    let buckets = |names: &[&str]| {
        names.iter().map(|b| format!("$KV.TRELLIS_{lattice}_{b}.>")).collect::<Vec<_>>()
    };
    let artifacts = format!("$O.TRELLIS_{lattice}_ARTIFACTS.>");
    // Compiled code is loaded as trusted input: only hosts write it (each entry is sealed too).
    let compiled = format!("$O.{}.>", crate::compiled::bucket(lattice));
    let provider_inbox = format!("{PROVIDER_INBOX}.>");
    // keyvalue-nats' default bucket (a link's `bucket=` names another: add its
    // `$KV.<bucket>.>` and `$JS.API.STREAM.CREATE.KV_<bucket>`).
    let kv = format!("trellis-kv-{lattice}");
    match role {
        NatsRole::Host => Permissions {
            publish: [format!("{prefix}.>"), format!("$KV.{kv}.>")]
                .into_iter()
                .chain(own.clone())
                .chain(js_all)
                .chain(buckets(&BUCKETS))
                .chain([artifacts, compiled])
                .collect(),
            subscribe: [format!("{prefix}.>"), provider_inbox].into_iter().chain(own).collect(),
            allow_responses: false,
        },
        NatsRole::Provider => Permissions {
            publish: [
                format!("{prefix}.evt.>"),
                "_TRELLIS_SYNC.>".to_owned(),
                format!("$KV.{kv}.>"),
                format!("$JS.API.STREAM.CREATE.KV_{kv}"),
            ]
            .into_iter()
            .chain(js_read)
            .chain(app_subjects.iter().cloned())
            .collect(),
            subscribe: [provider_inbox, "_TRELLIS_SYNC.>".to_owned()]
                .into_iter()
                .chain(app_subjects.iter().cloned())
                .collect(),
            allow_responses: true,
        },
        NatsRole::Operator => Permissions {
            publish: [format!("{prefix}.ctl.>"), format!("{prefix}.rpc.>")]
                .into_iter()
                .chain(own.clone())
                .chain(js_all)
                .chain(buckets(&BUCKETS[..4]))
                .chain([artifacts])
                .collect(),
            subscribe: [format!("{prefix}.evt.>")].into_iter().chain(own).collect(),
            allow_responses: false,
        },
        NatsRole::Viewer => Permissions {
            publish: [format!("{prefix}.ctl.hosts.ping"), format!("{prefix}.ctl.host.*.inventory")]
                .into_iter()
                .chain(own.clone())
                .chain(js_read)
                .collect(),
            subscribe: [format!("{prefix}.evt.>")].into_iter().chain(own).collect(),
            allow_responses: false,
        },
    }
}

impl Permissions {
    /// The `permissions` block of a user in a nats-server configuration file.
    pub fn to_conf(&self) -> String {
        let list = |subjects: &[String]| {
            subjects.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ")
        };
        let mut out = String::from("permissions: {\n");
        let _ = writeln!(out, "  publish: {{ allow: [{}] }}", list(&self.publish));
        let _ = writeln!(out, "  subscribe: {{ allow: [{}] }}", list(&self.subscribe));
        if self.allow_responses {
            out.push_str("  allow_responses: true\n");
        }
        out.push('}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(patterns: &[String], subject: &str) -> bool {
        patterns.iter().any(|p| {
            let (mut p, mut s) = (p.split('.'), subject.split('.'));
            loop {
                match (p.next(), s.next()) {
                    (Some(">"), Some(_)) => return true,
                    (Some("*"), Some(_)) => {}
                    (Some(a), Some(b)) if a == b => {}
                    (None, None) => return true,
                    _ => return false,
                }
            }
        })
    }

    #[test]
    fn each_role_gets_what_it_needs_and_nothing_that_changes_more() {
        let host = permissions(NatsRole::Host, "prod", &[]);
        assert!(allows(
            &host.subscribe,
            "trellis.prod.rpc.hello.wasi:http/incoming-handler.handle"
        ));
        assert!(allows(&host.publish, "$KV.TRELLIS_prod_SCHEDULER.leader"));
        assert!(allows(&host.publish, "$O.TRELLIS_prod_COMPILED.C.abc"));
        assert!(!allows(&host.publish, "trellis.other.ctl.hosts.ping"));

        let operator = permissions(NatsRole::Operator, "prod", &[]);
        assert!(allows(&operator.publish, "trellis.prod.ctl.host.N1.stop_component"));
        assert!(allows(&operator.publish, "$KV.TRELLIS_prod_LINKS.web.wasi.http.x.default"));
        assert!(!allows(&operator.subscribe, "trellis.prod.rpc.hello.x.y"), "serves no calls");
        assert!(!allows(&operator.publish, "$KV.TRELLIS_prod_SCHEDULER.leader"));
        assert!(allows(&operator.publish, "$O.TRELLIS_prod_ARTIFACTS.C.abc"));
        assert!(!allows(&operator.publish, "$O.TRELLIS_prod_COMPILED.C.abc"), "hosts only");
        assert!(allows(&operator.publish, "$KV.TRELLIS_prod_SECRETS.db"), "puts secrets");
        assert!(!allows(&operator.publish, "$KV.TRELLIS_prod_SCHEDULER.lease"));

        let viewer = permissions(NatsRole::Viewer, "prod", &[]);
        assert!(allows(&viewer.publish, "trellis.prod.ctl.hosts.ping"));
        assert!(allows(&viewer.publish, "trellis.prod.ctl.host.N1.inventory"));
        assert!(!allows(&viewer.publish, "trellis.prod.ctl.host.N1.stop_component"));
        assert!(!allows(&viewer.publish, "trellis.prod.rpc.hello.x.y"));
        assert!(!allows(&viewer.publish, "$KV.TRELLIS_prod_LINKS.k"));
        assert!(!allows(&viewer.publish, "$JS.API.STREAM.DELETE.KV_TRELLIS_prod_LINKS"));
        assert!(!allows(&viewer.publish, "$JS.API.STREAM.PURGE.KV_TRELLIS_prod_LINKS"));
        assert!(allows(&viewer.publish, "$JS.API.DIRECT.GET.KV_TRELLIS_prod_LINKS"));
        assert!(permissions(NatsRole::Viewer, "prod", &[]).to_conf().starts_with("permissions: {"));

        let provider = permissions(NatsRole::Provider, "prod", &["orders.>".to_owned()]);
        assert!(allows(&provider.subscribe, &format!("{}.x", provider_inbox("web"))));
        assert!(allows(&host.subscribe, &format!("{}.x", provider_inbox("web"))), "host creds");
        assert!(allows(&provider.publish, "trellis.prod.evt.link_applied"));
        assert!(allows(&provider.publish, "$KV.trellis-kv-prod.default.hits"));
        assert!(allows(&provider.publish, "orders.new") && allows(&provider.subscribe, "orders.x"));
        assert!(!allows(&provider.publish, "_INBOX.NHOST.abc"), "no host's inbox");
        assert!(!allows(&provider.subscribe, "_INBOX.NHOST.abc"), "nor its answers");
        assert!(!allows(&provider.subscribe, "trellis.prod.rpc.hello.x.y"), "serves no calls");
        assert!(!allows(&provider.publish, "trellis.prod.ctl.host.N1.stop_component"));
        assert!(!allows(&provider.publish, "$KV.TRELLIS_prod_LINKS.k"));
        assert!(provider.to_conf().contains("allow_responses: true"));
    }
}
