//! Outbound routing: where a call from this host's components and providers goes. Locality
//! first: a component of this host is called in process, then a provider of this host over its
//! pipe, then any replica in the lattice over NATS (its queue group picks one).

use trellis_lattice::envelope::{InvokeError, InvokeErrorKind};
use trellis_lattice::subject::validate_id;

/// Where one call goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route<L, P> {
    /// A component of this host.
    Local(L),
    /// A provider of this host.
    Provider(P),
    /// Replicas on other hosts, over NATS.
    Remote,
}

/// Chooses the route of a call to `interface.function` of `target`, looking up local
/// components and providers lazily (a provider is looked up only when no component matched).
/// A call that must leave the host must name a valid subject: `BadRequest` otherwise.
pub(crate) fn choose<L, P>(
    (target, interface, function): (&str, &str, &str),
    local: impl FnOnce() -> Option<L>,
    provider: impl FnOnce() -> Option<P>,
) -> Result<Route<L, P>, InvokeError> {
    if let Some(local) = local() {
        return Ok(Route::Local(local));
    }
    if let Some(provider) = provider() {
        return Ok(Route::Provider(provider));
    }
    if validate_id("target", target).is_err() || !is_token(interface) || !is_token(function) {
        return Err(InvokeError::new(
            InvokeErrorKind::BadRequest,
            format!("invalid call target `{target}` / `{interface}.{function}`"),
        ));
    }
    Ok(Route::Remote)
}

/// One subject token: no separators, wildcards or whitespace.
fn is_token(t: &str) -> bool {
    !t.is_empty() && !t.bytes().any(|b| matches!(b, b'.' | b'*' | b'>') || b.is_ascii_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALL: (&str, &str, &str) = ("greeter", "acme:greeter/api", "greet");

    #[test]
    fn a_local_component_wins_over_a_provider_and_the_lattice() {
        let route = choose(CALL, || Some("component"), || -> Option<&str> { panic!("not asked") });
        assert_eq!(route.unwrap(), Route::Local("component"));
        let route = choose(CALL, || None::<()>, || Some("pipe"));
        assert_eq!(route.unwrap(), Route::Provider("pipe"));
        let route = choose(CALL, || None::<()>, || None::<()>);
        assert_eq!(route.unwrap(), Route::Remote);
    }

    #[test]
    fn targets_that_cannot_be_subjects_are_bad_requests() {
        for call in [
            ("a.b", "acme:greeter/api", "greet"),
            ("greeter", "acme:greeter/*", "greet"),
            ("greeter", "acme:greeter/api", "gr eet"),
            ("greeter", "", "greet"),
            ("", "acme:greeter/api", "greet"),
        ] {
            let e = choose(call, || None::<()>, || None::<()>).unwrap_err();
            assert_eq!(e.kind(), InvokeErrorKind::BadRequest, "{call:?}");
        }
        // A local target is found by id whatever its name: nothing goes on the wire.
        assert!(choose(("a.b", "x", "y"), || Some(()), || None::<()>).is_ok());
    }
}
