//! Routing: which slot a key hashes to, and which master of a deployment owns that slot.

mod slot;
mod topology;

pub use slot::{InvalidSlot, Slot, SlotRange, SLOT_COUNT};
pub use topology::{NodeAddr, Shard, SlotsReplyError, Topology};
