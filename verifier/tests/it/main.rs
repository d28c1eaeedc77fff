//! The verifier against real servers: seeded differences of every kind and type, clean
//! copies, live writes, big keys, diagnosis, filters and reports.

mod catchup;
mod copy;
mod diagnosis;
mod functions;
mod held;
mod kinds;
mod live;
mod reports;
mod scope;
mod shared;
mod slots;
mod values;
