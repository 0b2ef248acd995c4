//! The one `unsafe` of the host: turning compiled code from the lattice's compile cache back
//! into a component, without compiling (docs/design/compile-cache.md).
//!
//! # Why this is sound
//!
//! [`wasmtime::component::Component::deserialize`] is `unsafe` because wasmtime maps the bytes
//! as executable machine code and trusts the metadata beside it: bytes that did not come from
//! wasmtime's own compiler could do anything in this process. wasmtime itself checks what it
//! can (an ELF image of its own, the same wasmtime version, and engine settings that change
//! code, or it errors); it cannot tell code it compiled from code someone altered. So:
//!
//! 1. The bytes come only as a [`VerifiedCode`], which `trellis_lattice::signing::verify_code`
//!    alone makes, after checking the entry's seal: a signature by a host key over the cache key
//!    and the code's SHA-256, the host vouched for by a cluster key this host trusts (in
//!    development without `--trusted-cluster`, any host key). Such a host compiled the code
//!    with wasmtime's `Component::serialize`, from the artifact the key names.
//! 2. The cache key holds the artifact's digest and this engine's compatibility hash and
//!    target, so the code was compiled for an engine like this one; wasmtime refuses the rest.
//! 3. Only hosts may write the cache's bucket (NATS permissions, `trellis nats permissions`),
//!    so no other user of the lattice's NATS account can even offer code.
//!
//! A host of the lattice could run anything in its own process anyway: trusting its compiled
//! code extends to other hosts the trust the cluster key already gives it. Every refusal falls
//! back to compiling.

#![allow(unsafe_code)]

use trellis_lattice::signing::VerifiedCode;

use super::component::LoadError;

/// The component compiled into `code` by a host of this lattice, for `engine`.
pub(super) fn deserialize(
    engine: &wasmtime::Engine,
    code: &VerifiedCode,
) -> Result<wasmtime::component::Component, LoadError> {
    // SAFETY: see the module's header: the bytes were produced by `Component::serialize` of a
    // host whose seal verified, for this artifact and an engine of this compatibility hash.
    unsafe { wasmtime::component::Component::deserialize(engine, code.bytes()) }
        .map_err(|e| LoadError::Invalid(format!("cached compiled code refused: {e:#}")))
}

#[cfg(test)]
mod tests {
    /// `unsafe` is allowed here and nowhere else in the workspace.
    #[test]
    fn this_is_the_only_module_allowed_unsafe_code() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut found = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                let name = entry.file_name();
                if path.is_dir() && !name.to_string_lossy().starts_with('.') && name != "target" {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && std::fs::read_to_string(&path)
                        .is_ok_and(|s| s.contains(concat!("allow(unsafe", "_code)")))
                {
                    found.push(path.strip_prefix(&root).unwrap_or(&path).display().to_string());
                }
            }
        }
        assert_eq!(found, ["host/src/runtime/precompiled.rs"]);
    }
}
