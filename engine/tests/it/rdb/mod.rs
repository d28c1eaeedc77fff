//! The RDB parser and `DUMP` payloads against the third-party corpus and against files real
//! servers write.

mod corpus;
mod model;
mod payloads;
mod servers;
