//! Every NATS subject Trellis uses, built and parsed here and nowhere else.
//!
//! One lattice is one prefix, `trellis.<lattice>`. Ids (lattice, host, component, provider) are
//! single subject tokens: see [`validate_id`].

use std::fmt;

/// Why a name cannot be used as a subject token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{value}`: use 1-128 characters from A-Z a-z 0-9 `-` `_`")]
pub struct InvalidId {
    /// What the name was for (`lattice`, `component id`, ...).
    pub what: &'static str,
    /// The rejected value.
    pub value: String,
}

/// Checks that `value` is usable as an id: one subject token and one KV key segment.
pub fn validate_id(what: &'static str, value: &str) -> Result<(), InvalidId> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(InvalidId { what, value: value.to_owned() }) }
}

/// A control verb addressed to one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostVerb {
    /// Full inventory of the host.
    Inventory,
    /// Start a component from the artifact store.
    StartComponent,
    /// Stop a component.
    StopComponent,
    /// Start a capability provider process.
    StartProvider,
    /// Stop a capability provider process.
    StopProvider,
    /// Drain the host before maintenance.
    Drain,
    /// Hand one secret, sealed to the asker, to an admin operator.
    SecretGet,
    /// Compile an artifact into the lattice's compile cache ahead of any start.
    Compile,
}

impl HostVerb {
    /// Every verb, for subscribing and tests.
    pub const ALL: [HostVerb; 8] = [
        HostVerb::Inventory,
        HostVerb::StartComponent,
        HostVerb::StopComponent,
        HostVerb::StartProvider,
        HostVerb::StopProvider,
        HostVerb::Drain,
        HostVerb::SecretGet,
        HostVerb::Compile,
    ];

    /// The verb's subject token.
    pub fn as_str(self) -> &'static str {
        match self {
            HostVerb::Inventory => "inventory",
            HostVerb::StartComponent => "start_component",
            HostVerb::StopComponent => "stop_component",
            HostVerb::StartProvider => "start_provider",
            HostVerb::StopProvider => "stop_provider",
            HostVerb::Drain => "drain",
            HostVerb::SecretGet => "secret_get",
            HostVerb::Compile => "compile",
        }
    }

    fn parse(token: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == token)
    }
}

/// A lattice event kind; the last token of `trellis.<lattice>.evt.<kind>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A host joined (or re-joined after a reconnect).
    HostStarted,
    /// Periodic host digest.
    HostHeartbeat,
    /// A host left cleanly.
    HostStopped,
    /// A component started on a host.
    ComponentStarted,
    /// A component stopped on a host.
    ComponentStopped,
    /// A component failed to start.
    ComponentFailed,
    /// A provider process started.
    ProviderStarted,
    /// A provider process stopped.
    ProviderStopped,
    /// A provider process exited unexpectedly.
    ProviderFailed,
    /// An invocation was refused by identity, signature, replay or claims checks.
    InvocationDenied,
    /// A provider applied a link.
    LinkApplied,
    /// A provider could not apply a link (bad config, address in use, ...).
    LinkFailed,
    /// A component called over a link that does not exist.
    NoLink,
    /// A control request was refused by its signature, operator, role, deadline or id.
    RequestDenied,
    /// A record in the lattice's state (link, config) was not applied: unsigned, untrusted,
    /// altered or stale.
    RecordDenied,
    /// The scheduler changed a component's replicas from its load (autoscaling).
    ComponentScaled,
}

impl EventKind {
    /// The kind's subject token.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::HostStarted => "host_started",
            EventKind::HostHeartbeat => "host_heartbeat",
            EventKind::HostStopped => "host_stopped",
            EventKind::ComponentStarted => "component_started",
            EventKind::ComponentStopped => "component_stopped",
            EventKind::ComponentFailed => "component_failed",
            EventKind::ProviderStarted => "provider_started",
            EventKind::ProviderStopped => "provider_stopped",
            EventKind::ProviderFailed => "provider_failed",
            EventKind::InvocationDenied => "invocation_denied",
            EventKind::LinkApplied => "link_applied",
            EventKind::LinkFailed => "link_failed",
            EventKind::NoLink => "no_link",
            EventKind::RequestDenied => "request_denied",
            EventKind::RecordDenied => "record_denied",
            EventKind::ComponentScaled => "component_scaled",
        }
    }
}

/// A subject parsed back into what it addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject<'a> {
    /// `ctl.host.<host>.<verb>`
    HostControl {
        /// Addressed host.
        host: &'a str,
        /// What to do.
        verb: HostVerb,
    },
    /// `ctl.hosts.ping`
    HostsPing,
    /// `ctl.sched.wake`
    SchedulerWake,
    /// `rpc.<target>.<interface>.<function>`
    Rpc {
        /// Component or provider id.
        target: &'a str,
        /// `ns:pkg/iface` without version.
        interface: &'a str,
        /// Function name.
        function: &'a str,
    },
}

