//! NATS subject permissions per role, from the subject scheme: what a server should let each
//! kind of user of a lattice's account publish and subscribe to (`trellis nats permissions`).
//! Least privilege at the transport, under the signatures: a viewer's user cannot even publish a
//! control request, and an operator's user cannot serve a component's calls.

use std::fmt::Write as _;

/// Who a NATS user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatsRole {
    /// A `trellis host` (and the providers it starts, which use its credentials).
    Host,
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
}

/// Key-value buckets of a lattice.
const BUCKETS: [&str; 4] = ["LINKS", "CONFIG", "APPS", "SCHEDULER"];

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

/// The permissions of `role` in `lattice`.
pub fn permissions(role: NatsRole, lattice: &str) -> Permissions {
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
    match role {
        NatsRole::Host => Permissions {
            publish: [format!("{prefix}.>")]
                .into_iter()
                .chain(own.clone())
                .chain(js_all)
                .chain(buckets(&BUCKETS))
                .chain([artifacts])
                .collect(),
            subscribe: [format!("{prefix}.>")].into_iter().chain(own).collect(),
        },
        NatsRole::Operator => Permissions {
            publish: [format!("{prefix}.ctl.>"), format!("{prefix}.rpc.>")]
                .into_iter()
                .chain(own.clone())
                .chain(js_all)
                .chain(buckets(&BUCKETS[..3]))
                .chain([artifacts])
                .collect(),
            subscribe: [format!("{prefix}.evt.>")].into_iter().chain(own).collect(),
        },
        NatsRole::Viewer => Permissions {
            publish: [format!("{prefix}.ctl.hosts.ping"), format!("{prefix}.ctl.host.*.inventory")]
                .into_iter()
                .chain(own.clone())
                .chain(js_read)
                .collect(),
            subscribe: [format!("{prefix}.evt.>")].into_iter().chain(own).collect(),
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
        let host = permissions(NatsRole::Host, "prod");
        assert!(allows(
            &host.subscribe,
            "trellis.prod.rpc.hello.wasi:http/incoming-handler.handle"
        ));
        assert!(allows(&host.publish, "$KV.TRELLIS_prod_SCHEDULER.leader"));
        assert!(!allows(&host.publish, "trellis.other.ctl.hosts.ping"));

        let operator = permissions(NatsRole::Operator, "prod");
        assert!(allows(&operator.publish, "trellis.prod.ctl.host.N1.stop_component"));
        assert!(allows(&operator.publish, "$KV.TRELLIS_prod_LINKS.web.wasi.http.x.default"));
        assert!(!allows(&operator.subscribe, "trellis.prod.rpc.hello.x.y"), "serves no calls");
        assert!(!allows(&operator.publish, "$KV.TRELLIS_prod_SCHEDULER.leader"));

        let viewer = permissions(NatsRole::Viewer, "prod");
        assert!(allows(&viewer.publish, "trellis.prod.ctl.hosts.ping"));
        assert!(allows(&viewer.publish, "trellis.prod.ctl.host.N1.inventory"));
        assert!(!allows(&viewer.publish, "trellis.prod.ctl.host.N1.stop_component"));
        assert!(!allows(&viewer.publish, "trellis.prod.rpc.hello.x.y"));
        assert!(!allows(&viewer.publish, "$KV.TRELLIS_prod_LINKS.k"));
        assert!(!allows(&viewer.publish, "$JS.API.STREAM.DELETE.KV_TRELLIS_prod_LINKS"));
        assert!(!allows(&viewer.publish, "$JS.API.STREAM.PURGE.KV_TRELLIS_prod_LINKS"));
        assert!(allows(&viewer.publish, "$JS.API.DIRECT.GET.KV_TRELLIS_prod_LINKS"));
        assert!(permissions(NatsRole::Viewer, "prod").to_conf().starts_with("permissions: {"));
    }
}
