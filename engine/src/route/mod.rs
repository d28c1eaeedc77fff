//! Routing: which slot a key hashes to, and (later) which target node owns that slot.

mod slot;

pub use slot::{InvalidSlot, Slot, SlotRange, SLOT_COUNT};