/// Builds and parses the subjects of one lattice.
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// Subjects of the lattice `lattice` (validated with [`validate_id`]).
    pub fn new(lattice: &str) -> Result<Self, InvalidId> {
        validate_id("lattice", lattice)?;
        Ok(Self { prefix: format!("trellis.{lattice}") })
    }

    /// `trellis.<lattice>.ctl.host.<host>.<verb>`
    pub fn host_control(&self, host: &str, verb: HostVerb) -> String {
        format!("{}.ctl.host.{host}.{}", self.prefix, verb.as_str())
    }

    /// Every control verb of one host: `trellis.<lattice>.ctl.host.<host>.*`
    pub fn host_control_all(&self, host: &str) -> String {
        format!("{}.ctl.host.{host}.*", self.prefix)
    }

    /// `trellis.<lattice>.ctl.hosts.ping`: every host replies with its digest.
    pub fn hosts_ping(&self) -> String {
        format!("{}.ctl.hosts.ping", self.prefix)
    }

    /// `trellis.<lattice>.ctl.sched.wake`: a caller that found no replica of a component asks
    /// the leading scheduler to start one (scale to zero); signed like a call.
    pub fn scheduler_wake(&self) -> String {
        format!("{}.ctl.sched.wake", self.prefix)
    }

    /// `trellis.<lattice>.policy`: start and invoke decisions (request/reply).
    pub fn policy(&self) -> String {
        format!("{}.policy", self.prefix)
    }

    /// `trellis.<lattice>.policy.changed`: published by the policy service when its decisions
    /// change; hosts forget what they cached.
    pub fn policy_changed(&self) -> String {
        format!("{}.policy.changed", self.prefix)
    }

    /// `trellis.<lattice>.evt.<kind>`
    pub fn event(&self, kind: EventKind) -> String {
        format!("{}.evt.{}", self.prefix, kind.as_str())
    }

    /// Every event: `trellis.<lattice>.evt.*`
    pub fn events_all(&self) -> String {
        format!("{}.evt.*", self.prefix)
    }

    /// The kind of an event subject (`host_started`, ...), when it is one of this lattice's.
    pub fn event_kind<'a>(&self, subject: &'a str) -> Option<&'a str> {
        subject.strip_prefix(self.prefix.as_str())?.strip_prefix(".evt.")
    }

    /// `trellis.<lattice>.rpc.<target>.<interface>.<function>`; `interface` has no version.
    pub fn rpc(&self, target: &str, interface: &str, function: &str) -> String {
        format!("{}.rpc.{target}.{interface}.{function}", self.prefix)
    }

    /// Every invocation of one target: `trellis.<lattice>.rpc.<target>.>`
    pub fn rpc_all(&self, target: &str) -> String {
        format!("{}.rpc.{target}.>", self.prefix)
    }

    /// The queue group that spreads a target's invocations over its replicas.
    pub fn rpc_queue_group(target: &str) -> String {
        target.to_owned()
    }

    /// Parses a subject of this lattice; `None` for anything else.
    pub fn parse<'a>(&self, subject: &'a str) -> Option<Subject<'a>> {
        let rest = subject.strip_prefix(self.prefix.as_str())?.strip_prefix('.')?;
        let mut tokens = rest.split('.');
        let subject = match (tokens.next()?, tokens.next()?) {
            ("ctl", "host") => {
                let host = tokens.next()?;
                let verb = HostVerb::parse(tokens.next()?)?;
                Subject::HostControl { host, verb }
            }
            ("ctl", "hosts") => match tokens.next()? {
                "ping" => Subject::HostsPing,
                _ => return None,
            },
            ("ctl", "sched") => match tokens.next()? {
                "wake" => Subject::SchedulerWake,
                _ => return None,
            },
            ("rpc", target) => {
                let interface = tokens.next()?;
                let function = tokens.next()?;
                Subject::Rpc { target, interface, function }
            }
            _ => return None,
        };
        tokens.next().is_none().then_some(subject)
    }
}

impl fmt::Display for Subjects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_control_round_trips() {
        let s = Subjects::new("default").unwrap();
        for verb in HostVerb::ALL {
            let subject = s.host_control("NABC", verb);
            assert_eq!(s.parse(&subject), Some(Subject::HostControl { host: "NABC", verb }));
        }
    }

    #[test]
    fn rpc_round_trips() {
        let s = Subjects::new("l1").unwrap();
        let subject = s.rpc("hello", "wasi:http/incoming-handler", "handle");
        assert_eq!(subject, "trellis.l1.rpc.hello.wasi:http/incoming-handler.handle");
        assert_eq!(
            s.parse(&subject),
            Some(Subject::Rpc {
                target: "hello",
                interface: "wasi:http/incoming-handler",
                function: "handle"
            })
        );
    }

    #[test]
    fn foreign_and_malformed_subjects_are_rejected() {
        let s = Subjects::new("a").unwrap();
        assert_eq!(s.parse("trellis.b.ctl.hosts.ping"), None);
        assert_eq!(s.parse("trellis.ab.ctl.hosts.ping"), None);
        assert_eq!(s.parse("trellis.a.ctl.host.X.reboot"), None);
        assert_eq!(s.parse("trellis.a.ctl.hosts.ping.extra"), None);
        assert_eq!(s.parse("trellis.a.rpc.x"), None);
        assert_eq!(s.parse("trellis.a.ctl.hosts.ping"), Some(Subject::HostsPing));
        assert_eq!(s.parse(&s.scheduler_wake()), Some(Subject::SchedulerWake));
        assert_eq!(s.parse("trellis.a.ctl.sched.sleep"), None);
    }

    #[test]
    fn ids_must_be_single_tokens() {
        assert!(validate_id("component id", "http-hello_2").is_ok());
        for bad in ["", "a.b", "a*", ">", "a b", "ü"] {
            assert!(validate_id("component id", bad).is_err(), "{bad}");
        }
        assert!(Subjects::new("has.dot").is_err());
    }
}
