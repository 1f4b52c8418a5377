//! slotpool-host (filled by its issue).
