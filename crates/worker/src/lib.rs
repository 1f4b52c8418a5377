//! slotpool-worker (filled by its issue).
