//! ferry chaos runner
