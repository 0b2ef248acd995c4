//! Protobuf messages of the Trellis control plane.
//!
//! This crate holds data only: control requests and replies, lattice events, the host heartbeat
//! and inventory. Subjects, codecs and the client that sends these live in `trellis-lattice`.
//!
//! ```
//! use prost::Message;
//! use trellis_proto::StopComponentRequest;
//!
//! let req = StopComponentRequest { component_id: "hello".into() };
//! let bytes = req.encode_to_vec();
//! assert_eq!(StopComponentRequest::decode(bytes.as_slice()).unwrap(), req);
//! ```

#![allow(missing_debug_implementations)]
// An event's body is a host's digest or something small; boxing the digest would buy nothing
// for a message decoded once per event.
#![allow(clippy::large_enum_variant)]

include!(concat!(env!("OUT_DIR"), "/trellis.v1.rs"));
