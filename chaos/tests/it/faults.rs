//! Fault primitive tests (real servers).
