//! The scheduler (issue #6): [`plan`] decides what to start and stop so that what runs matches
//! what is wanted. The loop that observes the lattice and carries the plan out builds on it.

pub mod plan;
