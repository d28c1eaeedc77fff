//! ferry's verifier: compares a source and a target deployment key by key.
//!
//! It reads both sides through the `redis` crate and never through the engine's codecs, so a
//! codec bug cannot hide itself on both sides of a comparison.
