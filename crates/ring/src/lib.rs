//! slotpool-ring (filled by its issue).
